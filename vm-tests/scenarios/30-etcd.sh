#!/usr/bin/env bash
# 30-etcd: etcd from Debian's packages as a system container on a booted
# node. images/etcd is built twice (same digest: reproducible) plus a
# version 2; on the node it is pulled, installed with the defaults (client
# 2379, peer 2380 on 127.0.0.1) and started: the unit is Type=notify, so
# `active` means etcd's READY=1 got through runc. The host-side client
# (/usr/local/bin/etcdctl-etcd, from hostfs, renamed per instance) writes
# and reads a key. An update with a new value and a rebase onto version 2
# pass the health gate (the image's probe is `etcdctl endpoint health`) and
# keep the key; so do a rollback, and an uninstall + reinstall (the data
# directory /var/lib/etcd survives). A second instance with other ports runs
# beside the first. Prints image sizes and step timings as `# ` lines.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/../lib.sh"
source "$here/../socle.sh"
socle_scenario etcd0

# value_is INSTANCE KEY VALUE: etcdctl-INSTANCE (the host-side client) reads it.
value_is() {
    local v
    v=$(in_node "etcdctl-$1" get --print-value-only "$2" 2>&1) || { echo "$v"; return 1; }
    echo "$2 = $v"
    [[ $v == "$3" ]]
}
# listed_with FIELD VALUE: socle list --json has etcd with .FIELD == VALUE (jq on the host).
listed_with() {
    local row
    row=$(list_row etcd)
    echo "socle list: $row"
    [[ $(jq -r ".$1" <<<"$row") == "$2" ]]
}
value_set() { in_node cat /var/lib/socle/containers/etcd/info | jq -e ".values.$1 == \"$2\""; }
healthy() { in_node etcdctl-etcd endpoint health; }

check "etcd image builds (Debian etcd-server/etcd-client)" timed "build etcd:1" build_image etcd etcd
check "etcd image builds again" build_image etcd etcd-again
check "same digest twice (reproducible)" same_digest etcd etcd-again
check "etcd:2 builds (version label bumped)" build_image etcd etcd-v2 --version 2
echo "# size: archive $(stat -c %s "$work/etcd.tar") bytes ($(du -h "$work/etcd.tar" | cut -f1)): $(ls -l "$work/etcd.tar")" >&"$SOCLE_VM_LOG_FD"
node_with_socle "$node" "$work/etcd.tar" "$work/etcd-v2.tar"

check "pull etcd:1" timed "pull etcd:1" socle pull --name etcd:1 oci-archive:/var/tmp/etcd.tar
check "pull etcd:2" socle pull --name etcd:2 oci-archive:/var/tmp/etcd-v2.tar
in_node socle images list >&"$SOCLE_VM_LOG_FD" || true
size_is_listed() { socle images list --json | jq -e '.[] | select(.name == "etcd:1")'; }
check "images list shows etcd:1 with its size" size_is_listed
check "install etcd" socle install --name etcd etcd:1
check "data directory made by tmpfiles (0700)" in_node sh -c '[ "$(stat -c %a /var/lib/etcd)" = 700 ]'
check "host-side etcdctl-etcd installed, executable" in_node test -x /usr/local/bin/etcdctl-etcd
check "unit is Type=notify" in_node sh -c '[ "$(systemctl show -P Type etcd.service)" = notify ]'
check "systemctl start (returns once READY=1 came)" timed "systemctl start etcd (to READY=1)" in_node systemctl start etcd.service
check "etcd is active" active etcd
check "endpoint health from the host side" healthy
check "put foo bar" in_node etcdctl-etcd put foo bar
check "get foo = bar" value_is etcd foo bar
check "etcd data is in /var/lib/etcd on the node" in_node test -d /var/lib/etcd/member/wal
check "socle list says running" listed_with state running

# update with a harmless new value: health gate (active + probe) passes
check "update --set ETCD_LOG_LEVEL=warn passes the health gate" timed "update --set" socle update etcd --set ETCD_LOG_LEVEL=warn
check "active after update" active etcd
check "update: on the other slot (etcd.1)" slot_is etcd etcd.1
check "data kept across update" value_is etcd foo bar
check "put foo2 after update" in_node etcdctl-etcd put foo2 baz

check "update --rebase etcd:2 passes the health gate" timed "update --rebase etcd:2" socle update etcd --rebase etcd:2
check "active after rebase" active etcd
check "data kept across rebase" value_is etcd foo2 baz
check "rebase: socle list says etcd:2" listed_with image etcd:2
check "the --set value was kept by the rebase" value_set ETCD_LOG_LEVEL warn

check "rollback" timed "rollback" socle rollback etcd
wait_until 30 "active after rollback" active etcd
check "data kept across rollback" value_is etcd foo bar
check "rollback: back on etcd:1" listed_with image etcd:1

# a second instance beside the first: other ports, other data dir, own client
check "install a second instance etcd-b on 2479/2480" socle install --name etcd-b \
    --set ETCD_NAME=b --set ETCD_LISTEN_CLIENT_URLS=http://127.0.0.1:2479 \
    --set ETCD_ADVERTISE_CLIENT_URLS=http://127.0.0.1:2479 \
    --set ETCD_LISTEN_PEER_URLS=http://127.0.0.1:2480 \
    --set ETCD_INITIAL_ADVERTISE_PEER_URLS=http://127.0.0.1:2480 \
    --set ETCD_INITIAL_CLUSTER=b=http://127.0.0.1:2480 etcd:1
check "systemctl start etcd-b" in_node systemctl start etcd-b.service
check "etcd-b is active" active etcd-b
check "etcd-b: put k v through etcdctl-etcd-b" in_node etcdctl-etcd-b put k v
check "etcd-b: get k = v" value_is etcd-b k v
check "etcd-b has its own data (no foo)" value_is etcd-b foo ""
check "etcd (the first instance) has no k" value_is etcd k ""
check "uninstall etcd-b" socle uninstall etcd-b

# uninstall + reinstall: the data directory survives
check "systemctl stop etcd" in_node systemctl stop etcd.service
check "uninstall etcd" timed "uninstall" socle uninstall etcd
check "host-side client removed" in_node test ! -e /usr/local/bin/etcdctl-etcd
check "data directory left behind" in_node test -d /var/lib/etcd/member
check "reinstall etcd:2" socle install --name etcd etcd:2
check "systemctl start after reinstall" in_node systemctl start etcd.service
check "active after reinstall" active etcd
check "data survived uninstall + reinstall" value_is etcd foo bar
check "and foo2 too" value_is etcd foo2 baz

# after a reboot it comes back by itself (enabled unit, no socle involved)
check "node reboots" node_reboot "$node" --private-network
wait_until 60 "etcd is active after reboot" active etcd
check "data after reboot" value_is etcd foo bar

in_node socle images list >&"$SOCLE_VM_LOG_FD" || true
check "images list --json" log_image_sizes
check "uninstall" socle uninstall etcd
check "node is destroyed" node_destroy "$node"

summary
