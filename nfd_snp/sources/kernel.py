"""The running kernel's view: release and the first CPU's /proc/cpuinfo block (REFERENCE §3).

The kernel clears `sme sev sev_es sev_snp` from the flags when a feature is not usable
(BIOS off, RMP not set up, running under a hypervisor), so a flag here means "usable".
"""

from __future__ import annotations

from typing import Optional

from nfd_snp import paths
from nfd_snp.host import Host
from nfd_snp.model import KernelFacts, Unreadable
from nfd_snp.reasons import Reason
from nfd_snp.sources import decode_text, unreadable_from

RELEVANT_FLAGS = frozenset({"sme", "sev", "sev_es", "sev_snp", "hypervisor", "svm"})
# The first processor block is a few KB; a 384-thread host's whole file is ~1 MB.
CPUINFO_READ = 64 * 1024


def _int(value: Optional[str]) -> Optional[int]:
    try:
        return int(value, 0) if value is not None else None
    except ValueError:
        return None


def parse_cpuinfo_block(text: str) -> dict:
    """`key: value` pairs of the first processor block."""
    fields = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def read(host: Host) -> KernelFacts:
    release = None
    try:
        release = decode_text(host.read(paths.KERNEL_RELEASE, 256)).strip() or None
    except OSError:
        pass  # informational only
    try:
        raw = host.read(paths.PROC_CPUINFO, CPUINFO_READ, truncate=True)
    except OSError as exc:
        failure = unreadable_from(
            exc, "/" + paths.PROC_CPUINFO, missing=Reason.HOST_ROOT_INCOMPLETE
        )
        return KernelFacts(release, None, None, None, None, None, failure)
    fields = parse_cpuinfo_block(decode_text(raw))
    flags = None
    unreadable = None
    if "flags" in fields:
        flags = frozenset(fields["flags"].split()) & RELEVANT_FLAGS
    else:
        unreadable = Unreadable(
            Reason.FILE_GARBLED, f"/{paths.PROC_CPUINFO}: no 'flags' line in the first block"
        )
    return KernelFacts(
        release=release,
        model_name=fields.get("model name"),
        vendor_id=fields.get("vendor_id"),
        family=_int(fields.get("cpu family")),
        model=_int(fields.get("model")),
        flags=flags,
        unreadable=unreadable,
    )
