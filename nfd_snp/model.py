"""The typed host model: every fact the probe read, once, from one host root.

Each source gives one frozen dataclass. A field is `None` when it is unknown, and the
dataclass's `unreadable` says why and how to fix it; "unknown" is never folded into False.
Every view (check report, JSON, NFD feature file, hook facts cache) is computed from here.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from dataclasses import dataclass
from typing import Optional, Tuple

from nfd_snp import snp_policy
from nfd_snp.reasons import Reason
from nfd_snp.snp_policy import SnpPolicyRule


@dataclass(frozen=True)
class Unreadable:
    """Why a source (or one value of it) could not be read."""

    reason: Reason
    detail: str
    errno: Optional[int] = None
    fw_error: Optional[int] = None


def _bit(value: int, n: int) -> bool:
    # Test bit n itself: snphost v0.7.0 shipped `(eax & 1) << n`, which follows bit 0.
    return bool(value & (1 << n))


class RegisterBit(int):
    """A named bit of a register: the mask, and its position as documents and details show
    it (`SYSCFG[23]`, `EAX[1]`). (An int, not an enum.IntFlag: the four flag classes cost
    `nfd-snp check` more than the rest of this module.)"""

    number: int

    def __new__(cls, number: int) -> "RegisterBit":
        bit = super().__new__(cls, 1 << number)
        bit.number = number
        return bit


class MemEncryptBit:
    """CPUID Fn8000_001F EAX (AMD64 APM vol. 3, "Encrypted Memory Capabilities";
    arch/x86/include/asm/cpufeatures.h word 19)."""

    SME = RegisterBit(0)
    SEV = RegisterBit(1)
    PAGE_FLUSH_MSR = RegisterBit(2)
    SEV_ES = RegisterBit(3)
    SNP = RegisterBit(4)
    VMPL = RegisterBit(5)
    SECURE_TSC = RegisterBit(8)
    SEGMENTED_RMP = RegisterBit(23)  # a segmented RMP (Zen 5; X86_FEATURE_SEGMENTED_RMP)


class SyscfgBit:
    """SYSCFG, MSR 0xC0010010 (AMD64 APM vol. 2; arch/x86/include/asm/msr-index.h
    MSR_AMD64_SYSCFG_*_BIT)."""

    MEM_ENCRYPT = RegisterBit(23)
    SNP_EN = RegisterBit(24)
    VMPL_EN = RegisterBit(25)


class RmpCfgBit:
    """RMP_CFG, MSR 0xC0010136 (msr-index.h MSR_AMD64_SEG_RMP_ENABLED_BIT)."""

    SEGMENTED = RegisterBit(0)


# -- CPU (CPUID) ----------------------------------------------------------------------


@dataclass(frozen=True)
class MemEncryptLeaf:
    """CPUID Fn8000_001F (AMD64 APM vol. 3, "Encrypted Memory Capabilities")."""

    eax: int
    ebx: int
    ecx: int
    edx: int

    def has(self, bit: RegisterBit) -> bool:
        return bool(self.eax & bit)

    @property
    def sme(self) -> bool:
        return self.has(MemEncryptBit.SME)

    @property
    def sev(self) -> bool:
        return self.has(MemEncryptBit.SEV)

    @property
    def sev_es(self) -> bool:
        return self.has(MemEncryptBit.SEV_ES)

    @property
    def snp(self) -> bool:
        return self.has(MemEncryptBit.SNP)

    @property
    def vmpl(self) -> bool:
        return self.has(MemEncryptBit.VMPL)

    @property
    def secure_tsc(self) -> bool:
        return self.has(MemEncryptBit.SECURE_TSC)

    @property
    def segmented_rmp(self) -> bool:
        return self.has(MemEncryptBit.SEGMENTED_RMP)

    @property
    def cbitpos(self) -> int:
        # EBX[5:0]: six bits, C-bit 51 on Genoa does not fit a 5-bit mask.
        return self.ebx & 0x3F

    @property
    def reduced_phys_bits(self) -> int:
        return (self.ebx >> 6) & 0x3F

    @property
    def vmpl_count(self) -> int:
        return (self.ebx >> 12) & 0xF

    @property
    def max_sev_asid(self) -> int:
        """ECX: number of encrypted guests supported simultaneously (highest ASID)."""
        return self.ecx

    @property
    def min_sev_asid(self) -> int:
        """EDX: lowest ASID usable by a plain SEV guest; ES/SNP use 1..min-1."""
        return self.edx

    @property
    def sev_asids(self) -> int:
        if self.max_sev_asid == 0 or self.min_sev_asid == 0:
            return 0
        return max(0, self.max_sev_asid - self.min_sev_asid + 1)

    @property
    def es_asids(self) -> int:
        return max(0, self.min_sev_asid - 1)


class Generation(enum.Enum):
    """AMD server CPU generations that matter for SEV, by family/model (CPUID Fn0000_0001)."""

    NAPLES = "Naples"
    ROME = "Rome"
    MILAN = "Milan"
    GENOA = "Genoa"
    BERGAMO_SIENA = "Bergamo/Siena"
    TURIN = "Turin"
    VENICE = "Venice"
    UNKNOWN = "unknown"


# (family, first model, last model, generation): virtee/sev's Generation::identify_cpu
# (src/lib.rs) and snphost's processor.rs, plus the pre-SNP families of AMD's SEV firmware
# images (linux-firmware amd_sev_fam17h_model0xh / 3xh). Family 0x19 also holds desktop and
# EPYC 4004 parts (e.g. 0x61) and family 0x1A desktop and EPYC 4005 parts (0x44): none of
# these. Threadripper shares some server model numbers (0x1A/0x08) and is told apart by name.
GENERATION_MODELS = (
    (0x17, 0x00, 0x0F, Generation.NAPLES),
    (0x17, 0x30, 0x3F, Generation.ROME),
    (0x19, 0x00, 0x0F, Generation.MILAN),
    (0x19, 0x10, 0x1F, Generation.GENOA),
    (0x19, 0xA0, 0xAF, Generation.BERGAMO_SIENA),  # one model number, told apart by socket
    (0x1A, 0x00, 0x11, Generation.TURIN),
    (0x1A, 0x50, 0x57, Generation.VENICE),
    (0x1A, 0x90, 0xAF, Generation.VENICE),
    (0x1A, 0xC0, 0xC7, Generation.VENICE),
)

# Zen 5 models of family 0x1A (arch/x86/kernel/cpu/amd.c bsp_init_amd); the rest of the
# family is Zen 6. Family 0x19 is Zen 3 and Zen 4 throughout.
ZEN5_MODELS = ((0x00, 0x2F), (0x40, 0x4F), (0x60, 0x7F), (0xD0, 0xD7))


def zen_of(family: Optional[int], model: Optional[int]) -> Optional[int]:
    """The Zen generation Linux assigns (3/4 as 4 for family 0x19), or None."""
    if family == 0x19:
        return 4
    if family == 0x1A and model is not None:
        return 5 if any(a <= model <= b for a, b in ZEN5_MODELS) else 6
    return None


def generation_of(
    family: Optional[int], model: Optional[int], model_name: Optional[str] = None
) -> Generation:
    """The EPYC generation of an AMD family/model; UNKNOWN rather than a guessed name.

    A brand string that is not an EPYC (a Threadripper with a server model number) is
    UNKNOWN too; without a brand string the model ranges decide.
    """
    if family is None or model is None:
        return Generation.UNKNOWN
    if model_name and "EPYC" not in model_name.upper():
        return Generation.UNKNOWN
    for fam, first, last, generation in GENERATION_MODELS:
        if family == fam and first <= model <= last:
            return generation
    return Generation.UNKNOWN


class TcbLayout(enum.Enum):
    """How a TCB_VERSION u64 is laid out. The SEV-SNP firmware ABI defines it per CPU family
    (family 19h: Milan, Genoa and their siblings; family 1Ah: Turin and later), not per model,
    so an unnamed model of a known family still decodes right."""

    FAMILY_19H = "milan-genoa"
    FAMILY_1AH = "turin"

    @classmethod
    def for_family(cls, family: Optional[int]) -> "TcbLayout":
        return cls.FAMILY_1AH if family is not None and family >= 0x1A else cls.FAMILY_19H


@dataclass(frozen=True)
class CpuFacts:
    """Vendor, family/model and the memory-encryption leaf of CPU 0, from the CPUID device.

    When the device cannot be read the checks fall back on /proc/cpuinfo (KernelFacts).
    """

    vendor: Optional[str]
    family: Optional[int]
    model: Optional[int]
    stepping: Optional[int]
    max_extended_leaf: Optional[int]
    mem_encrypt: Optional[MemEncryptLeaf]
    unreadable: Optional[Unreadable] = None

    @property
    def is_amd(self) -> Optional[bool]:
        return None if self.vendor is None else self.vendor == "AuthenticAMD"


# -- MSRs ---------------------------------------------------------------------------------


# arch/x86/virt/svm/sev.c RMP_ADDR_MASK = GENMASK_ULL(51, 13): the address bits of RMP_BASE
# and RMP_END that the kernel tests (the low bits are not part of the address).
RMP_ADDR_MASK = ((1 << 52) - 1) & ~((1 << 13) - 1)


@dataclass(frozen=True)
class MsrFacts:
    """SYSCFG (0xC0010010), the RMP base/end MSRs (0xC0010132/3) and, on CPUs with a
    segmented RMP, RMP_CFG (0xC0010136) of CPU 0."""

    syscfg: Optional[int]
    rmp_base: Optional[int]
    rmp_end: Optional[int]
    unreadable: Optional[Unreadable] = None  # SYSCFG itself
    rmp_unreadable: Optional[Unreadable] = None  # the RMP MSRs (absent before Milan)
    # RMP_CFG; 0 where the CPU has no such MSR (CPUID 0x8000001F EAX[23] clear).
    rmp_cfg: Optional[int] = None
    rmp_cfg_unreadable: Optional[Unreadable] = None

    def has(self, bit: RegisterBit) -> Optional[bool]:
        """A SYSCFG bit; None when SYSCFG was not read."""
        return None if self.syscfg is None else bool(self.syscfg & bit)

    @property
    def mem_encrypt(self) -> Optional[bool]:
        return self.has(SyscfgBit.MEM_ENCRYPT)

    @property
    def snp_en(self) -> Optional[bool]:
        return self.has(SyscfgBit.SNP_EN)

    @property
    def rmp_segmented(self) -> Optional[bool]:
        """RMP_CFG bit 0 (MSR_AMD64_SEG_RMP_ENABLED); None when RMP_CFG was not read."""
        return None if self.rmp_cfg is None else bool(self.rmp_cfg & RmpCfgBit.SEGMENTED)

    @property
    def rmp_segment_shift(self) -> Optional[int]:
        """RMP_CFG bits 13:8 (MSR_AMD64_RMP_SEGMENT_SHIFT): each segment covers 2^shift
        bytes of memory (37: 128 GB)."""
        return None if self.rmp_cfg is None else (self.rmp_cfg >> 8) & 0x3F

    @property
    def rmp_reserved(self) -> Optional[bool]:
        """Whether the BIOS reserved an RMP, as the kernel decides it at boot
        (arch/x86/virt/svm/sev.c snp_probe_rmptable_info).

        Contiguous: RMP_BASE and RMP_END both set and in order. Segmented (RMP_CFG bit 0):
        RMP_BASE points at the segment table and RMP_END is 0 by design, so only RMP_BASE
        counts (probe_segmented_rmptable_info warns when RMP_END is *non*-zero). When RMP_CFG
        could not be read, a set RMP_BASE with RMP_END 0 fits a segmented RMP: unknown.
        """
        if self.rmp_base is None or self.rmp_end is None:
            return None
        base, end = self.rmp_base & RMP_ADDR_MASK, self.rmp_end & RMP_ADDR_MASK
        if not base:
            return False
        if self.rmp_segmented:
            return True
        if self.rmp_segmented is None and not end:
            return None
        return bool(end) and self.rmp_base <= self.rmp_end


# -- kernel -------------------------------------------------------------------------------


@dataclass(frozen=True)
class KernelFacts:
    """What the running kernel says: release and /proc/cpuinfo of the first CPU."""

    release: Optional[str]
    model_name: Optional[str]
    vendor_id: Optional[str]
    family: Optional[int]
    model: Optional[int]
    flags: Optional[frozenset]  # the SEV-related flags present (and "hypervisor")
    unreadable: Optional[Unreadable] = None

    def has_flag(self, flag: str) -> Optional[bool]:
        return None if self.flags is None else flag in self.flags

    @property
    def version(self) -> Optional[Tuple[int, int]]:
        """(major, minor) of the release ("6.12.0-55.el10" -> (6, 12)); None if unreadable.

        Distributions backport, so behaviour keyed on it is a fallback, never the first source.
        """
        match = re.match(r"(\d{1,3})\.(\d{1,3})", self.release or "")
        return (int(match.group(1)), int(match.group(2))) if match else None


@dataclass(frozen=True)
class KvmParameter:
    """One kvm_amd module parameter: the *effective* value KVM wrote back after setup."""

    name: str
    present: bool
    enabled: Optional[bool]
    raw: Optional[str] = None
    unreadable: Optional[Unreadable] = None


@dataclass(frozen=True)
class KvmFacts:
    device_present: Optional[bool]
    module_loaded: Optional[bool]
    sev: KvmParameter
    sev_es: KvmParameter
    sev_snp: KvmParameter
    # kvm_amd.ciphertext_hiding_asids (Linux 6.18+); None when the kernel has no such knob.
    ciphertext_hiding_asids: Optional[int] = None
    # KVM_X86_SNP_POLICY_BITS (Linux 6.19+): the guest policy bits KVM and firmware accept.
    snp_policy_bits: Optional[int] = None
    snp_policy_bits_unreadable: Optional[Unreadable] = None
    # KVM_X86_SEV_VMSA_FEATURES (Linux 6.11+): the SEV features a guest's VMSA may carry.
    vmsa_features: Optional[int] = None
    vmsa_features_unreadable: Optional[Unreadable] = None

    @property
    def secure_tsc(self) -> Optional[bool]:
        """SVM_SEV_FEAT_SECURE_TSC (bit 9, asm/svm.h), which KVM offers from Linux 6.18."""
        return None if self.vmsa_features is None else _bit(self.vmsa_features, 9)


# -- PSP firmware -------------------------------------------------------------------------


class FirmwareState(enum.IntEnum):
    """Platform state of SEV_PLATFORM_STATUS / SNP_PLATFORM_STATUS (SEV API spec)."""

    UNINIT = 0
    INIT = 1
    WORKING = 2


@dataclass(frozen=True)
class SevPlatformStatus:
    """struct sev_user_data_status (include/uapi/linux/psp-sev.h)."""

    api_major: int
    api_minor: int
    state: int
    flags: int
    build: int
    guest_count: int

    @property
    def owned(self) -> bool:
        return _bit(self.flags, 0)

    @property
    def config_es(self) -> bool:
        # SEV_STATUS_FLAGS_CONFIG_ES 0x0100
        return _bit(self.flags, 8)

    @property
    def api_version(self) -> str:
        return f"{self.api_major}.{self.api_minor}"


@dataclass(frozen=True)
class TcbVersion:
    """A TCB_VERSION u64 decoded with the layout of the CPU family that produced it."""

    raw: int
    layout: TcbLayout
    fmc: Optional[int]
    bootloader: int
    tee: int
    snp: int
    microcode: int

    @classmethod
    def decode(cls, raw: int, layout: TcbLayout) -> "TcbVersion":
        b = raw.to_bytes(8, "little")
        if layout is TcbLayout.FAMILY_1AH:
            # Family 1Ah: 0 FMC, 1 bootloader, 2 TEE, 3 SNP, 4-6 reserved, 7 microcode.
            return cls(raw, layout, b[0], b[1], b[2], b[3], b[7])
        # Family 19h: 0 bootloader, 1 TEE, 2-5 reserved, 6 SNP, 7 microcode.
        return cls(raw, layout, None, b[0], b[1], b[6], b[7])

    def describe(self) -> str:
        fmc = f"fmc={self.fmc} " if self.fmc is not None else ""
        return f"{fmc}bl={self.bootloader} tee={self.tee} snp={self.snp} ucode={self.microcode}"


@dataclass(frozen=True)
class SnpPlatformStatus:
    """struct sev_user_data_snp_status (include/uapi/linux/psp-sev.h, SNP ABI spec)."""

    api_major: int
    api_minor: int
    state: int
    rmp_initialized: bool  # byte 3 bit 0 only
    alias_check_complete: bool  # byte 3 bit 1 (Milan 1.55.22+, Genoa 1.55.38+)
    build_id: int
    mask_chip_id: bool
    mask_chip_key: bool
    vlek_en: bool
    feature_info: bool
    rapl_dis: bool
    ciphertext_hiding_cap: bool
    ciphertext_hiding_en: bool
    guest_count: int
    current_tcb: TcbVersion
    reported_tcb: TcbVersion

    @property
    def api_version(self) -> str:
        return f"{self.api_major}.{self.api_minor}"


@dataclass(frozen=True)
class PspFacts:
    """Replies of the SEV firmware to SEV_PLATFORM_STATUS and SNP_PLATFORM_STATUS."""

    sev: Optional[SevPlatformStatus]
    sev_unreadable: Optional[Unreadable]
    snp: Optional[SnpPlatformStatus]
    snp_unreadable: Optional[Unreadable]
    # ccp.psp_init_on_probe: False when KVM initialises the firmware at the first guest
    # launch (AMD's firmware hot-load set-up); None when the parameter does not exist.
    init_on_probe: Optional[bool] = None
    # A SEV firmware file that ccp loads over the BIOS's at probe (/lib/firmware/amd/...).
    hotloaded_firmware: Optional[str] = None


# -- misc cgroup ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AsidFacts:
    """ASID capacity and use from the misc cgroup (SNP guests are charged to `sev_es`)."""

    path: Optional[str]  # directory the misc files were found in, None when absent
    sev_capacity: Optional[int]
    sev_es_capacity: Optional[int]
    sev_current: Optional[int]
    sev_es_current: Optional[int]
    unreadable: Optional[Unreadable] = None


# -- libvirt -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DomainCapsFacts:
    """libvirt's domain capabilities (formatdomaincaps.html, "SEV capabilities")."""

    libvirt_present: Optional[bool]  # False: no libvirt on this host (KubeVirt nodes)
    unreadable: Optional[Unreadable] = None
    emulator: Optional[str] = None
    virt_type: Optional[str] = None
    machine: Optional[str] = None
    sev_supported: Optional[bool] = None
    cbitpos: Optional[int] = None
    reducedPhysBits: Optional[int] = None
    maxGuests: Optional[int] = None
    maxESGuests: Optional[int] = None
    launch_security_supported: Optional[bool] = None  # None: libvirt too old for the element
    sectypes: tuple = ()

    @property
    def snp_supported(self) -> Optional[bool]:
        if self.unreadable is not None or not self.libvirt_present:
            return None
        return "sev-snp" in self.sectypes


