# vm-tests/lib.sh — booted-node harness for socle. Source it; don't run it.
#
# A "node" is a Debian 12 root booted with systemd-nspawn --boot: a real
# systemd as PID 1, a real system bus, runc with --systemd-cgroup. Each test
# gets its own copy of one cached root, so nodes never see each other's files.
#
#   node_root_cached            build the cached root once; prints its path
#   node_new NAME               fresh copy of the cached root for NAME
#   node_boot NAME [ARGS...]    boot it (ARGS go to systemd-nspawn), wait until up
#   node_exec NAME CMD...       run CMD inside the booted node
#   node_state NAME             print `systemctl is-system-running` of the node
#   node_is_up NAME             true if the node is running (or degraded)
#   node_copy_in NAME SRC DEST  copy a host file into the node's root
#   node_root NAME              print the node's root directory on the host
#   node_poweroff NAME          clean shutdown (forced after a bounded wait)
#   node_reboot NAME            poweroff, then boot the same root again
#   node_destroy NAME           poweroff if running, remove its files
#   node_cleanup_on_exit        trap: power off every node this script booted
#   at_exit CMD...              more cleanup for that trap (e.g. delete a bridge)
#
#   check "what" CMD...         one assertion: prints "ok - what" / "not ok - what"
#   wait_until SECS "what" CMD  an assertion that polls CMD until it succeeds
#   summary                     prints "N passed, N failed"; fails if any failed
#
# Settings (environment):
#   SOCLE_VM_CACHE   where cached roots live        (/var/cache/socle-vm)
#   SOCLE_VM_WORK    where per-test node copies go  (/var/tmp/socle-vm)
#   SOCLE_VM_MIRROR  Debian mirror for debootstrap  (the one apt uses here)
#   SOCLE_VM_BOOT_TIMEOUT / SOCLE_VM_STOP_TIMEOUT   seconds (60 / 30)
#
# The tools used on the host (debootstrap, systemd-nspawn, nsenter, flock,
# busybox, jq, ...) are installed by scripts/setup.

SOCLE_VM_CACHE=${SOCLE_VM_CACHE:-/var/cache/socle-vm}
SOCLE_VM_WORK=${SOCLE_VM_WORK:-/var/tmp/socle-vm}
SOCLE_VM_BOOT_TIMEOUT=${SOCLE_VM_BOOT_TIMEOUT:-60}
SOCLE_VM_STOP_TIMEOUT=${SOCLE_VM_STOP_TIMEOUT:-30}

# What goes into the node root. Changing any of these (or the preparation
# steps, see SOCLE_VM_RECIPE) changes the cache key, so a new root is built.
SOCLE_VM_SUITE=bookworm
SOCLE_VM_PACKAGES=systemd,systemd-sysv,dbus,runc,libostree-1-1,busybox,curl,iproute2
SOCLE_VM_RECIPE=2   # bump when _vm_prepare_root changes

# Environment for commands run inside a node: nothing from the host.
SOCLE_VM_ENV=(env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    HOME=/root LANG=C.UTF-8 TERM=dumb SYSTEMD_PAGER=)

# ---------------------------------------------------------------------------
# small helpers

# Harness notes (timings, what is being built) go to the stderr the library
# was sourced with, through a saved descriptor, so they show at once even
# inside check's captured output. The exit trap uses the saved stdout too.
[[ -n ${SOCLE_VM_LOG_FD:-} ]] || exec {SOCLE_VM_LOG_FD}>&2 {SOCLE_VM_STDOUT_FD}>&1
_vm_log() { echo "# vm: $*" 1>&"$SOCLE_VM_LOG_FD"; }
_vm_die() { echo "vm-tests: error: $*" >&2; return 1; }

# Current time in milliseconds (bash 5's EPOCHREALTIME, no fork).
_vm_now_ms() { local t=${EPOCHREALTIME/[.,]/}; echo $((t / 1000)); }

# "1234" ms -> "1.234s"
_vm_fmt_ms() { printf '%d.%03ds' $(($1 / 1000)) $(($1 % 1000)); }

