#!/usr/bin/env bash
# 40-apply: a node declared in files. scripts/install puts socle and its boot
# units into a fresh node root, with two greeters declared in
# /etc/socle/containers.d (web after base) and their seed archives; the node
# boots with no network to the outside and both come up by themselves in
# that boot, base before web (systemd's own timestamps), with no socle
# process left and nothing for a second apply to do. A changed value is
# applied by the path unit and health-gated; a broken new image is rolled
# back and the old one keeps answering; a removed declaration is
# uninstalled while a container installed by hand is left alone; a bad
# declaration is named and the others stay; after a reboot everything is
# back, and the boot's apply had nothing to do (its cost is logged).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/../lib.sh"
source "$here/../socle.sh"
socle_scenario apply0
fixtures=$socle_repo/vm-tests/fixtures/update

declare_in() {   # declare_in ROOT NAME TEXT
    mkdir -p "$1/etc/socle/containers.d" && printf '%s\n' "$3" >"$1/etc/socle/containers.d/$2.toml"
}
# A declaration of the greeter: NAME IMAGE SEED PORT [AFTER].
greeter() {
    printf 'image = "%s"\nseed = "oci-archive:/usr/share/socle/images/%s"\nafter = [%s]\n[values]\nPORT = "%s"\nRECEIVER = "%s"\n' \
        "$2" "$3" "${5:+\"$5\"}" "$4" "$1"
}
# monotonic NAME PROPERTY: a unit's timestamp in µs since boot.
monotonic() { in_node systemctl show -P "$2" "$1.service"; }
base_started_first() {
    local base web
    base=$(monotonic base ActiveEnterTimestampMonotonic)
    web=$(monotonic web ExecMainStartTimestampMonotonic)
    echo "base active at $base µs, web started at $web µs"
    ((base > 0 && web >= base))
}
no_socle_running() { ! in_node busybox pgrep -x socle; }
applies_nothing() {
    local out
    out=$(in_node socle apply --offline --json)
    echo "$out"
    jq -e '[.steps[] | select(.action != "unchanged")] | length == 0' <<<"$out" >/dev/null
}
# The boot's `socle apply --offline` run time, from systemd's timestamps.
apply_cost() {
    local start end
    start=$(in_node systemctl show -P ExecMainStartTimestampMonotonic socle-apply.service)
    end=$(in_node systemctl show -P ExecMainExitTimestampMonotonic socle-apply.service)
    echo "# time: socle-apply.service at boot: $(((end - start) / 1000)) ms" >&"$SOCLE_VM_LOG_FD"
    ((end > start))
}

check "socle binary was built ($socle_bin)" test -x "$socle_bin"
check "image hello 1 builds" build_hello "$work/hello-v1.tar" --version 1
check "image hello 2 builds" build_hello "$work/hello-v2.tar" --version 2
check "image hello 3, greeter exits 1 at start, builds" build_hello "$work/hello-v3-exit1.tar" --version 3 \
    --add-file "$fixtures/hello-greeter-exit1:/usr/bin/hello-greeter"

check "node root is ready" node_root_cached
check "fresh node" node_new "$node"
root=$(node_root "$node")
check "scripts/install into the node root" "$socle_repo/scripts/install" --root "$root" --binary "$socle_bin"
for a in hello-v1 hello-v2 hello-v3-exit1; do
    check "seed $a goes in" install -D -m 0644 "$work/$a.tar" "$root/usr/share/socle/images/$a.tar"
done
check "base is declared" declare_in "$root" base "$(greeter base hello:1 hello-v1.tar 18401)"
check "web is declared, after base" declare_in "$root" web "$(greeter web hello:1 hello-v1.tar 18402 base)"

t0=$(now)
check "the node boots (no network to the outside)" node_boot "$node" --private-network
wait_until 60 "base answers" greets 18401 "Hello, base! (hello 1)"
wait_until 30 "web answers" greets 18402 "Hello, web! (hello 1)"
echo "# time: power-on to both declared greeters answering: $(secs "$t0" "$(now)") s" >&"$SOCLE_VM_LOG_FD"
check "base started before web (systemd's timestamps)" base_started_first
check "web's unit is ordered after base's" in_node sh -c 'systemctl show -P After web.service | grep -qw base.service'
check "no socle process is left running" no_socle_running
check "a second apply has nothing to do" applies_nothing
check "the boot's apply cost is known" apply_cost

