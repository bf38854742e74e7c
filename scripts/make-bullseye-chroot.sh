#!/usr/bin/env bash
# Build (once) a Debian bullseye chroot whose python3 is Python 3.9 with the standard library
# only, for the KubeVirt sidecar tests: KubeVirt's CentOS Stream 9 sidecar-shim image runs
# the onDefineDomain script with /usr/bin/python3 = 3.9 and no third-party modules.
# Usage: make-bullseye-chroot.sh [DIR]   (default .cache/bullseye-chroot; root only)
set -euo pipefail
dir="${1:-$(dirname "$0")/../.cache/bullseye-chroot}"
mkdir -p "$(dirname "$dir")"
dir="$(cd "$(dirname "$dir")" && pwd)/$(basename "$dir")"
check='import sys, xml.etree.ElementTree, pyexpat; assert sys.version_info[:2] == (3, 9)'
if [ -x "$dir/usr/bin/python3" ] && chroot "$dir" python3 -c "$check" 2>/dev/null; then
  exit 0
fi
if ! command -v debootstrap >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi
echo "make-bullseye-chroot: debootstrap bullseye into $dir" >&2
# Into a fresh directory, renamed into place when complete: debootstrap cannot resume.
rm -rf "$dir.new"
debootstrap --variant=minbase --include=python3 bullseye "$dir.new" http://deb.debian.org/debian \
  >"$dir.log" 2>&1 || { tail -20 "$dir.log" >&2; exit 1; }
chroot "$dir.new" python3 -c "$check"
rm -rf "$dir"
mv "$dir.new" "$dir"
chroot "$dir" python3 -c 'import sys; print("make-bullseye-chroot: python", sys.version.split()[0])' >&2
