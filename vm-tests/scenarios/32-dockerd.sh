#!/usr/bin/env bash
# 32-dockerd: the Docker engine (Debian's docker.io, containerd, runc) as a
# system container on a booted node that has no other container engine.
# images/dockerd is built twice (same digest) plus a version 2; the greeter
# (images/hello) is built as a `docker save` archive. On the node: install
# and start dockerd (Type=notify: `active` means dockerd's READY=1 came
# through runc), `docker info` through the host-side client docker-dockerd
# (hostfs, renamed per instance) and through the socket on the node's /run,
# `docker load` of the greeter, `docker run` of it. Then a container is left
# running and dockerd is updated (`socle update --rebase dockerd:2`) and
# rolled back: the container's process must survive both (the image moves
# containerd's shims out of the system container's cgroup and runs dockerd
# with --live-restore) and docker must still list it as running. What does
# not survive an update is reported as `# dockerd:` lines (see
# images/dockerd/README.md): `docker exec` into a survivor, because its
# rootfs mount lived in the old dockerd's mount namespace.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/../lib.sh"
source "$here/../socle.sh"
socle_scenario dockerd0

docker() { in_node docker-dockerd "$@"; }
note() { echo "# dockerd: $*" >&"$SOCLE_VM_LOG_FD"; }

build_greeter() { "$socle_repo/scripts/build-image" "$socle_repo/images/hello" "docker-archive:$work/hello-docker.tar"; }

no_engine() {
    local t found=0
    for t in docker dockerd containerd ctr podman crio; do
        if in_node sh -c "command -v $t"; then found=1; fi
    done
    ((found == 0))
}
info_answers() {
    local out
    out=$(docker info --format '{{.ServerVersion}} {{.Driver}} {{.CgroupDriver}} cgroup v{{.CgroupVersion}} live-restore={{.LiveRestoreEnabled}}') || return 1
    echo "$out"
    note "docker info: $out"
    [[ $out == *live-restore=true* ]]
}
socket_answers() { in_node curl -sS --max-time 10 --unix-socket /run/docker.sock http://docker/_ping; }
load_greeter() { in_node sh -c 'docker-dockerd load </var/tmp/hello-docker.tar'; }
greeter_listed() { docker images --format '{{.Repository}}:{{.Tag}}' | grep -x hello:1; }
run_says() { local out; out=$(docker run --rm hello:1 /bin/echo "$1"); echo "$out"; [[ $out == "$1" ]]; }
# sleeper_pid: the host pid of the long-running container's process.
sleeper_pid() { docker inspect --format '{{.State.Pid}}' sleeper; }
alive() {
    local st
    st=$(in_node cat "/proc/$1/status" 2>/dev/null | awk '/^State:/ { print $2 }') || true
    echo "pid $1 state ${st:-gone}"
    [[ -n $st && $st != Z ]]
}
docker_says_running() {
    local s
    s=$(docker inspect --format '{{.State.Status}} {{.State.Pid}}' sleeper) || return 1
    echo "docker: sleeper $s"
    [[ $s == "running $1" ]]
}
listed_image() {
    local row
    row=$(list_row dockerd)
    echo "socle list: $row"
    [[ $(jq -r .image <<<"$row") == "$1" ]]
}
exec_into_sleeper() {
    local out rc=0
    out=$(docker exec sleeper /bin/echo exec-ok 2>&1) || rc=$?
    if ((rc == 0)); then note "docker exec into the container that $1: works"; else note "docker exec into the container that $1: fails: $out"; fi
}
gone() { ! alive "$1"; }
not_failed() { local s; s=$(unit_prop dockerd ActiveState); echo "dockerd: $s"; [[ $s == inactive ]]; }

check "dockerd image builds (Debian docker.io, containerd, runc)" timed "build dockerd:1" build_image dockerd dockerd
check "dockerd image builds again" build_image dockerd dockerd-again
check "same digest twice (reproducible)" same_digest dockerd dockerd-again
check "dockerd:2 builds (version label bumped)" build_image dockerd dockerd-v2 --version 2
check "greeter builds as a docker-archive" build_greeter
echo "# size: dockerd archive $(stat -c %s "$work/dockerd.tar") bytes ($(du -h "$work/dockerd.tar" | cut -f1))" >&"$SOCLE_VM_LOG_FD"
node_with_socle "$node" "$work/dockerd.tar" "$work/dockerd-v2.tar" "$work/hello-docker.tar"

check "no other container engine on the node" no_engine
check "pull dockerd:1" timed "pull dockerd:1" socle pull --name dockerd:1 oci-archive:/var/tmp/dockerd.tar
check "pull dockerd:2" socle pull --name dockerd:2 oci-archive:/var/tmp/dockerd-v2.tar
check "install dockerd" socle install --name dockerd dockerd:1
check "unit is Type=notify" in_node sh -c '[ "$(systemctl show -P Type dockerd.service)" = notify ]'
check "data directory /var/lib/dockerd made by tmpfiles" in_node test -d /var/lib/dockerd
check "host-side docker-dockerd installed, executable" in_node test -x /usr/local/bin/docker-dockerd
check "systemctl start (returns once READY=1 came)" timed "systemctl start dockerd (to READY=1)" in_node systemctl start dockerd.service
check "dockerd is active" active dockerd
check "docker info answers (docker-dockerd)" info_answers
check "the API answers on the node's /run/docker.sock" socket_answers
check "docker load of the greeter (docker-archive on stdin)" timed "docker load" load_greeter
check "docker images lists hello:1" greeter_listed
check "docker run --rm hello:1 echo" timed "docker run --rm" run_says "hello from a container"
check "docker run -d a long-running container" docker run -d --name sleeper hello:1 /bin/sleep 100000
pid=$(sleeper_pid)
check "its process runs on the node (pid $pid)" alive "$pid"
in_node sh -c "echo shim cgroup: \$(cat /proc/\$(cat /proc/$pid/status | awk '/^PPid:/ {print \$2}')/cgroup)" >&"$SOCLE_VM_LOG_FD" || true
exec_into_sleeper "runs under this dockerd"

check "update --rebase dockerd:2 passes the health gate" timed "update --rebase dockerd:2" socle update dockerd --rebase dockerd:2
check "dockerd active after update" active dockerd
check "socle list says dockerd:2" listed_image dockerd:2
if check "the container's process survived the update" alive "$pid"; then
    note "a running container survives an update of the dockerd system container"
else
    note "a running container does NOT survive an update of the dockerd system container"
fi
check "docker (live-restore) lists it running, same pid" docker_says_running "$pid" || true
exec_into_sleeper "survived the update"
check "docker run works after the update" run_says "after the update"

check "rollback" timed "rollback" socle rollback dockerd
wait_until 60 "dockerd active after rollback" active dockerd
check "socle list says dockerd:1" listed_image dockerd:1
check "the container's process survived the rollback" alive "$pid"
check "docker lists it running after the rollback" docker_says_running "$pid" || true
check "docker stop of the survivor" docker stop -t 2 sleeper
check "its process is gone" gone "$pid"
check "docker rm of it" docker rm sleeper || true

check "systemctl stop dockerd" in_node systemctl stop dockerd.service
check "stopped dockerd is inactive, not failed" not_failed
check "uninstall dockerd" socle uninstall dockerd
check "host-side client removed" in_node test ! -e /usr/local/bin/docker-dockerd
check "docker data left in /var/lib/dockerd" in_node test -d /var/lib/dockerd/image
check "images list --json" log_image_sizes
check "node is destroyed" node_destroy "$node"

summary
