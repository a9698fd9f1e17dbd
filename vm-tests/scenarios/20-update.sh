#!/usr/bin/env bash
# 20-update: update and rollback on a booted node. The greeter is installed,
# updated with a new value (the UUID is kept, the user's values too), updated
# again to nothing new, rolled back and forward, rebased onto version 2. An
# image whose templates need a value nobody gives is refused before the
# service is touched. Broken versions (a greeter that exits at start, a
# Type=notify unit that never sends READY=1, an image probe that never
# passes) are rolled back by socle itself, and the old version answers again;
# with --no-rollback the broken one stays until `socle rollback`. A stopped
# service stays stopped across an update, the updated version comes back by
# itself after a reboot, and the data directory survives all of it. Prints
# the update and rollback times as `# ` lines.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/../lib.sh"
source "$here/../socle.sh"
socle_scenario update0

fixtures=$here/../fixtures/update
port1=18081
port2=18082

silent() { ! in_node curl -fsS --max-time 2 "http://127.0.0.1:$1/"; }

# The slot the pointer designates ("hello.0" or "hello.1").
pointer() { in_node readlink "$containers/hello"; }
other_slot() { [[ $1 == hello.0 ]] && echo hello.1 || echo hello.0; }
uuid_of() { in_node cat "$containers/$1/info" | jq -r '.values.UUID'; }
listed() {   # listed STATE SLOT: socle list --json says so
    local row
    row=$(list_row hello)
    echo "socle list: $row"
    [[ $(jq -r .state <<<"$row") == "$1" && $(jq -r .slot <<<"$row") == "$2" ]]
}

# run_socle ARGS...: socle in the node; stdout, stderr, exit code and wall
# time in $work/out, $work/err, socle_rc, socle_secs.
socle_rc=0
socle_secs=
run_socle() {
    local t0
    t0=$(now)
    socle_rc=0
    socle "$@" >"$work/out" 2>"$work/err" || socle_rc=$?
    socle_secs=$(secs "$t0" "$(now)")
    cat "$work/out" "$work/err"
    echo "(exit $socle_rc, ${socle_secs} s)"
}
succeeds() { run_socle "$@"; ((socle_rc == 0)); }
# fails_saying REGEX ARGS...: socle exits 1 and stderr matches REGEX.
fails_saying() {
    local re=$1; shift
    run_socle "$@"
    ((socle_rc == 1)) && grep -Eq -- "$re" "$work/err"
}

# Timings: TITLE, command start, command seconds; then poll for the answer.
timing() { echo "# $1: socle command ${socle_secs} s; answering $(secs "$2" "$answered_at") s after the command started"; }

# The greeter counts its starts in /var/lib/hello/starts: it only grows.
starts=0
starts_now() { in_node cat /var/lib/hello/starts; }
starts_grew() {   # starts_grew [strict]
    local n
    n=$(starts_now)
    echo "starts: before $starts, now $n"
    if [[ ${1:-} == strict ]]; then ((n > starts)) || return 1; else ((n >= starts)) || return 1; fi
    starts=$n
}

# ---- images -----------------------------------------------------------------

check "image hello 1 builds" build_hello "$work/hello-v1.tar" --version 1
check "image hello 2 builds" build_hello "$work/hello-v2.tar" --version 2
check "image hello 3, greeter exits 1 at start, builds" build_hello "$work/hello-v3-exit1.tar" --version 3 \
    --add-file "$fixtures/hello-greeter-exit1:/usr/bin/hello-greeter"
check "image hello 3, Type=notify and no READY=1, builds" build_hello "$work/hello-v3-noready.tar" --version 3 \
    --add-file "$fixtures/notify.service.template:/exports/service.template"
check "image hello 3, probe that never passes, builds" build_hello "$work/hello-v3-badprobe.tar" --version 3 \
    --add-file "$fixtures/manifest-badprobe.json:/exports/manifest.json"
check "image hello 3, variable without default, builds" build_hello "$work/hello-v3-nodefault.tar" --version 3 \
    --add-file "$fixtures/manifest-nodefault.json:/exports/manifest.json" \
    --add-file "$fixtures/hello-nodefault.conf:/exports/hostfs/etc/hello/hello.conf"

archives=()
for a in hello-v1 hello-v2 hello-v3-exit1 hello-v3-noready hello-v3-badprobe hello-v3-nodefault; do
    archives+=("$work/$a.tar")
done
node_with_socle "$node" "${archives[@]}"