# -- firmware images ---------------------------------------------------------------------


@dataclass(frozen=True)
class FirmwareImage:
    """One QEMU firmware descriptor (docs/interop/firmware.json)."""

    descriptor: str
    device: Optional[str]
    executable: Optional[str]
    mode: Optional[str]
    interface_types: tuple
    features: tuple
    architectures: tuple


@dataclass(frozen=True)
class FirmwareFacts:
    images: tuple
    problems: tuple = ()  # one line per descriptor that could not be used

    @property
    def snp_images(self) -> tuple:
        return tuple(i for i in self.images if "amd-sev-snp" in i.features)


# -- running guests ------------------------------------------------------------------------


@dataclass(frozen=True)
class GuestFacts:
    """QEMU processes running SEV(-ES) and SEV-SNP guests (a cross-check of misc.current)."""

    sev_pids: tuple
    snp_pids: tuple
    unreadable: Optional[Unreadable] = None


# -- the libvirt hook and the daemons that run it -----------------------------------------


@dataclass(frozen=True)
class LibvirtDaemon:
    """A running libvirt daemon (virtqemud, or the monolithic libvirtd) owned by root."""

    pid: int
    name: str
    started: float  # seconds since the epoch: /proc/stat btime + starttime / USER_HZ


@dataclass(frozen=True)
class HookFacts:
    """nfd-snp's qemu hook file, the libvirt daemons that may have loaded it, and whether
    the Python it names can load nfd_snp.

    `installed` is None when the hook file could not be examined (`unreadable` says why);
    `daemons_unreadable` says why the process table could not be read.
    """

    installed: Optional[bool]
    changed: Optional[float] = None  # the file's ctime: rpm and `cp -p` keep an old mtime
    executable: Optional[bool] = None
    daemons: tuple = ()
    unreadable: Optional[Unreadable] = None
    daemons_unreadable: Optional[Unreadable] = None
    # The Python the hook runs (its `PYTHON=` line), whether it imports nfd_snp, and why
    # not (loads False) or why that is unknown (loads None).
    interpreter: Optional[str] = None
    loads: Optional[bool] = None
    load_error: Optional[str] = None


