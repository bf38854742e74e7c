#!/usr/bin/env python3
"""Probe speed and memory: `nfd-snp check --json --host-root <sample>` vs `python3 -I -c pass`.

Runs both commands alternately (so machine load hits both alike) and prints the median wall
time of each, their ratio (target <= 3x) and the probe's peak RSS (target <= 40 MB). No
libvirt query is made: the sample is a snapshot.

    .venv/bin/python bench/probe.py [--runs N] [--sample NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def timed(argv) -> tuple:
    """Wall seconds and peak RSS (KiB) of one child process."""
    start = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, os.environ)
    _, status, usage = os.wait4(pid, 0)
    elapsed = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):
        sys.exit(f"bench: {' '.join(argv)} exited {code}")
    return elapsed, usage.ru_maxrss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--sample", default="genoa-snp-ready")
    args = parser.parse_args()
    sample = REPO / "nfd_snp" / "samples" / args.sample
    nfd_snp = str(Path(sys.executable).with_name("nfd-snp"))
    probe_cmd = [nfd_snp, "check", "--json", "--host-root", str(sample)]
    baseline_cmd = [sys.executable, "-I", "-c", "pass"]
    # What the required libraries cost before any nfd-snp code runs (DESIGN.md: click, lxml,
    # typed dataclasses), to tell their share of the ratio from ours.
    floor_cmd = [sys.executable, "-I", "-c", "import click, lxml.etree, dataclasses"]
    # Warm the page cache, and make sure what is timed is a real report, not an error path.
    first = subprocess.run(probe_cmd, capture_output=True, text=True)
    if first.returncode not in (0, 1) or json.loads(first.stdout).get("schema") is None:
        sys.exit(f"bench: {' '.join(probe_cmd)} failed: {first.stderr.strip()}")
    probe_times, base_times, floor_times, rss = [], [], [], []
    for _ in range(args.runs):
        t, _ = timed(baseline_cmd)
        base_times.append(t)
        t, _ = timed(floor_cmd)
        floor_times.append(t)
        devnull = os.open(os.devnull, os.O_WRONLY)
        saved = os.dup(1)
        os.dup2(devnull, 1)
        try:
            t, kib = timed(probe_cmd)
        finally:
            os.dup2(saved, 1)
            os.close(devnull)
            os.close(saved)
        probe_times.append(t)
        rss.append(kib)
    probe_ms = statistics.median(probe_times) * 1000
    base_ms = statistics.median(base_times) * 1000
    floor_ms = statistics.median(floor_times) * 1000
    ratio = probe_ms / base_ms
    peak_mb = max(rss) / 1024
    print(f"runs: {args.runs} alternating, sample {args.sample}")
    print(f"python3 -I -c pass                      median {base_ms:7.1f} ms")
    print(
        f"import click, lxml.etree, dataclasses   median {floor_ms:7.1f} ms "
        f"({floor_ms / base_ms:.2f}x: the required libraries alone)"
    )
    print(f"nfd-snp check --json --host-root SAMPLE median {probe_ms:7.1f} ms")
    print(f"ratio {ratio:.2f}x (target <= 3x)   peak RSS {peak_mb:.1f} MB (target <= 40 MB)")


if __name__ == "__main__":
    main()
