"""Evidence: facts that the kernel or the firmware show only when another fact holds.

Real hosts rarely let every register be read (the cpuid and msr drivers are not loaded by
default, /dev/sev needs root), so a check whose own source is unreadable passes *as
inferred* when one of these proves it; the evidence is named. Each probe returns the
evidence as a phrase, or None when it does not hold.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

from nfd_snp.model import FirmwareState, HostFacts

Evidence = Callable[[HostFacts], Optional[str]]


def kernel_flag(flag: str, why: str = "") -> Evidence:
    """Evidence from a /proc/cpuinfo flag (arch/x86/kernel/cpu/amd.c early_detect_mem_encrypt
    clears sme/sev/sev_es/sev_snp unless SYSCFG MEM_ENCRYPT is set and the feature usable)."""

    def probe(f: HostFacts) -> Optional[str]:
        return f"the kernel flag '{flag}'{why}" if f.kernel.has_flag(flag) else None

    return probe


def kvm_enabled(param: str) -> Evidence:
    """Evidence from a kvm_amd parameter: KVM writes Y back only after it found the CPU
    feature (arch/x86/kvm/svm/sev.c sev_hardware_setup checks X86_FEATURE_SEV/_ES/_SNP)."""

    def probe(f: HostFacts) -> Optional[str]:
        p = getattr(f.kvm, param)
        return f"kvm_amd.{param}={p.raw}" if p.enabled else None

    return probe


def state_name(state: int) -> str:
    try:
        return FirmwareState(state).name
    except ValueError:
        return f"state {state}"


def snp_firmware_initialised(f: HostFacts) -> Optional[str]:
    """SNP firmware in INIT proves SYSCFG SNP_EN, VMPL_EN and the RMP: the kernel sets SNP_EN
    and VMPL_EN on every CPU before SNP_INIT (arch/x86/virt/svm/sev.c snp_enable; a CPU
    without VMPLs would refuse the write) and SNP_INIT requires them (SNP firmware ABI)."""
    snp = f.psp.snp
    if snp is None or snp.state == FirmwareState.UNINIT:
        return None
    return f"SNP firmware state {state_name(snp.state)}"


# The kernel keeps the `sev_snp` flag only on bare metal with the RMP reserved by the BIOS
# (amd.c bsp_determine_snp -> snp_probe_rmptable_info), so the flag proves CPU support and
# the RMP. It does not prove SYSCFG SNP_EN: the kernel sets that later, and only when the
# IOMMU and RMP set-up succeed (up to 7.0) or the SNP firmware initialises (7.1+).
SNP_FLAG = kernel_flag("sev_snp")

SME_EVIDENCE = (
    kernel_flag("sme"),
    # SEV encrypts guest memory with SME's engine (AMD64 APM vol. 2, "Secure Encrypted
    # Virtualization"): a usable SEV proves the SME hardware.
    kernel_flag("sev", " (SEV uses the SME encryption engine)"),
    kernel_flag("sev_es", " (SEV-ES uses the SME encryption engine)"),
    SNP_FLAG,
)


def first(f: HostFacts, evidence: Sequence[Evidence]) -> Optional[str]:
    """The first of `evidence` that holds, or None."""
    for probe in evidence:
        found = probe(f)
        if found:
            return found
    return None


def host_snp(f: HostFacts) -> Optional[bool]:
    """Whether the kernel has host SNP on (CC_ATTR_HOST_SEV_SNP), None when nothing tells.

    It matters to a deferred SEV INIT: KVM's init at the first guest runs SNP_INIT first and
    stops on its failure (sev-dev.c _sev_platform_init_locked: "if (rc && rc != -ENODEV)
    return rc"); kernels before that "return rc" went on to the SEV INIT, which the firmware
    then refuses while SYSCFG SNP_EN is set and SNP is not initialised ("SEV INIT will fail
    in such a situation", Ashish Kalra on linux-crypto, the patch that added it; the SEV
    INIT error 0x1 of AMDESE/AMDSEV#189). With host SNP off SNP_INIT returns -ENODEV and
    the SEV INIT goes on.
    """
    if f.kernel.has_flag("sev_snp") is False:
        return False  # the flag goes with the attribute (amd.c bsp_determine_snp)
    if f.kernel.has_flag("sev_snp") is None:
        return None
    if snp_firmware_initialised(f) or f.kvm.sev_snp.enabled:
        return True  # KVM enables SNP only with the attribute (sev_hardware_setup)
    version = f.kernel.version
    # Up to Linux 7.0 the kernel sets SNP_EN at boot exactly when it keeps the attribute
    # (after the IOMMU allowed it); from 7.1 only at SNP firmware INIT, which tells nothing.
    if f.msr.snp_en is not None and version is not None and (6, 9) <= version < (7, 1):
        return f.msr.snp_en
    return None


def snp_en_set_at_boot(f: HostFacts) -> bool:
    """Whether this kernel sets SYSCFG SNP_EN at boot, once the RMP and the IOMMU allow SNP:
    Linux 6.9 up to 7.0 (snp_rmptable_init), and a kernel numbered earlier that has host SNP
    backported (RHEL 9.5's 5.14; AMD's SNP host kernels), which `kvm_amd.sev_snp` shows.
    From 7.1 the kernel sets it when the SNP firmware initialises (snp_prepare). A release
    that cannot be read orders neither way (see snp_en_set_at_init)."""
    version = f.kernel.version
    before_init = version is not None and version < (7, 1)
    return before_init and (version >= (6, 9) or f.kvm.sev_snp.present)


def snp_en_set_at_init(f: HostFacts) -> bool:
    """Whether this kernel sets SYSCFG SNP_EN only when the SNP firmware initialises (Linux
    7.1 and later); False where the release cannot be read."""
    version = f.kernel.version
    return version is not None and version >= (7, 1)
