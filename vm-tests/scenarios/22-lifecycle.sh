#!/usr/bin/env bash
# 22-lifecycle: the container lives and dies with its unit, on a booted node.
# The greeter's processes are in the unit's own cgroup (a `container` child
# of hello.service, not a runc-hello.scope beside it): `systemctl status`
# shows them, /proc/PID/cgroup says so. `systemctl stop` leaves no process
# and no runc state. A crash (SIGKILL to the whole unit, or to runc alone,
# which leaves the container's init behind) is cleaned up by systemd and
# the restart works: no "container with given ID already exists". A
# container that ignores SIGTERM is killed within the unit's TimeoutStopSec,
# by `systemctl stop` and by `socle update`, which says so. Type=notify
# containers that never send READY=1, or die before it, leave nothing behind.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/../lib.sh"
source "$here/../socle.sh"
socle_scenario life0

port=18085
port_stubborn=18086
fixtures=$here/../fixtures

# The pid of container NAME's init, from runc's own state.
init_pid() { in_node runc state "$1" | jq -r .pid; }
# Every pid in the cgroup subtree of NAME.service (empty when it is gone).
unit_pids() {
    in_node sh -c "d=/sys/fs/cgroup/system.slice/$1.service; [ -d \$d ] || exit 0
        find \$d -name cgroup.procs -exec cat {} +"
}
no_runc_state() {
    local out
    out=$(in_node runc list -q)
    echo "runc list: ${out:-nothing}"
    ! grep -qx "$1" <<<"$out" && in_node test ! -e "/run/runc/$1"
}
# Nothing of container NAME is left: no process of the unit, no runc state,
# and PID (its old init) is gone.
nothing_left() {
    local name=$1 pid=$2 pids
    pids=$(unit_pids "$name")
    echo "processes of $name.service: ${pids:-none}"
    [[ -z $pids ]] && no_runc_state "$name" && in_node sh -c "! kill -0 $pid 2>/dev/null"
}

# ---- images and node ---------------------------------------------------------

check "the greeter image builds" build_hello "$work/hello.tar"
check "the stubborn greeter (ignores SIGTERM, TimeoutStopSec=4) builds" \
    build_hello "$work/stubborn.tar" --version 2 \
    --add-file "$fixtures/lifecycle/hello-greeter-stubborn:/usr/bin/hello-greeter" \
    --add-file "$fixtures/lifecycle/stubborn.service.template:/exports/service.template"
check "a Type=notify greeter that never sends READY=1 (TimeoutStartSec=4) builds" \
    build_hello "$work/noready.tar" --version 3 \
    --add-file "$fixtures/lifecycle/notify-quick.service.template:/exports/service.template"
check "a Type=notify greeter that exits before READY=1 builds" \
    build_hello "$work/dies.tar" --version 4 \
    --add-file "$fixtures/update/hello-greeter-exit1:/usr/bin/hello-greeter" \
    --add-file "$fixtures/lifecycle/notify-quick.service.template:/exports/service.template"
node_with_socle "$node" "$work/hello.tar" "$work/stubborn.tar" "$work/noready.tar" "$work/dies.tar"
for image in hello stubborn noready dies; do
    check "pull $image" socle pull --name "$image:1" "oci-archive:/var/tmp/$image.tar"
done

# ---- 1. the container is in its unit's cgroup --------------------------------

check "install hello" socle install --name hello --set PORT=$port --set RECEIVER=life hello:1
check "systemctl start hello" in_node systemctl start hello.service
wait_until 30 "hello answers" greets $port "Hello, life! (hello 1)"
pid=$(init_pid hello)
in_cgroup() {
    local cg
    cg=$(in_node cat "/proc/$pid/cgroup")
    echo "container init $pid: $cg"
    # The unified hierarchy is the one systemd manages in the node.
    grep -qx "0::/system.slice/hello.service/container" <<<"$cg"
}
check "the container's init is in hello.service/container (/proc/PID/cgroup)" in_cgroup
check "there is no runc-hello.scope" in_node test ! -e /sys/fs/cgroup/system.slice/runc-hello.scope
status_shows() {
    local out
    out=$(in_node systemctl status --no-pager --lines=0 hello.service) || true
    echo "$out"
    grep -q "─container$" <<<"$out" && grep -q "httpd -f -p $port" <<<"$out" && grep -q "─ *$pid " <<<"$out"
}
check "systemctl status shows the container's processes" status_shows
check "the unit delegates its cgroup (Delegate=yes, KillMode=mixed)" \
    in_node sh -c '[ "$(systemctl show -P Delegate hello)" = yes ] && [ "$(systemctl show -P KillMode hello)" = mixed ]'

