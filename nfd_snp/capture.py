"""`nfd-snp capture`: save every input one probe read into a replayable snapshot.

The snapshot is the format `--host-root` reads (DESIGN.md "Snapshot format"): host files at
their host paths plus nfd-snp-capture.json for CPUID, MSRs, PSP replies, domcaps and file
change times. A replay of it runs the same parsing code and gives the same report.
"""

from __future__ import annotations

import datetime
import json
import os
import re
from pathlib import Path

from nfd_snp import __version__, paths, probe
from nfd_snp.checks import Report
from nfd_snp.config import Config
from nfd_snp.errors import CaptureError
from nfd_snp.host import NotCaptured, Recording

# What sources/guests.py reads of a process: its command line.
_GUEST_CMDLINE = re.compile(paths.PROC + r"/\d+/cmdline")


def _safe_join(out: Path, rel: str) -> Path:
    target = (out / rel).resolve()
    if out.resolve() not in target.parents:
        raise CaptureError(f"refusing to write outside the snapshot: {rel}")
    return target


def write_snapshot(recording: Recording, out: Path) -> None:
    for rel in sorted(recording.dirs):
        _safe_join(out, rel).mkdir(parents=True, exist_ok=True)
    for rel, is_dir in sorted(recording.present.items()):
        target = _safe_join(out, rel)
        if is_dir:
            target.mkdir(parents=True, exist_ok=True)
        elif not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(b"")  # a placeholder for a device node (/dev/kvm)
    for rel, data in sorted(recording.files.items()):
        target = _safe_join(out, rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    capture: dict = {
        "nfd_snp_version": __version__,
        "captured_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cpuid": recording.cpuid,
        "msr": recording.msr,
    }
    capture.update(recording.psp)
    capture.update(recording.kvm_attrs)
    if recording.domcaps is not NotCaptured:
        capture["domcaps"] = recording.domcaps
    if recording.stats:
        capture["stat"] = recording.stats
    if recording.unreadable:
        capture["unreadable"] = recording.unreadable
    if recording.hook_imports:
        capture["hook_import"] = recording.hook_imports
    (out / paths.CAPTURE_FILE).write_text(json.dumps(capture, indent=2, sort_keys=True) + "\n")


def without_guests(recording: Recording) -> None:
    """Drop the running guests' QEMU command lines (disk paths, networks, device details):
    the replay then shows no running guests."""
    for rel in [r for r in recording.files if _GUEST_CMDLINE.fullmatch(r)]:
        del recording.files[rel]


def capture(out: os.PathLike | str, config: Config, *, guests: bool = True) -> Report:
    """Probe `config.host_root` live and write what was read to `out` (created; empty).
    `guests`: keep the running guests' QEMU command lines."""
    out_path = Path(out)
    if out_path.exists() and (not out_path.is_dir() or any(out_path.iterdir())):
        raise CaptureError(f"{out}: exists and is not an empty directory")
    result = probe.probe_report(config, record=True)  # before creating OUT: a bad root leaves none
    assert result.recording is not None
    if not guests:
        without_guests(result.recording)
    try:
        out_path.mkdir(parents=True, exist_ok=True)
        write_snapshot(result.recording, out_path)
    except OSError as exc:
        raise CaptureError(f"{out}: cannot write the snapshot ({exc.strerror or exc})") from None
    return result.report