_vm_require() {
    local tool missing=()
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    if ((${#missing[@]})); then
        _vm_die "missing host tools: ${missing[*]} (run scripts/setup)"
        return 1
    fi
}

_vm_check_name() {
    [[ ${1:-} =~ ^[a-z0-9][a-z0-9-]{0,30}$ ]] ||
        _vm_die "bad node name '${1:-}': use [a-z0-9-], at most 31 characters"
}

# Per-node files on the host:
#   $SOCLE_VM_WORK/NAME/root        the node's root filesystem
#   $SOCLE_VM_WORK/NAME/boot.log    console output of systemd-nspawn (appended)
#   $SOCLE_VM_WORK/NAME/nspawn.pid  "PID STARTTIME" of the nspawn we started
#   $SOCLE_VM_WORK/NAME/init.pid    "PID STARTTIME" of the node's systemd
_vm_dir() { echo "$SOCLE_VM_WORK/$1"; }
node_root() { echo "$SOCLE_VM_WORK/$1/root"; }

# Start time of a process (field 22 of /proc/PID/stat), to tell our process
# from an unrelated one that got the same PID later.
_vm_starttime() {
    local stat fields
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }           # drop "pid (comm) ": comm may contain spaces
    read -ra fields <<<"$stat"  # fields[0] is field 3 (state)
    echo "${fields[19]}"        # field 22
}

# Is the process recorded in FILE ("PID STARTTIME") still alive (not a zombie)?
_vm_recorded_alive() {
    local file=$1 pid start stat
    [[ -f $file ]] || return 1
    read -r pid start <"$file" || return 1
    [[ $(_vm_starttime "$pid" 2>/dev/null) == "$start" ]] || return 1
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat:0:1} != Z ]]
}

# rm -rf that never crosses into a mounted filesystem (debootstrap mounts
# /proc and /sys in its target; an interrupted build may leave them behind).
_vm_remove_tree() {
    local dir=$1 mnt
    [[ -n $dir && $dir != / ]] || return 1
    for mnt in $(findmnt -rn -o TARGET | grep -F "$dir/" | sort -r || true); do
        umount -l "$mnt" || true
    done
    rm -rf --one-file-system "$dir"
}

_vm_recorded_pid() { local pid _; read -r pid _ <"$1" && echo "$pid"; }

# The node's systemd PID, or fail if the node is not running.
_vm_init_pid() {
    local dir
    dir=$(_vm_dir "$1")
    if _vm_recorded_alive "$dir/init.pid" && _vm_recorded_alive "$dir/nspawn.pid"; then
        _vm_recorded_pid "$dir/init.pid"
    else
        _vm_die "node $1 is not running"
    fi
}

# The mirror apt uses for SUITE on this host (one-line .list or deb822
# .sources), so debootstrap goes where apt already goes.
_vm_apt_mirror() {
    local suite=$1 url
    url=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
        awk -v s="$suite" '
            $1 == "deb" {
                i = 2
                if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }   # skip [options]
                if ($(i + 1) == s) { print $i; exit }
            }') || true
    if [[ -z $url ]]; then
        url=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
            awk -v s="$suite" '
                function flush() { if (uri != "" && hit && !done) { print uri; done = 1 } uri = ""; hit = 0 }
                /^[ \t]*$/ { flush() }
                /^URIs:/    { uri = $2 }
                /^Suites:/  { for (i = 2; i <= NF; i++) if ($i == s) hit = 1 }
                END         { flush() }') || true
    fi
    echo "${url:-http://deb.debian.org/debian}"
}

# ---------------------------------------------------------------------------
# the cached root

