"""The typed host model: every fact the probe read, once, from one host root.

Each source gives one frozen dataclass. A field is `None` when it is unknown, and the
dataclass's `unreadable` says why and how to fix it; "unknown" is never folded into False.
Every view (check report, JSON, NFD feature file, hook facts cache) is computed from here.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import Optional, Tuple

from nfd_snp.reasons import Reason


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


# -- CPU (CPUID) ----------------------------------------------------------------------


@dataclass(frozen=True)
class MemEncryptLeaf:
    """CPUID Fn8000_001F (AMD64 APM vol. 3, "Encrypted Memory Capabilities")."""

    eax: int
    ebx: int
    ecx: int
    edx: int

    @property
    def sme(self) -> bool:
        return _bit(self.eax, 0)

    @property
    def sev(self) -> bool:
        return _bit(self.eax, 1)

    @property
    def page_flush_msr(self) -> bool:
        return _bit(self.eax, 2)

    @property
    def sev_es(self) -> bool:
        return _bit(self.eax, 3)

    @property
    def snp(self) -> bool:
        return _bit(self.eax, 4)

    @property
    def vmpl(self) -> bool:
        return _bit(self.eax, 5)

    @property
    def secure_tsc(self) -> bool:
        return _bit(self.eax, 8)

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
    """EPYC generations that matter for SEV (family/model from CPUID Fn0000_0001)."""

    NAPLES = "Naples"
    ROME = "Rome"
    MILAN = "Milan"
    GENOA = "Genoa"
    TURIN = "Turin"
    UNKNOWN = "unknown"


def generation_of(family: Optional[int], model: Optional[int]) -> Generation:
    """Map an AMD family/model to its EPYC generation (Zen 1..5)."""
    if family == 0x17:
        return Generation.NAPLES if (model or 0) < 0x30 else Generation.ROME
    if family == 0x19:
        # Milan: models 0x00-0x0F; Genoa, Bergamo and Siena: 0x10-0x1F, 0xA0-0xAF.
        return Generation.MILAN if (model or 0) < 0x10 else Generation.GENOA
    if family == 0x1A:
        return Generation.TURIN
    return Generation.UNKNOWN


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

    @property
    def generation(self) -> Generation:
        return generation_of(self.family, self.model) if self.is_amd else Generation.UNKNOWN


# -- MSRs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MsrFacts:
    """SYSCFG (0xC0010010) and the RMP base/end MSRs (0xC0010132/3) of CPU 0."""

    syscfg: Optional[int]
    rmp_base: Optional[int]
    rmp_end: Optional[int]
    unreadable: Optional[Unreadable] = None  # SYSCFG itself
    rmp_unreadable: Optional[Unreadable] = None  # the RMP MSRs (absent before Milan)

    @property
    def mem_encrypt(self) -> Optional[bool]:
        return None if self.syscfg is None else _bit(self.syscfg, 23)

    @property
    def snp_en(self) -> Optional[bool]:
        return None if self.syscfg is None else _bit(self.syscfg, 24)

    @property
    def vmpl_en(self) -> Optional[bool]:
        return None if self.syscfg is None else _bit(self.syscfg, 25)

    @property
    def rmp_reserved(self) -> Optional[bool]:
        if self.rmp_base is None or self.rmp_end is None:
            return None
        return self.rmp_base != 0 and self.rmp_end != 0


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
    """A TCB_VERSION u64 decoded for the CPU generation that produced it."""

    raw: int
    layout: str  # "milan-genoa" or "turin"
    fmc: Optional[int]
    bootloader: int
    tee: int
    snp: int
    microcode: int

    @classmethod
    def decode(cls, raw: int, generation: Generation) -> "TcbVersion":
        b = raw.to_bytes(8, "little")
        if generation is Generation.TURIN:
            # Turin: 0 FMC, 1 bootloader, 2 TEE, 3 SNP, 4-6 reserved, 7 microcode.
            return cls(raw, "turin", b[0], b[1], b[2], b[3], b[7])
        # Milan/Genoa: 0 bootloader, 1 TEE, 2-5 reserved, 6 SNP, 7 microcode.
        return cls(raw, "milan-genoa", None, b[0], b[1], b[6], b[7])


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


@dataclass(frozen=True)
class HostFacts:
    """Everything one probe read from one host root."""

    root: str
    snapshot: bool
    cpu: CpuFacts
    msr: MsrFacts
    kernel: KernelFacts
    kvm: KvmFacts
    psp: PspFacts
    asids: AsidFacts
    domcaps: DomainCapsFacts
    firmware: FirmwareFacts
    guests: GuestFacts

    def asid_capacity(self, es: bool) -> Optional[Tuple[int, str]]:
        """(SEV or ES/SNP ASIDs, where the number comes from), or None when unknown.

        The misc cgroup says what KVM registered; without it, the CPUID ASID range.
        """
        total = self.asids.sev_es_capacity if es else self.asids.sev_capacity
        if total is not None:
            return total, f"{self.asids.path}/misc.capacity"
        leaf = self.cpu.mem_encrypt
        if leaf is None:
            return None
        total = leaf.es_asids if es else leaf.sev_asids
        return total, f"CPUID ASIDs {leaf.min_sev_asid}-{leaf.max_sev_asid}"

    def cbit(self) -> Optional[Tuple[int, Optional[int], str]]:
        """(cbitpos, reducedPhysBits, source): CPUID 0x8000001F, else libvirt's domcaps."""
        leaf = self.cpu.mem_encrypt
        if leaf is not None:
            return leaf.cbitpos, leaf.reduced_phys_bits, "CPUID"
        if self.domcaps.cbitpos is not None:
            return self.domcaps.cbitpos, self.domcaps.reducedPhysBits, "libvirt"
        return None


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
