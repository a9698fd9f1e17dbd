#!/usr/bin/env bash
# 31-etcd-cluster: a three-member etcd cluster, one member per booted node,
# rolled forward and back one node at a time while a client keeps writing.
# The nodes sit on a bridge the test creates (10.232.0.11-13/24; the host
# is .254 on the bridge). images/etcd is built as etcd:1 and etcd:2 (version
# label bumped); each node pulls both, installs etcd:1 with its own name and
# URLs and the three-member ETCD_INITIAL_CLUSTER, and the three units are
# started together (a `new` cluster waits for its peers; the unit is
# Type=notify, so `systemctl start` returns once the member is ready).
# From the host, with the image's own etcdctl, a writer commits
# counter=i and c/i=i in one transaction, i = 1, 2, 3..., and a sampler does
# a linearizable read to each member every ~150 ms (it needs a quorum). Then the rolling
# update: on each node in turn `socle update etcd --rebase etcd:2` (socle's
# health gate: the unit stays active and the image's probe `etcdctl
# endpoint health` passes), then wait until that member and the whole
# cluster are healthy, then the next node. Then a rolling `socle rollback`
# the same way. Forward and back are repeated SOCLE_ETCD_ROUNDS times (5 by
# default): a stress test of update and rollback, with no retries anywhere:
# one failed `socle update` or `socle rollback` fails the scenario.
# Checked: every acknowledged write is there at the end (no
# key c/i missing, the counter at least the last acknowledged i), every
# member holds the same counter, the data written before the rollout is
# still there, and no sample found the cluster without a quorum. Printed as `# ` lines: the time of
# each node's update and of the whole rolling update (and rollback), the
# longest window without quorum, the longest stall between
# two acknowledged writes, and the writes acknowledged / lost.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../lib.sh
source "$here/../lib.sh"
# shellcheck source=../socle.sh
source "$here/../socle.sh"
node_cleanup_on_exit

nodes=(etcdc1 etcdc2 etcdc3)
rounds=${SOCLE_ETCD_ROUNDS:-5}
members=(n1 n2 n3)
net=10.232.0
ips=("$net.11" "$net.12" "$net.13")
host_ip=$net.254
bridge=socec$$                        # at most 15 characters

work=$(mktemp -d)
at_exit rm -rf "$work"

note() { echo "# $*" >&"$SOCLE_VM_LOG_FD"; }
now_ms() { _vm_now_ms; }
scenario0=$(now_ms)

# the cluster's addresses
client_url() { echo "http://${ips[$1]}:2379"; }
peer_url() { echo "http://${ips[$1]}:2380"; }
initial_cluster=""
all_endpoints=""
for i in 0 1 2; do
    initial_cluster+="${initial_cluster:+,}${members[$i]}=$(peer_url "$i")"
    all_endpoints+="${all_endpoints:+,}$(client_url "$i")"
done

# etcdctl on the host: the image's own binary (Go, needs only libc), copied
# out of a node's deployment once it is installed.
ctl() {
    ETCDCTL_API=3 timeout --kill-after=2 10 "$work/etcdctl" --dial-timeout=1s \
        --command-timeout=3s "$@"
}
ctl_all() { ctl --endpoints="$all_endpoints" "$@"; }

# --- images and nodes

check "etcd:1 builds" build_image etcd etcd
check "etcd:2 builds (version label bumped)" build_image etcd etcd-v2 --version 2
check "socle binary was built ($socle_bin)" test -x "$socle_bin"
check "node root is ready" node_root_cached

check "bridge $bridge created" ip link add "$bridge" type bridge
at_exit ip link del "$bridge"
check "host gets $host_ip on $bridge" ip addr add "$host_ip/24" dev "$bridge"
check "bridge $bridge up" ip link set "$bridge" up

for i in 0 1 2; do
    n=${nodes[$i]}
    check "fresh node $n" node_new "$n"
    check "socle goes into $n" node_copy_in "$n" "$socle_bin" /usr/local/bin/socle
    check "images go into $n" cp "$work/etcd.tar" "$work/etcd-v2.tar" "$(node_root "$n")/var/tmp/"
    check "$n boots on $bridge" node_boot "$n" --network-bridge="$bridge"
    check "$n gets ${ips[$i]} on host0" \
        node_exec "$n" sh -c "ip link set host0 up && ip addr add ${ips[$i]}/24 dev host0"
