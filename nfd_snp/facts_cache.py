"""The host facts cache the libvirt hook reads: /run/nfd-snp/facts.json.

The hook runs on every VM start and must not probe the host itself (no root devices, no
libvirt calls from a hook). The service writes this compact summary atomically whenever it
changes; it holds no timestamps, so an unchanged node never rewrites it. Instead the
service stamps the file's mtime every cycle (`touch`), and `valid_for` (the service's ttl)
says how long a stamp stays good: facts from a service that stopped expire, like its labels.
"""

from __future__ import annotations

import json
import os

from nfd_snp.atomic import WriteError, write_atomic
from nfd_snp.checks import Report

SCHEMA = "nfd-snp.facts/v1"


DEFAULT_VALID_FOR = 600.0


def summary(report: Report, valid_for: float = DEFAULT_VALID_FOR) -> dict:
    facts = report.facts
    cbit = facts.cbit()
    cbitpos, reduced = (cbit.cbitpos, cbit.reducedPhysBits) if cbit else (None, None)
    snp = facts.psp.snp
    return {
        "schema": SCHEMA,
        "valid_for": valid_for,
        "verdicts": {
            v.guest.value: {"ready": v.ready.value, "blocking": list(v.blocking)}
            for v in report.verdicts
        },
        "cbitpos": cbitpos,
        "reducedPhysBits": reduced,
        "snp_api": [snp.api_major, snp.api_minor] if snp else None,
        "snp_firmware": [i.executable for i in facts.firmware.snp_images if i.executable],
        "libvirt_sectypes": list(facts.domcaps.sectypes),
    }


def encode(report: Report, valid_for: float = DEFAULT_VALID_FOR) -> bytes:
    data = summary(report, valid_for)
    return (json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n").encode()


def write_if_changed(path: str, data: bytes) -> bool:
    """Write `data` unless the file already holds it; either way the file is fresh after.

    Returns whether the content was written. The file on disk is compared each time (it is
    a few hundred bytes), so a cache edited or removed behind the service's back is mended.
    """
    try:
        with open(path, "rb") as handle:
            if handle.read(len(data) + 1) == data:
                os.utime(handle.fileno())  # still true: renew its freshness, not its content
                return False
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise WriteError(f"cannot refresh {path}: {exc.strerror or exc}") from None
    write_atomic(path, data, 0o644)
    return True
