"""What SEV-SNP guests add to SEV-ES: SNP and VMPLs in the CPU, SYSCFG SNP_EN and the RMP,
the kernel's host SNP, the SNP firmware (initialised, API 1.51+, its RMP, TCB and alias
check), KVM's SNP and the guest policies it accepts, libvirt's sev-snp, an SNP guest firmware
and the libvirt hook.

Declared as in sev.py: one `Check(...)` each in CHECKS, its evaluation function above it.
"""

from __future__ import annotations

import time
from typing import Optional, Tuple

from nfd_snp import paths
from nfd_snp.checks import evidence, kinds
from nfd_snp.checks.engine import (
    INFO,
    ONLY_SNP,
    Cause,
    Check,
    Outcome,
    Status,
    failed,
    from_unreadable,
    inferred,
    passed,
    skipped,
    unknown,
    warned,
)
from nfd_snp.checks.evidence import (
    SNP_FLAG,
    first,
    kvm_enabled,
    snp_firmware_initialised,
    state_name,
)
from nfd_snp.model import FirmwareState, Generation, HostFacts, MemEncryptBit, SyscfgBit
from nfd_snp.reasons import Reason


def vmpl(f: HostFacts) -> Outcome:
    outcome = _cpuid_vmpl(f)
    if outcome.status is Status.PASS and f.cpu.mem_encrypt is not None:
        return passed(f"{f.cpu.mem_encrypt.vmpl_count} VMPLs (CPUID 0x8000001F EBX[15:12])")
    return outcome


_cpuid_vmpl = kinds.cpuid_bit(MemEncryptBit.VMPL, Reason.CPU_NO_VMPL, (snp_firmware_initialised,))


# -- the RMP ---------------------------------------------------------------------------------


def snp_flag_proves_rmp(f: HostFacts) -> Optional[str]:
    """The `sev_snp` flag vouches for the RMP from Linux 6.9, which added the RMP probe to
    the flag's conditions; before, the flag followed CPUID alone."""
    version = f.kernel.version
    return SNP_FLAG(f) if version is not None and version >= (6, 9) else None


def _size(shift: int) -> str:
    size = 1 << shift
    return f"{size >> 30} GB" if size >= 1 << 30 else f"{size} bytes"


def rmp_registers(msr) -> str:
    """The RMP registers as read, with the layout they describe."""
    span = f"RMP_BASE {msr.rmp_base:#x}, RMP_END {msr.rmp_end:#x}"
    if msr.rmp_segmented:
        return (
            f"segmented RMP, {_size(msr.rmp_segment_shift)} segments (RMP_CFG "
            f"{msr.rmp_cfg:#x}): segment table at RMP_BASE {msr.rmp_base:#x}, RMP_END "
            f"{msr.rmp_end:#x}"
        )
    if msr.rmp_cfg is None:
        return f"{span}; RMP_CFG not read"
    return span


def rmp_initialised_in_firmware(f: HostFacts) -> Optional[str]:
    """An SNP firmware past UNINIT whose RMP is initialised: SNP_INIT validated the RMP the
    BIOS reserved (SNP firmware ABI, SNP_INIT_EX), whatever the registers seem to say."""
    snp = f.psp.snp
    if snp is None or snp.state == FirmwareState.UNINIT or not snp.rmp_initialized:
        return None
    return f"the SNP firmware is {state_name(snp.state)} with its RMP initialised"