# Make a freshly debootstrapped root fit to boot under nspawn, quickly and
# quietly. Runs on the temp dir, before it is renamed into the cache.
_vm_prepare_root() {
    local root=$1 unit

    # No machine-id: each node gets its own on first boot (nspawn passes one
    # in, systemd writes it into the node's copy, so it survives reboots).
    : >"$root/etc/machine-id" || return 1
    rm -f "$root/var/lib/dbus/machine-id"

    echo socle-node >"$root/etc/hostname" || return 1
    printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' \
        >"$root/etc/hosts" || return 1

    # Units that fail, hang or just waste time in a container. Masking a unit
    # that the packages don't ship is harmless.
    for unit in \
        getty.target console-getty.service container-getty@.service \
        getty@.service serial-getty@.service \
        systemd-networkd-wait-online.service systemd-timesyncd.service \
        apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer \
        e2scrub_all.timer e2scrub_reap.service fstrim.timer; do
        ln -sfn /dev/null "$root/etc/systemd/system/$unit" || return 1
    done

    # Keep the journal in memory: faster, and nothing left in the copies.
    mkdir -p "$root/etc/systemd/journald.conf.d" &&
        printf '[Journal]\nStorage=volatile\n' \
            >"$root/etc/systemd/journald.conf.d/socle-vm.conf" || return 1

    # No docs, manuals or translations, now or from later apt installs:
    # a quarter less to copy for every node.
    printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
        'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' \
        'path-exclude /usr/share/locale/*' 'path-include /usr/share/locale/locale.alias' \
        >"$root/etc/dpkg/dpkg.cfg.d/socle-vm-nodoc" || return 1
    find "$root/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete &&
        find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias \
            -exec rm -rf {} + &&
        rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* || return 1

    # Drop the packages debootstrap downloaded.
    rm -f "$root"/var/cache/apt/archives/*.deb
}

# Build (once) and print the path of the cached node root. The build goes to
# a temp dir that is renamed into place only when complete, under a lock, so
# an interrupted or concurrent build is never taken as the cache.
node_root_cached() {
    _vm_require debootstrap flock sha256sum || return 1
    local key root lock tmp mirror t0 rc=0
    key=$(printf '%s\n' "$SOCLE_VM_SUITE" "$SOCLE_VM_PACKAGES" "$SOCLE_VM_RECIPE" | sha256sum | cut -c1-12)
    root="$SOCLE_VM_CACHE/root-$key"
    [[ -d $root ]] && { echo "$root"; return 0; }

    mkdir -p "$SOCLE_VM_CACHE" || return 1
    lock="$SOCLE_VM_CACHE/.lock"
    (
        flock -w 1800 9 || { _vm_die "could not lock $lock within 30 min"; exit 1; }
        [[ -d $root ]] && exit 0            # someone else built it meanwhile
        for tmp in "$SOCLE_VM_CACHE"/.building-*; do   # left by an interrupted build
            [[ ! -e $tmp ]] || _vm_remove_tree "$tmp"
        done
        mirror=${SOCLE_VM_MIRROR:-$(_vm_apt_mirror "$SOCLE_VM_SUITE")}
        tmp=$(mktemp -d "$SOCLE_VM_CACHE/.building-$key.XXXXXX") || exit 1
        trap '_vm_remove_tree "$tmp" || true' EXIT
        _vm_log "building node root $root"
        _vm_log "debootstrap --variant=minbase --include=$SOCLE_VM_PACKAGES $SOCLE_VM_SUITE $mirror"
        t0=$(_vm_now_ms)
        if ! debootstrap --variant=minbase --include="$SOCLE_VM_PACKAGES" \
            "$SOCLE_VM_SUITE" "$tmp/root" "$mirror" >"$tmp/debootstrap.log" 2>&1; then
            tail -n 30 "$tmp/debootstrap.log" >&2
            _vm_die "debootstrap failed (log above)"
            exit 1
        fi
        _vm_log "debootstrap took $(_vm_fmt_ms $(($(_vm_now_ms) - t0)))"
        _vm_prepare_root "$tmp/root" || { _vm_die "preparing the node root failed"; exit 1; }
        mv -T "$tmp/root" "$root" || exit 1   # the atomic step
        exit 0
    ) 9>"$lock" || rc=$?
    ((rc == 0)) || return "$rc"
    echo "$root"
}

# ---------------------------------------------------------------------------
# node lifecycle

# Fresh copy of the cached root for NAME (a stale one is removed first).
node_new() {
    local name=$1 cached dir
    _vm_check_name "$name" || return 1
    cached=$(node_root_cached) || return 1
    dir=$(_vm_dir "$name")
    if [[ -e $dir ]]; then
        node_destroy "$name" || return 1
    fi
    mkdir -p "$dir" &&
        cp -a --reflink=auto "$cached" "$dir/root" &&
        echo "$name" >"$dir/root/etc/hostname" &&
        printf '127.0.1.1\t%s\n' "$name" >>"$dir/root/etc/hosts"
}

# Nodes booted by this shell, for node_cleanup_on_exit.
SOCLE_VM_BOOTED=()

# The cgroups node NAME's systemd-nspawn runs in, one per hierarchy nspawn
# uses (the v2 tree; on a hybrid host also name=systemd), below the
# caller's own. nspawn --keep-unit builds the node's cgroup tree as
# `payload` beside itself, in the cgroup it was started from: nodes started
# from one cgroup would share one tree, and each node's systemd would see
# (as pid 0: another pid namespace) and signal the other nodes' processes
# in its units' cgroups. A real node has a kernel of its own; so does each
# node here, as far as cgroups go.
_vm_node_cgroups() {
    local name=$1 own
    if [[ -e /sys/fs/cgroup/cgroup.controllers ]]; then   # cgroup v2 only
        own=$(awk -F: '$1 == "0" { print $3 }' /proc/self/cgroup)
        echo "/sys/fs/cgroup${own%/}/socle-vm-$name"
        return 0
    fi
    if [[ -e /sys/fs/cgroup/unified/cgroup.procs ]]; then
        own=$(awk -F: '$1 == "0" { print $3 }' /proc/self/cgroup)
        echo "/sys/fs/cgroup/unified${own%/}/socle-vm-$name"
    fi
    if [[ -e /sys/fs/cgroup/systemd/cgroup.procs ]]; then
        own=$(awk -F: '$2 == "name=systemd" { print $3 }' /proc/self/cgroup)
        echo "/sys/fs/cgroup/systemd${own%/}/socle-vm-$name"
    fi
}

# Remove node NAME's cgroups once its nspawn is gone (empty ones only).
_vm_remove_node_cgroups() {
    local cg
    while read -r cg; do
        [[ -d $cg ]] && find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null
    done < <(_vm_node_cgroups "$1")
    return 0
}

# Boot NAME in the background; extra arguments go to systemd-nspawn
# (--private-network, --network-bridge=BR, --bind=SRC:DEST, ...).
# Returns once systemd inside reports "running" or "degraded".
node_boot() {
    local name=$1; shift
    _vm_require systemd-nspawn nsenter setsid timeout || return 1
    local dir root log t0 pid init="" state="" deadline
    dir=$(_vm_dir "$name")
    root="$dir/root"
    log="$dir/boot.log"
    [[ -d $root ]] || { _vm_die "node $name has no root: call node_new $name first"; return 1; }
    if _vm_recorded_alive "$dir/nspawn.pid"; then
        _vm_die "node $name is already running"; return 1
    fi
    rm -f "$dir/nspawn.pid" "$dir/init.pid"

    echo "=== boot $(date -Is) args: $* ===" >>"$log"
    t0=$(_vm_now_ms)
    # --machine names the node after the test (hostname, veth vb-NAME), since
    # every root dir is called "root". stdin is not a terminal, so nspawn's
    # console is read-only and goes to the log; TERM=dumb keeps it plain.
    # setsid: a Ctrl-C at the terminal goes to the test, not to nspawn (which
    # would take it as "stop now"); the test's exit trap powers nodes off.
    # (With job control on, the job has its own process group already, and
    # setsid would fork, hiding nspawn's PID.)
    local setsid=setsid cgroups cg
    [[ $- != *m* ]] || setsid=
    _vm_remove_node_cgroups "$name"      # left by a node that was killed
    mapfile -t cgroups < <(_vm_node_cgroups "$name")
    (
        for cg in "${cgroups[@]}"; do
            mkdir -p "$cg" && echo "$BASHPID" >"$cg/cgroup.procs" ||
                { echo "cannot move nspawn into $cg"; exit 1; }
        done
        TERM=dumb SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 SYSTEMD_SECCOMP=0 \
            exec $setsid systemd-nspawn -D "$root" --boot --register=no --keep-unit --capability=all \
            --machine="$name" "$@"
    ) </dev/null >>"$log" 2>&1 &
    pid=$!
    echo "$pid $(_vm_starttime "$pid")" >"$dir/nspawn.pid"
    SOCLE_VM_BOOTED+=("$name")

    # The node's systemd is nspawn's child that is PID 1 in its own namespace.
    deadline=$((SECONDS + SOCLE_VM_BOOT_TIMEOUT))
    while ((SECONDS < deadline)); do
        _vm_recorded_alive "$dir/nspawn.pid" || break
        init=$(_vm_find_init "$pid") && break
        sleep 0.1
    done
    if [[ -n $init ]]; then
        echo "$init $(_vm_starttime "$init")" >"$dir/init.pid"
        while ((SECONDS < deadline)); do
            _vm_recorded_alive "$dir/nspawn.pid" || break
            state=$(node_state "$name" 2>/dev/null) || true
            [[ $state == running || $state == degraded ]] && break
            sleep 0.2
        done
    fi

    if [[ $state != running && $state != degraded ]]; then
        echo "--- last lines of $log ---" >&2
        tail -n 40 "$log" | tr -d '\r' | sed 's/\x1b\(M\|\[[0-9;]*[A-Za-z]\)//g' >&2   # no terminal codes
        if _vm_recorded_alive "$dir/nspawn.pid"; then
            if [[ -n $init ]]; then
                echo "--- jobs still queued in $name ---" >&2
                _vm_exec_bounded 10 "$name" systemctl list-jobs --no-pager >&2 2>&1 || true
            fi
            node_poweroff "$name" >/dev/null 2>&1 || true
            _vm_die "node $name did not come up within ${SOCLE_VM_BOOT_TIMEOUT}s (state: ${state:-unknown})"
        else
            _vm_die "systemd-nspawn for node $name exited during boot"
        fi
        return 1
    fi
    _vm_log "node $name booted in $(_vm_fmt_ms $(($(_vm_now_ms) - t0))) ($state)"
    if [[ $state == degraded ]]; then
        _vm_log "node $name failed units: $(node_exec "$name" systemctl --failed --no-legend --plain 2>&1 | awk '{print $1}' | tr '\n' ' ')"
    fi
}

# What `systemctl is-system-running` says inside NAME (starting, running,
# degraded, stopping, ...). node_is_up: running or degraded, i.e. booted.
node_state() { _vm_exec_bounded 10 "$1" systemctl is-system-running || true; }
node_is_up() {
    local state
    state=$(node_state "$1")
    echo "$1: $state"
    [[ $state == running || $state == degraded ]]
}

# PID of the child of nspawn PID that is PID 1 in its own PID namespace.
_vm_find_init() {
    local child nspid children
    read -rd '' -a children < <(cat /proc/"$1"/task/*/children 2>/dev/null) || true
    for child in "${children[@]}"; do
        nspid=$(awk '/^NSpid:/ { print $NF }' "/proc/$child/status" 2>/dev/null) || continue
        [[ $nspid == 1 ]] && { echo "$child"; return 0; }
    done
    return 1
}