done
wait_until 10 "the host reaches the three nodes" \
    sh -c "for ip in ${ips[*]}; do busybox ping -c 1 -W 1 \$ip || exit 1; done"

install_member() {
    local i=$1 n=${nodes[$1]}
    node_exec "$n" socle pull --name etcd:1 oci-archive:/var/tmp/etcd.tar &&
        node_exec "$n" socle pull --name etcd:2 oci-archive:/var/tmp/etcd-v2.tar &&
        node_exec "$n" socle install --name etcd \
            --set "ETCD_NAME=${members[$i]}" \
            --set "ETCD_LISTEN_CLIENT_URLS=$(client_url "$i"),http://127.0.0.1:2379" \
            --set "ETCD_ADVERTISE_CLIENT_URLS=$(client_url "$i")" \
            --set "ETCD_LISTEN_PEER_URLS=$(peer_url "$i")" \
            --set "ETCD_INITIAL_ADVERTISE_PEER_URLS=$(peer_url "$i")" \
            --set "ETCD_INITIAL_CLUSTER=$initial_cluster" \
            --set "ETCD_INITIAL_CLUSTER_TOKEN=socle-vm-$$" \
            etcd:1
}
for i in 0 1 2; do
    check "${nodes[$i]}: pull etcd:1 and etcd:2, install member ${members[$i]}" install_member "$i"
done
copy_etcdctl() {
    node_exec "${nodes[0]}" cat /var/lib/socle/containers/etcd/rootfs/usr/bin/etcdctl >"$work/etcdctl" &&
        chmod +x "$work/etcdctl" && "$work/etcdctl" version
}
check "the image's etcdctl runs on the host" copy_etcdctl

# A `new` cluster: each member waits for the others, so start them together.
start_members() {
    local i pids=() rc=0 t0
    t0=$(now_ms)
    for i in 0 1 2; do
        _vm_exec_bounded 90 "${nodes[$i]}" systemctl start etcd.service &
        pids+=($!)
    done
    for i in 0 1 2; do
        wait "${pids[$i]}" || { echo "${nodes[$i]}: systemctl start failed"; rc=1; }
    done
    note "time: three members started together (to READY=1): $(_vm_fmt_ms $(($(now_ms) - t0)))"
    return "$rc"
}
check "the three members start together (systemctl start, Type=notify)" start_members

member_healthy() { ctl --endpoints="$(client_url "$1")" endpoint health; }
cluster_healthy() {
    local list
    ctl_all endpoint health || return 1
    list=$(ctl_all member list) || return 1
    echo "$list"
    [[ $(grep -c ', started, ' <<<"$list") == 3 ]]
}
wait_until 30 "all three members healthy, three started in member list" cluster_healthy
ctl_all endpoint status -w table >&"$SOCLE_VM_LOG_FD" || true
check "put before=rollout" ctl_all put before rollout
note "time: setup (two image builds, three nodes, pulls, installs, start): $(_vm_fmt_ms $(($(now_ms) - scenario0)))"

# --- the client: a writer and a quorum sampler, in the background

