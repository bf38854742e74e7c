#!/usr/bin/env python3
"""What the hook adds to every VM start and stop, on the host's real libvirt daemon.

libvirt runs the qemu hooks three times per start (prepare, start, started) and twice per
stop (stopped, release). This starts (paused, as `virsh start --paused`: the same hook calls,
without the guest's own run competing for the CPU) and destroys a small TCG domain (64 MiB,
no disk) that did not ask for SEV-SNP, alternating four set-ups in each round:
  - no hook: the baseline;
  - a hook that only exits 0 (`#!/bin/sh`): what libvirt itself spends running any hook,
    the floor for a hook that ignores an operation;
  - the hook as `nfd-snp install` writes it (its shell front, naming this Python);
  - a hook that is a Python script itself (what the hook was before its shell front: one
    Python start per call), for comparison;
and prints the median start and destroy times, and each hook's median delta to the baseline
of the same round (target: <= 15 ms added per start for the installed hook). The order of
the set-ups rotates from round to round.

libvirt decides at its start whether any qemu hook exists, then lists hooks/qemu.d again on
every call and runs the executable files (src/util/virhook.c). So the daemon is restarted
once with both hooks present, and a set-up is chosen by the execute bits alone.

Needs root and a running libvirtd (scripts/start-libvirtd.sh). Uses the hook directory
/etc/libvirt/hooks/qemu.d and restarts libvirtd; removes what it wrote at the end.

    .venv/bin/python bench/libvirt_start.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from nfd_snp import hook_script  # noqa: E402

HOOK_DIR = Path("/etc/libvirt/hooks/qemu.d")
HOOKS = {
    "empty hook (exit 0)": HOOK_DIR / "50-nfd-snp-bench-empty",
    "installed hook (sh front)": HOOK_DIR / "50-nfd-snp",
    "Python-script hook": HOOK_DIR / "50-nfd-snp-bench-python",
}
TARGET_MS = 15.0
NAME = "nfdsnp-bench-start"
# The hook as it was before its shell front: Python for every call.
PYTHON_HOOK = """#!{python} -I
import sys
if len(sys.argv) < 4 or (sys.argv[2], sys.argv[3]) not in (
    ("prepare", "begin"), ("migrate", "begin"), ("restore", "begin")
):
    sys.exit(0)
data = sys.stdin.buffer.read()
if b"urn:nfd-snp:1" not in data:
    sys.exit(0)
from nfd_snp.hook import handle
sys.exit(handle(sys.argv[1], sys.argv[2], data))
"""
DOMAIN = """<domain type='qemu'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices><emulator>/usr/bin/qemu-system-x86_64</emulator></devices>
</domain>
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="rounds (default 20)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: needs root (it installs a hook and restarts libvirtd)")
    import libvirt

    if HOOKS["installed hook (sh front)"].exists():
        sys.exit(f"bench: {HOOKS['installed hook (sh front)']} exists; uninstall nfd-snp first")
    HOOK_DIR.mkdir(parents=True, exist_ok=True)
    HOOKS["installed hook (sh front)"].write_text(hook_script.render(sys.executable))
    HOOKS["Python-script hook"].write_text(PYTHON_HOOK.format(python=sys.executable))
    HOOKS["empty hook (exit 0)"].write_text("#!/bin/sh\nexit 0\n")
    try:
        for path in HOOKS.values():
            path.chmod(0o755)  # present when the daemon starts: libvirt looks for qemu hooks
        restart = [str(REPO / "scripts" / "start-libvirtd.sh"), "--restart"]
        subprocess.run(["bash", *restart], check=True, capture_output=True)
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        conn = libvirt.open("qemu:///system")
        dom = conn.defineXML(DOMAIN.format(name=NAME, uuid=uuid.uuid4()))
        try:
            measure(dom, args.runs)
        finally:
            if dom.isActive():
                dom.destroy()
            dom.undefine()
            conn.close()
    finally:
        for path in HOOKS.values():
            path.unlink(missing_ok=True)


def measure(dom, runs: int) -> None:
    import libvirt

    setups = ["no hook", *HOOKS]
    starts: dict = {s: [] for s in setups}
    stops: dict = {s: [] for s in setups}
    dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)  # warm-up: QEMU in the page cache
    dom.destroy()
    for round_ in range(runs):
        shift = round_ % len(setups)
        for setup in setups[shift:] + setups[:shift]:
            for name, path in HOOKS.items():
                path.chmod(0o755 if name == setup else 0o644)
            began = time.perf_counter()
            dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
            started = time.perf_counter()
            dom.destroy()
            stopped = time.perf_counter()
            starts[setup].append((started - began) * 1000)
            stops[setup].append((stopped - started) * 1000)
    print(
        f"{runs} rounds of start (paused) + destroy of a 64 MiB TCG domain that did not ask "
        "for SEV-SNP; medians; hooks run 3x per start, 2x per stop"
    )
    for setup in setups:
        start, stop = statistics.median(starts[setup]), statistics.median(stops[setup])
        line = f"{setup:27s} start {start:6.1f} ms, destroy {stop:6.1f} ms"
        if setup != "no hook":
            added = statistics.median(
                a - b for a, b in zip(starts[setup], starts["no hook"], strict=True)
            )
            removed = statistics.median(
                a - b for a, b in zip(stops[setup], stops["no hook"], strict=True)
            )
            base = statistics.median(starts["no hook"])
            line += (
                f"; added: {added:+5.1f} ms per start ({(base + added) / base:4.2f}x), "
                f"{removed:+5.1f} ms per destroy"
            )
            if setup == "installed hook (sh front)":
                line += f" (target <= {TARGET_MS:g} ms: {'ok' if added <= TARGET_MS else 'OVER'})"
        print(line)


if __name__ == "__main__":
    main()
