"""/proc/meminfo's MemTotal: how much RAM an RMP must cover at the least.

The kernel refuses an RMP that does not cover all of RAM up to max_pfn ("Memory reserved for
the RMP table does not cover full system RAM"; on 6.9-6.13 snp_rmptable_init turns host SNP
off, from 6.14 iommu_snp_enable: "SNP: RMP initialization failed"). The BIOS setting "SNP
Memory (RMP Table) Coverage: Custom" makes such an RMP (AMDESE/AMDSEV#226: 200 GB covered
of 256 GB). MemTotal is below max_pfn's address (holes, reserved memory), so an RMP that
covers less than MemTotal is certainly too small; one that covers more may still be.
"""

from __future__ import annotations

import re

from nfd_snp import paths
from nfd_snp.host import Host
from nfd_snp.model import MemoryFacts, Unreadable
from nfd_snp.reasons import Reason
from nfd_snp.sources import decode_text, unreadable_from

MEMTOTAL = re.compile(r"^MemTotal:\s+(\d{1,15}) kB$", re.MULTILINE)


def read(host: Host) -> MemoryFacts:
    try:
        text = decode_text(host.read(paths.PROC_MEMINFO, 16 * 1024, truncate=True))
    except OSError as exc:
        return MemoryFacts(
            None,
            unreadable_from(exc, "/" + paths.PROC_MEMINFO, missing=Reason.HOST_ROOT_INCOMPLETE),
        )
    match = MEMTOTAL.search(text)
    if match is None:
        return MemoryFacts(
            None, Unreadable(Reason.FILE_GARBLED, f"/{paths.PROC_MEMINFO}: no MemTotal line")
        )
    return MemoryFacts(int(match.group(1)))