def rmp_reserved(f: HostFacts) -> Outcome:
    """RMP_BASE/RMP_END, read as the kernel reads them: contiguous, or segmented (Zen 5,
    RMP_CFG bit 0) where RMP_END is 0 by design (arch/x86/virt/svm/sev.c
    probe_segmented_rmptable_info)."""
    msr = f.msr
    reserved = msr.rmp_reserved
    if reserved is None:
        found = first(f, (snp_flag_proves_rmp, snp_firmware_initialised))
        read = rmp_registers(msr) if msr.rmp_base is not None else "RMP_BASE/RMP_END not read"
        if found:
            return inferred(found, read)
        return from_unreadable(msr.unreadable or msr.rmp_unreadable or msr.rmp_cfg_unreadable)
    shown = rmp_registers(msr)
    version = f.kernel.version
    if reserved and msr.rmp_segmented and version is not None and version < (6, 14):
        # Linux reads a segmented RMP from 6.14 on; before, it takes RMP_END 0 for "no RMP"
        # and turns host SNP off. A vendor kernel may carry the support: what it did wins.
        found = first(f, (snp_flag_proves_rmp, snp_firmware_initialised))
        if found:
            return inferred(found, shown)
        return failed(
            Reason.KERNEL_TOO_OLD_FOR_SEGMENTED_RMP,
            f"{shown}: Linux {version[0]}.{version[1]} reads no segmented RMP (6.14 and later do)",
        )
    coverage = rmp_coverage(f)
    if reserved and coverage is not None and coverage[0] < coverage[1]:
        if rmp_initialised_in_firmware(f) is None:
            return failed(
                Reason.RMP_TOO_SMALL,
                f"{shown}: the RMP covers {_gib(coverage[0])}, the host has "
                f"{_gib(coverage[1])} of RAM (MemTotal)",
            )
    if reserved:
        if coverage is not None:
            shown += f"; covers {_gib(coverage[0])} of {_gib(coverage[1])} of RAM"
        return passed(shown)
    firmware = rmp_initialised_in_firmware(f)
    if firmware:
        return warned(Reason.RMP_REGISTERS_CONTRADICTED, f"{shown}, but {firmware}")
    return failed(Reason.RMP_NOT_RESERVED, shown)


def rmp_coverage(f: HostFacts) -> Optional[Tuple[int, int]]:
    """(bytes of memory a contiguous RMP covers, MemTotal in bytes) when both are known.

    An RMP holds a 16-byte entry per 4 KiB page after 16 KiB of CPU bookkeeping
    (arch/x86/virt/svm/sev.c: RMPTABLE_CPU_BOOKKEEPING_SZ, `calc_rmp_sz = (max_pfn << 4) +
    RMPTABLE_CPU_BOOKKEEPING_SZ`). A segmented RMP's coverage is in its segment table, which
    no register shows."""
    msr, total = f.msr, f.memory.total_kib
    if msr.rmp_segmented is not False or not msr.rmp_reserved or total is None:
        return None
    size = msr.rmp_end - msr.rmp_base + 1 - RMP_BOOKKEEPING
    return max(0, size) // 16 * 4096, total * 1024


RMP_BOOKKEEPING = 0x4000


def _gib(size: int) -> str:
    return f"{size / (1 << 30):.1f} GB"


# -- the IOMMU -----------------------------------------------------------------------------


def host_snp_on(f: HostFacts) -> Optional[str]:
    """Evidence that the kernel kept host SNP (CC_ATTR_HOST_SEV_SNP): KVM runs SNP guests or
    the SNP firmware initialised, neither of which it allows otherwise."""
    if f.kvm.sev_snp.enabled:
        return f"kvm_amd.sev_snp={f.kvm.sev_snp.raw}"
    return snp_firmware_initialised(f)