# A container installed by hand, beside the declared ones.
check "install one by hand" in_node sh -c 'socle pull oci-archive:/usr/share/socle/images/hello-v1.tar && socle install --name manual --set PORT=18403 --set RECEIVER=manual hello:1 && systemctl start manual'
wait_until 30 "manual answers" greets 18403 "Hello, manual! (hello 1)"

# Changed in place: the path unit applies it, through the health gate.
check "web's value changes" in_node sed -i 's/18402/18404/' /etc/socle/containers.d/web.toml
wait_until 60 "the path unit applied it: web answers on the new port" greets 18404 "Hello, web! (hello 1)" || {
    in_node journalctl -b --no-pager -o short-monotonic -u socle-apply.path -u socle-apply-network.service -u socle-apply.service | tail -40
    in_node socle status
    false
}

# A new image that does not stay up is rolled back by the gate.
broken_image() {
    local out rc=0
    declare_in "$root" web "$(greeter web hello:3 hello-v3-exit1.tar 18404 base)"
    out=$(in_node socle apply --offline --json) || rc=$?
    echo "$out"
    ((rc == 1)) && jq -e '.steps[] | select(.name == "web") | .status == "failed" and (.reason | test("rolled back"))' <<<"$out" >/dev/null
}
check "a broken new image fails its apply and is rolled back" broken_image
status_reports_it() {
    local s
    s=$(in_node socle status --json)
    echo "$s"
    jq -e '.containers[] | select(.name == "web") | .last.ok == false and (.last.operation == "apply: update") and (.last.message | test("rolled back")) and .current.image == "hello:1"' <<<"$s" >/dev/null
}
check "socle status reports the failed update and the rollback" status_reports_it
not_tried_again() {
    local pid out rc=0
    pid=$(in_node systemctl show -P MainPID web.service)
    out=$(in_node socle apply --offline --json) || rc=$?
    echo "$out"
    ((rc == 1)) &&
        jq -e '.steps[] | select(.name == "web") | .status == "failed" and (.reason | test("not tried again"))' <<<"$out" >/dev/null &&
        [[ $(in_node systemctl show -P MainPID web.service) == "$pid" ]]
}
check "the same broken declaration is not tried again (web keeps running)" not_tried_again
wait_until 30 "web still answers with hello 1" greets 18404 "Hello, web! (hello 1)"
check "a good new image is declared" declare_in "$root" web "$(greeter web hello:2 hello-v2.tar 18404 base)"
check "and applied" in_node socle apply --offline
wait_until 30 "web answers with hello 2" greets 18404 "Hello, web! (hello 2)" || { in_node socle status; in_node journalctl -n 30 --no-pager -u socle-apply-network.service; in_node cat /etc/socle/containers.d/web.toml; false; }

# A bad declaration is named; the others stay as they are.
bad_declaration() {
    local out rc=0
    declare_in "$root" bad "$(printf 'image = "hello:1"\ncolour = "blue"')"
    out=$(in_node socle apply --offline 2>&1) || rc=$?
    echo "$out"
    ((rc == 1)) && grep -q '^! bad: left out: /etc/socle/containers.d/bad.toml:2: unknown field `colour`' <<<"$out"
}
check "a bad declaration is named with its file and line" bad_declaration
check "the bad declaration goes" in_node rm /etc/socle/containers.d/bad.toml

# Removed: uninstalled; the hand-installed one is untouched.
check "web no longer needs base" declare_in "$root" web "$(greeter web hello:2 hello-v2.tar 18404)"
check "base's declaration is removed" in_node rm /etc/socle/containers.d/base.toml
wait_until 60 "base is uninstalled" in_node test ! -e /etc/systemd/system/base.service
check "web still answers" greets 18404 "Hello, web! (hello 2)"
check "manual still answers" greets 18403 "Hello, manual! (hello 1)"

check "the node reboots" node_reboot "$node" --private-network
wait_until 60 "web answers after the reboot" greets 18404 "Hello, web! (hello 2)"
wait_until 30 "manual answers after the reboot" greets 18403 "Hello, manual! (hello 1)"
check "base stayed uninstalled" in_node test ! -e /etc/systemd/system/base.service
apply_units_ok() {
    in_node journalctl -b --no-pager -o cat -u socle-apply.service -u socle-apply-network.service
    ! in_node systemctl is-failed --quiet socle-apply.service socle-apply-network.service
}
check "the boot's applies succeeded" apply_units_ok
check "nothing to apply after the reboot" applies_nothing
check "the boot's apply cost is known (no change)" apply_cost
check "node is destroyed" node_destroy "$node"

summary
