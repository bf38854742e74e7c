"""What every SEV guest type needs: an AMD CPU with SEV, enabled by the BIOS and the kernel,
an answering and initialised SEV firmware, KVM with SEV, ASIDs for SEV guests and a libvirt
that reports SEV; and the informational checks of the CPU and the running guests.

Each check is one `Check(...)` in CHECKS, in report order among its siblings; its
evaluation function sits above it. A new check: its function and declaration here (or in
sev_es.py, sev_snp.py: the guest types it adds to), its `Reason`s in nfd_snp/reasons.py and
its section in docs/troubleshooting.md.
"""

from __future__ import annotations

from typing import Optional

from nfd_snp.checks import kinds
from nfd_snp.checks.engine import (
    ALL,
    INFO,
    ONLY_SEV,
    Cause,
    Check,
    Outcome,
    failed,
    from_unreadable,
    passed,
    unknown,
    warned,
)
from nfd_snp.checks.evidence import (
    SME_EVIDENCE,
    host_snp,
    kernel_flag,
    kvm_enabled,
    snp_firmware_initialised,
    state_name,
)
from nfd_snp.model import FirmwareState, Generation, HostFacts, MemEncryptBit, SyscfgBit
from nfd_snp.reasons import Reason


def _vendor(f: HostFacts) -> Optional[str]:
    return f.cpu.vendor or f.kernel.vendor_id


def vendor(f: HostFacts) -> Outcome:
    found = _vendor(f)
    if found is None:
        return from_unreadable(f.cpu.unreadable or f.kernel.unreadable)
    name = f.kernel.model_name or "model name unknown"
    if found != "AuthenticAMD":
        return failed(Reason.NOT_AMD, f"{found}: {name}")
    return passed(f"{found}: {name}")


def generation(f: HostFacts) -> Outcome:
    family, model = f.family, f.model
    if family is None:
        return from_unreadable(f.cpu.unreadable or f.kernel.unreadable)
    known = f.generation
    detail = f"family {family:#x} model {model:#x}" if model is not None else f"family {family:#x}"
    if known is Generation.UNKNOWN:
        layout = "1Ah" if family >= 0x1A else "19h"
        return unknown(
            Reason.UNKNOWN_GENERATION,
            f"{detail}: not a known EPYC server model (TCB values use the family {layout} layout)",
        )
    return passed(f"{detail} ({known.value})")


def drivers(f: HostFacts) -> Outcome:
    """Whether the CPUID and MSR devices could be read; a note, never a blocker."""
    missing = [u for u in (f.cpu.unreadable, f.msr.unreadable) if u is not None]
    if not missing:
        note = " (from the snapshot)" if f.snapshot else ""
        return passed(f"/dev/cpu/0/cpuid and /dev/cpu/0/msr read{note}")
    reasons = {u.reason for u in missing}
    detail = "; ".join(u.detail for u in missing) + ": checks below use other evidence"
    driver_reasons = {Reason.CPUID_DEVICE_MISSING, Reason.MSR_DEVICE_MISSING}
    if reasons <= driver_reasons:
        return warned(Reason.CPU_DRIVERS_NOT_LOADED, detail)
    return warned(next(u.reason for u in missing if u.reason not in driver_reasons), detail)


@kinds.with_sev_status
def sev_firmware(f: HostFacts, status) -> Outcome:
    return passed(f"SEV API {status.api_version} build {status.build}, {status.guest_count} guests")


@kinds.with_sev_status
def sev_initialised(f: HostFacts, status) -> Outcome:
    name = state_name(status.state)
    if status.state != FirmwareState.UNINIT:
        return passed(f"platform state {name}")
    if f.psp.init_on_probe is not False:
        return failed(
            Reason.SEV_FIRMWARE_UNINIT,
            f"platform state {name} with ccp.psp_init_on_probe="
            + {True: "Y", None: "Y (default)"}[f.psp.init_on_probe],
        )
    # ccp.psp_init_on_probe=N: ccp leaves the SEV firmware UNINIT and KVM initialises it at
    # the first SEV guest (sev-dev.c: "Else the PSP will be initialized on the first command
    # requiring it"), AMD's firmware hot-load set-up. That works unless SNP_INIT stops it.
    deferred = f"platform state {name}; ccp.psp_init_on_probe=N"
    snp = host_snp(f)
    if snp is False or snp_firmware_initialised(f):
        return passed(f"{deferred}: KVM initialises the firmware when the first guest starts")
    if snp is None:
        return unknown(
            f.msr.unreadable.reason if f.msr.unreadable else Reason.SEV_FIRMWARE_UNINIT,
            f"{deferred}, and whether a failed SNP_INIT would stop KVM's SEV INIT at the first "
            "guest is unknown (host SNP not known)",
        )
    return failed(
        Reason.SEV_FIRMWARE_UNINIT,
        f"{deferred}, but SNP is not initialised: KVM's SEV INIT at the first guest runs "
        "SNP_INIT first and stops on its failure",
    )