check "pull hello:1" socle pull --name hello:1 oci-archive:/var/tmp/hello-v1.tar
check "pull hello:2" socle pull --name hello:2 oci-archive:/var/tmp/hello-v2.tar
check "pull hello:3-exit1" socle pull --name hello:3-exit1 oci-archive:/var/tmp/hello-v3-exit1.tar
check "pull hello:3-noready" socle pull --name hello:3-noready oci-archive:/var/tmp/hello-v3-noready.tar
check "pull hello:3-badprobe" socle pull --name hello:3-badprobe oci-archive:/var/tmp/hello-v3-badprobe.tar
check "pull hello:3-nodefault" socle pull --name hello:3-nodefault oci-archive:/var/tmp/hello-v3-nodefault.tar

# ---- 1. install -------------------------------------------------------------

check "install hello:1 with PORT=$port1 RECEIVER=vm" \
    socle install --name hello --set PORT=$port1 --set RECEIVER=vm hello:1
check "systemctl start" in_node systemctl start hello.service
wait_until 30 "hello 1 answers on $port1" greets $port1 "Hello, vm! (hello 1)"
check "installed on slot 0" slot_is hello hello.0
check "data directory counts the first start" starts_grew strict

# ---- 2. update with a new value ---------------------------------------------

t0=$(now)
check "update --set PORT=$port2" succeeds update hello --set PORT=$port2
check "new version answers on $port2 with RECEIVER vm (polled)" poll_greets 60 $port2 "Hello, vm! (hello 1)"
timing "update hello --set PORT=$port2" "$t0"
check "$port1 no longer answers" silent $port1
check "pointer moved to slot 1" slot_is hello hello.1
check "socle list: running on slot 1" listed running 1
same_uuid() {
    local u0 u1
    u0=$(uuid_of hello.0) u1=$(uuid_of hello.1)
    echo "UUID hello.0: $u0, hello.1: $u1"
    [[ -n $u0 && $u0 != null && $u0 == "$u1" ]]
}
check "UUID is the same in both slots" same_uuid
check "data directory: counter grew" starts_grew strict

# ---- 3. nothing new ---------------------------------------------------------

pid_before=$(unit_prop hello MainPID)
info_before=$(in_node cat $containers/hello.0/info $containers/hello.1/info)
check "update --set PORT=$port2 again succeeds" succeeds update hello --set PORT=$port2
check "... says Latest version already installed." grep -qx "Latest version already installed." "$work/out"
check "... stays on slot 1" slot_is hello hello.1
unchanged() {
    local pid info
    pid=$(unit_prop hello MainPID)
    info=$(in_node cat $containers/hello.0/info $containers/hello.1/info)
    echo "MainPID before $pid_before, after $pid"
    [[ $pid == "$pid_before" && $pid != 0 ]] && [[ $info == "$info_before" ]]
}
check "... service not restarted, info files untouched" unchanged
check "... still answers" greets $port2 "Hello, vm! (hello 1)"

# ---- 4. rollback and forward again ------------------------------------------

t0=$(now)
check "rollback" succeeds rollback hello
check "the old deployment answers on $port1 again (polled)" poll_greets 60 $port1 "Hello, vm! (hello 1)"
timing "rollback hello (to PORT $port1)" "$t0"
check "rollback: on slot 0" slot_is hello hello.0
check "rollback: $port2 no longer answers" silent $port2
t0=$(now)
check "second rollback (forward)" succeeds rollback hello
check "answers on $port2 again (polled)" poll_greets 60 $port2 "Hello, vm! (hello 1)"
timing "rollback hello (forward, to PORT $port2)" "$t0"
check "forward: on slot 1" slot_is hello hello.1
check "data directory: counter grew" starts_grew strict

# ---- 5. rebase onto hello:2 -------------------------------------------------

t0=$(now)
check "update --rebase hello:2" succeeds update hello --rebase hello:2
check "hello 2 answers, RECEIVER and PORT kept (polled)" poll_greets 60 $port2 "Hello, vm! (hello 2)"
timing "update hello --rebase hello:2" "$t0"
check "rebase: on slot 0" slot_is hello hello.0
check "socle list: running on slot 0" listed running 0
image_is() { local i; i=$(socle list --json | jq -r '.[] | select(.name == "hello") | .image'); echo "image: $i"; [[ $i == "$1" ]]; }
check "socle list: image hello:2" image_is hello:2
check "data directory: counter grew" starts_grew strict

# ---- 6. a rebase that cannot render fails before the service is touched ----

good=$(pointer)
pid_before=$(unit_prop hello MainPID)
since_before=$(unit_prop hello ActiveEnterTimestamp)
check "rebase onto hello:3-nodefault fails naming GREETING" \
    fails_saying 'GREETING' update hello --rebase hello:3-nodefault
check "... and says the current deployment is unchanged" grep -q "unchanged" "$work/err"
never_stopped() {
    local pid since
    pid=$(unit_prop hello MainPID) since=$(unit_prop hello ActiveEnterTimestamp)
    echo "MainPID $pid_before -> $pid; ActiveEnterTimestamp $since_before -> $since"
    [[ $pid == "$pid_before" && $pid != 0 && $since == "$since_before" ]]
}
check "... the service was never stopped (MainPID, ActiveEnterTimestamp)" never_stopped
check "... the pointer did not move" slot_is hello "$good"
check "... no staging directory left" in_node sh -c "! ls -A $containers | grep -q staging"
check "... it still answers" greets $port2 "Hello, vm! (hello 2)"

