#!/usr/bin/env bash
# 21-crash: socle killed (SIGKILL, through SOCLE_FAILPOINT) at every step of
# an update, a rollback, an install and an uninstall, on a booted node with
# real systemd. After
# each kill the pointer names exactly one complete slot; running the same
# command again (or `socle rollback`) finishes or undoes the interrupted
# switch, and the greeter answers with the values that command asked for.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/../lib.sh"
source "$here/../socle.sh"
socle_scenario crash0

old_port=18091
new_port=18092

# Exactly one deployment is current: the pointer names a slot whose info is
# complete JSON, and no staging directory is mistaken for one.
one_current() {
    local target
    target=$(in_node readlink "$containers/hello") || return 1
    echo "pointer: $target"
    [[ $target == hello.0 || $target == hello.1 ]] &&
        in_node cat "$containers/$target/info" | jq -e .values.PORT >/dev/null
}
killed_by() { # killed_by FAILPOINT ARGS...: socle dies by SIGKILL there
    local rc=0 fp=$1
    shift
    node_exec "$node" env SOCLE_FAILPOINT="$fp" socle "$@" >"$work/out" 2>&1 || rc=$?
    cat "$work/out"
    ((rc == 137)) && grep -q "failpoint $fp" "$work/out"
}
nothing_pending() {
    in_node sh -c "! ls -A $containers | grep -q -e '^\.hello\.transition$' -e 'staging'"
}

check "the greeter image builds" build_hello "$work/hello.tar"
node_with_socle "$node" "$work/hello.tar"
check "pull" socle pull oci-archive:/var/tmp/hello.tar

# Each round starts from a fresh install on the old port, running.
fresh() {
    socle uninstall hello >/dev/null 2>&1 || true
    socle install --name hello --set PORT=$old_port --set RECEIVER=crash hello:1 >/dev/null &&
        in_node systemctl start hello.service &&
        wait_greets $old_port
}
wait_greets() { poll_greets 15 "$1" "Hello, crash! (hello 1)"; }

for fp in update:after-staging update:after-rename update:after-journal update:after-stop \
    switch:after-publish switch:after-swap update:after-start; do
    for then in update rollback; do
        check "[$fp, then $then] fresh install answers" fresh
        check "[$fp] socle is killed there" killed_by "$fp" update hello --set PORT=$new_port
        check "[$fp] exactly one deployment is current" one_current
        if [[ $then == update ]]; then
            check "[$fp] update again" socle update hello --set PORT=$new_port
            check "[$fp] the new value answers" wait_greets $new_port
        else
            check "[$fp] rollback" socle rollback hello
            check "[$fp] the old value answers" wait_greets $old_port
        fi
        check "[$fp, then $then] nothing pending" nothing_pending
    done
done

# A rollback killed midway is finished by the next rollback.
check "[rollback:after-stop] fresh install answers" fresh
check "[rollback:after-stop] update" socle update hello --set PORT=$new_port
check "[rollback:after-stop] socle is killed there" killed_by rollback:after-stop rollback hello
check "[rollback:after-stop] exactly one deployment is current" one_current
check "[rollback:after-stop] rollback again" socle rollback hello
check "[rollback:after-stop] the old value answers" wait_greets $old_port
check "[rollback:after-stop] nothing pending" nothing_pending

# An install killed at any step: the same install again finishes or undoes
# it, and the unit systemd knows is the one that starts and answers.
gone() {
    ! in_node test -e "$containers/hello" &&
        ! in_node test -e /etc/systemd/system/hello.service &&
        [[ $(in_node systemctl is-active hello.service) != active ]]
}
check "uninstall" socle uninstall hello
for fp in install:after-journal install:after-staging install:after-rename \
    install:after-publish install:after-pointer install:after-enable; do
    check "[$fp] socle is killed there" killed_by "$fp" install --name hello \
        --set PORT=$old_port --set RECEIVER=crash hello:1
    check "[$fp] install again" socle install --name hello --set PORT=$old_port --set RECEIVER=crash hello:1
    check "[$fp] exactly one deployment is current" one_current
    check "[$fp] it starts and answers" in_node systemctl start hello.service
    check "[$fp] the value answers" wait_greets $old_port
    check "[$fp] nothing pending" nothing_pending
    check "[$fp] uninstall" socle uninstall hello
done

# An uninstall of a running container killed at any step: uninstall again
# finishes it; nothing of it is left running or known to systemd.
for fp in uninstall:after-journal uninstall:after-unit uninstall:after-tmpfiles \
    uninstall:after-host-files uninstall:after-pointer uninstall:after-slots; do
    check "[$fp] fresh install answers" fresh
    check "[$fp] socle is killed there" killed_by "$fp" uninstall hello
    check "[$fp] uninstall again" socle uninstall hello
    check "[$fp] nothing is left" gone
    check "[$fp] nothing pending" nothing_pending
done

check "node is destroyed" node_destroy "$node"
summary
