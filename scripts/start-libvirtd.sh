#!/usr/bin/env bash
# Start a libvirt daemon for the tests (and for trying nfd-snp on a plain machine).
# Uses systemd when it runs; otherwise starts virtlogd and libvirtd by hand, creating the
# directories, user and groups Debian's packaging would have. Idempotent.
# --restart: restart a running daemon (libvirt reads hook scripts only at start).
set -euo pipefail
sock=/run/libvirt/libvirt-sock
if [ "${1:-}" = "--restart" ]; then
  if [ -d /run/systemd/system ] && systemctl is-active -q libvirtd 2>/dev/null; then
    systemctl restart libvirtd
  elif pgrep -x libvirtd >/dev/null; then
    pkill -x libvirtd
    for _ in $(seq 50); do pgrep -x libvirtd >/dev/null || break; sleep 0.1; done
    rm -f "$sock"
  fi
fi
if [ -S "$sock" ] && virsh -c qemu:///system version >/dev/null 2>&1; then
  echo "libvirtd: already running"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "libvirtd: not running, and starting it needs root" >&2
  exit 1
fi
if [ -d /run/systemd/system ] && systemctl start libvirtd 2>/dev/null; then
  :
else
  mkdir -p /var/log/libvirt /run/libvirt /var/lib/libvirt/qemu
  getent group kvm >/dev/null || groupadd -r kvm
  getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
  id libvirt-qemu >/dev/null 2>&1 || useradd -r -g libvirt-qemu -G kvm -d /var/lib/libvirt \
    -s /usr/sbin/nologin libvirt-qemu
  # What udev does on a normal host (/dev/kvm root:kvm 0660). Without it libvirt probes QEMU
  # with KVM as root, finds KVM unusable for libvirt-qemu, and re-probes on every call (~30 s).
  if [ -c /dev/kvm ] && [ "$(stat -c %G /dev/kvm)" != kvm ]; then
    chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
  fi
  pgrep -x virtlogd >/dev/null || virtlogd -d
  pgrep -x libvirtd >/dev/null || libvirtd -d
fi
for _ in $(seq 100); do
  if [ -S "$sock" ] && virsh -c qemu:///system version >/dev/null 2>&1; then
    echo "libvirtd: running"
    exit 0
  fi
  sleep 0.2
done
echo "libvirtd: did not come up; see /var/log/libvirt/libvirtd.log" >&2
exit 1