# -- the IOMMU (drivers/iommu/amd/init.c iommu_snp_enable) ------------------------------


@dataclass(frozen=True)
class AmdIommu:
    """One AMD IOMMU (`/sys/class/iommu/ivhdN`) and its Extended Feature Register, when the
    kernel's `amd-iommu/features` format could be told for this kernel."""

    name: str
    efr: Optional[int] = None

    @property
    def snp_support(self) -> Optional[bool]:
        """EFR bit 63, SNPSup (FEATURE_SNP, drivers/iommu/amd/amd_iommu_types.h)."""
        return None if self.efr is None else _bit(self.efr, 63)


@dataclass(frozen=True)
class IommuGroup:
    """`/sys/kernel/iommu_groups/N`: its default domain type. The devices of the groups that
    hold a GPU are read with the GPUs (PciFacts.group_members).

    `type` (drivers/iommu/iommu.c iommu_group_show_type): `identity` in passthrough,
    `DMA`/`DMA-FQ` when translated, also `unmanaged`, `blocked`, `unknown`."""

    number: int
    type: Optional[str]

    @property
    def translated(self) -> Optional[bool]:
        if self.type in ("DMA", "DMA-FQ"):
            return True
        if self.type in ("identity", "blocked", "unmanaged", "unknown"):
            return False
        return None


