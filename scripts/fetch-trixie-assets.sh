#!/usr/bin/env bash
# Fetch and unpack (never install) Debian trixie packages the tests check against:
#   linux-libc-dev  -> usr/include/linux/psp-sev.h (Linux 6.12, knows SNP)
#   libvirt-common  -> usr/share/libvirt/schemas   (libvirt 11.3, knows sev-snp)
# into DEST (default .cache/trixie). The host's apt configuration is not touched.
set -euo pipefail
dest="${1:-$(dirname "$0")/../.cache/trixie}"
mkdir -p "$dest"
dest="$(cd "$dest" && pwd)"
if [ -f "$dest/root/usr/include/linux/psp-sev.h" ] && [ -d "$dest/root/usr/share/libvirt/schemas" ]; then
  exit 0
fi
mkdir -p "$dest/lists/partial" "$dest/cache/archives/partial" "$dest/debs" "$dest/root"
echo "deb http://deb.debian.org/debian trixie main" > "$dest/sources.list"
apt_opts=(
  -o "Dir::Etc::sourcelist=$dest/sources.list"
  -o "Dir::Etc::sourceparts=/nonexistent"
  -o "Dir::State::Lists=$dest/lists"
  -o "Dir::Cache=$dest/cache"
  -o "Acquire::Languages=none"
  -o "APT::Sandbox::User=root"
)
echo "fetch-trixie-assets: apt-get update (trixie lists into $dest)" >&2
apt-get "${apt_opts[@]}" update -qq >&2
cd "$dest/debs"
apt-get "${apt_opts[@]}" download linux-libc-dev libvirt-common >&2
for deb in *.deb; do
  dpkg -x "$deb" "$dest/root"
done
test -f "$dest/root/usr/include/linux/psp-sev.h"
test -f "$dest/root/usr/share/libvirt/schemas/domain.rng"
echo "fetch-trixie-assets: unpacked into $dest/root" >&2
