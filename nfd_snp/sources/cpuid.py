"""CPU 0's identity and memory-encryption leaf from /dev/cpu/0/cpuid (REFERENCE §1)."""

from __future__ import annotations

from typing import Tuple

from nfd_snp import paths
from nfd_snp.errors import NotCaptured
from nfd_snp.host import Host
from nfd_snp.model import CpuFacts, MemEncryptLeaf
from nfd_snp.reasons import Reason
from nfd_snp.sources import unreadable_from

LEAF_VENDOR = 0x00000000
LEAF_SIGNATURE = 0x00000001
LEAF_MAX_EXTENDED = 0x80000000
LEAF_MEM_ENCRYPT = 0x8000001F


def vendor_string(ebx: int, ecx: int, edx: int) -> str:
    """Leaf 0 spells the vendor in EBX, EDX, ECX order ("Auth" "enti" "cAMD")."""
    raw = b"".join(r.to_bytes(4, "little") for r in (ebx, edx, ecx))
    return raw.decode("ascii", errors="replace").rstrip("\0")


def decode_signature(eax: int) -> Tuple[int, int, int]:
    """(family, model, stepping) from leaf 1 EAX, with the extended fields applied."""
    stepping = eax & 0xF
    model = (eax >> 4) & 0xF
    family = (eax >> 8) & 0xF
    if family == 0xF:
        family += (eax >> 20) & 0xFF
    if family >= 0x6:  # Intel uses the extended model from family 6, AMD from 0xF
        model |= ((eax >> 16) & 0xF) << 4
    return family, model, stepping


def read(host: Host) -> CpuFacts:
    try:
        max_basic, ebx, ecx, edx = host.cpuid(LEAF_VENDOR)
        vendor = vendor_string(ebx, ecx, edx)
        family = model = stepping = None
        if max_basic >= LEAF_SIGNATURE:
            family, model, stepping = decode_signature(host.cpuid(LEAF_SIGNATURE)[0])
        max_extended = host.cpuid(LEAF_MAX_EXTENDED)[0]
        leaf = None
        if max_extended >= LEAF_MEM_ENCRYPT and max_extended < 0x8000FFFF:
            leaf = MemEncryptLeaf(*host.cpuid(LEAF_MEM_ENCRYPT))
    except (OSError, NotCaptured) as exc:
        failure = unreadable_from(
            exc,
            "/" + paths.CPUID_DEVICE,
            missing=Reason.CPUID_DEVICE_MISSING,
            denied=Reason.DEVICE_DENIED,
        )
        return CpuFacts(
            vendor=None,
            family=None,
            model=None,
            stepping=None,
            max_extended_leaf=None,
            mem_encrypt=None,
            unreadable=failure,
        )
    return CpuFacts(vendor, family, model, stepping, max_extended, leaf)
