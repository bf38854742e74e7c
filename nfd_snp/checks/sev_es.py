"""What SEV-ES guests add to SEV (SEV-SNP guests are SEV-ES guests too): SEV-ES in the CPU,
the kernel, the firmware and KVM, and the ASID range SEV-ES and SEV-SNP guests share (or
split, with ciphertext hiding); and whether the firmware allows SEV-ES beside SEV-SNP.

Declared as in sev.py: one `Check(...)` each in CHECKS, its evaluation function above it.
"""

from __future__ import annotations

from typing import Optional

from nfd_snp.checks import kinds
from nfd_snp.checks.engine import (
    ES_AND_SNP,
    ONLY_ES,
    ONLY_SNP,
    SEV,
    SNP,
    Check,
    Guest,
    Outcome,
    failed,
    from_unreadable,
    inferred,
    passed,
    skipped,
    warned,
)
from nfd_snp.checks.evidence import kernel_flag, kvm_enabled
from nfd_snp.model import FirmwareState, HostFacts, MemEncryptBit, zen_of
from nfd_snp.reasons import Reason


@kinds.with_sev_status
def sev_es_initialised(f: HostFacts, status) -> Outcome:
    if status.state == FirmwareState.UNINIT:
        # CONFIG_ES is set by INIT (the kernel asks for SEV-ES whenever the CPU has it); an
        # UNINIT firmware says nothing about it. psp.sev_init decides whether that is fine.
        return skipped("firmware not initialised yet: CONFIG_ES is set when it is")
    if status.config_es:
        return passed(f"CONFIG_ES set (flags {status.flags:#x})")
    return failed(Reason.SEV_ES_NOT_CONFIGURED, f"CONFIG_ES clear (flags {status.flags:#x})")


def es_range(guest: Guest):
    """ASIDs for SEV-ES or SEV-SNP guests: ASIDs 1 .. min SEV ASID - 1, shared, or split
    between them by ciphertext hiding."""

    def evaluate(f: HostFacts) -> Outcome:
        known = f.guest_asids(guest.value)
        kind = guest.label
        if known is None:
            # KVM enables SEV-ES (and SNP) only when ES ASIDs exist ("if (min_sev_asid == 1)
            # goto out" in sev_hardware_setup).
            found = kvm_enabled("sev_es")(f)
            if found:
                return inferred(found, f"{kind} ASID count not read")
            return from_unreadable(f.asids.unreadable or f.cpu.unreadable, "no ASID information")
        detail = f"{known.count} {kind} ASIDs ({known.source})"
        if known.count <= 0:
            if f.kvm.ciphertext_hiding_asids:
                return failed(Reason.ES_ASIDS_TAKEN_BY_CIPHERTEXT_HIDING, detail)
            return failed(Reason.NO_ES_ASIDS, detail)
        used = _asids_in_use(f, guest, known.shared_es_snp)
        if used is None:
            return passed(detail)
        detail += f", {used} in use" + (
            " (SEV-ES and SEV-SNP together)" if known.shared_es_snp else ""
        )
        if used >= known.count:
            if not known.shared_es_snp:  # ciphertext hiding caps this type's share
                return warned(Reason.SPLIT_ASIDS_IN_USE, detail)
            return warned(Reason.ES_ASIDS_IN_USE, detail)
        return passed(detail)

    return evaluate


def _asids_in_use(f: HostFacts, guest: Guest, shared: bool) -> Optional[int]:
    """ASIDs in use by this guest type: misc.current `sev_es` counts SEV-ES and SNP guests
    together; with ciphertext hiding the running QEMU processes tell them apart."""
    joint = f.asids.sev_es_current
    if shared or joint is None:
        return joint
    if f.guests.unreadable is not None:
        return None
    snp = len(f.guests.snp_pids)
    return snp if guest is SNP else max(0, joint - snp)


def asids_in_use(f: HostFacts, guest: Guest) -> Optional[int]:
    """ASIDs that running guests of type `guest` hold, as the asid.* checks count them
    (the metrics show the same numbers); None when unknown."""
    if guest is SEV:
        return f.asids.sev_current
    known = f.guest_asids(guest.value)
    return None if known is None else _asids_in_use(f, guest, known.shared_es_snp)


# AMD-SB-3023 (CVE-2025-48514): firmware with the mitigation refuses SEV-ES guests while
# SNP is initialised. The kernel tells such firmware by the SNP SVN of the *current* TCB
# (drivers/crypto/ccp/sev-dev.c sev_firmware_allows_es: Zen 3/4 below 0x1B, Zen 5 below
# 0x4 still allow SEV-ES; the bulletin's mitigation bit is documented wrongly). QEMU then
# fails with "LAUNCH_START ret=1 fw_error=21 'Feature not supported'" (AMDESE/AMDSEV#282).
SEV_ES_REFUSED_FROM_SNP_SVN = {4: 0x1B, 5: 0x04}


