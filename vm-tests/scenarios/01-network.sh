#!/usr/bin/env bash
# 01-network: nodes with their own network, as dockerd and clusters need.
# Two nodes with --private-network run at once, each with a writable
# /proc/sys/net of its own; two nodes on a bridge the test creates reach
# each other (ping and TCP). All addresses live only inside the nodes.
set -euo pipefail
# shellcheck source=../lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
node_cleanup_on_exit

bridge=socvm$$                 # at most 15 characters
net=10.231.0                   # node N gets $net.N/24 on its host0

# --- two nodes with --private-network, side by side

only_loopback() {
    local links
    links=$(node_exec "$1" ip -o link show | awk -F': ' '{print $2}' | tr '\n' ' ')
    echo "links: $links"
    [[ $links == "lo " ]]
}

# The node may change its own sysctls (read-only without a private network)
# and the host's stay as they were.
own_sysctl() {
    local host_before
    host_before=$(cat /proc/sys/net/ipv4/ip_forward)
    node_exec "$1" sh -c 'echo 1 >/proc/sys/net/ipv4/ip_forward' &&
        test "$(node_exec "$1" cat /proc/sys/net/ipv4/ip_forward)" = 1 &&
        test "$(cat /proc/sys/net/ipv4/ip_forward)" = "$host_before"
}

for n in priv1 priv2; do
    check "fresh copy for $n" node_new "$n"
    check "$n boots with --private-network" node_boot "$n" --private-network
done
for n in priv1 priv2; do
    check "$n is still up with the other running" node_is_up "$n"
    check "$n has only a loopback" only_loopback "$n"
    check "$n has its own writable /proc/sys/net" own_sysctl "$n"
done
check "priv1 is destroyed" node_destroy priv1
check "priv2 is destroyed" node_destroy priv2

# --- two nodes on one bridge

check "bridge $bridge created" ip link add "$bridge" type bridge
at_exit ip link del "$bridge"
check "bridge $bridge up" ip link set "$bridge" up

for i in 1 2; do
    n=bridged$i
    check "fresh copy for $n" node_new "$n"
    check "$n boots on $bridge" node_boot "$n" --network-bridge="$bridge"
    check "$n gets $net.$i on host0" \
        node_exec "$n" sh -c "ip link set host0 up && ip addr add $net.$i/24 dev host0"
done
wait_until 10 "bridged2 pings bridged1" node_exec bridged2 busybox ping -c 1 -W 1 "$net.1"

# A one-shot TCP server on bridged1, as a transient service of its systemd.
tcp_reaches() {
    local out
    node_exec bridged1 systemd-run --quiet --unit=hello-tcp \
        busybox nc -l -p 8080 -e busybox echo hello-over-bridge || return 1
    out=$(node_exec bridged2 sh -c "for i in 1 2 3 4 5 6 7 8 9 10; do
              busybox nc -w 2 $net.1 8080 </dev/null && exit 0; sleep 0.3; done; exit 1")
    echo "output: $out"
    [[ $out == hello-over-bridge ]]
}
check "bridged2 reaches a TCP server on bridged1" tcp_reaches

check "bridged1 is destroyed" node_destroy bridged1
check "bridged2 is destroyed" node_destroy bridged2
check "nspawn removed the veths" sh -c "! ip link show vb-bridged1 && ! ip link show vb-bridged2" 

summary