def iommu(f: HostFacts) -> Outcome:
    """Whether the IOMMU lets the kernel keep SEV-SNP (drivers/iommu/amd/init.c
    iommu_snp_enable, Linux 6.9+): translating (not off, not passthrough), the v1 page
    table, SNPSup (EFR bit 63) on every AMD IOMMU. Where host SNP is on, the kernel has
    already made this decision, and its answer wins over the reading of the options."""
    io = f.iommu
    found = host_snp_on(f)
    if found:
        return inferred(found, "the kernel kept host SNP, which it does only past the IOMMU")
    if io.amd_iommu_off:
        return failed(Reason.IOMMU_OFF, "amd_iommu=off on the kernel command line")
    if io.passthrough_option:
        return failed(
            Reason.IOMMU_PASSTHROUGH, f"{io.passthrough_option} on the kernel command line"
        )
    if io.pgtbl_v2:
        return failed(Reason.IOMMU_PGTBL_V2, "amd_iommu=pgtbl_v2 on the kernel command line")
    if io.units_listed and not io.units:
        return failed(Reason.IOMMU_ABSENT, "no AMD IOMMU in /sys/class/iommu")
    without = [u.name for u in io.units if u.snp_support is False]
    if without:
        return failed(Reason.IOMMU_NO_SNPSUP, f"no SNPSup (EFR bit 63) on {', '.join(without)}")
    types = io.group_types
    if types and set(types) == {"identity"}:
        return failed(
            Reason.IOMMU_PASSTHROUGH,
            f"all {len(io.groups)} IOMMU groups are identity-mapped (the kernel's default "
            "passthrough, CONFIG_IOMMU_DEFAULT_PASSTHROUGH)",
        )
    if io.unreadable is not None or io.units_listed is None:
        # What decides is unread: the command line, or which IOMMUs there are.
        return from_unreadable(io.unreadable or io.efr_unreadable)
    if io.efr_unreadable is not None:
        # SNPSup unread (a `features` format this kernel version does not pin down), and
        # the kernel did not keep host SNP: nothing here decides.
        return from_unreadable(io.efr_unreadable)
    units = len(io.units)
    parts = [f"{units} AMD IOMMU{'s' if units != 1 else ''}", "SNPSup on each"]
    if types:
        parts.append(", ".join(f"{n} group{'s' if n != 1 else ''} {t}" for t, n in types.items()))
    return passed("translated: " + "; ".join(parts))


# -- the SNP firmware ------------------------------------------------------------------------

# Linux drivers/crypto/ccp/sev-dev.c refuses SNP with firmware older than 1.51
# (SNP_MIN_API_MAJOR/MINOR, "SEV-SNP support requires firmware version >= 1:51").
SNP_MIN_API = (1, 51)


def _api_too_old(major: int, minor: int) -> bool:
    return (major, minor) < SNP_MIN_API


def firmware_api(f: HostFacts) -> Optional[Tuple[int, int, str]]:
    """(major, minor, "API x.y build n") of the SEV firmware: one firmware serves SEV and
    SNP, and the kernel compares SEV_PLATFORM_STATUS's version with 1.51 for SNP
    (sev-dev.c sev_version_greater_or_equal)."""
    sev, snp = f.psp.sev, f.psp.snp
    if sev is not None:
        return sev.api_major, sev.api_minor, f"API {sev.api_version} build {sev.build}"
    if snp is not None:
        return snp.api_major, snp.api_minor, f"API {snp.api_version} build {snp.build_id}"
    return None


def _both_inits_failed(f: HostFacts, state: str) -> Optional[Outcome]:
    """SNP not initialised and the SEV firmware UNINIT with ccp initialising at probe: SNP_INIT
    failed and so did the SEV INIT after it (sev-dev.c _sev_platform_init_locked), the mark of
    SEV firmware newer than the BIOS's PSP bootloader (AMDESE/AMDSEV README, #176, #189)."""
    sev = f.psp.sev
    if sev is None or sev.state != FirmwareState.UNINIT or f.psp.init_on_probe is False:
        return None
    if f.psp.hotloaded_firmware:
        return failed(
            Reason.SNP_INIT_FAILED_HOTLOADED,
            f"{state} and SEV state UNINIT, with {f.psp.hotloaded_firmware} loaded over the "
            "BIOS's firmware",
        )
    return failed(Reason.SNP_AND_SEV_INIT_FAILED, f"{state} and SEV state UNINIT")