@dataclass(frozen=True)
class IommuFacts:
    """What decides whether the kernel lets SNP run past the IOMMU: the command line
    (`iommu=pt`, `iommu.passthrough=1`, `amd_iommu=off`, `amd_iommu=pgtbl_v2`), the AMD
    IOMMUs and their SNPSup bit, and the default domain type of the IOMMU groups."""

    cmdline: Optional[str]
    passthrough_option: Optional[str] = None  # the option that asks for passthrough, if any
    amd_iommu_off: bool = False
    pgtbl_v2: bool = False
    units: tuple = ()  # AmdIommu
    units_listed: Optional[bool] = None  # /sys/class/iommu could be listed
    efr_unreadable: Optional[Unreadable] = None  # why the IOMMUs or their EFR are not known
    groups: tuple = ()  # IommuGroup
    unreadable: Optional[Unreadable] = None  # /proc/cmdline

    @property
    def group_types(self) -> dict:
        counts: dict = {}
        for group in self.groups:
            counts[group.type] = counts.get(group.type, 0) + 1
        return counts

    def group(self, number: Optional[int]) -> Optional[IommuGroup]:
        return next((g for g in self.groups if g.number == number), None)


# -- PCI display devices (GPUs) ----------------------------------------------------------

PCI_VENDOR_NAMES = {0x10DE: "NVIDIA", 0x1002: "AMD", 0x8086: "Intel"}
# The console VGA of a server's BMC is a display device too (class 0x0300): ASPEED's AST
# (vendor 0x1a03, driver ast) on most boards, Matrox's G200 (0x102b, mgag200) on others
# (include/linux/pci_ids.h, drivers/gpu/drm/ast and mgag200). It is no GPU for a guest.
BMC_DISPLAY_VENDORS = frozenset({0x1A03, 0x102B})
BMC_DISPLAY_DRIVERS = frozenset({"ast", "mgag200"})