# Run CMD inside NAME (all its namespaces, its root, cwd /), with a clean
# environment. Output passes through; returns CMD's exit code.
node_exec() {
    local name=$1; shift
    local init
    init=$(_vm_init_pid "$name") || return 1
    "${SOCLE_VM_ENV[@]}" nsenter -t "$init" -a -r -w "$@"
}

# node_exec, killed after SECS (for the harness's own calls, which must
# never hang: state polling, poweroff requests).
_vm_exec_bounded() {
    local secs=$1 name=$2; shift 2
    local init
    init=$(_vm_init_pid "$name") || return 1
    timeout --kill-after=2 "$secs" "${SOCLE_VM_ENV[@]}" nsenter -t "$init" -a -r -w "$@"
}

# Copy a host file or directory into the node's root (DEST is a path inside).
node_copy_in() {
    local name=$1 src=$2 dest=$3 root
    root=$(node_root "$name")
    [[ -d $root ]] || { _vm_die "node $name has no root"; return 1; }
    mkdir -p "$(dirname "$root/$dest")" && cp -a "$src" "$root/$dest"
}

# Wait up to SECS for the process recorded in FILE to go away.
_vm_wait_gone() {
    local file=$1 secs=$2 deadline=$((SECONDS + $2))
    while ((SECONDS < deadline)); do
        _vm_recorded_alive "$file" || return 0
        sleep 0.2
    done
    ! _vm_recorded_alive "$file"
}

