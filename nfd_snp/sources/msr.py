"""SYSCFG and the RMP MSRs of CPU 0 from /dev/cpu/0/msr (REFERENCE §2).

A failed read is unknown (no msr module, not root, or a hypervisor hiding the MSR), never
"disabled". The RMP MSRs do not exist before Milan; their read failing is recorded apart.

RMP_CFG exists only where CPUID 0x8000001F EAX[23] (X86_FEATURE_SEGMENTED_RMP, Zen 5) says
so; the kernel reads it exactly then (arch/x86/virt/svm/sev.c snp_probe_rmptable_info), and
so do we. Without the CPUID device the MSR is tried anyway: a CPU without it makes the read
fail with EIO (the msr driver's rdmsr_safe), which means "no segmented RMP".
"""

from __future__ import annotations

import errno
from typing import Optional

from nfd_snp import paths
from nfd_snp.errors import NotCaptured
from nfd_snp.host import Host
from nfd_snp.model import CpuFacts, MsrFacts
from nfd_snp.reasons import Reason
from nfd_snp.sources import unreadable_from

MSR_SYSCFG = 0xC0010010  # AMD64 APM vol. 2, "System Configuration Register"
MSR_RMP_BASE = 0xC0010132
MSR_RMP_END = 0xC0010133
# arch/x86/include/asm/msr-index.h MSR_AMD64_RMP_CFG: bit 0 segmented RMP enabled,
# bits 13:8 the segment size as a shift (MSR_AMD64_RMP_SEGMENT_SHIFT).
MSR_RMP_CFG = 0xC0010136


def _failure(exc: BaseException, index: int):
    return unreadable_from(
        exc,
        f"/{paths.MSR_DEVICE} MSR {index:#x}",
        missing=Reason.MSR_DEVICE_MISSING,
        denied=Reason.DEVICE_DENIED,
    )


def read(host: Host, cpu: Optional[CpuFacts] = None) -> MsrFacts:
    """`cpu`: the CPUID facts, which say whether RMP_CFG exists (None: not known)."""
    try:
        syscfg = host.msr(MSR_SYSCFG)
    except (OSError, NotCaptured) as exc:
        return MsrFacts(None, None, None, unreadable=_failure(exc, MSR_SYSCFG))
    try:
        rmp_base = host.msr(MSR_RMP_BASE)
        rmp_end = host.msr(MSR_RMP_END)
    except (OSError, NotCaptured) as exc:
        return MsrFacts(syscfg, None, None, rmp_unreadable=_failure(exc, MSR_RMP_BASE))
    leaf = cpu.mem_encrypt if cpu is not None else None
    if leaf is not None and not leaf.segmented_rmp:
        return MsrFacts(syscfg, rmp_base, rmp_end, rmp_cfg=0)
    try:
        rmp_cfg = host.msr(MSR_RMP_CFG)
    except (OSError, NotCaptured) as exc:
        if leaf is None and getattr(exc, "errno", None) == errno.EIO:
            return MsrFacts(syscfg, rmp_base, rmp_end, rmp_cfg=0)  # no such MSR on this CPU
        return MsrFacts(syscfg, rmp_base, rmp_end, rmp_cfg_unreadable=_failure(exc, MSR_RMP_CFG))
    return MsrFacts(syscfg, rmp_base, rmp_end, rmp_cfg=rmp_cfg)
