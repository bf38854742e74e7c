#!/usr/bin/env python3
"""check-vm on large and hostile manifests: `nfd-snp kubevirt check-vm` vs libyaml's own load.

A manifest just under the 16 MiB input limit (one VM with 110,000 annotations) is checked
by `nfd-snp kubevirt check-vm`, and loaded by PyYAML's CSafeLoader alone, alternately (so
machine load hits both alike); prints the median wall time of each and their ratio (target
<= 2x: check-vm is libyaml's load plus one walk of the result), the pure-Python SafeLoader's
time for comparison, and how long the 573-byte alias bomb takes to be refused (target < 1 s).

    .venv/bin/python bench/check_vm.py [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.test_bounded_input import _alias_bomb  # noqa: E402
from tests.test_check_vm import SIDECARS, dump, vm  # noqa: E402


def wall(argv, stdin=None) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, input=stdin, capture_output=True)
    if proc.returncode not in (0, 1, 2):
        sys.exit(f"bench: {' '.join(argv)} exited {proc.returncode}: {proc.stderr[-300:]!r}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    nfd_snp = str(Path(sys.executable).with_name("nfd-snp"))
    filler = {f"note-{i}": "x" * 120 for i in range(110_000)}
    text = dump(vm({"hooks.kubevirt.io/hookSidecars": SIDECARS, **filler}))
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as manifest:
        manifest.write(text)
        manifest.flush()
        load = "import sys, yaml; list(yaml.load_all(open(sys.argv[1]), Loader=yaml.{}))"
        check_cmd = [nfd_snp, "kubevirt", "check-vm", manifest.name]
        libyaml_cmd = [sys.executable, "-c", load.format("CSafeLoader"), manifest.name]
        python_cmd = [sys.executable, "-c", load.format("SafeLoader"), manifest.name]
        checks, loads = [], []
        for _ in range(args.runs):
            checks.append(wall(check_cmd))
            loads.append(wall(libyaml_cmd))
        pure = wall(python_cmd)
    bomb = wall([nfd_snp, "kubevirt", "check-vm", "-"], _alias_bomb().encode())
    check, libyaml = statistics.median(checks), statistics.median(loads)
    print(f"manifest: {len(text) / 2**20:.1f} MiB, {args.runs} runs")
    ratio = check / libyaml
    print(f"check-vm: {check:.2f} s; libyaml load alone: {libyaml:.2f} s; ratio {ratio:.2f}x")
    print(f"pure-Python SafeLoader load alone: {pure:.2f} s")
    print(f"alias bomb refused in {bomb:.2f} s")


if __name__ == "__main__":
    main()