# ---- 2. stop leaves nothing --------------------------------------------------

check "systemctl stop hello" in_node systemctl stop hello.service
check "after stop: no process, no runc state, the old init is gone" nothing_left hello "$pid"
check "systemctl start hello again" in_node systemctl start hello.service
wait_until 30 "hello answers again" greets $port "Hello, life! (hello 1)"

# ---- 3. crashes are cleaned up and the restart works -------------------------

# restarted_after CMD...: CMD kills something; systemd restarts the unit
# (Restart=on-failure) and a new container answers.
restarted_after() {
    local before after
    before=$(init_pid hello)
    in_node "$@"
    wait_until 30 "hello answers after: $*" greets $port "Hello, life! (hello 1)" >/dev/null || return 1
    after=$(init_pid hello)
    echo "container init before $before, after $after; NRestarts $(unit_prop hello NRestarts)"
    [[ -n $after && $after != "$before" && $after != null ]] && in_node sh -c "! kill -0 $before 2>/dev/null"
}
check "SIGKILL to the whole unit: restarted, old container gone" \
    restarted_after systemctl kill --signal=KILL hello.service
check "SIGKILL to runc alone (the container's init survives it): restarted, old container gone" \
    restarted_after systemctl kill --signal=KILL --kill-whom=main hello.service
no_exists_error() {
    ! in_node journalctl -u hello.service --no-pager -o cat | grep -i "already exists"
}
check "the journal never says 'container with given ID already exists'" no_exists_error

# ---- 4. a container that ignores SIGTERM -------------------------------------

check "install stubborn" socle install --name stubborn --set PORT=$port_stubborn stubborn:1
check "systemctl start stubborn" in_node systemctl start stubborn.service
wait_until 30 "stubborn answers" greets $port_stubborn "stubborn on $port_stubborn"
spid=$(init_pid stubborn)
stop_secs=
timed_stop() {
    local t0 log
    t0=$(now)
    in_node systemctl stop stubborn.service || true
    stop_secs=$(secs "$t0" "$(now)")
    log=$(in_node journalctl -u stubborn.service --no-pager -o cat)
    echo "systemctl stop took $stop_secs s; Result=$(unit_prop stubborn Result)"
    # systemd's own account: SIGTERM was ignored until TimeoutStopSec, then SIGKILL.
    grep -F "State 'stop-sigterm' timed out. Killing." <<<"$log" &&
        [[ $(unit_prop stubborn ActiveState) != active ]]
}
check "systemctl stop kills it when TimeoutStopSec runs out (SIGKILL)" timed_stop
echo "# time: systemctl stop of a container ignoring SIGTERM (TimeoutStopSec=4): $stop_secs s" >&"$SOCLE_VM_LOG_FD"
check "after the forced stop: no process, no runc state" nothing_left stubborn "$spid"
check "systemctl start stubborn again" in_node systemctl start stubborn.service
wait_until 30 "stubborn answers again" greets $port_stubborn "stubborn on $port_stubborn"
spid=$(init_pid stubborn)
update_says_killed() {
    local out rc=0
    out=$(socle update stubborn --set PORT=$((port_stubborn + 10)) 2>&1) || rc=$?
    echo "$out (exit $rc)"
    ((rc == 0)) && grep -q "did not stop on SIGTERM within 4 s" <<<"$out" && grep -q SIGKILL <<<"$out"
}
check "socle update of it says the old container was killed after TimeoutStopSec" update_says_killed
check "... the old container is gone" in_node sh -c "! kill -0 $spid 2>/dev/null"
wait_until 30 "... the new one answers" greets $((port_stubborn + 10)) "stubborn on $((port_stubborn + 10))"
check "uninstall stubborn" socle uninstall stubborn
check "after uninstall: nothing of stubborn left" no_runc_state stubborn

# ---- 5. Type=notify containers that fail their start -------------------------

failed_start_leaves_nothing() {
    local name=$1 rc=0
    socle install --name "$name" "$name:1" >/dev/null || return 1
    in_node systemctl start "$name.service" || rc=$?
    echo "systemctl start $name: exit $rc; ActiveState $(unit_prop "$name" ActiveState), Result $(unit_prop "$name" Result)"
    ((rc != 0)) && [[ -z $(unit_pids "$name") ]] && no_runc_state "$name"
}
check "never READY=1: the start fails, nothing left" failed_start_leaves_nothing noready
check "exits before READY=1: the start fails, nothing left" failed_start_leaves_nothing dies
check "uninstall noready" socle uninstall noready
check "uninstall dies" socle uninstall dies

check "uninstall hello" socle uninstall hello
check "after uninstall: nothing of hello left" no_runc_state hello
check "$node is destroyed" node_destroy "$node"

summary
