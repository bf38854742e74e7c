#!/usr/bin/env bash
# Set up nfd-snp on a fresh Debian/Ubuntu machine: system packages, and a virtualenv in
# .venv with nfd-snp installed. With --test, also what the test suite needs (a libvirt
# daemon with QEMU, a C compiler, promtool and node-exporter) and a running libvirtd.
set -euo pipefail
cd "$(dirname "$0")/.."

test_deps=0
case "${1:-}" in
  --test) test_deps=1 ;;
  "") ;;
  -h|--help) sed -n '2,4s/^# \{0,1\}//p' "$0"; exit 0 ;;
  *) echo "usage: $0 [--test]" >&2; exit 2 ;;
esac

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

# libvirt-python builds against libvirt-dev; python3-dev for Python.h.
packages="python3 python3-venv python3-dev gcc pkg-config libvirt-dev"
if [ "$test_deps" = 1 ]; then
  packages="$packages libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86 ca-certificates debootstrap"
  # `make rpm`: the wheel is built and installed with the distribution's python3 and pip, and
  # %check runs the test suite with the distribution's packages (the spec's BuildRequires).
  packages="$packages rpm rpmlint cpio make git python3-pip python3-setuptools python3-wheel"
  packages="$packages python3-pytest python3-hypothesis python3-lxml python3-click"
  packages="$packages python3-yaml python3-jsonschema python3-jsonpatch python3-prometheus-client python3-libvirt"
  packages="$packages python3-grpcio"
  # Real Prometheus parts: promtool checks and unit-tests the alert rules and lints the
  # metrics textfile; the node-exporter test starts its own exporter on a loopback port.
  packages="$packages prometheus prometheus-node-exporter"
fi
missing=""
for p in $packages; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "setup: installing Debian packages:$missing"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
  # Only their programs are needed: a Prometheus server and an exporter that installing
  # them started do not stay running on a test machine.
  for unit in prometheus prometheus-node-exporter; do
    case " $missing " in
      *" $unit "*) $sudo systemctl disable --now "$unit" >/dev/null 2>&1 || true ;;
    esac
  done
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  python3 -m venv .venv
fi
extra="[libvirt,kubevirt]"
[ "$test_deps" = 1 ] && extra="[libvirt,kubevirt,test]"
echo "setup: installing nfd-snp$extra into .venv"
# compat mode: a plain path entry, not an import-hook finder that slows every start
.venv/bin/python -m pip install -q --disable-pip-version-check \
  --config-settings editable_mode=compat -e ".$extra"

if [ "$test_deps" = 1 ]; then
  bash scripts/start-libvirtd.sh
fi
echo "setup: done"
