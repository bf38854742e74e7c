"""Facts built in tests, not bytes: an SEV-SNP-ready Genoa host as typed facts, changed in one
line per case. The sources' own tests parse bytes (snapshots); the checks' tests start here.

    ready()                                        # SEV, SEV-ES and SEV-SNP ready
    ready(msr={"rmp_base": 0})                     # one part of the facts changed
    ready(kvm={"sev_snp": param("sev_snp", "N")})  # a kvm_amd parameter written back N
    ready(cpu=CPUID_UNREADABLE)                    # a whole part replaced
    node(snp_api=(1, 51))                          # the libvirt hook's facts of such a node

Every part is the HostFacts field of the same name; a dict changes some of its fields, an
object replaces it.
"""

from __future__ import annotations

import dataclasses

from nfd_snp.facts_cache import NodeFacts
from nfd_snp.model import (
    AsidFacts,
    CpuFacts,
    DomainCapsFacts,
    FirmwareFacts,
    FirmwareImage,
    GuestFacts,
    HookFacts,
    HostFacts,
    KernelFacts,
    KvmFacts,
    KvmParameter,
    MemEncryptBit,
    MemEncryptLeaf,
    MsrFacts,
    PspFacts,
    SevPlatformStatus,
    SnpPlatformStatus,
    SyscfgBit,
    TcbLayout,
    TcbVersion,
    Unreadable,
)
from nfd_snp.reasons import Reason
from nfd_snp.snp_policy import SnpPolicyRule


def unreadable(reason: Reason, detail: str = "not read") -> Unreadable:
    return Unreadable(reason, detail)


def flags(text: str) -> frozenset:
    """The SEV-related /proc/cpuinfo flags, space separated."""
    return frozenset(text.split())


def param(name: str, raw) -> KvmParameter:
    """A kvm_amd parameter as KVM wrote it back: "Y", "N", or None when it does not exist."""
    if raw is None:
        return KvmParameter(name, False, None)
    return KvmParameter(name, True, raw in ("Y", "1"), raw)


def tcb(snp_svn: int = 23, bootloader: int = 9) -> TcbVersion:
    """A family 19h TCB_VERSION (bootloader, TEE 0, SNP SVN, microcode 0x54)."""
    raw = bootloader | snp_svn << 48 | 0x54 << 56
    return TcbVersion.decode(raw, TcbLayout.FAMILY_19H)


def sev_status(state: int = 1, flags: int = 0x100, api=(1, 55)) -> SevPlatformStatus:
    """SEV_PLATFORM_STATUS: INIT with CONFIG_ES by default."""
    return SevPlatformStatus(api[0], api[1], state, flags, 37, 1)


def snp_status(state: int = 1, api=(1, 55), build: int = 37, **fields) -> SnpPlatformStatus:
    """SNP_PLATFORM_STATUS: INIT, RMP initialised, alias check done, TCB committed."""
    off = ("mask_chip_id", "mask_chip_key", "vlek_en", "feature_info", "rapl_dis")
    off += ("ciphertext_hiding_cap", "ciphertext_hiding_en")
    values = dict.fromkeys(off, False)
    values.update(rmp_initialized=True, alias_check_complete=True, guest_count=1)
    values.update(current_tcb=tcb(), reported_tcb=tcb())
    values.update(fields)
    return SnpPlatformStatus(api[0], api[1], state, build_id=build, **values)


EAX = (
    MemEncryptBit.SME
    | MemEncryptBit.SEV
    | MemEncryptBit.PAGE_FLUSH_MSR
    | MemEncryptBit.SEV_ES
    | MemEncryptBit.SNP
    | MemEncryptBit.VMPL
)
# EBX 0x4073 as Genoa reports it: C-bit 51, reduced phys bits 1, 4 VMPLs. ECX/EDX: SEV ASIDs
# 510-1006, SEV-ES/SNP ASIDs 1-509.
GENOA_LEAF = MemEncryptLeaf(eax=int(EAX), ebx=0x4073, ecx=1006, edx=510)
SYSCFG = int(SyscfgBit.MEM_ENCRYPT | SyscfgBit.SNP_EN | SyscfgBit.VMPL_EN)
SNP_FLAGS = flags("sme sev sev_es sev_snp svm")
SNP_OVMF = FirmwareImage(
    "/usr/share/qemu/firmware/60-edk2-ovmf-x64-amdsev.json",
    "memory",
    "/usr/share/edk2/ovmf/OVMF.amdsev.fd",
    None,
    ("uefi",),
    ("amd-sev", "amd-sev-es", "amd-sev-snp"),
    ("x86_64",),
)

READY = HostFacts(
    root="/",
    snapshot=True,
    cpu=CpuFacts("AuthenticAMD", 0x19, 0x11, 1, 0x80000028, GENOA_LEAF),
    msr=MsrFacts(SYSCFG, rmp_base=0x1A3F00000, rmp_end=0x1E3EFFFFF, rmp_cfg=0),
    kernel=KernelFacts(
        "6.12.0-55.9.1.el10_0.x86_64",
        "AMD EPYC 9654 96-Core Processor",
        "AuthenticAMD",
        0x19,
        0x11,
        SNP_FLAGS,
    ),
    kvm=KvmFacts(True, True, param("sev", "Y"), param("sev_es", "Y"), param("sev_snp", "Y")),
    psp=PspFacts(sev_status(), None, snp_status(), None),
    asids=AsidFacts("/sys/fs/cgroup", 497, 509, 0, 1),
    domcaps=DomainCapsFacts(
        True,
        emulator="/usr/libexec/qemu-kvm",
        sev_supported=True,
        cbitpos=51,
        reducedPhysBits=1,
        maxGuests=497,
        maxESGuests=509,
        launch_security_supported=True,
        sectypes=("sev", "sev-snp"),
    ),
    firmware=FirmwareFacts((SNP_OVMF,)),
    guests=GuestFacts((), (4242,)),
    hook=HookFacts(installed=False),
)

# Parts replaced whole, for the usual "could not be read" cases.
CPUID_UNREADABLE = CpuFacts(
    None, None, None, None, None, None, unreadable(Reason.CPUID_DEVICE_MISSING)
)
MSR_UNREADABLE = MsrFacts(None, None, None, unreadable(Reason.MSR_DEVICE_MISSING))
NO_LIBVIRT = DomainCapsFacts(False)


def ready(**parts) -> HostFacts:
    """READY with some parts changed: a dict of field changes, or the whole part."""
    changes = {}
    for name, change in parts.items():
        base = getattr(READY, name)
        if isinstance(change, dict):
            change = dataclasses.replace(base, **change)
        changes[name] = change
    return dataclasses.replace(READY, **changes)


def node(**facts) -> NodeFacts:
    """The libvirt hook's facts of an SEV-SNP-ready Genoa node, with some facts changed."""
    values = dict(
        snp_ready="yes",
        blocking=(),
        cbitpos=51,
        reducedPhysBits=1,
        snp_api=(1, 55),
        snp_firmware=("/usr/share/edk2/ovmf/OVMF.amdsev.fd",),
        snp_policy=None,
        asids_shared=None,
        valid_for=600.0,
    )
    values.update(facts)
    return NodeFacts(**values)


def policy_rule(accepted: int, source: str = "KVM_X86_SNP_POLICY_BITS") -> SnpPolicyRule:
    return SnpPolicyRule(accepted, 1 << 17, source)
