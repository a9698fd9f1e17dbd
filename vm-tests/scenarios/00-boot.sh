#!/usr/bin/env bash
# 00-boot: the harness itself works. A node boots to a running systemd, its
# system bus answers, runc runs a container under the node's systemd
# (--systemd-cgroup), and the node boots again after a reboot.
set -euo pipefail
# shellcheck source=../lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
node_cleanup_on_exit

node=boot0
bundle=/var/tmp/bb            # inside the node

# The bus answers, and systemd serves its API on it.
bus_answers() {
    node_exec "$node" busctl --no-pager status >/dev/null &&
        node_exec "$node" busctl --no-pager get-property org.freedesktop.systemd1 \
            /org/freedesktop/systemd1 org.freedesktop.systemd1.Manager Version
}

# A bundle with a static busybox as its only file, config from `runc spec`.
make_bundle() {
    local root config
    root=$(node_root "$node")
    node_copy_in "$node" /bin/busybox "$bundle/rootfs/bin/busybox" &&
        node_exec "$node" runc spec --bundle "$bundle" || return 1
    config="$root$bundle/config.json"
    jq '.process.terminal = false
        | .process.args = ["/bin/busybox", "echo", "hello-from-runc"]' \
        "$config" >"$config.new" && mv "$config.new" "$config"
}

# Run the bundle as a transient service of the node's systemd; runc asks
# that systemd (over D-Bus) for the container's scope.
runc_says_hello() {
    local out
    out=$(node_exec "$node" systemd-run --quiet --wait --pipe \
        runc --systemd-cgroup run --bundle "$bundle" bbtest)
    echo "output: $out"
    [[ $out == hello-from-runc ]]
}

# "BOOT_ID MACHINE_ID" of the node.
ids() { node_exec "$node" cat /proc/sys/kernel/random/boot_id /etc/machine-id | tr '\n' ' '; }

# boot_id is fresh on every boot; machine-id stays with the node.
rebooted_same_node() {
    local before after
    read -ra before <<<"$1"
    read -ra after <<<"$2"
    echo "before: ${before[*]}"
    echo "after:  ${after[*]}"
    [[ ${before[0]} != "${after[0]}" && ${before[1]} == "${after[1]}" ]]
}

check "node root is built or cached" node_root_cached
check "host busybox is static, fit for a bare rootfs" sh -c '! ldd /bin/busybox'
check "fresh copy of the root for $node" node_new "$node"
check "$node boots" node_boot "$node"
check "systemd in $node is running" node_is_up "$node"
check "system bus in $node answers" bus_answers
check "hostname is the node name" test "$(node_exec "$node" hostname)" = "$node"
check "runc bundle set up inside $node" make_bundle
check "runc --systemd-cgroup runs a container under systemd-run" runc_says_hello

ids_before=$(ids)
check "$node reboots" node_reboot "$node"
check "systemd in $node is running after reboot" node_is_up "$node"
ids_after=$(ids)
check "new boot_id, same machine-id after reboot" rebooted_same_node "$ids_before" "$ids_after"
check "runc still works after reboot" runc_says_hello

check "$node is destroyed" node_destroy "$node"
check "nothing is left of $node" test ! -e "$(node_root "$node")"

summary
