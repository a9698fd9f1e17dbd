#!/usr/bin/env bash
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
node_cleanup_on_exit
check "new" node_new f1
check "boot" node_boot f1 --private-network
check "a failing check" node_exec f1 sh -c 'echo some output; exit 3'
check "never reached" true
summary
