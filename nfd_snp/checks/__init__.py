"""The readiness tree: which guest types can run on this host, and why not.

Checks follow snphost `ok` (REFERENCE §5) plus kvm_amd parameters, ASID capacity, libvirt
and firmware. The engine (declaration, tree, evaluation, root causes) is `engine`; the
checks are declared by the guest types they add to, in report order: `sev` (what every SEV
guest needs, and the informational CPU checks), `sev_es`, `sev_snp`, and `snp_features`
(what an SNP node offers beyond SNP: GPUs, Secure TSC, ciphertext hiding). `evidence` holds the
facts that prove others when a register cannot be read; `kinds` the shapes several checks
share (a CPUID or SYSCFG bit, a kernel flag, a kvm_amd parameter, a firmware reply, libvirt).

Adding a check: one `Check(...)` declaration and its evaluation function in the module of
the guest types it adds to, its `Reason`s (nfd_snp/reasons.py), and its section in
docs/troubleshooting.md (and row in README.md's table); tests/test_checks.py's table gets a
line per outcome.
"""

from __future__ import annotations

from typing import Iterator, Tuple

from nfd_snp.checks import sev, sev_es, sev_snp, snp_features
from nfd_snp.checks.engine import (
    ALL,
    ES,
    INFO,
    SEV,
    SNP,
    Cause,
    Check,
    Guest,
    Outcome,
    Readiness,
    Report,
    Result,
    Status,
    Verdict,
    build_tree,
    evaluate_tree,
)
from nfd_snp.checks.sev_es import asids_in_use
from nfd_snp.model import HostFacts

TREE: Tuple[Check, ...] = build_tree(
    sev.CHECKS + sev_es.CHECKS + sev_snp.CHECKS + snp_features.CHECKS
)


def all_checks() -> Iterator[Check]:
    """Every check, in report order."""
    for root in TREE:
        yield from root.walk()


def check_named(name: str) -> Check:
    return next(c for c in all_checks() if c.name == name)


def evaluate(facts: HostFacts, *, require_libvirt: bool = False) -> Report:
    """The report for `facts`. `require_libvirt`: a node without host libvirt is not ready
    (for libvirt-only fleets), instead of skipping the libvirt checks (KubeVirt nodes)."""
    return evaluate_tree(facts, TREE, require_libvirt=require_libvirt)


__all__ = [
    "ALL",
    "ES",
    "INFO",
    "SEV",
    "SNP",
    "TREE",
    "Cause",
    "Check",
    "Guest",
    "Outcome",
    "Readiness",
    "Report",
    "Result",
    "Status",
    "Verdict",
    "all_checks",
    "asids_in_use",
    "check_named",
    "evaluate",
]
