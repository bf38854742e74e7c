"""SYSCFG and the RMP MSRs of CPU 0 from /dev/cpu/0/msr (REFERENCE §2).

A failed read is unknown (no msr module, not root, or a hypervisor hiding the MSR), never
"disabled". The RMP MSRs do not exist before Milan; their read failing is recorded apart.
"""

from __future__ import annotations

from nfd_snp import paths
from nfd_snp.errors import NotCaptured
from nfd_snp.host import Host
from nfd_snp.model import MsrFacts
from nfd_snp.reasons import Reason
from nfd_snp.sources import unreadable_from

MSR_SYSCFG = 0xC0010010  # AMD64 APM vol. 2, "System Configuration Register"
MSR_RMP_BASE = 0xC0010132
MSR_RMP_END = 0xC0010133


def _failure(exc: BaseException, index: int):
    return unreadable_from(
        exc,
        f"/{paths.MSR_DEVICE} MSR {index:#x}",
        missing=Reason.MSR_DEVICE_MISSING,
        denied=Reason.DEVICE_DENIED,
    )


def read(host: Host) -> MsrFacts:
    try:
        syscfg = host.msr(MSR_SYSCFG)
    except (OSError, NotCaptured) as exc:
        return MsrFacts(None, None, None, unreadable=_failure(exc, MSR_SYSCFG))
    try:
        rmp_base = host.msr(MSR_RMP_BASE)
        rmp_end = host.msr(MSR_RMP_END)
    except (OSError, NotCaptured) as exc:
        return MsrFacts(syscfg, None, None, rmp_unreadable=_failure(exc, MSR_RMP_BASE))
    return MsrFacts(syscfg, rmp_base, rmp_end)
