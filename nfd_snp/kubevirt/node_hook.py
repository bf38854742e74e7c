"""What nfd-snp's node hook answers virt-handler: admit a VMI, or refuse it with one line.

KubeVirt 1.9's virt-handler calls `NodeHookService.ExecuteNodeHook` of a Plugin whose
condition matches, before it hands the VMI to virt-launcher (pkg/virt-handler/vm.go,
`CallNodeHooks(PreVMStart, ...)` ahead of `syncVirtualMachine`). The reply carries nothing:
an error status is the refusal, and with `failureStrategy: Fail` virt-handler stops the
start and shows "node hook PreVMStart from plugin P failed: node hook PreVMStart failed with
CODE: MESSAGE" as the VMI's sync error (pkg/hooks/plugins/v1alpha1/client.go,
pkg/virt-handler/plugins/manager.go). KubeVirt retries the start, so the same question gets
the same answer (idempotent), and a VMI admitted once is not refused for the ASID it holds
itself.

At PreVMStart a VMI that asks for SEV-SNP (nfd_snp.kubevirt.sidecar.request_form) is
refused when its request is invalid (the engine's option model, the same words as the
sidecar's), when the CEL domain hook could not write it (nfd_snp.kubevirt.domain_hook_cel),
when it takes the SEV path without a hook sidecar (it would start as plain SEV), or when
this node cannot run it: not SEV-SNP ready (the root causes), a policy its KVM or firmware
refuses, no free SEV-SNP ASID, or facts too old to tell. Everything else is admitted; a VMI
whose JSON cannot be read is refused (the Plugin's condition sends only SNP VMIs).

Decisions read one `NodeView`, made from one probe and never changed: the service swaps in a
new one after each cycle, so a call sees the facts of one probe, never half of two.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional, Tuple

from nfd_snp.errors import DomainError, InputError, printable
from nfd_snp.facts_cache import NodeFacts

PRE_VM_START = "PreVMStart"
# gRPC status codes by name (grpc.StatusCode members); the server maps them.
OK = "OK"
INVALID_ARGUMENT = "INVALID_ARGUMENT"
FAILED_PRECONDITION = "FAILED_PRECONDITION"
RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
UNAVAILABLE = "UNAVAILABLE"
MAX_MESSAGE = 1000  # characters: a status message is one line a person reads


@dataclass(frozen=True)
class NodeView:
    """One probe's answer to "can an SNP guest start here", as the node hook reads it."""

    facts: NodeFacts  # readiness, blocking checks, policy rule, firmware ABI
    snp_asids: Optional[Tuple[int, int]]  # (ASIDs for SNP guests, in use), None: unknown
    probed_at: float  # time.time() of the probe
    valid_for: float  # seconds (the service's ttl): older facts say nothing

    @classmethod
    def from_report(cls, report, valid_for: float, probed_at: float) -> "NodeView":
        from nfd_snp import facts_cache
        from nfd_snp.checks import SNP, asids_in_use

        facts = facts_cache.NodeFacts.of_report(report, valid_for)
        known = report.facts.guest_asids("sev-snp")
        used = asids_in_use(report.facts, SNP) if known is not None else None
        asids = (known.count, used) if known is not None and used is not None else None
        return cls(facts, asids, probed_at, valid_for)


@dataclass(frozen=True)
class Answer:
    code: str  # OK or a gRPC status code name
    message: str = ""
    snp: bool = False  # the VMI asked for SEV-SNP (and was admitted, when code is OK)
    uid: Optional[str] = None  # metadata.uid, to remember who was admitted

    @property
    def admitted(self) -> bool:
        return self.code == OK


def _refuse(code: str, text: str, uid=None) -> Answer:
    line = printable(" ".join(text.split()))
    if len(line) > MAX_MESSAGE:
        line = line[: MAX_MESSAGE - 3] + "..."
    return Answer(code, line, True, uid)


def _where(node_name: str) -> str:
    return f"node {node_name}" if node_name else "this node"


