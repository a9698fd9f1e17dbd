# vm-tests/socle.sh — what socle's scenarios share on top of lib.sh: the
# binary under test, the images, a booted node holding them, and the
# questions every scenario asks that node. Source it after lib.sh.
#
#   socle_scenario NODE          exit trap, $node, a scratch $work removed at exit
#   in_node CMD... / socle ARGS...   run in $node / run socle in $node
#   node_with_socle NODE ARCHIVE...  fresh node with socle and the archives, booted
#   build_hello DEST [OPTS]      the greeter from images/hello, as an oci-archive
#   build_image IMAGE NAME [OPTS]    images/IMAGE into $work/NAME.tar (+ .digest)
#   same_digest NAME NAME        two builds gave the same digest
#   greets PORT TEXT             the greeter on PORT answers TEXT
#   poll_greets SECS PORT TEXT   polls greets every 0.1 s; sets $answered_at
#   unit_prop UNIT PROP / active UNIT    systemd's view of UNIT.service
#   slot_is NAME SLOT            the pointer of container NAME names SLOT
#   list_row NAME                NAME's row of `socle list --all --json`
#   log_image_sizes              `socle images list` sizes as `# size:` lines

socle_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
socle_bin=${SOCLE_BIN:-$socle_repo/target/debug/socle}
containers=/var/lib/socle/containers

# socle_scenario NODE: what every scenario starts with. The helpers below
# act on $node.
socle_scenario() {
    node=$1
    node_cleanup_on_exit
    work=$(mktemp -d)
    at_exit rm -rf "$work"
}

in_node() { node_exec "$node" "$@"; }
socle() { in_node socle "$@"; }

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

# build_image IMAGE NAME [build-image options...]: images/IMAGE into
# $work/NAME.tar, its digest in $work/NAME.digest.
build_image() {
    "$socle_repo/scripts/build-image" --digest-file "$work/$2.digest" "${@:3}" \
        "$socle_repo/images/$1" "oci-archive:$work/$2.tar"
}

# same_digest A B: builds A and B (build_image NAMEs) have one digest.
same_digest() { cat "$work/$1.digest" "$work/$2.digest"; cmp -s "$work/$1.digest" "$work/$2.digest"; }

# greets PORT TEXT: the greeter on PORT answers TEXT (2 s at most); says
# what it got, for a check that fails.
greets() {
    local got
    got=$(in_node curl -fsS --max-time 2 "http://127.0.0.1:$1/" 2>/dev/null) || true
    echo "port $1 says: $got"
    [[ $got == "$2" ]]
}

# poll_greets SECS PORT TEXT: polls every 0.1 s (finer than wait_until)
# until PORT greets with TEXT, for at most SECS; sets answered_at.
answered_at=
poll_greets() {
    local secs=$1 port=$2 text=$3 deadline
    deadline=$(($(date +%s) + secs))
    while (($(date +%s) < deadline)); do
        if greets "$port" "$text" >/dev/null; then
            answered_at=$(now)
            return 0
        fi
        sleep 0.1
    done
    echo "port $port: $(in_node curl -sS --max-time 2 "http://127.0.0.1:$port/" 2>&1)"
    echo "hello.service: $(unit_prop hello ActiveState)"
    return 1
}

unit_prop() { in_node systemctl show -P "$2" "$1.service"; }
active() { local s; s=$(unit_prop "$1" ActiveState); echo "$1: $s"; [[ $s == active ]]; }

# slot_is NAME SLOT: the pointer of container NAME names SLOT ("NAME.0"...).
slot_is() { local p; p=$(in_node readlink "$containers/$1"); echo "pointer: $p"; [[ $p == "$2" ]]; }

# list_row NAME: container NAME's row of `socle list --all --json`, one line.
list_row() { socle list --all --json | jq -c ".[] | select(.name == \"$1\")"; }

# log_image_sizes: each stored image's size, as `# size:` lines in the log.
log_image_sizes() { socle images list --json | jq -r '.[] | "# size: \(.name) \(.size // .size_bytes // "?")"' >&"$SOCLE_VM_LOG_FD"; }

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
