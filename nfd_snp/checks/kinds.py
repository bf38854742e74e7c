"""Kinds of checks that several declarations share: a CPUID bit, a SYSCFG bit, a kernel
flag, a kvm_amd parameter, one firmware status reply, libvirt's capabilities. Each returns
(or wraps) the pure evaluation function a `Check` declares.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

from nfd_snp.checks.engine import (
    Outcome,
    Status,
    failed,
    from_unreadable,
    inferred,
    passed,
)
from nfd_snp.checks.evidence import Evidence, first
from nfd_snp.model import DomainCapsFacts, HostFacts, RegisterBit
from nfd_snp.reasons import Reason

Evaluate = Callable[[HostFacts], Outcome]


def cpuid_bit(bit: RegisterBit, reason: Reason, evidence: Sequence[Evidence] = ()) -> Evaluate:
    """A CPUID 0x8000001F EAX bit; other evidence vouches for it when CPUID is unreadable."""
    where = f"CPUID 0x8000001F EAX[{bit.number}]"

    def evaluate(f: HostFacts) -> Outcome:
        leaf = f.cpu.mem_encrypt
        if leaf is None:
            found = first(f, evidence)
            if found:
                return inferred(found, f"{where} not read")
            if f.cpu.unreadable is not None:
                return from_unreadable(f.cpu.unreadable)
            return failed(
                Reason.NO_MEM_ENCRYPT_LEAF,
                f"highest extended CPUID leaf is {f.cpu.max_extended_leaf or 0:#x}",
            )
        if leaf.has(bit):
            return passed(f"{where} = 1 (EAX {leaf.eax:#010x})")
        if f.kernel.has_flag("hypervisor"):
            # A guest's CPUID is what its hypervisor shows: it says nothing about the host.
            return failed(
                Reason.NO_MEM_ENCRYPT_LEAF,
                f"{where} = 0 (EAX {leaf.eax:#010x}): this kernel runs under a hypervisor",
            )
        return failed(reason, f"{where} = 0 (EAX {leaf.eax:#010x})")

    return evaluate


def syscfg_bit(bit: RegisterBit, reason: Reason, evidence: Sequence[Evidence]) -> Evaluate:
    """A SYSCFG bit; kernel and firmware facts that need it vouch when the MSR is unreadable."""
    where = f"SYSCFG[{bit.number}]"

    def evaluate(f: HostFacts) -> Outcome:
        value = f.msr.has(bit)
        if value is None:
            found = first(f, evidence)
            if found:
                return inferred(found, f"{where} not read")
            return from_unreadable(f.msr.unreadable)
        if value:
            return passed(f"{where} = 1 (SYSCFG {f.msr.syscfg:#x})")
        return failed(reason, f"{where} = 0 (SYSCFG {f.msr.syscfg:#x})")

    return evaluate


def kernel_flag(flag: str, reason: Reason) -> Evaluate:
    """A /proc/cpuinfo flag the kernel keeps only when the feature is usable."""

    def evaluate(f: HostFacts) -> Outcome:
        present = f.kernel.has_flag(flag)
        if present is None:
            return from_unreadable(f.kernel.unreadable)
        if present:
            return passed(f"'{flag}' in /proc/cpuinfo flags")
        hint = " (the kernel runs under a hypervisor)" if f.kernel.has_flag("hypervisor") else ""
        return failed(reason, f"no '{flag}' in /proc/cpuinfo flags{hint}")

    return evaluate


def kvm_param(
    name: str, off: Reason, *, absent: Optional[Reason] = None, absent_because: str = ""
) -> Evaluate:
    """A kvm_amd parameter, as KVM wrote it back after setup: Y passes, N fails with `off`.

    A kernel without the parameter fails with `absent` (default `off`), the detail saying
    `absent_because` when given.
    """
    where = f"kvm_amd.{name}"
    missing = f"{where} does not exist" + (f" ({absent_because})" if absent_because else "")

    def evaluate(f: HostFacts) -> Outcome:
        param = getattr(f.kvm, name)
        if not f.kvm.module_loaded:
            return failed(Reason.KVM_AMD_NOT_LOADED, "kvm_amd is not loaded")
        if param.unreadable is not None:
            return from_unreadable(param.unreadable)
        if not param.present:
            return failed(absent or off, missing)
        if param.enabled:
            return passed(f"{where} = {param.raw}")
        return failed(off, f"{where} = {param.raw}")

    return evaluate


def firmware_reply(which: str):
    """A check of one firmware status reply (`psp.sev` or `psp.snp`): the decorated function
    gets the reply; why the reply is missing decides otherwise."""

    def wrap(evaluate_status) -> Evaluate:
        def evaluate(f: HostFacts) -> Outcome:
            reply = getattr(f.psp, which)
            if reply is None:
                return from_unreadable(getattr(f.psp, f"{which}_unreadable"))
            return evaluate_status(f, reply)

        return evaluate

    return wrap


with_sev_status = firmware_reply("sev")  # SEV_PLATFORM_STATUS
with_snp_status = firmware_reply("snp")  # SNP_PLATFORM_STATUS

NO_LIBVIRT = "no libvirt on this host (KubeVirt runs libvirt in each VM's pod)"


def host_libvirt(note: str = "", *, capabilities: bool = True):
    """A check of the host's libvirt: SKIP on a node without one (KubeVirt runs libvirt in
    each VM's pod; `note` adds why that is fine), and, when it reads libvirt's domain
    `capabilities`, whatever kept them from being read. The decorated function also gets
    the capabilities."""

    def wrap(evaluate_caps) -> Evaluate:
        def evaluate(f: HostFacts) -> Outcome:
            caps: DomainCapsFacts = f.domcaps
            if caps.libvirt_present is False:
                return Outcome(Status.SKIP, NO_LIBVIRT + note, Reason.NO_HOST_LIBVIRT)
            if capabilities and caps.unreadable is not None:
                return from_unreadable(caps.unreadable)
            return evaluate_caps(f, caps)

        return evaluate

    return wrap
