"""Prometheus node-exporter textfile: readiness, ASIDs and firmware versions.

Written in the Prometheus text exposition format (version 0.0.4, "Exposition formats" in
the Prometheus documentation) without a client library: the format is a few lines of text,
and the service must not depend on an optional package at run time. The file is replaced
atomically (node-exporter's textfile collector reads it at any moment), mode 0644.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Tuple

from nfd_snp.atomic import write_atomic
from nfd_snp.checks import Readiness, Report

STATES = {Readiness.YES: "ready", Readiness.NO: "not_ready", Readiness.UNKNOWN: "unknown"}

Sample = Tuple[Dict[str, str], float]


def _label_value(text: str) -> str:
    # Label values escape backslash, double quote and line feed.
    return str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _family(name: str, help_text: str, samples: Iterable[Sample]) -> List[str]:
    """One gauge family: HELP, TYPE and its samples (none: the family is left out)."""
    lines = []
    for labels, value in samples:
        pairs = ",".join(f'{k}="{_label_value(v)}"' for k, v in labels.items())
        lines.append(f"{name}{{{pairs}}} {float(value)!r}" if pairs else f"{name} {float(value)!r}")
    if not lines:
        return []
    help_line = help_text.replace("\\", "\\\\").replace("\n", "\\n")
    return [f"# HELP {name} {help_line}", f"# TYPE {name} gauge", *lines]


def render(report: Report, timestamp: float) -> str:
    facts = report.facts
    asids = facts.asids
    kinds = (
        ("sev", asids.sev_capacity, asids.sev_current),
        ("sev_es", asids.sev_es_capacity, asids.sev_es_current),
    )
    firmware = {}
    if facts.psp.sev is not None:
        firmware["sev_api_version"] = facts.psp.sev.api_version
    if facts.psp.snp is not None:
        firmware["snp_api_version"] = facts.psp.snp.api_version
        firmware["snp_build_id"] = str(facts.psp.snp.build_id)
    lines = [
        *_family(
            "nfd_snp_readiness",
            "1 for the readiness state of each guest type (ready, not_ready, unknown)",
            (
                ({"guest": v.guest.value, "state": state}, 1 if STATES[v.ready] == state else 0)
                for v in report.verdicts
                for state in STATES.values()
            ),
        ),
        *_family(
            "nfd_snp_asids",
            "ASIDs available (misc cgroup capacity)",
            (({"kind": kind}, total) for kind, total, _ in kinds if total is not None),
        ),
        *_family(
            "nfd_snp_asids_used",
            "ASIDs in use (misc cgroup current)",
            (({"kind": kind}, used) for kind, _, used in kinds if used is not None),
        ),
        *_family(
            "nfd_snp_firmware_info", "SEV firmware versions", [(firmware, 1)] if firmware else []
        ),
        *_family(
            "nfd_snp_last_probe_timestamp_seconds", "Time of the last probe", [({}, timestamp)]
        ),
    ]
    return "\n".join(lines) + "\n"


def write_textfile(path: str, report: Report, timestamp: float) -> None:
    write_atomic(path, render(report, timestamp).encode(), 0o644)
