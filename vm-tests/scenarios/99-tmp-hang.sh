#!/usr/bin/env bash
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
node_cleanup_on_exit
node_new f2
check "bad nspawn arg" node_boot f2 --bogus-flag || true
cat > "$(node_root f2)/etc/systemd/system/hang.service" <<'U'
[Service]
Type=oneshot
ExecStart=/bin/sleep 1000
[Install]
WantedBy=sysinit.target
U
ln -s ../hang.service "$(node_root f2)/etc/systemd/system/sysinit.target.wants/hang.service"
SOCLE_VM_BOOT_TIMEOUT=5 check "hang boot times out" node_boot f2 || true
wait_until 3 "false eventually" sh -c 'echo nope; false' || true
check "booting again works (after masking hang)" sh -c "rm $(node_root f2)/etc/systemd/system/sysinit.target.wants/hang.service" 
node_boot f2
sleep 100