def snp_initialised(f: HostFacts) -> Outcome:
    status = f.psp.snp
    initialised = status is not None and status.state != FirmwareState.UNINIT
    api = firmware_api(f)
    if not initialised and api is not None and _api_too_old(api[0], api[1]):
        return failed(
            Reason.SNP_API_TOO_OLD,
            f"SNP not initialised: SEV firmware {api[2]} is below 1.51, the minimum Linux "
            "accepts for SEV-SNP",
        )
    if status is None:
        unreadable = f.psp.snp_unreadable
        if unreadable is not None and unreadable.reason is Reason.SNP_NOT_INITIALISED:
            return _both_inits_failed(f, unreadable.detail) or from_unreadable(unreadable)
        return from_unreadable(unreadable)
    name = state_name(status.state)
    if not initialised:
        return _both_inits_failed(f, f"SNP platform state {name}") or failed(
            Reason.SNP_NOT_INITIALISED, f"SNP platform state {name}"
        )
    return passed(
        f"SNP platform state {name}, build {status.build_id}, {status.guest_count} guests"
    )


@kinds.with_snp_status
def snp_api(f: HostFacts, status) -> Outcome:
    version = f"SNP API {status.api_version}"
    if _api_too_old(status.api_major, status.api_minor):
        return failed(Reason.SNP_API_TOO_OLD, f"{version} < 1.51")
    return passed(f"{version} >= 1.51")


@kinds.with_snp_status
def rmp_initialised(f: HostFacts, status) -> Outcome:
    if status.rmp_initialized:
        return passed("RMP initialised (byte 3 bit 0)")
    return failed(Reason.RMP_NOT_INITIALISED, "RMP not initialised (byte 3 bit 0 clear)")


@kinds.with_snp_status
def tcb(f: HostFacts, status) -> Outcome:
    cur, rep = status.current_tcb, status.reported_tcb
    if cur.raw == rep.raw:
        return passed(f"reported TCB {rep.describe()} is the current one")
    return warned(
        Reason.TCB_NOT_COMMITTED,
        f"reported TCB {rep.describe()} differs from the current {cur.describe()}",
    )


# Firmware that reports the alias-check flag (SNP_PLATFORM_STATUS byte 3 bit 1): Milan
# 1.55.22 and Genoa 1.55.38 and later (AMD-SB-3015). Older firmware leaves the bit clear.
ALIAS_CHECK_FIRMWARE = {
    Generation.MILAN: (1, 55, 22),
    Generation.GENOA: (1, 55, 38),
    Generation.BERGAMO_SIENA: (1, 55, 38),
}


@kinds.with_snp_status
def alias_check(f: HostFacts, status) -> Outcome:
    if status.alias_check_complete:
        return passed("alias check complete since the last update (byte 3 bit 1)")
    version = (status.api_major, status.api_minor, status.build_id)
    shown = f"{status.api_version}.{status.build_id}"
    floor = ALIAS_CHECK_FIRMWARE.get(f.generation)
    if floor is not None and version < floor:
        return warned(
            Reason.ALIAS_CHECK_UNSUPPORTED,
            f"firmware {shown} predates the alias check (needs "
            f"{'.'.join(map(str, floor))} or later)",
        )
    return warned(Reason.ALIAS_CHECK_PENDING, f"alias check not complete (firmware {shown})")


# -- KVM, libvirt, guest firmware, the hook --------------------------------------------------


def snp_policy(f: HostFacts) -> Outcome:
    rule = f.snp_policy_rule()
    if rule is None:
        version = f.kernel.version
        if version is not None and version < (6, 10):
            if f.kvm.sev_snp.present:
                # A vendor kernel with SNP backported (RHEL 9.5's 5.14, CentOS Stream 9 MR
                # !4224): its version says nothing about its KVM.
                return unknown(
                    Reason.KVM_NO_POLICY_ATTRIBUTE,
                    f"kvm_amd.sev_snp exists on Linux {version[0]}.{version[1]}, a kernel with "
                    "SEV-SNP backported: which policy bits its KVM accepts is not known",
                )
            return skipped(f"Linux {version[0]}.{version[1]} predates SEV-SNP in KVM")
        return from_unreadable(
            f.kvm.snp_policy_bits_unreadable, "neither KVM_X86_SNP_POLICY_BITS nor a known rule"
        )
    required = f", requires {rule.required:#x}" if rule.required else ""
    note = ""
    version = f.kernel.version
    if f.kvm.snp_policy_bits is None and version is not None and version < (6, 17):
        note = "; upstream kernels before 6.17 also want SMT (bit 16) and no SINGLE_SOCKET (20)"
    return passed(f"accepts policy bits {rule.accepted:#x}{required} ({rule.source}){note}")