# Clean shutdown of NAME; escalates when it takes too long:
#   systemctl poweroff inside         (up to SOCLE_VM_STOP_TIMEOUT)
#   SIGRTMIN+4 to its systemd, SIGTERM to nspawn (both mean "power off")
#   SIGKILL to its systemd            (ends the whole node)
#   SIGKILL to nspawn
# Signals go only to the PIDs recorded at boot, and only while they still
# are the processes we started.
node_poweroff() {
    local name=$1 dir pid init t0
    dir=$(_vm_dir "$name")
    _vm_recorded_alive "$dir/nspawn.pid" || { rm -f "$dir/nspawn.pid" "$dir/init.pid"; return 0; }
    pid=$(_vm_recorded_pid "$dir/nspawn.pid")
    t0=$(_vm_now_ms)
    # Interrupted early in node_boot, the node's systemd may not be recorded yet.
    if ! _vm_recorded_alive "$dir/init.pid" && init=$(_vm_find_init "$pid"); then
        echo "$init $(_vm_starttime "$init")" >"$dir/init.pid"
    fi

    _vm_exec_bounded 10 "$name" systemctl poweroff --no-block >/dev/null 2>&1 || true
    if ! _vm_wait_gone "$dir/nspawn.pid" "$SOCLE_VM_STOP_TIMEOUT"; then
        _vm_log "node $name: no poweroff after ${SOCLE_VM_STOP_TIMEOUT}s, signalling it"
        _vm_signal_recorded RTMIN+4 "$dir/init.pid"
        _vm_signal_recorded TERM "$dir/nspawn.pid"
        if ! _vm_wait_gone "$dir/nspawn.pid" 10; then
            _vm_log "node $name: still up, killing its systemd"
            _vm_signal_recorded KILL "$dir/init.pid"
            if ! _vm_wait_gone "$dir/nspawn.pid" 10; then
                _vm_signal_recorded KILL "$dir/nspawn.pid"
                _vm_wait_gone "$dir/nspawn.pid" 5 || { _vm_die "node $name: nspawn $pid will not die"; return 1; }
            fi
        fi
    fi
    wait "$pid" 2>/dev/null || true     # reap it if this shell started it
    rm -f "$dir/nspawn.pid" "$dir/init.pid"
    _vm_remove_node_cgroups "$name"
    _vm_log "node $name powered off in $(_vm_fmt_ms $(($(_vm_now_ms) - t0)))"
}