@dataclass(frozen=True)
class PciDevice:
    """`/sys/bus/pci/devices/<BDF>` (drivers/pci/pci-sysfs.c: `0x%04x` vendor and device,
    `0x%06x` class; `driver` and `iommu_group` are links whose last component names them)."""

    bdf: str
    vendor: Optional[int]
    device: Optional[int]
    pci_class: Optional[int]
    driver: Optional[str]  # None: no driver bound
    iommu_group: Optional[int]  # None: not in an IOMMU group
    unreadable: Optional[Unreadable] = None

    @property
    def is_display(self) -> bool:
        """PCI base class 0x03 (display: VGA 0x0300, 3D controller 0x0302, ...)."""
        return self.pci_class is not None and self.pci_class >> 16 == 0x03

    @property
    def is_bmc_display(self) -> bool:
        """The BMC's console VGA (ASPEED, Matrox), not a GPU."""
        return self.vendor in BMC_DISPLAY_VENDORS or self.driver in BMC_DISPLAY_DRIVERS

    @property
    def vendor_name(self) -> str:
        if self.vendor is None:
            return "unknown vendor"
        return PCI_VENDOR_NAMES.get(self.vendor, f"vendor {self.vendor:#06x}")


@dataclass(frozen=True)
class PciFacts:
    """The GPUs of the host, and for each IOMMU group a GPU sits in, the drivers of the other
    devices there (VFIO passes a group whole: every member must be free for it)."""

    gpus: tuple = ()  # PciDevice of display class
    group_members: tuple = ()  # PciDevice of the GPUs' groups that are not GPUs
    unreadable: Optional[Unreadable] = None