# ---- 7. broken versions are rolled back by socle ----------------------------

# broken TITLE REASON_REGEX ARGS...: the update fails with REASON, socle rolls
# back by itself, the old version answers again on the old slot.
broken() {
    local title=$1 re=$2; shift 2
    local good good_n t0
    good=$(pointer)
    good_n=${good#hello.}
    t0=$(now)
    check "$title: update fails, rolled back, says why" fails_saying "$re" update hello "$@" || true
    check "$title: stderr says it rolled back" grep -q "rolled back" "$work/err" || true
    echo "# $title: socle update took ${socle_secs} s (until it had rolled back)"
    echo "# $title: $(head -c 240 "$work/err")"
    check "$title: hello 2 answers again (polled)" poll_greets 60 $port2 "Hello, vm! (hello 2)" || true
    [[ -z $answered_at ]] || timing "$title: update + automatic rollback" "$t0"
    answered_at=
    check "$title: pointer is back on $good" slot_is hello "$good" || true
    check "$title: socle list: running on slot $good_n" listed running "$good_n" || true
    check "$title: data directory: counter grew" starts_grew strict || true
}
broken "exit 1 at start (a)" 'not healthy: .*(failed|left the active state)' --rebase hello:3-exit1
check "(a): the unit's last log lines are in the error" grep -q "broken on purpose" "$work/err" || true
broken "Type=notify, no READY=1 (b)" 'not healthy: .*still starting after 15 s .*READY=1' --rebase hello:3-noready --timeout 15
broken "probe never passes (c)" 'not healthy: probe: .*/bin/false' --rebase hello:3-badprobe --timeout 10

# ---- 8. --no-rollback leaves the broken deployment --------------------------

good=$(pointer)
bad=$(other_slot "$good")
check "--no-rollback: update to the exit-1 greeter fails" \
    fails_saying 'left in place \(--no-rollback\)' update hello --rebase hello:3-exit1 --no-rollback
check "--no-rollback: the broken deployment stays (pointer moved to $bad)" slot_is hello "$bad"
check "--no-rollback: hello 2 does not answer" silent $port2 || true
# The broken greeter exits at once and Restart=on-failure restarts it until
# systemd's start limit: wait for that, so that the rollback below always
# meets the same state (a user comes back later, not within a second).
failed_unit() { local s; s=$(unit_prop hello ActiveState); echo "ActiveState: $s"; [[ $s == failed ]]; }
wait_until 30 "--no-rollback: the broken unit gives up (failed)" failed_unit || true
echo "# --no-rollback: hello.service is $(unit_prop hello ActiveState)/$(unit_prop hello SubState) before the rollback"
t0=$(now)
check "rollback after --no-rollback" succeeds rollback hello
check "rollback: back on $good" slot_is hello "$good"
check "rollback: hello 2 answers again (polled)" poll_greets 60 $port2 "Hello, vm! (hello 2)" || true
[[ -z $answered_at ]] || timing "rollback hello after --no-rollback" "$t0"
answered_at=
check "data directory: counter grew" starts_grew || true

# ---- 9. a stopped service stays stopped --------------------------------------

check "systemctl stop" in_node systemctl stop hello.service
t0=$(now)
check "update --set RECEIVER=quiet while stopped" succeeds update hello --set RECEIVER=quiet
echo "# update hello --set RECEIVER=quiet (service stopped): socle command ${socle_secs} s"
inactive() { local s; s=$(unit_prop hello ActiveState); echo "ActiveState: $s"; [[ $s == inactive ]]; }
check "... the unit is still inactive" inactive
check "... nothing answers" silent $port2
check "systemctl start" in_node systemctl start hello.service
wait_until 30 "Hello, quiet! (hello 2) answers" greets $port2 "Hello, quiet! (hello 2)"
check "data directory: counter grew" starts_grew strict

# ---- 10. reboot ---------------------------------------------------------------

slot=$(pointer)
check "node reboots" node_reboot "$node" --private-network
wait_until 60 "the updated version answers after reboot" greets $port2 "Hello, quiet! (hello 2)"
check "after reboot: same slot" slot_is hello "$slot"
check "after reboot: socle list says running" listed running "${slot#hello.}"

# ---- 11. data ----------------------------------------------------------------

check "data directory: counter grew over the reboot" starts_grew strict
echo "# the greeter started $starts times"
check "uninstall" socle uninstall hello
check "data directory is left" in_node test -s /var/lib/hello/starts
check "node is destroyed" node_destroy "$node"

summary