# Send SIGNAL to the process recorded in FILE, if it still is that process.
_vm_signal_recorded() {
    if _vm_recorded_alive "$2"; then
        kill -s "$1" "$(_vm_recorded_pid "$2")" 2>/dev/null || true
    fi
}

# Power off and boot the same root again, with the same extra nspawn args.
node_reboot() {
    local name=$1; shift
    local t0
    t0=$(_vm_now_ms)
    node_poweroff "$name" && node_boot "$name" "$@" || return 1
    _vm_log "node $name rebooted in $(_vm_fmt_ms $(($(_vm_now_ms) - t0)))"
}

# Power off if running, then remove everything of NAME.
node_destroy() {
    local name=$1 dir
    dir=$(_vm_dir "$name")
    node_poweroff "$name" || true
    if _vm_recorded_alive "$dir/nspawn.pid"; then
        _vm_die "node $name still running; keeping $dir"; return 1
    fi
    _vm_remove_tree "$dir"
}

# Call once at the top of a scenario. On exit, for whatever reason (a failed
# step under set -e, a signal, the end), it powers off every node this shell
# booted, by the PIDs it recorded, then runs what at_exit registered. If the
# scenario stops before its summary, that counts as one failure and the
# summary is printed anyway. Node files stay in $SOCLE_VM_WORK for a
# post-mortem (boot.log, root/).
SOCLE_VM_AT_EXIT=()
at_exit() { SOCLE_VM_AT_EXIT+=("$*"); }    # e.g. at_exit ip link del br0

