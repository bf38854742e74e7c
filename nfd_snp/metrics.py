"""Prometheus node-exporter textfile: readiness, every check's status, ASIDs, firmware, expiry.

Written in the Prometheus text exposition format (version 0.0.4, "Exposition formats" in
the Prometheus documentation) without a client library: the format is a few lines of text,
and the service must not depend on an optional package at run time. The file is replaced
atomically (node-exporter's textfile collector reads it at any moment), mode 0644.

Naming follows the Prometheus practice ("Metric and label naming"): an `nfd_snp_` prefix,
base units in the name (`_seconds`), `_info` for metadata with value 1, and one label name
for one thing: `guest` is always the guest type as the NFD names spell it (`sev`, `sev-es`,
`sev-snp`). The numbers are the labels' and features' own: readiness is what decides the
`<guest>.node.kubevirt.io/enabled` labels, capacity is `<guest>.node.kubevirt.io/asids`
(`HostFacts.guest_asids`), and use is what the asid.* checks compare with it.

Enumerations are state sets (OpenMetrics "StateSet"): one series per possible state, 1 for
the current one and 0 for the others. A series therefore never appears or vanishes when a
state changes, so `changes()` and `for:` clauses work, and "SEV-SNP not ready" is one
comparison with 0. For the checks this costs 5 series per check (about 190 per node).

`nfd_snp_blocked_by` names what keeps each guest type from running (the verdict's root
causes, or its undecided checks), one 0/1 series per guest type and check that gates it
(about 55 per node): summed over a fleet it ranks the causes by the nodes they block, with
a cardinality bounded by the fixed set of checks, whatever the fleet's size.
"""

from __future__ import annotations

from typing import Dict, Iterable, Iterator, List, Optional, Tuple

from nfd_snp import __version__
from nfd_snp.atomic import write_atomic
from nfd_snp.checks import Guest, Readiness, Report, Status, asids_in_use

READINESS_STATES = {Readiness.YES: "ready", Readiness.NO: "not_ready", Readiness.UNKNOWN: "unknown"}
CHECK_STATES = {status: status.value.lower() for status in Status}

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


def _state_sets(
    key: str, states, current: Iterable[Tuple[Dict[str, str], str]]
) -> Iterator[Sample]:
    """For each (labels, current state): one sample per state, 1 for the current one."""
    for labels, now in current:
        for state in states:
            yield {**labels, key: state}, 1 if state == now else 0


def _blocked_by(report: Report) -> Iterator[Sample]:
    """1 for each check a verdict names (root-cause failures of not_ready, undecided checks
    of unknown), 0 for the other checks that gate the guest type."""
    for verdict in report.verdicts:
        for result in report.results:
            if verdict.guest in result.check.gates:
                name = result.check.name
                yield {"guest": verdict.guest.value, "check": name}, name in verdict.blocking


def _firmware(report: Report) -> Dict[str, str]:
    """The SEV firmware's version, and the reported TCB the NFD labels publish."""
    sev, snp = report.facts.psp.sev, report.facts.psp.snp
    if snp is not None:
        tcb = snp.reported_tcb
        labels = {"api_version": snp.api_version, "build_id": str(snp.build_id)}
        labels.update(
            tcb_bootloader=str(tcb.bootloader),
            tcb_tee=str(tcb.tee),
            tcb_snp=str(tcb.snp),
            tcb_microcode=str(tcb.microcode),
        )
        if tcb.fmc is not None:
            labels["tcb_fmc"] = str(tcb.fmc)
        return labels
    if sev is not None:
        return {"api_version": sev.api_version, "build_id": str(sev.build)}
    return {}


def render(report: Report, timestamp: float, labels_expiry: Optional[float] = None) -> str:
    """The textfile for one probe at `timestamp`; `labels_expiry`: when the feature file's
    labels expire unless renewed (left out when no feature file was written)."""
    facts = report.facts
    capacity = {g: facts.guest_asids(g.value) for g in Guest}
    used = {g: asids_in_use(facts, g) for g in Guest}
    firmware = _firmware(report)
    lines = [
        *_family("nfd_snp_info", "nfd-snp version", [({"version": __version__}, 1)]),
        *_family(
            "nfd_snp_readiness",
            "Whether each guest type can run here: 1 for the current state (ready, not_ready, "
            "unknown); ready is when the node carries <guest>.node.kubevirt.io/enabled",
            _state_sets(
                "state",
                READINESS_STATES.values(),
                (({"guest": v.guest.value}, READINESS_STATES[v.ready]) for v in report.verdicts),
            ),
        ),
        *_family(
            "nfd_snp_check_status",
            "Status of each readiness check (nfd-snp check): 1 for the current one of pass, "
            "warn, fail, skip, unknown",
            _state_sets(
                "status",
                CHECK_STATES.values(),
                (({"check": r.check.name}, CHECK_STATES[r.outcome.status]) for r in report.results),
            ),
        ),
        *_family(
            "nfd_snp_blocked_by",
            "1 for each check that keeps this guest type from running: a root-cause failure "
            "(readiness not_ready) or an undecided check (unknown); 0 for the other checks "
            "that gate it. The same checks as the <guest>.node.kubevirt.io/blocked-by.* features",
            _blocked_by(report),
        ),
        *_family(
            "nfd_snp_asids_capacity",
            "ASIDs guests of this type can use (the <guest>.node.kubevirt.io/asids feature; "
            "SEV-ES and SEV-SNP share theirs unless ciphertext hiding splits them)",
            (({"guest": g.value}, c.count) for g, c in capacity.items() if c is not None),
        ),
        *_family(
            "nfd_snp_asids_used",
            "ASIDs held by running guests of this type (misc cgroup misc.current; shared "
            "SEV-ES/SEV-SNP ASIDs count both types)",
            (({"guest": g.value}, n) for g, n in used.items() if n is not None),
        ),
        *_family(
            "nfd_snp_firmware_info",
            "SEV firmware API version and build, and the reported TCB (as the NFD labels)",
            [(firmware, 1)] if firmware else [],
        ),
        *_family(
            "nfd_snp_labels_expiry_timestamp_seconds",
            "When the node's NFD labels expire unless the service renews them",
            [({}, labels_expiry)] if labels_expiry is not None else [],
        ),
        *_family(
            "nfd_snp_last_probe_timestamp_seconds",
            "When the service last probed the node and wrote its files",
            [({}, timestamp)],
        ),
    ]
    return "\n".join(lines) + "\n"


def write_textfile(
    path: str, report: Report, timestamp: float, labels_expiry: Optional[float] = None
) -> None:
    write_atomic(path, render(report, timestamp, labels_expiry).encode(), 0o644)
