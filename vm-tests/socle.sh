# vm-tests/socle.sh — what socle's scenarios share on top of lib.sh: the
# binary under test, the greeter image, and a booted node holding both.
# Source it after lib.sh.

socle_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
socle_bin=${SOCLE_BIN:-$socle_repo/target/debug/socle}

# node_with_socle NODE ARCHIVE...: checks that socle was built, builds a
# fresh node with socle in /usr/local/bin and each ARCHIVE in /var/tmp, and
# boots it with its own network. Each step is one check.
node_with_socle() {
    local node=$1 a
    shift
    check "socle binary was built ($socle_bin)" test -x "$socle_bin"
    check "node root is ready" node_root_cached
    check "fresh node $node" node_new "$node"
    check "socle goes in" node_copy_in "$node" "$socle_bin" /usr/local/bin/socle
    for a in "$@"; do
        check "$(basename "$a") goes in" node_copy_in "$node" "$a" "/var/tmp/$(basename "$a")"
    done
    check "$node boots (own network)" node_boot "$node" --private-network
}

# build_hello DEST_ARCHIVE [build-image options...]: the greeter from images/hello.
build_hello() {
    local dest=$1
    shift
    "$socle_repo/scripts/build-image" "$@" "$socle_repo/images/hello" "oci-archive:$dest"
}

# now / secs T0 T1: wall-clock stamps and the seconds between two of them.
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

# timed TITLE CMD...: runs CMD and prints its wall time as a `# time:` line
# in the scenario's log; returns CMD's status.
timed() {
    local title=$1 t0 rc=0
    shift
    t0=$(now)
    "$@" || rc=$?
    echo "# time: $title: $(secs "$t0" "$(now)") s" >&"$SOCLE_VM_LOG_FD"
    return "$rc"
}
