"""Prometheus node-exporter textfile: readiness, ASIDs and firmware versions.

Uses prometheus_client (write_to_textfile writes a temporary file and renames it). Imported
only when --metrics-textfile is set.
"""

from __future__ import annotations

from nfd_snp.checks import Readiness, Report

STATES = {Readiness.YES: "ready", Readiness.NO: "not_ready", Readiness.UNKNOWN: "unknown"}


def write_textfile(path: str, report: Report, timestamp: float) -> None:
    from prometheus_client import CollectorRegistry, Gauge, Info, write_to_textfile

    from nfd_snp.atomic import WriteError

    registry = CollectorRegistry()
    readiness = Gauge(
        "nfd_snp_readiness",
        "1 for the readiness state of each guest type (ready, not_ready, unknown)",
        ["guest", "state"],
        registry=registry,
    )
    for verdict in report.verdicts:
        for state in STATES.values():
            readiness.labels(verdict.guest.value, state).set(
                1 if STATES[verdict.ready] == state else 0
            )
    asids = Gauge(
        "nfd_snp_asids", "ASIDs available (misc cgroup capacity)", ["kind"], registry=registry
    )
    used = Gauge(
        "nfd_snp_asids_used", "ASIDs in use (misc cgroup current)", ["kind"], registry=registry
    )
    a = report.facts.asids
    for kind, total, current in (
        ("sev", a.sev_capacity, a.sev_current),
        ("sev_es", a.sev_es_capacity, a.sev_es_current),
    ):
        if total is not None:
            asids.labels(kind).set(total)
        if current is not None:
            used.labels(kind).set(current)
    firmware = {}
    if report.facts.psp.sev is not None:
        firmware["sev_api_version"] = report.facts.psp.sev.api_version
    if report.facts.psp.snp is not None:
        firmware["snp_api_version"] = report.facts.psp.snp.api_version
        firmware["snp_build_id"] = str(report.facts.psp.snp.build_id)
    if firmware:
        Info("nfd_snp_firmware", "SEV firmware versions", registry=registry).info(firmware)
    Gauge("nfd_snp_last_probe_timestamp_seconds", "Time of the last probe", registry=registry).set(
        timestamp
    )
    try:
        write_to_textfile(path, registry)
    except OSError as exc:
        raise WriteError(f"cannot write metrics to {path}: {exc.strerror or exc}") from None
