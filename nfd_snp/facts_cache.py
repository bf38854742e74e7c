"""The host facts cache the libvirt hook reads: /run/nfd-snp/facts.json.

The hook runs on every VM start and must not probe the host itself (no root devices, no
libvirt calls from a hook). The service writes this compact summary atomically whenever it
changes; it holds no timestamps, so an unchanged node never rewrites it. Readers judge its
age from the file's mtime.
"""

from __future__ import annotations

import json
from typing import Optional

from nfd_snp.atomic import write_atomic
from nfd_snp.checks import Report

SCHEMA = "nfd-snp.facts/v1"


def summary(report: Report) -> dict:
    facts = report.facts
    leaf = facts.cpu.mem_encrypt
    snp = facts.psp.snp
    return {
        "schema": SCHEMA,
        "verdicts": {
            v.guest.value: {"ready": v.ready.value, "blocking": list(v.blocking)}
            for v in report.verdicts
        },
        "cbitpos": leaf.cbitpos if leaf else facts.domcaps.cbitpos,
        "reducedPhysBits": leaf.reduced_phys_bits if leaf else facts.domcaps.reducedPhysBits,
        "snp_api": [snp.api_major, snp.api_minor] if snp else None,
        "snp_firmware": [i.executable for i in facts.firmware.snp_images if i.executable],
        "libvirt_sectypes": list(facts.domcaps.sectypes),
    }


def encode(report: Report) -> bytes:
    return (json.dumps(summary(report), sort_keys=True, separators=(",", ":")) + "\n").encode()


def write_if_changed(path: str, data: bytes, previous: Optional[bytes]) -> bool:
    """Write `data` unless it equals what is there; return whether it was written."""
    if previous is None:
        try:
            with open(path, "rb") as handle:
                previous = handle.read(1 << 20)
        except OSError:
            previous = None
    if previous == data:
        return False
    write_atomic(path, data, 0o644)
    return True