def kvm_device(f: HostFacts) -> Outcome:
    if f.kvm.device_present:
        return passed("/dev/kvm present")
    return failed(Reason.KVM_DEVICE_MISSING, "/dev/kvm missing")


def sev_asids(f: HostFacts) -> Outcome:
    known = f.asid_capacity(es=False)
    if known is None:
        return from_unreadable(f.asids.unreadable or f.cpu.unreadable, "no ASID information")
    capacity, source = known
    use = f", {f.asids.sev_current} in use" if f.asids.sev_current is not None else ""
    detail = f"{capacity} SEV ASIDs ({source}){use}"
    return passed(detail) if capacity > 0 else failed(Reason.NO_SEV_ASIDS, detail)


@kinds.host_libvirt()
def libvirt_sev(f: HostFacts, caps) -> Outcome:
    if caps.sev_supported:
        return passed(
            f"sev supported: cbitpos {caps.cbitpos}, reducedPhysBits {caps.reducedPhysBits}"
            + (f", maxGuests {caps.maxGuests}" if caps.maxGuests is not None else "")
            + (f", maxESGuests {caps.maxESGuests}" if caps.maxESGuests is not None else "")
        )
    return failed(Reason.LIBVIRT_NO_SEV, f"<sev supported='no'/> ({caps.emulator or 'QEMU'})")


def cbit(f: HostFacts) -> Outcome:
    known = f.cbit()
    if known is None:
        return from_unreadable(f.cpu.unreadable, "CPUID 0x8000001F not available")
    leaf = f.cpu.mem_encrypt
    raw = (
        f"; CPUID EBX[11:6] says {leaf.reduced_phys_bits}, which QEMU and libvirt do not use"
        if leaf is not None and leaf.reduced_phys_bits != known.reducedPhysBits
        else ""
    )
    return passed(
        f"C-bit {known.cbitpos} ({known.cbitpos_source}), reducedPhysBits "
        f"{known.reducedPhysBits} ({known.reduced_source}){raw}"
    )


def running_guests(f: HostFacts) -> Outcome:
    g = f.guests
    if g.unreadable is not None:
        return from_unreadable(g.unreadable)
    detail = f"{len(g.snp_pids)} SEV-SNP and {len(g.sev_pids)} SEV/SEV-ES QEMU guests running"
    if f.asids.sev_current is not None or f.asids.sev_es_current is not None:
        detail += f" (misc.current: sev {f.asids.sev_current}, sev_es {f.asids.sev_es_current})"
    return passed(detail)


# A failed SNP_INIT stops the legacy SEV INIT after it (sev-dev.c _sev_platform_init_locked
# returns early), and from Linux 6.16 kvm_amd turns sev off when that init fails; only while
# the SNP failure is a root cause of its own.
SNP_INIT_STOPS_SEV_INIT = Cause(
    "psp.snp_init",
    (
        Reason.SNP_NOT_INITIALISED,
        Reason.SNP_API_TOO_OLD,
        Reason.SNP_AND_SEV_INIT_FAILED,
        Reason.SNP_INIT_FAILED_HOTLOADED,
    ),
    if_root=True,
)

