"""ASID capacity and use from the misc cgroup controller (REFERENCE §3).

`sev` = max_sev_asid - min_sev_asid + 1, `sev_es` = min_sev_asid - 1; SNP guests are
charged to `sev_es`. Keys are matched exactly: `sev` is a prefix of `sev_es` (NFD's own
parser once read `sev_es` lines as `sev`).
"""

from __future__ import annotations

import errno
from typing import Dict, Optional

from nfd_snp import paths
from nfd_snp.host import Host
from nfd_snp.misc_cgroup import FILE_LIMIT, parse_flat_keyed
from nfd_snp.model import AsidFacts, Unreadable
from nfd_snp.reasons import Reason
from nfd_snp.sources import decode_text, unreadable_from


def _read_keyed(host: Host, rel: str) -> Optional[Dict[str, int]]:
    try:
        raw = host.read(rel, FILE_LIMIT)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise
    return parse_flat_keyed(decode_text(raw), "/" + rel)


def read(host: Host) -> AsidFacts:
    for directory in paths.MISC_CGROUP_DIRS:
        capacity_rel = f"{directory}/misc.capacity"
        try:
            capacity = _read_keyed(host, capacity_rel)
            if capacity is None:
                continue
            current = _read_keyed(host, f"{directory}/misc.current") or {}
        except OSError as exc:
            failure = unreadable_from(
                exc, "/" + capacity_rel, missing=Reason.FILE_GARBLED, other=Reason.FILE_GARBLED
            )
            return AsidFacts("/" + directory, None, None, None, None, failure)
        except ValueError as exc:
            return AsidFacts(
                "/" + directory, None, None, None, None, Unreadable(Reason.FILE_GARBLED, str(exc))
            )
        return AsidFacts(
            path="/" + directory,
            sev_capacity=capacity.get("sev"),
            sev_es_capacity=capacity.get("sev_es"),
            sev_current=current.get("sev"),
            sev_es_current=current.get("sev_es"),
        )
    return AsidFacts(None, None, None, None, None)
