#!/usr/bin/env bash
# Build (once) a Debian bullseye chroot with its python3.9 and the standard library only,
# for the KubeVirt sidecar tests: KubeVirt's CentOS Stream 9 sidecar-shim image runs the
# onDefineDomain script with Python 3.9 and no third-party modules.
# Usage: make-bullseye-chroot.sh [DIR]   (default .cache/bullseye-chroot; root only)
set -euo pipefail
dir="${1:-$(dirname "$0")/../.cache/bullseye-chroot}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
if [ -x "$dir/usr/bin/python3.9" ] && chroot "$dir" python3.9 -c 'import xml.etree.ElementTree, pyexpat' 2>/dev/null; then
  exit 0
fi
if ! command -v debootstrap >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi
echo "make-bullseye-chroot: debootstrap bullseye into $dir" >&2
debootstrap --variant=minbase --include=python3.9 bullseye "$dir" http://deb.debian.org/debian \
  >"$dir.log" 2>&1 || { tail -20 "$dir.log" >&2; exit 1; }
chroot "$dir" python3.9 -c 'import sys; print("make-bullseye-chroot: python", sys.version.split()[0])' >&2