def judge_node(view: Optional[NodeView], node_name: str, now: float, admitted_before: bool):
    """(code, reason) when this node cannot take an SNP guest now, else None."""
    where = _where(node_name)
    if view is None:
        return UNAVAILABLE, f"nfd-snp on {where} has not probed it yet; KubeVirt retries"
    age = now - view.probed_at
    if age > view.valid_for:
        return UNAVAILABLE, (
            f"nfd-snp's facts about {where} are {age:.0f} s old (the node service cannot "
            "probe it: see its log); SEV-SNP readiness is unknown"
        )
    facts = view.facts
    if facts.snp_ready != "yes":
        state = (
            "is not SEV-SNP ready" if facts.snp_ready == "no" else "has unknown SEV-SNP readiness"
        )
        blocked = f" (blocked by: {', '.join(facts.blocking)})" if facts.blocking else ""
        return FAILED_PRECONDITION, (
            f"{where} {state}{blocked}; `nfd-snp check` on the node says why and how to fix it"
        )
    if view.snp_asids is not None and not admitted_before:
        count, used = view.snp_asids
        if used >= count:
            stamp = time.strftime("%H:%M:%S UTC", time.gmtime(view.probed_at))
            return RESOURCE_EXHAUSTED, (
                f"no free SEV-SNP ASID on {where}: {used} of {count} in use at {stamp}; "
                "KubeVirt retries the start"
            )
    return None


def decide(
    hook_point: str,
    vmi_json: bytes,
    node_name: str,
    view: Optional[NodeView],
    now: float,
    admitted: frozenset = frozenset(),
) -> Answer:
    """The answer to one ExecuteNodeHook call. `admitted`: UIDs of SNP VMIs this service
    admitted before (a retry of theirs is not refused for the ASID the VMI holds)."""
    if hook_point != PRE_VM_START:
        return Answer(OK)
    from nfd_snp.kubevirt import sidecar

    try:
        vmi = sidecar.parse_vmi(vmi_json)
    except InputError as exc:
        return _refuse(INVALID_ARGUMENT, f"nfd-snp cannot read the VMI virt-handler sent: {exc}")
    uid = vmi.get("metadata", {}).get("uid") if isinstance(vmi.get("metadata"), dict) else None
    uid = uid if isinstance(uid, str) else None
    try:
        form = sidecar.request_form(vmi)
        if form is None:
            return Answer(OK)
        options = sidecar.snp_request(vmi)
    except (DomainError, InputError) as exc:
        return _refuse(INVALID_ARGUMENT, f"refusing SEV-SNP for this VMI: {exc}", uid)
    problem = request_problem(vmi, form, options)
    if problem:
        return _refuse(INVALID_ARGUMENT, f"refusing SEV-SNP for this VMI: {problem}", uid)
    refused = judge_node(view, node_name, now, uid is not None and uid in admitted)
    if refused is None:
        refused = _policy_refused(options, view.facts, node_name)
    if refused is not None:
        return _refuse(refused[0], f"SEV-SNP VM cannot start: {refused[1]}", uid)
    return Answer(OK, "", True, uid)


def request_problem(vmi: dict, form: str, options) -> Optional[str]:
    """What the Plugins path cannot serve in a request the option model accepts, on any
    node: options that need each other (checked by the engine on a domain shaped like
    KubeVirt's for this VMI), the SEV path without a hook sidecar, and values the CEL
    domain hook cannot write as they are."""
    from nfd_snp import xmlio
    from nfd_snp.domain import engine
    from nfd_snp.kubevirt import domain_hook_cel, manifests, sidecar
    from nfd_snp.kubevirt.check_vm import kubevirt_domain

    annotations = vmi["metadata"]["annotations"] if _has_annotations(vmi) else {}
    if form != sidecar.UPSTREAM and manifests.SIDECAR_ANNOTATION not in annotations:
        return (
            f"it asks for SEV-SNP by {form}, which only nfd-snp's hook sidecar turns into "
            "SEV-SNP, and it has no hook sidecar: it would start as a plain SEV guest; use "
            "launchSecurity.snp (KubeVirt 1.7+)"
        )
    try:
        engine.settings(xmlio.parse(kubevirt_domain(vmi), what="KubeVirt's domain"), options, None)
    except DomainError as exc:
        return str(exc)
    return domain_hook_cel.inexpressible(annotations)


def _has_annotations(vmi: dict) -> bool:
    metadata = vmi.get("metadata")
    return isinstance(metadata, dict) and isinstance(metadata.get("annotations"), dict)


def _policy_refused(options, facts: NodeFacts, node_name: str):
    """The policy against this node's KVM and firmware ABI (the libvirt hook's check)."""
    from nfd_snp.domain.options import with_defaults

    try:
        with_defaults(options, {}, facts)
    except DomainError as exc:
        return FAILED_PRECONDITION, f"{_where(node_name)}: {exc}"
    return None
