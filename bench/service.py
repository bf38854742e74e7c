#!/usr/bin/env python3
"""Service cost: CPU time per refresh cycle and memory over 1,000 cycles.

Runs the same `Service.cycle()` that `nfd-snp run` runs each interval (probe a sample
snapshot, evaluate, compare and maybe write the feature file and facts cache), 1,000 times
in this process, and prints:
  - median CPU time per cycle (target < 5 ms without libvirt), and its ratio to the CPU
    time of starting a bare `python3 -I -c pass` measured alongside;
  - RSS after 100 and 1,000 cycles (target: no growth after the first 100; <= 40 MB), and
    after 10x and 20x as many, to tell one-time warm-up (allocator arenas, intern table,
    caches settle within about 10,000 cycles) from a leak (growth that never stops).

    .venv/bin/python bench/service.py [--cycles N] [--sample NAME]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import psutil  # noqa: E402

from nfd_snp.config import Config  # noqa: E402
from nfd_snp.service import Service  # noqa: E402


def child_cpu_ms(argv) -> float:
    before = os.times()
    subprocess.run(argv, check=True)
    after = os.times()
    return (
        (after.children_user - before.children_user)
        + (after.children_system - before.children_system)
    ) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--sample", default="genoa-snp-ready")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="nfd-snp-bench-"))
    try:
        root = work / "host"
        shutil.copytree(REPO / "nfd_snp" / "samples" / args.sample, root)
        config = Config(
            host_root=str(root),
            output=str(work / "features.d" / "nfd-snp"),
            facts_cache=str(work / "facts.json"),
            libvirt="off",
        )
        service = Service(config, log=lambda _priority, line: None)
        me = psutil.Process()
        cpu, rss = [], {}
        for n in range(1, 20 * args.cycles + 1):
            start = time.process_time()
            service.cycle()
            if n <= args.cycles:
                cpu.append((time.process_time() - start) * 1000)
            if n in (100, args.cycles, 10 * args.cycles, 20 * args.cycles):
                rss[n] = me.memory_info().rss / 2**20
        baseline = statistics.median(
            child_cpu_ms([sys.executable, "-I", "-c", "pass"]) for _ in range(21)
        )
    finally:
        shutil.rmtree(work)
    median = statistics.median(cpu)
    print(f"cycles: {args.cycles} on sample {args.sample} (libvirt off)")
    print(
        f"CPU per cycle: median {median:.2f} ms, p95 {sorted(cpu)[int(len(cpu) * 0.95)]:.2f} ms"
        f" (target < 5 ms); {median / baseline:.2f}x the CPU of python3 -I -c pass "
        f"({baseline:.1f} ms)"
    )
    n, n10, n20 = args.cycles, 10 * args.cycles, 20 * args.cycles
    print(
        f"RSS after 100 cycles {rss[100]:.1f} MB, after {n}: {rss[n]:.1f} MB "
        f"({rss[n] - rss[100]:+.2f} MB warm-up), after {n10}: {rss[n10]:.1f} MB, after {n20}: "
        f"{rss[n20]:.1f} MB ({rss[n20] - rss[n10]:+.2f} MB over the last {n20 - n10}: steady "
        "state); target: flat, <= 40 MB"
    )


if __name__ == "__main__":
    main()
