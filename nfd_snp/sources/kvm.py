"""KVM: /dev/kvm, the kvm_amd parameters and the SNP policy bits KVM accepts.

KVM writes the *effective* values of sev, sev_es and sev_snp back after hardware setup, so
`Y` means the feature is really on. Current kernels print `Y`/`N`; older ones printed
`1`/`0`. `ciphertext_hiding_asids` (Linux 6.18, an unsigned int) reserves that many of the
ES/SNP ASIDs for SNP guests with ciphertext hiding. Linux 6.19 publishes the SNP guest
policy bits KVM and the firmware accept as the system attribute KVM_X86_SNP_POLICY_BITS.
"""

from __future__ import annotations

import errno
from typing import Optional, Tuple

from nfd_snp import paths, uapi
from nfd_snp.errors import NotCaptured
from nfd_snp.host import Host
from nfd_snp.model import KvmFacts, KvmParameter, Unreadable
from nfd_snp.reasons import Reason
from nfd_snp.sources import decode_text, unreadable_from

PARAM_VALUES = {"Y": True, "N": False, "1": True, "0": False}


def read_parameter(host: Host, name: str) -> KvmParameter:
    rel = f"{paths.KVM_AMD_PARAMETERS}/{name}"
    try:
        raw = host.read(rel, 64)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return KvmParameter(name, present=False, enabled=None)
        failure = unreadable_from(
            exc, "/" + rel, missing=Reason.FILE_GARBLED, other=Reason.FILE_GARBLED
        )
        return KvmParameter(name, present=True, enabled=None, unreadable=failure)
    text = decode_text(raw).strip()
    enabled = PARAM_VALUES.get(text)
    if enabled is None:
        failure = Unreadable(Reason.FILE_GARBLED, f"/{rel}: unexpected value {text[:20]!r}")
        return KvmParameter(name, True, None, raw=text[:20], unreadable=failure)
    return KvmParameter(name, True, enabled, raw=text)


def read_ciphertext_hiding(host: Host) -> Optional[int]:
    """kvm_amd.ciphertext_hiding_asids; None when absent (before Linux 6.18) or unreadable."""
    try:
        text = decode_text(host.read(f"{paths.KVM_AMD_PARAMETERS}/ciphertext_hiding_asids", 64))
    except OSError:
        return None
    text = text.strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 10 else None


def read_sev_attribute(
    host: Host, attr: int, name: str, absent: Reason
) -> Tuple[Optional[int], Optional[Unreadable]]:
    """(value, None) of a KVM_X86_GRP_SEV system attribute, or (None, why not); `absent` is
    the reason when this kernel does not know the attribute."""
    what = f"/{paths.KVM_DEVICE} {name}"
    try:
        return host.kvm_attribute(uapi.KVM_X86_GRP_SEV, attr), None
    except (OSError, NotCaptured) as exc:
        if getattr(exc, "errno", None) in (errno.ENXIO, errno.EINVAL, errno.ENOTTY):
            # kvm_x86_dev_get_attr: an attribute this kernel does not know (before 6.19)
            return None, Unreadable(absent, f"{what}: not offered by this kernel")
        return None, unreadable_from(
            exc, what, missing=Reason.KVM_DEVICE_MISSING, denied=Reason.DEVICE_DENIED
        )


def read_policy_bits(host: Host) -> Tuple[Optional[int], Optional[Unreadable]]:
    """KVM_X86_SNP_POLICY_BITS (Linux 6.19): the SNP guest policy bits KVM accepts."""
    return read_sev_attribute(
        host,
        uapi.KVM_X86_SNP_POLICY_BITS,
        "KVM_X86_SNP_POLICY_BITS",
        Reason.KVM_NO_POLICY_ATTRIBUTE,
    )


def read_vmsa_features(host: Host) -> Tuple[Optional[int], Optional[Unreadable]]:
    """KVM_X86_SEV_VMSA_FEATURES (Linux 6.11): the SEV features KVM lets a VMSA carry."""
    return read_sev_attribute(
        host,
        uapi.KVM_X86_SEV_VMSA_FEATURES,
        "KVM_X86_SEV_VMSA_FEATURES",
        Reason.KVM_NO_VMSA_ATTRIBUTE,
    )


def read(host: Host) -> KvmFacts:
    device = host.exists(paths.KVM_DEVICE)
    policy_bits, policy_unreadable = read_policy_bits(host) if device else (None, None)
    vmsa, vmsa_unreadable = read_vmsa_features(host) if device else (None, None)
    return KvmFacts(
        device_present=device,
        module_loaded=host.exists(paths.KVM_AMD_MODULE),
        sev=read_parameter(host, "sev"),
        sev_es=read_parameter(host, "sev_es"),
        sev_snp=read_parameter(host, "sev_snp"),
        ciphertext_hiding_asids=read_ciphertext_hiding(host),
        snp_policy_bits=policy_bits,
        snp_policy_bits_unreadable=policy_unreadable,
        vmsa_features=vmsa,
        vmsa_features_unreadable=vmsa_unreadable,
    )