node_cleanup_on_exit() {
    trap '_vm_on_exit' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}
_vm_on_exit() {
    local rc=$? name cmd
    set +e
    trap '' PIPE    # if whoever reads our output is gone, still clean up
    # A signal may land while check has output redirected to its temp file.
    exec 1>&"$SOCLE_VM_STDOUT_FD" 2>&"$SOCLE_VM_LOG_FD"
    for name in "${SOCLE_VM_BOOTED[@]}"; do
        node_poweroff "$name" >/dev/null 2>&1
    done
    for cmd in "${SOCLE_VM_AT_EXIT[@]}"; do
        eval "$cmd" || echo "# vm: at exit, '$cmd' failed" >&2
    done
    if [[ -z ${SOCLE_VM_SUMMARY_DONE:-} ]]; then
        SOCLE_VM_FAILED=$((SOCLE_VM_FAILED + 1))
        echo "not ok - scenario $(basename "$0") stopped early (exit $rc)"
        summary
        ((rc != 0)) || rc=1
    fi
    exit "$rc"
}

# ---------------------------------------------------------------------------
# assertions for scenarios (TAP-like output)

SOCLE_VM_PASSED=0
SOCLE_VM_FAILED=0

# check "what" CMD...: run CMD, record pass or fail, show its output on
# failure; returns CMD's exit code (so under set -e a failed check ends the
# scenario; write `check ... || true` to go on). CMD runs in this shell, not
# a subshell, so `check "boots" node_boot n1` keeps track of the node.
check() {
    local what=$1; shift
    local out rc=0
    _vm_capture "$@" || rc=$?
    out=$SOCLE_VM_OUT
    if ((rc == 0)); then
        SOCLE_VM_PASSED=$((SOCLE_VM_PASSED + 1))
        echo "ok - $what"
    else
        SOCLE_VM_FAILED=$((SOCLE_VM_FAILED + 1))
        echo "not ok - $what"
        echo "#   command: $*  (exit $rc)"
        [[ -n $out ]] && printf '%s\n' "$out" | tail -n 40 | sed 's/^/#   /'
    fi
    return "$rc"
}

# wait_until SECS "what" CMD...: run CMD every half second until it succeeds,
# for at most SECS; recorded like check (last attempt's output on failure).
wait_until() {
    local secs=$1 what=$2; shift 2
    local deadline=$((SECONDS + secs)) rc
    while :; do
        rc=0
        _vm_capture "$@" || rc=$?
        ((rc == 0 || SECONDS >= deadline)) && break
        sleep 0.5
    done
    check "$what (within ${secs}s)" _vm_replay "$rc" "$SOCLE_VM_OUT"
}
_vm_replay() { [[ -z $2 ]] || printf '%s\n' "$2"; return "$1"; }

# Run CMD in this shell with stdout+stderr in SOCLE_VM_OUT; return its code.
_vm_capture() {
    local file rc=0
    file=$(mktemp "${TMPDIR:-/tmp}/socle-vm-out.XXXXXX") || return 1
    "$@" >"$file" 2>&1 </dev/null || rc=$?
    SOCLE_VM_OUT=$(cat "$file")
    rm -f "$file"
    return "$rc"
}

# Print the one closing line and fail if anything failed.
summary() {
    SOCLE_VM_SUMMARY_DONE=1
    echo "$SOCLE_VM_PASSED passed, $SOCLE_VM_FAILED failed"
    ((SOCLE_VM_FAILED == 0))
}
