#!/usr/bin/env bash
# Build (once) a Debian trixie chroot with libvirt 11.3's Python bindings, lxml and click,
# for tests that need a libvirt that knows launchSecurity 'sev-snp' (libvirt >= 10.5).
# Usage: make-trixie-chroot.sh [DIR]   (default .cache/trixie-chroot; root only)
set -euo pipefail
dir="${1:-$(dirname "$0")/../.cache/trixie-chroot}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
if [ -x "$dir/usr/bin/python3" ] && chroot "$dir" python3 -c 'import libvirt, lxml, click' 2>/dev/null; then
  exit 0
fi
if ! command -v debootstrap >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi
echo "make-trixie-chroot: debootstrap trixie into $dir" >&2
debootstrap --variant=minbase trixie "$dir" http://deb.debian.org/debian >"$dir.log" 2>&1 || {
  tail -20 "$dir.log" >&2; exit 1; }
chroot "$dir" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  python3-libvirt python3-lxml python3-click python3-psutil libvirt0 >>"$dir.log" 2>&1 || {
  tail -20 "$dir.log" >&2; exit 1; }
chroot "$dir" python3 -c 'import libvirt; print("make-trixie-chroot: libvirt", libvirt.getVersion())' >&2