@kinds.host_libvirt()
def libvirt_snp(f: HostFacts, caps) -> Outcome:
    if "sev-snp" in caps.sectypes:
        return passed("launchSecurity sectype 'sev-snp' offered")
    if caps.launch_security_supported is None:
        # <launchSecurity> in domain capabilities lists sectypes since libvirt 10.5, the
        # release that added sev-snp (formatdomaincaps.html).
        return failed(
            Reason.LIBVIRT_TOO_OLD_FOR_SNP,
            "no <launchSecurity> in domain capabilities (libvirt older than 10.5)",
        )
    offered = ", ".join(caps.sectypes) or "none"
    return failed(Reason.LIBVIRT_NO_SNP, f"launchSecurity sectypes offered: {offered}")


@kinds.host_libvirt("; firmware comes from the VM's launcher image", capabilities=False)
def snp_firmware(f: HostFacts, _caps) -> Outcome:
    images = f.firmware.snp_images
    if images:
        names = ", ".join(i.executable or i.descriptor for i in images)
        return passed(f"amd-sev-snp firmware: {names}")
    known = len(f.firmware.images)
    return failed(Reason.NO_SNP_FIRMWARE, f"none of {known} firmware descriptors lists amd-sev-snp")


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def hook_loaded(f: HostFacts) -> Outcome:
    """Whether the running libvirt daemons have loaded nfd-snp's qemu hook, and whether its
    Python can load nfd_snp.

    Evaluated on every host, whatever its CPU: fail-closed rests on the hook (a domain that
    asks for SEV-SNP through its metadata starts as a plain VM where libvirt does not run
    it). Informational, a WARN concerning SEV-SNP: a daemon that has not loaded the hook
    still starts SEV-SNP guests; what is missing is the hook's check of them. A daemon looks
    for hooks when it starts (sources/hook_loaded.py); /proc/stat's btime has a one-second
    resolution, and a start within that second of the change counts as before it, erring
    toward a restart. A hook whose Python cannot import nfd_snp refuses every domain that
    asks for SEV-SNP: a WARN too, so the alert on this check fires.
    """
    h = f.hook
    hook = "/" + paths.LIBVIRT_QEMU_HOOK
    if h.installed is None:
        return from_unreadable(h.unreadable)
    if not h.installed:
        return skipped(f"no {hook} (`nfd-snp install` or the nfd-snp-libvirt package installs it)")
    if not h.executable:
        return warned(Reason.HOOK_NOT_EXECUTABLE, f"{hook} is not executable")
    if h.loads is False:
        return warned(
            Reason.HOOK_CANNOT_LOAD,
            f"its Python {h.interpreter} cannot import nfd_snp ({h.load_error}): every domain "
            "that asks for SEV-SNP is refused",
        )
    if h.daemons_unreadable is not None:
        return from_unreadable(h.daemons_unreadable)
    changed = f"the hook changed {_when(h.changed)}"
    if h.loads:
        python = f"; its Python {h.interpreter} loads nfd_snp"
    elif h.interpreter:
        python = f"; whether its Python {h.interpreter} loads nfd_snp is unknown ({h.load_error})"
    else:
        python = f"; {h.load_error}"
    if not h.daemons:
        return passed(f"no libvirt daemon runs; the next to start loads it ({changed}){python}")
    stale = [d for d in h.daemons if d.started < h.changed]
    shown = ", ".join(
        f"{d.name} (pid {d.pid}) started {_when(d.started)}" for d in stale or h.daemons
    )
    if stale:
        return warned(Reason.HOOK_NOT_LOADED, f"{shown}, before {changed}")
    return passed(f"{shown}, after {changed}{python}")