stop_file=$work/stop
client_pids=()
stop_clients() {
    local pid
    touch "$stop_file"
    for pid in "${client_pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    client_pids=()
}
# On an early exit: stop them (they end on the stop file within seconds;
# then by PID, for sure).
kill_clients() {
    local pid
    ((${#client_pids[@]})) || return 0
    touch "$stop_file"
    sleep 3
    for pid in "${client_pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
}
at_exit kill_clients
client_deadline=$((SECONDS + 240 + rounds * 90))     # bounded, whatever happens

# writer: "i START_MS END_MS ok|fail" per transaction counter=i, c/i=i
writer() {
    set +e
    local i=0 t0 t1 out
    while [[ ! -e $stop_file ]] && ((SECONDS < client_deadline)); do
        i=$((i + 1))
        t0=$(now_ms)
        out=$(printf '\nput counter %d\nput c/%d %d\n\n\n' "$i" "$i" "$i" |
            ETCDCTL_API=3 timeout --kill-after=1 5 "$work/etcdctl" --endpoints="$all_endpoints" \
                --dial-timeout=1s --command-timeout=2s txn 2>&1)
        if [[ $? == 0 && $out == SUCCESS* ]]; then
            echo "$i $t0 $(now_ms) ok"
        else
            echo "$i $t0 $(now_ms) fail ${out//$'\n'/ }"
        fi
    done >"$work/writes"
}
# sampler: "START_MS END_MS ok|fail N" per sample: a linearizable read
# (it needs a leader that a quorum confirms) sent to each member at once; N
# members answered. The cluster has a quorum when any member can complete
# one: a read that reached the member being stopped fails on its own (the
# client's connection to it breaks), and is counted apart.
sampler() {
    set +e
    local t0 i n pids
    while [[ ! -e $stop_file ]] && ((SECONDS < client_deadline)); do
        t0=$(now_ms)
        pids=()
        for i in 0 1 2; do
            ETCDCTL_API=3 timeout --kill-after=1 5 "$work/etcdctl" --endpoints="$(client_url "$i")" \
                --dial-timeout=1s --command-timeout=1s get --consistency=l quorum-probe >/dev/null 2>&1 &
            pids+=($!)
        done
        n=0
        for i in 0 1 2; do
            wait "${pids[$i]}" && n=$((n + 1))
        done
        if ((n > 0)); then
            echo "$t0 $(now_ms) ok $n"
        else
            echo "$t0 $(now_ms) fail 0"
        fi
        sleep 0.1
    done >"$work/samples"
}
writer &
client_pids+=($!)
sampler &
client_pids+=($!)
acked() { awk '$4 == "ok"' "$work/writes" 2>/dev/null | wc -l; }
writes_flow() { local n; n=$(acked); echo "acknowledged so far: $n"; ((n >= 20)); }
wait_until 20 "the writer's transactions are acknowledged" writes_flow

# Figures over [FROM, TO] ms: the longest run of samples without quorum
# (from the start of its first sample to the end of its last), samples
# without quorum, samples, and samples in which some member did not answer;
# and the longest stall between two acknowledged writes.
quorum_window() {
    awk -v from="$1" -v to="$2" '
        $1 < from || $1 > to { next }
        { n++ }
        $4 < 3 { short++ }
        $3 == "ok" { if (run) { if (end - start > max) max = end - start; run = 0 } next }
        { failed++; if (!run) { run = 1; start = $1 } end = $2 }
        END { if (run && end - start > max) max = end - start
              printf "%d %d %d %d\n", max, failed, n, short }' "$work/samples"
}
write_stall() {
    awk -v from="$1" -v to="$2" '
        $4 != "ok" || $3 < from || $3 > to { next }
        { if (last && $3 - last > max) max = $3 - last; last = $3; n++ }
        END { printf "%d %d\n", max, n }' "$work/writes"
}
# report PHASE FROM TO: prints the figures; fails if a sample found no quorum.
report() {
    local q s
    read -r -a q < <(quorum_window "$2" "$3")
    read -r -a s < <(write_stall "$2" "$3")
    note "$1: longest window without quorum: ${q[0]} ms (${q[1]} of ${q[2]} samples without quorum; in ${q[3]} a member did not answer)"
    note "$1: longest stall between acknowledged writes: ${s[0]} ms (${s[1]} writes acknowledged)"
    echo "samples without quorum: ${q[1]} of ${q[2]}"
    ((q[2] > 0 && q[1] == 0))
}

# --- the rolling update and the rolling rollback

unit_active() { [[ $(node_exec "${nodes[$1]}" systemctl is-active etcd.service) == active ]]; }
image_is() {
    local row
    row=$(node_exec "${nodes[$1]}" socle list --json | jq -c '.[] | select(.name == "etcd")')
    echo "socle list: $row"
    [[ $(jq -r .image <<<"$row") == "$2" ]]
}
# rejoined I: the unit is active, the member answers and the cluster has
# its three healthy members again.
rejoined() { unit_active "$1" && member_healthy "$1" && cluster_healthy; }
# "leader" if member I leads the cluster now (endpoint status: 5th field)
leader_or_not() {
    ctl --endpoints="$(client_url "$1")" endpoint status 2>/dev/null |
        awk -F', ' '{ print ($5 == "true" ? "leader" : "follower") }'
}

# roll WHAT TIMINGS-NAME CMD...: run CMD on each node in turn, then wait
# until the member rejoined; per node and total times as `# ` lines.
roll() {
    local what=$1 image=$2 i t0 t1 t2 total0 role
    shift 2
    total0=$(now_ms)
    for i in 0 1 2; do
        role=$(leader_or_not "$i")
        t0=$(now_ms)
        check "${nodes[$i]}: $what" node_exec "${nodes[$i]}" "$@"
        t1=$(now_ms)
        wait_until 60 "${nodes[$i]}: member ${members[$i]} healthy again, cluster has three healthy members" rejoined "$i"
        t2=$(now_ms)
        check "${nodes[$i]}: runs $image" image_is "$i" "$image"
        note "time: $what on ${nodes[$i]} (member ${members[$i]} was ${role:-?}): $(_vm_fmt_ms $((t1 - t0))) (socle), $(_vm_fmt_ms $((t2 - t0))) until the cluster had three healthy members"
        echo "$(awk '{ print $2 }' <<<"$what") $((t1 - t0)) $((t2 - t0))" >>"$work/rolls"
    done
    note "time: rolling $what of three nodes: $(_vm_fmt_ms $(($(now_ms) - total0)))"
}

sleep 2    # some writes before the first node goes
for ((round = 1; round <= rounds; round++)); do
    update0=$(now_ms)
    roll "socle update etcd --rebase etcd:2 (round $round of $rounds)" etcd:2 socle update etcd --rebase etcd:2
    update1=$(now_ms)
    sleep 1
    rollback0=$(now_ms)
    roll "socle rollback etcd (round $round of $rounds)" etcd:1 socle rollback etcd
    rollback1=$(now_ms)
    sleep 1
    check "round $round, rolling update: never without quorum" report "round $round, rolling update" "$update0" "$update1"
    check "round $round, rolling rollback: never without quorum" report "round $round, rolling rollback" "$rollback0" "$rollback1"
done
check "writer and sampler stop" stop_clients

check "whole run: never without quorum" report "whole run (update, rollback, writes before and after)" 0 "$(now_ms)"
# Per member switch, over every round: socle's own time and the time until
# the cluster had its three healthy members again (median and longest).
roll_figures() {
    awk -v k="$1" '$1 == k' "$work/rolls" | sort -n -k3 | awk '
        { healthy[NR] = $3; if ($2 > ms) ms = $2; sum += $2 }
        END { if (NR == 0) { print "none"; exit }
              printf "%d member switches, none failed; socle: mean %d ms, longest %d ms; until the cluster had three healthy members: median %d ms, longest %d ms\n",
                  NR, sum / NR, ms, healthy[int((NR + 1) / 2)], healthy[NR] }'
}
note "all rounds, socle update: $(roll_figures update)"
note "all rounds, socle rollback: $(roll_figures rollback)"

# --- no acknowledged write lost

no_write_lost() {
    local final max_acked n_acked n_failed missing applied
    final=$(ctl_all get --print-value-only counter) || return 1
    ctl_all get --prefix --keys-only c/ | awk 'NF { sub("^c/", ""); print }' | sort -n >"$work/present"
    awk '$4 == "ok" { print $1 }' "$work/writes" | sort -n >"$work/acked"
    n_acked=$(wc -l <"$work/acked")
    n_failed=$(awk '$4 != "ok"' "$work/writes" | wc -l)
    max_acked=$(tail -n 1 "$work/acked")
    missing=$(comm -23 "$work/acked" "$work/present" | wc -l)
    applied=$(comm -13 "$work/acked" "$work/present" | wc -l)
    note "writes: $n_acked acknowledged, $missing of them lost; $n_failed not acknowledged ($applied of those applied anyway); final counter $final, last acknowledged $max_acked"
    awk '$4 != "ok"' "$work/writes" | head -n 5
    echo "acknowledged $n_acked, lost $missing, counter $final >= $max_acked?"
    ((n_acked > 0 && missing == 0 && final >= max_acked))
}
check "no acknowledged write lost (every c/i there, counter >= last acknowledged)" no_write_lost
same_counter() {
    local i v vals=()
    for i in 0 1 2; do
        v=$(ctl --endpoints="$(client_url "$i")" get --consistency=s --print-value-only counter) || return 1
        vals+=("$v")
    done
    echo "counter per member: ${vals[*]}"
    [[ ${vals[0]} == "${vals[1]}" && ${vals[1]} == "${vals[2]}" ]]
}
wait_until 10 "every member holds the same counter" same_counter
before_kept() {
    local i v
    for i in 0 1 2; do
        v=$(ctl --endpoints="$(client_url "$i")" get --print-value-only before) || return 1
        echo "${members[$i]}: before=$v"
        [[ $v == rollout ]] || return 1
    done
}
check "the key written before the rollout is still there, on every member" before_kept

for n in "${nodes[@]}"; do
    check "$n is destroyed" node_destroy "$n"
done
note "time: whole scenario: $(_vm_fmt_ms $(($(now_ms) - scenario0)))"

summary
