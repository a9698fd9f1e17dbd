#!/usr/bin/env bash
# 41-cloud-init: Debian's cloud-init on a node's first boot. The node root
# (the standard one plus cloud-init) gets socle and its boot units from
# scripts/install and the etcd image as a seed archive, as an OS image
# would carry them, and docs/cloud-init/etcd.yaml as a NoCloud seed: it
# boots with no network to the outside and, with no manual step, etcd runs
# and takes a write. Both examples of docs/cloud-init pass cloud-init's own
# schema check, and the Magnum-like one (etcd, flanneld, dockerd, whose
# flanneld binary is not available here) plans as three installs in
# dependency order with `socle apply --dry-run`.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/../lib.sh"
source "$here/../socle.sh"
socle_scenario cinit0
examples=$socle_repo/docs/cloud-init

# The standard node root plus Debian's cloud-init (apt-get in a chroot, from
# the archive the root's sources.list names) and the en_US.UTF-8 locale
# cloud-init sets by default, as a cloud image has them; built once beside
# the standard root (the "-2" is this recipe's version).
cloud_init_root() {
    local base cache tmp rc=0
    base=$(node_root_cached) || return 1
    cache="${base%/*}/cloud-init-2-${base##*/}"
    if [[ ! -d $cache ]]; then
        tmp="$cache.building.$$"
        rm -rf "$tmp" && cp -a --reflink=auto "$base" "$tmp" || return 1
        mount --bind /proc "$tmp/proc" || return 1
        chroot "$tmp" env DEBIAN_FRONTEND=noninteractive sh -c \
            'apt-get update -qq && apt-get install -y -qq --no-install-recommends cloud-init &&
             sed -i "s/^# *en_US.UTF-8 UTF-8/en_US.UTF-8 UTF-8/" /etc/locale.gen && locale-gen' || rc=$?
        umount "$tmp/proc"
        ((rc == 0)) || { rm -rf "$tmp"; return "$rc"; }
        rm -rf "$tmp"/var/lib/apt/lists/* "$tmp"/var/cache/apt/archives/*.deb
        mv "$tmp" "$cache"
    fi
    echo "$cache"
}
with_cloud_init_root() {
    local cache
    cache=$(cloud_init_root) || return 1
    rm -rf "$root" && cp -a --reflink=auto "$cache" "$root" &&
        echo "$node" >"$root/etc/hostname" &&
        printf '127.0.1.1\t%s\n' "$node" >>"$root/etc/hosts"
}
put_and_get() {
    in_node etcdctl-etcd put greeting "from cloud-init" &&
        [[ $(in_node etcdctl-etcd get --print-value-only greeting) == "from cloud-init" ]]
}
etcd_applied() {
    local s
    s=$(in_node socle status --json)
    echo "$s"
    jq -e '.containers[] | select(.name == "etcd") | .applied and .state == "running"' <<<"$s" >/dev/null
}
cloud_init_done() {
    local s
    s=$(in_node cloud-init status --long 2>&1) || true
    echo "$s"
    grep -q "status: done" <<<"$s"
}
# The Magnum-like example's declarations, taken out of its write_files by
# python's yaml (cloud-init's own dependency), planned by socle.
magnum_plan() {
    local plan
    in_node python3 -c '
import os, sys, yaml
doc = yaml.safe_load(open("/root/magnum-node.yaml"))
os.makedirs("/tmp/magnum.d", exist_ok=True)
for f in doc["write_files"]:
    with open(os.path.join("/tmp/magnum.d", os.path.basename(f["path"])), "w") as out:
        out.write(f["content"])
' || return 1
    # As on a fresh node: a state directory of its own.
    plan=$(in_node socle --state-dir /tmp/magnum-state --unit-dir /tmp/magnum-units \
        apply --dry-run --json --dir /tmp/magnum.d)
    echo "$plan"
    [[ $(jq -r '[.steps[] | "\(.action) \(.name)"] | join(", ")' <<<"$plan") == "install etcd, install flannel, install dockerd" ]] &&
        jq -e '.problems == []' <<<"$plan" >/dev/null
}

check "socle binary was built ($socle_bin)" test -x "$socle_bin"
check "etcd image builds" build_image etcd etcd
check "node root is ready" node_root_cached
check "node root with cloud-init is ready" cloud_init_root
check "fresh node" node_new "$node"
root=$(node_root "$node")
check "the node gets the root with cloud-init" with_cloud_init_root
check "scripts/install into the node root" "$socle_repo/scripts/install" --root "$root" --binary "$socle_bin"
check "the etcd seed goes in" install -D -m 0644 "$work/etcd.tar" "$root/usr/share/socle/images/etcd.tar"
check "NoCloud seed: docs/cloud-init/etcd.yaml as user-data" install -D -m 0644 "$examples/etcd.yaml" "$root/var/lib/cloud/seed/nocloud/user-data"
check "NoCloud seed: meta-data" sh -c "printf 'instance-id: %s\nlocal-hostname: %s\n' $node $node > $root/var/lib/cloud/seed/nocloud/meta-data"

t0=$(now)
check "the node boots (no network to the outside)" node_boot "$node" --private-network
wait_until 180 "cloud-init finished" cloud_init_done
wait_until 60 "etcd is active" in_node systemctl is-active --quiet etcd.service
check "etcd takes a write and reads it back" put_and_get
echo "# time: power-on to etcd written through cloud-init: $(secs "$t0" "$(now)") s" >&"$SOCLE_VM_LOG_FD"
check "socle status: etcd declared, applied, running" etcd_applied

for example in etcd magnum-node; do
    check "$example.yaml goes in" node_copy_in "$node" "$examples/$example.yaml" "/root/$example.yaml"
    check "$example.yaml passes cloud-init's schema" in_node cloud-init schema --config-file "/root/$example.yaml"
done
check "the Magnum-like example plans etcd, flannel, dockerd in order" magnum_plan
check "node is destroyed" node_destroy "$node"

summary
