"""KVM: /dev/kvm and the kvm_amd parameters sev, sev_es, sev_snp (REFERENCE §3).

KVM writes the *effective* values back after hardware setup, so `Y` means the feature is
really on. Current kernels print `Y`/`N`; older ones printed `1`/`0`.
"""

from __future__ import annotations

import errno

from nfd_snp import paths
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


def read(host: Host) -> KvmFacts:
    return KvmFacts(
        device_present=host.exists(paths.KVM_DEVICE),
        module_loaded=host.exists(paths.KVM_AMD_MODULE),
        sev=read_parameter(host, "sev"),
        sev_es=read_parameter(host, "sev_es"),
        sev_snp=read_parameter(host, "sev_snp"),
    )