CHECKS = (
    Check(
        name="cpu.snp",
        title="SEV-SNP in the CPU",
        parent="cpu.sev_es",
        gates=ONLY_SNP,
        evaluate=kinds.cpuid_bit(
            MemEncryptBit.SNP,
            Reason.CPU_NO_SNP,
            (SNP_FLAG, kvm_enabled("sev_snp"), snp_firmware_initialised),
        ),
        description="CPUID 0x8000001F EAX[4]: SEV-SNP in the CPU (Milan and later)",
    ),
    Check(
        name="cpu.vmpl",
        title="VMPLs in the CPU",
        parent="cpu.snp",
        gates=ONLY_SNP,
        evaluate=vmpl,
        description="CPUID 0x8000001F EAX[5]: VMPLs in the CPU, counted in EBX[15:12]",
    ),
    Check(
        name="iommu.snp",
        title="IOMMU allows SEV-SNP",
        parent="cpu.snp",
        gates=ONLY_SNP,
        evaluate=iommu,
        description="Kernel command line and AMD IOMMUs: translated, v1 page table, SNPSup",
    ),
    Check(
        name="bios.snp_en",
        title="SNP enabled by the kernel (SYSCFG SNP_EN)",
        parent="cpu.snp",
        gates=ONLY_SNP,
        evaluate=kinds.syscfg_bit(
            SyscfgBit.SNP_EN, Reason.BIOS_SNP_OFF, (snp_firmware_initialised,)
        ),
        description="SYSCFG MSR bit 24 (SNP_EN), set by the kernel when RMP and IOMMU allow",
        # The kernel sets SNP_EN itself: at boot once the RMP and IOMMU are set up (up to
        # Linux 7.0), or when the SNP firmware initialises (snp_prepare, 7.1+).
        caused_by=(
            "bios.rmp",
            "iommu.snp",
            "kernel.sev_snp",
            Cause("psp.snp_init", when=evidence.snp_en_set_at_init),
        ),
        reasons_echoing=(Reason.BIOS_SNP_OFF,),
    ),
    Check(
        name="bios.rmp",
        title="RMP table reserved (RMP_BASE/RMP_END)",
        parent="cpu.snp",
        gates=ONLY_SNP,
        evaluate=rmp_reserved,
        description="RMP_BASE/RMP_END (and RMP_CFG): the RMP table the BIOS reserves",
    ),
    Check(
        name="kernel.sev_snp",
        title="SEV-SNP enabled by the host kernel",
        parent="cpu.snp",
        gates=ONLY_SNP,
        evaluate=kinds.kernel_flag("sev_snp", Reason.KERNEL_NO_SNP),
        description="The 'sev_snp' flag in /proc/cpuinfo, kept when host SNP is on",
        # The kernel clears sev_snp when the RMP is not reserved (amd.c bsp_determine_snp).
        caused_by=("bios.rmp", "iommu.snp", "kernel.sev_es"),
        reasons_echoing=(Reason.KERNEL_NO_SNP,),
    ),
    Check(
        name="psp.snp_init",
        title="SNP firmware initialised",
        parent="cpu.snp",
        gates=ONLY_SNP,
        evaluate=snp_initialised,
        description="SNP_PLATFORM_STATUS's platform state: the SNP firmware initialised",
        # SNP_INIT needs the RMP, and ccp skips it without host SNP (CC_ATTR_HOST_SEV_SNP);
        # from Linux 6.16 kvm_amd initialises it when it loads.
        caused_by=(
            "kernel.sev_snp",
            "bios.rmp",
            "iommu.snp",
            "psp.sev_status",
            Cause("kvm.sev_snp", (Reason.KVM_AMD_NOT_LOADED,)),
            # Up to Linux 7.0 the kernel sets SNP_EN at boot, before any SNP_INIT: SNP_EN
            # clear then is why the firmware never initialised, not the other way round.
            Cause("bios.snp_en", (Reason.BIOS_SNP_OFF,), when=evidence.snp_en_set_at_boot),
        ),
        reasons_echoing=(
            Reason.SNP_NOT_INITIALISED,
            Reason.PSP_DEVICE_MISSING,
            Reason.PSP_COMMAND_FAILED,
            Reason.PSP_DEAD,
        ),
    ),
    Check(
        name="psp.snp_api",
        title="SNP firmware API >= 1.51",
        parent="psp.snp_init",
        gates=ONLY_SNP,
        evaluate=snp_api,
        description="The SNP firmware's API version: 1.51 or later, the oldest Linux accepts",
    ),
    Check(
        name="psp.rmp_init",
        title="RMP initialised in firmware",
        parent="psp.snp_init",
        gates=ONLY_SNP,
        evaluate=rmp_initialised,
        description="SNP_PLATFORM_STATUS byte 3 bit 0: the RMP initialised by the firmware",
    ),
    Check(
        name="psp.tcb",
        title="Reported TCB is the current one",
        parent="psp.snp_init",
        gates=INFO,
        concerns=ONLY_SNP,
        evaluate=tcb,
        description="The reported TCB (attestation, VCEKs) against the running one",
    ),
    Check(
        name="psp.alias_check",
        title="Memory alias check (AMD-SB-3015)",
        parent="psp.snp_init",
        gates=INFO,
        concerns=ONLY_SNP,
        evaluate=alias_check,
        description="SNP_PLATFORM_STATUS byte 3 bit 1: the memory alias check (AMD-SB-3015)",
    ),
    Check(
        name="kvm.sev_snp",
        title="kvm_amd sev_snp parameter",
        parent="cpu.snp",
        gates=ONLY_SNP,
        evaluate=kinds.kvm_param("sev_snp", Reason.KVM_SNP_OFF, absent=Reason.KVM_NO_SNP_PARAMETER),
        description="kvm_amd.sev_snp as KVM wrote it back: Y when KVM runs SEV-SNP guests",
        # KVM turns SNP off without SEV-ES, host SNP, an initialised SNP firmware or ASIDs
        # (arch/x86/kvm/svm/sev.c sev_hardware_setup).
        caused_by=("kvm.sev_es", "kernel.sev_snp", "iommu.snp", "psp.snp_init", "asid.snp"),
        reasons_echoing=(Reason.KVM_SNP_OFF,),
    ),
    Check(
        name="kvm.snp_policy",
        title="SNP guest policies KVM accepts",
        parent="kvm.sev_snp",
        gates=INFO,
        evaluate=snp_policy,
        description="The SNP guest policy bits KVM accepts (KVM_X86_SNP_POLICY_BITS or rule)",
    ),
    Check(
        name="libvirt.sev_snp",
        title="libvirt offers launchSecurity sev-snp",
        parent="cpu.snp",
        gates=ONLY_SNP,
        evaluate=libvirt_snp,
        description="libvirt's domain capabilities: launchSecurity sectype 'sev-snp'",
        # libvirt offers sev-snp only when QEMU and KVM do (qemu_capabilities.c).
        caused_by=("libvirt.sev", "kvm.sev_snp", "kernel.sev_snp"),
        reasons_echoing=(Reason.LIBVIRT_NO_SNP,),
    ),
    Check(
        name="firmware.snp",
        title="SEV-SNP guest firmware (OVMF)",
        parent="cpu.snp",
        gates=ONLY_SNP,
        evaluate=snp_firmware,
        description="QEMU firmware descriptors: one lists the amd-sev-snp feature",
    ),
    # Wherever the hook is installed, whatever the CPU: SEV-SNP domains rely on it.
    Check(
        name="libvirt.hook",
        title="libvirt runs the nfd-snp hook",
        parent=None,
        gates=INFO,
        concerns=ONLY_SNP,
        evaluate=hook_loaded,
        description="The libvirt daemons' start times against the hook, and its Python",
    ),
)