CHECKS = (
    Check(
        name="cpu.vendor",
        title="AMD CPU",
        gates=ALL,
        evaluate=vendor,
        description="CPUID leaf 0 (or /proc/cpuinfo vendor_id): AuthenticAMD",
    ),
    Check(
        name="cpu.generation",
        title="EPYC generation",
        parent="cpu.vendor",
        gates=INFO,
        evaluate=generation,
        description="The CPU family and model: its EPYC generation and TCB layout",
    ),
    Check(
        name="cpu.drivers",
        title="CPU register drivers (cpuid, msr)",
        parent="cpu.vendor",
        gates=INFO,
        evaluate=drivers,
        description="/dev/cpu/0/cpuid and /dev/cpu/0/msr, which the register checks read",
    ),
    Check(
        name="cpu.sme",
        title="Memory encryption in the CPU (SME)",
        parent="cpu.vendor",
        gates=ALL,
        evaluate=kinds.cpuid_bit(MemEncryptBit.SME, Reason.CPU_NO_SME, SME_EVIDENCE),
        description="CPUID 0x8000001F EAX[0]: the CPU's memory encryption engine (SME)",
    ),
    Check(
        name="bios.mem_encrypt",
        title="Memory encryption enabled (SYSCFG MEM_ENCRYPT)",
        parent="cpu.sme",
        gates=ALL,
        evaluate=kinds.syscfg_bit(SyscfgBit.MEM_ENCRYPT, Reason.BIOS_MEM_ENCRYPT_OFF, SME_EVIDENCE),
        description="SYSCFG MSR bit 23 (MEM_ENCRYPT): memory encryption enabled by the BIOS",
    ),
    Check(
        name="cpu.sev",
        title="SEV in the CPU",
        parent="cpu.sme",
        gates=ALL,
        evaluate=kinds.cpuid_bit(
            MemEncryptBit.SEV, Reason.CPU_NO_SEV, (kernel_flag("sev"), kvm_enabled("sev"))
        ),
        description="CPUID 0x8000001F EAX[1]: SEV in the CPU",
    ),
    Check(
        name="kernel.sev",
        title="SEV enabled by the host kernel",
        parent="cpu.sev",
        gates=ALL,
        evaluate=kinds.kernel_flag("sev", Reason.KERNEL_NO_SEV),
        description="The 'sev' flag in /proc/cpuinfo, which the kernel keeps when SEV is usable",
        # The kernel clears the flag when SYSCFG says no (amd.c early_detect_mem_encrypt).
        caused_by=("bios.mem_encrypt",),
        reasons_echoing=(Reason.KERNEL_NO_SEV,),
    ),
    Check(
        name="psp.sev_status",
        title="SEV firmware answers (/dev/sev)",
        parent="cpu.sev",
        gates=ALL,
        evaluate=sev_firmware,
        description="The SEV firmware's answer to SEV_PLATFORM_STATUS through /dev/sev",
    ),
    Check(
        name="psp.sev_init",
        title="SEV firmware initialised",
        parent="psp.sev_status",
        gates=ALL,
        evaluate=sev_initialised,
        description="The SEV firmware's state: initialised, or by KVM at the first guest",
        caused_by=(
            "kernel.sev",
            # From Linux 6.16 kvm_amd initialises the firmware when it loads.
            Cause("kvm.sev", (Reason.KVM_AMD_NOT_LOADED,)),
            "kvm.device",
            SNP_INIT_STOPS_SEV_INIT,
        ),
        reasons_echoing=(Reason.SEV_FIRMWARE_UNINIT,),
    ),
    Check(
        name="kvm.device",
        title="KVM (/dev/kvm)",
        parent="cpu.sev",
        gates=ALL,
        evaluate=kvm_device,
        description="/dev/kvm: SVM enabled and kvm_amd loaded",
    ),
    Check(
        name="kvm.sev",
        title="kvm_amd sev parameter",
        parent="cpu.sev",
        gates=ALL,
        evaluate=kinds.kvm_param("sev", Reason.KVM_SEV_OFF, absent_because="kernel without SEV"),
        description="kvm_amd.sev as KVM wrote it back: Y when KVM runs SEV guests",
        # From Linux 6.16 kvm_amd turns sev off when the firmware fails to initialise
        # (arch/x86/kvm/svm/sev.c sev_hardware_setup).
        caused_by=("kernel.sev", "psp.sev_init", SNP_INIT_STOPS_SEV_INIT),
        reasons_echoing=(Reason.KVM_SEV_OFF,),
    ),
    Check(
        name="asid.sev",
        title="ASIDs for SEV guests",
        parent="cpu.sev",
        gates=ONLY_SEV,
        evaluate=sev_asids,
        description="ASIDs for plain SEV guests (min SEV ASID to max) and their use",
    ),
    Check(
        name="libvirt.sev",
        title="libvirt reports SEV",
        parent="cpu.sev",
        gates=ALL,
        evaluate=libvirt_sev,
        description="libvirt's domain capabilities: sev supported='yes'",
        # libvirt offers SEV only when QEMU and KVM do (qemu_capabilities.c).
        caused_by=("kvm.sev", "kernel.sev", "psp.sev_status"),
        reasons_echoing=(Reason.LIBVIRT_NO_SEV,),
    ),
    Check(
        name="cpu.cbit",
        title="C-bit position",
        parent="cpu.sme",
        gates=INFO,
        evaluate=cbit,
        description="The C-bit and reducedPhysBits a guest's launchSecurity gets on this host",
    ),
    Check(
        name="guests.running",
        title="Running SEV/SNP guests",
        parent="cpu.vendor",
        gates=INFO,
        evaluate=running_guests,
        description="Running SEV and SEV-SNP QEMU guests, beside the misc cgroup's count",
    ),
)
