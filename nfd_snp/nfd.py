"""The NFD feature file: labels and features from a readiness report (REFERENCE §7).

Format (NFD local source): `name=value` lines; `# +expiry-time=<RFC3339>` makes every later
line expire; `# +no-label` before a line keeps it a feature only. Names carry their own
namespace (`sev-snp.node.kubevirt.io/...`), which NFD allows without `extraLabelNs`.
Lines are sorted within each group so the file is stable for unchanged facts.

What keeps a guest type from running is published too, as features only, one per check:
`<guest>.node.kubevirt.io/blocked-by.<check>=fail` (a root cause of "not ready") or
`=unknown` (an undecided check of "unknown"). A verdict's list can be longer than the 63
characters of one label value, and one feature per check stays a valid name (the check
names are a fixed set of at most 19 characters); nfd-worker keeps every such line in the
node's NodeFeature (`spec.features.attributes["local.feature"]`), so `nfd-snp fleet` and a
NodeFeatureGroup read them cluster-wide. Each guest type thus has either its `enabled`
label or at least one `blocked-by` feature on a node that runs nfd-snp.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from nfd_snp.checks import Guest, Readiness, Report
from nfd_snp.checks.snp_features import ready_gpus
from nfd_snp.errors import ProgrammingError

NFD_MAX_FILE_BYTES = 65536  # NFD skips larger files whole

ENABLED = {
    Guest.SEV: "sev.node.kubevirt.io/enabled",
    Guest.SEV_ES: "sev-es.node.kubevirt.io/enabled",
    Guest.SEV_SNP: "sev-snp.node.kubevirt.io/enabled",
}
SNP_NS = "sev-snp.node.kubevirt.io/"
BLOCKED_BY = "blocked-by."  # feature name prefix, after the guest type's namespace
BLOCKED_VALUES = {Readiness.NO: "fail", Readiness.UNKNOWN: "unknown"}
# Optional SEV-SNP features: the check that finds each, and its label (`true` beside
# `sev-snp.node.kubevirt.io/enabled=true` only).
OPTIONAL_FEATURES = {
    "gpu.vfio": "gpu-passthrough",
    "snp.secure_tsc": "secure-tsc",
    "snp.ciphertext_hiding": "ciphertext-hiding",
}


def namespace(guest: Guest) -> str:
    return f"{guest.value}.node.kubevirt.io/"


# Kubernetes label syntax (apimachinery validation): a DNS-subdomain prefix, a name of at
# most 63 characters, and a value of at most 63 characters, alphanumeric at both ends.
_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


def valid_label(key: str, value: str) -> bool:
    prefix, _, name = key.rpartition("/")
    return (
        bool(prefix)
        and len(prefix) <= 253
        and bool(_PREFIX.match(prefix))
        and bool(_NAME.match(name))
        and bool(_VALUE.match(value))
    )


@dataclass(frozen=True)
class Publication:
    """What the node publishes: labels (also features) and features only."""

    labels: Tuple[Tuple[str, str], ...]
    features: Tuple[Tuple[str, str], ...]

    def as_dict(self) -> Dict[str, Dict[str, str]]:
        return {"labels": dict(self.labels), "features": dict(self.features)}


def publication(report: Report) -> Publication:
    """Labels and features of one report; raises ProgrammingError on an invalid name/value.

    SNP firmware facts are labels only beside `sev-snp.node.kubevirt.io/enabled=true`: a
    rule matching on them must never place an SNP guest on a node where SNP cannot run.
    The TCB labels are the *reported* TCB, the one attestation reports carry and VCEK
    certificates are issued for (it lags the current TCB until SNP_COMMIT).
    """
    facts = report.facts
    labels: Dict[str, str] = {}
    for verdict in report.verdicts:
        if verdict.ready is Readiness.YES:
            labels[ENABLED[verdict.guest]] = "true"
    snp = facts.psp.snp
    if snp is not None and ENABLED[Guest.SEV_SNP] in labels:
        tcb = snp.reported_tcb
        labels[SNP_NS + "api-version"] = snp.api_version
        labels[SNP_NS + "build-id"] = str(snp.build_id)
        labels[SNP_NS + "tcb-bootloader"] = str(tcb.bootloader)
        labels[SNP_NS + "tcb-tee"] = str(tcb.tee)
        labels[SNP_NS + "tcb-snp"] = str(tcb.snp)
        labels[SNP_NS + "tcb-microcode"] = str(tcb.microcode)
        if tcb.fmc is not None:
            labels[SNP_NS + "tcb-fmc"] = str(tcb.fmc)
    features: Dict[str, str] = {}
    if ENABLED[Guest.SEV_SNP] in labels:
        # What the SEV-SNP node offers beyond SNP (nfd_snp/checks/snp_features.py), only
        # where SNP guests run: a GPU for them, Secure TSC, ciphertext hiding.
        outcome = {r.check.name: r.outcome.status.value for r in report.results}
        for check, label in OPTIONAL_FEATURES.items():
            if outcome.get(check) == "PASS":
                labels[SNP_NS + label] = "true"
        if outcome.get("gpu.vfio") == "PASS":
            features[SNP_NS + "gpus"] = str(len(ready_gpus(facts)))
    leaf = facts.cpu.mem_encrypt
    for guest in Guest:
        # ASID capacity per guest type, for extended resources. SEV-ES and SEV-SNP guests
        # share one range (both say the same number) unless ciphertext hiding splits it.
        # ASIDs in use change with every VM: they are metrics, not features (no churn).
        known = facts.guest_asids(guest.value)
        _put(features, f"{guest.value}.node.kubevirt.io/asids", known.count if known else None)
    for verdict in report.verdicts:
        # The checks that keep the guest type from running (root causes only), so the reason
        # for a missing label can be read cluster-wide. Changes only with the verdict.
        for check in verdict.blocking:
            features[namespace(verdict.guest) + BLOCKED_BY + check] = BLOCKED_VALUES[verdict.ready]
    cbit = facts.cbit()
    if cbit and (report.verdict(Guest.SEV).ready is Readiness.YES or leaf is not None and leaf.sev):
        _put(features, "sev.node.kubevirt.io/cbitpos", cbit.cbitpos)
        _put(features, "sev.node.kubevirt.io/reduced-phys-bits", cbit.reducedPhysBits)
    for key, value in list(labels.items()) + list(features.items()):
        if not valid_label(key, value):
            raise ProgrammingError(f"invalid NFD name or value: {key}={value}")
    return Publication(tuple(sorted(labels.items())), tuple(sorted(features.items())))


def _put(features: Dict[str, str], key: str, value: Optional[int]) -> None:
    if value is not None:
        features[key] = str(value)


def rfc3339(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


HEADER = (
    "# Written by nfd-snp (`nfd-snp check` explains each value). Do not edit: the service\n"
    "# rewrites it when the node changes, and the lines expire if it stops.\n"
)


def render_body(pub: Publication) -> str:
    """Everything after the expiry directive: the part compared to decide a rewrite."""
    lines = [f"{k}={v}" for k, v in pub.labels]
    for key, value in pub.features:
        lines += ["# +no-label", f"{key}={value}"]
    return "".join(line + "\n" for line in lines)


def render(pub: Publication, expiry: datetime.datetime) -> str:
    text = HEADER + f"# +expiry-time={rfc3339(expiry)}\n" + render_body(pub)
    if len(text.encode()) > NFD_MAX_FILE_BYTES:
        raise ProgrammingError(f"feature file of {len(text)} bytes exceeds NFD's limit")
    return text


_EXPIRY = re.compile(r"^# \+expiry-time=(\S+)\n", re.M)


def parse_written(text: str) -> Tuple[Optional[datetime.datetime], str]:
    """(expiry, body) of a file this module wrote; (None, "") for anything else."""
    match = _EXPIRY.search(text)
    if not match or not text.startswith(HEADER):
        return None, ""
    try:
        expiry = datetime.datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=datetime.timezone.utc
        )
    except ValueError:
        return None, ""
    return expiry, text[match.end() :]