def sev_es_with_snp(f: HostFacts) -> Outcome:
    snp = f.psp.snp
    if snp is None or snp.state == FirmwareState.UNINIT:
        unreadable = f.psp.snp_unreadable
        if snp is None and unreadable is not None and unreadable.reason.unknown:
            if f.kernel.has_flag("sev_snp") is False:
                return passed("SEV-SNP is not enabled on this host")
            return from_unreadable(unreadable)
        return passed("SEV-SNP is not initialised, so SEV-ES is not restricted")
    floor = SEV_ES_REFUSED_FROM_SNP_SVN.get(zen_of(f.family, f.model) or 0)
    svn = snp.current_tcb.snp
    if floor is None or svn < floor:
        return passed(f"SNP firmware SVN {svn} predates the AMD-SB-3023 restriction")
    return failed(
        Reason.SEV_ES_REFUSED_WITH_SNP,
        f"SNP firmware SVN {svn} (>= {floor:#x}, firmware {snp.api_version} build "
        f"{snp.build_id}) refuses SEV-ES guests while SEV-SNP is initialised",
    )


CHECKS = (
    Check(
        name="cpu.sev_es",
        title="SEV-ES in the CPU",
        parent="cpu.sev",
        gates=ES_AND_SNP,
        evaluate=kinds.cpuid_bit(
            MemEncryptBit.SEV_ES,
            Reason.CPU_NO_SEV_ES,
            (kernel_flag("sev_es"), kvm_enabled("sev_es")),
        ),
        description="CPUID 0x8000001F EAX[3]: SEV-ES in the CPU",
    ),
    Check(
        name="kernel.sev_es",
        title="SEV-ES enabled by the host kernel",
        parent="cpu.sev_es",
        gates=ES_AND_SNP,
        evaluate=kinds.kernel_flag("sev_es", Reason.KERNEL_NO_SEV_ES),
        description="The 'sev_es' flag in /proc/cpuinfo, kept when SEV-ES is usable",
        caused_by=("kernel.sev",),
        reasons_echoing=(Reason.KERNEL_NO_SEV_ES,),
    ),
    Check(
        name="psp.sev_es_init",
        title="SEV-ES initialised in firmware (CONFIG_ES)",
        parent="cpu.sev_es",
        gates=ES_AND_SNP,
        evaluate=sev_es_initialised,
        description="SEV_PLATFORM_STATUS flags bit 8 (CONFIG_ES), which INIT sets for SEV-ES",
        caused_by=("psp.sev_init", "psp.sev_status"),
        reasons_echoing=(
            Reason.SEV_ES_NOT_CONFIGURED,
            Reason.PSP_DEVICE_MISSING,
            Reason.PSP_COMMAND_FAILED,
            Reason.PSP_DEAD,
        ),
    ),
    Check(
        name="kvm.sev_es",
        title="kvm_amd sev_es parameter",
        parent="cpu.sev_es",
        gates=ES_AND_SNP,
        # kvm_amd.sev_es arrived with host SEV-ES support in Linux 5.11.
        evaluate=kinds.kvm_param(
            "sev_es", Reason.KVM_SEV_ES_OFF, absent_because="this kernel predates SEV-ES hosts"
        ),
        description="kvm_amd.sev_es as KVM wrote it back: Y when KVM runs SEV-ES guests",
        # KVM turns SEV-ES off without ES ASIDs (arch/x86/kvm/svm/sev.c sev_hardware_setup).
        caused_by=("kvm.sev", "kernel.sev_es", "asid.sev_es", "asid.snp"),
        reasons_echoing=(Reason.KVM_SEV_ES_OFF,),
    ),
    Check(
        name="asid.sev_es",
        title="ASIDs for SEV-ES guests",
        parent="cpu.sev_es",
        gates=ONLY_ES,
        evaluate=es_range(Guest.SEV_ES),
        description="ASIDs for SEV-ES guests (1 to min SEV ASID - 1) and their use",
    ),
    # SNP guests use the SEV-ES ASID range: judged whether or not the CPU has SNP.
    Check(
        name="asid.snp",
        title="ASIDs for SEV-SNP guests",
        parent="cpu.sev_es",
        gates=ONLY_SNP,
        evaluate=es_range(Guest.SEV_SNP),
        description="ASIDs for SEV-SNP guests (the SEV-ES range, or its share) and their use",
    ),
    Check(
        name="psp.sev_es_with_snp",
        title="SEV-ES allowed beside SEV-SNP (AMD-SB-3023)",
        parent="cpu.sev_es",
        gates=ONLY_ES,
        evaluate=sev_es_with_snp,
        description="The SNP firmware's SVN: whether it refuses SEV-ES beside SEV-SNP",
    ),
)