# -- memory ------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryFacts:
    """/proc/meminfo MemTotal: a floor of the RAM an RMP must cover (the kernel compares the
    RMP with max_pfn, which holes only raise)."""

    total_kib: Optional[int]
    unreadable: Optional[Unreadable] = None


def source(module: str, *needs: str, **default):
    """A field of HostFacts that `nfd_snp.sources.<module>` reads: `read(host, *facts)`, given
    the facts of the fields it `needs` (fields are read in declaration order). A new source
    is its module and one such field."""
    return dataclasses.field(metadata={"source": module, "needs": needs}, **default)


@dataclass(frozen=True)
class HostFacts:
    """Everything one probe read from one host root (nfd_snp.probe reads each `source`)."""

    root: str
    snapshot: bool
    cpu: CpuFacts = source("cpuid")
    msr: MsrFacts = source("msr", "cpu")  # RMP_CFG exists where CPUID says so
    kernel: KernelFacts = source("kernel")
    kvm: KvmFacts = source("kvm")
    psp: PspFacts = source("psp", "cpu", "kernel", "kvm")  # TCB layout, SNP query
    asids: AsidFacts = source("cgroup")
    domcaps: DomainCapsFacts = source("domcaps")
    firmware: FirmwareFacts = source("firmware")
    guests: GuestFacts = source("guests")
    hook: HookFacts = source("hook_loaded", default=HookFacts(installed=None))
    iommu: IommuFacts = source("iommu", "kernel", default=IommuFacts(cmdline=None))
    pci: PciFacts = source("pci", default=PciFacts())
    memory: MemoryFacts = source("memory", default=MemoryFacts(total_kib=None))

    @property
    def family(self) -> Optional[int]:
        """CPU family: CPUID leaf 1, else /proc/cpuinfo (when the cpuid driver is missing)."""
        return self.cpu.family if self.cpu.family is not None else self.kernel.family

    @property
    def model(self) -> Optional[int]:
        return self.cpu.model if self.cpu.model is not None else self.kernel.model

    @property
    def generation(self) -> Generation:
        return generation_of(self.family, self.model, self.kernel.model_name)

    def asid_capacity(self, es: bool) -> Optional[Tuple[int, str]]:
        """(SEV or ES/SNP ASIDs, where the number comes from), or None when unknown.

        The misc cgroup says what KVM registered; without it, the CPUID ASID range, then
        libvirt's maxGuests/maxESGuests (which libvirt computes from the same CPUID leaf).
        """
        total = self.asids.sev_es_capacity if es else self.asids.sev_capacity
        if total is not None:
            return total, f"{self.asids.path}/misc.capacity"
        leaf = self.cpu.mem_encrypt
        if leaf is not None:
            total = leaf.es_asids if es else leaf.sev_asids
            return total, f"CPUID ASIDs {leaf.min_sev_asid}-{leaf.max_sev_asid}"
        total = self.domcaps.maxESGuests if es else self.domcaps.maxGuests
        if total is not None:
            return total, "libvirt " + ("maxESGuests" if es else "maxGuests")
        return None

    def guest_asids(self, guest: str) -> Optional["GuestAsids"]:
        """ASIDs that guests of type `guest` ("sev", "sev-es", "sev-snp") can use.

        SEV-ES and SEV-SNP share ASIDs 1 .. min SEV ASID - 1. With ciphertext hiding (Linux
        6.18, kvm_amd.ciphertext_hiding_asids, which KVM rewrites to the effective count or
        0 when the firmware or BIOS lack it) SNP gets 1..N and SEV-ES the rest, N+1 ..
        min - 1 (arch/x86/kvm/svm/sev.c sev_hardware_setup). The misc cgroup's `sev_es`
        capacity and use still count both together.
        """
        if guest == "sev":
            known = self.asid_capacity(es=False)
            return GuestAsids(known[0], known[1], False) if known else None
        known = self.asid_capacity(es=True)
        if known is None:
            return None
        joint, source = known
        hidden = min(self.kvm.ciphertext_hiding_asids or 0, joint)
        if not hidden:
            return GuestAsids(joint, source, True)
        split = f"{source}, ciphertext hiding gives SEV-SNP {hidden} of {joint}"
        return GuestAsids(hidden if guest == "sev-snp" else joint - hidden, split, False)

    def snp_policy_rule(self) -> Optional[SnpPolicyRule]:
        """The SNP guest policies this host's KVM accepts (nfd_snp.snp_policy.kvm_rule)."""
        return snp_policy.kvm_rule(self.kvm.snp_policy_bits, self.kernel.version)

    def cbit(self) -> Optional["CBit"]:
        """The C-bit and reducedPhysBits a guest's launchSecurity uses on this host.

        cbitpos: CPUID 0x8000001F EBX[5:0], else libvirt's. reducedPhysBits: libvirt's,
        else 1 - never the raw CPUID EBX[11:6] field, which says 5 or 6 on real hosts:
        QEMU's query-sev-capabilities reports 1 ("we lose one bit in guest physical
        addressing", target/i386/sev.c) and libvirt and KubeVirt pass that on.
        """
        leaf = self.cpu.mem_encrypt
        # A C-bit of 0 is none: a hypervisor that hides the leaf's contents reports EBX 0.
        if leaf is not None and leaf.cbitpos:
            cbitpos, cbit_source = leaf.cbitpos, "CPUID"
        elif self.domcaps.cbitpos is not None:
            cbitpos, cbit_source = self.domcaps.cbitpos, "libvirt"
        else:
            return None
        if self.domcaps.reducedPhysBits is not None:
            return CBit(cbitpos, cbit_source, self.domcaps.reducedPhysBits, "libvirt")
        return CBit(cbitpos, cbit_source, QEMU_REDUCED_PHYS_BITS, "QEMU's value")


# target/i386/sev.c: sev_get_capabilities() sets reduced-phys-bits = 1 for every host.
QEMU_REDUCED_PHYS_BITS = 1


@dataclass(frozen=True)
class GuestAsids:
    """How many ASIDs one guest type has, where the number comes from, and whether SEV-ES
    and SEV-SNP guests share them (no ciphertext hiding)."""

    count: int
    source: str
    shared_es_snp: bool


@dataclass(frozen=True)
class CBit:
    """What a guest's <cbitpos> and <reducedPhysBits> are on this host, and from where."""

    cbitpos: int
    cbitpos_source: str
    reducedPhysBits: int
    reduced_source: str


def to_jsonable(value):
    """Plain JSON data for a model value (dataclasses, enums, frozensets, tuples)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Reason):
        return value.code
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (frozenset, set)):
        return sorted(to_jsonable(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    return value
