#!/usr/bin/env bash
# 10-install: the first whole path on a booted node. Pull the greeter from an
# oci-archive, install it, start it with systemctl, it answers with the --set
# value, `socle list` says running; stop, uninstall, only the data directory
# is left. Then an installed and enabled container comes back by itself
# after a reboot, with no socle involved.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/../lib.sh"
source "$here/../socle.sh"
socle_scenario install0

port=18080

state_is() { [[ $(list_row "$1" | jq -r .state) == "$2" ]]; }
absent() { in_node test ! -e "$1"; }
present() { in_node test -e "$1"; }
only_data_left() {
    absent /etc/systemd/system/hello.service &&
        absent /etc/tmpfiles.d/hello.conf &&
        absent /etc/hello/hello.conf &&
        absent /var/lib/socle/containers/hello &&
        absent /var/lib/socle/containers/hello.0 &&
        absent /etc/systemd/system/multi-user.target.wants/hello.service &&
        present /var/lib/hello/starts
}

check "the greeter image builds" build_hello "$work/hello.tar"
node_with_socle "$node" "$work/hello.tar"

check "pull" socle pull oci-archive:/var/tmp/hello.tar
check "images list shows hello:1" in_node sh -c 'socle images list --json | grep -q "\"name\": \"hello:1\""'
check "install with --set" socle install --system --name hello --set PORT=$port --set RECEIVER=vm hello:1
check "unit is enabled" in_node systemctl is-enabled hello.service
check "data directory made by tmpfiles" present /var/lib/hello
check "host file rendered" in_node grep -qx "PORT=$port" /etc/hello/hello.conf
check "systemctl start" in_node systemctl start hello.service
wait_until 30 "greeter answers with the --set value" greets $port "Hello, vm! (hello 1)"
check "socle list says running" state_is hello running
check "runc sees the container" in_node sh -c 'runc list | grep -q "^hello "'
check "systemctl stop" in_node systemctl stop hello.service
check "stopping is not a failure" state_is hello inactive
check "uninstall" socle uninstall hello
check "nothing left but the data directory" only_data_left
check "socle list is empty" in_node sh -c '[ "$(socle list --all --json)" = "[]" ]'

# Boot-time: an enabled container runs again after a reboot without socle.
check "install again" socle install --name hello --set PORT=$port --set RECEIVER=boot hello:1
check "node reboots" node_reboot "$node" --private-network
wait_until 60 "greeter is back after reboot" greets $port "Hello, boot! (hello 1)"
check "socle list says running after reboot" state_is hello running
check "data survived: start counter is 2" in_node sh -c '[ "$(cat /var/lib/hello/starts)" = 2 ]'
check "uninstall after reboot" socle uninstall hello
check "node is destroyed" node_destroy "$node"

summary
