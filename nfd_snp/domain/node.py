"""What the rewrite needs to know about this node, from the service's facts cache.

The cache (`/run/nfd-snp/facts.json`, schema nfd-snp.facts/v1) is written by `nfd-snp run`.
Readers are strict about its shape: a missing or corrupt cache means "unknown", and a domain
that asked for SEV-SNP is then refused, never started on a guess.
"""

from __future__ import annotations

import json
import os
import time
from typing import Optional, Tuple

from nfd_snp.errors import DomainError

DEFAULT_FACTS_CACHE = "/run/nfd-snp/facts.json"
FACTS_LIMIT = 1024 * 1024


class NodeFacts:
    """cbitpos, reducedPhysBits, SNP firmware ABI and images, and SNP readiness."""

    __slots__ = (
        "snp_ready",
        "blocking",
        "cbitpos",
        "reducedPhysBits",
        "snp_api",
        "snp_firmware",
        "valid_for",
    )

    def __init__(
        self,
        snp_ready: Optional[str] = None,  # "yes", "no", "unknown" or None (no cache)
        blocking: Tuple[str, ...] = (),
        cbitpos: Optional[int] = None,
        reducedPhysBits: Optional[int] = None,
        snp_api: Optional[Tuple[int, int]] = None,
        snp_firmware: Tuple[str, ...] = (),
        valid_for: Optional[float] = None,
    ) -> None:
        self.snp_ready = snp_ready
        self.blocking = blocking
        self.cbitpos = cbitpos
        self.reducedPhysBits = reducedPhysBits
        self.snp_api = snp_api
        self.snp_firmware = snp_firmware
        self.valid_for = valid_for


def _int(value, name):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 16:
        raise DomainError(f"facts cache: {name} is not a small integer")
    return value


def from_summary(data) -> NodeFacts:
    """NodeFacts from the decoded cache; DomainError when its shape is wrong."""
    if not isinstance(data, dict) or data.get("schema") != "nfd-snp.facts/v1":
        raise DomainError("facts cache: not an nfd-snp.facts/v1 document")
    verdicts = data.get("verdicts")
    verdict = verdicts.get("sev-snp") if isinstance(verdicts, dict) else None
    if not isinstance(verdict, dict) or verdict.get("ready") not in ("yes", "no", "unknown"):
        raise DomainError("facts cache: no sev-snp verdict")
    blocking = verdict.get("blocking") or []
    if not isinstance(blocking, list):
        raise DomainError("facts cache: blocking is not a list")
    api = data.get("snp_api")
    if api is not None and not (
        isinstance(api, list) and len(api) == 2 and all(isinstance(x, int) for x in api)
    ):
        raise DomainError("facts cache: snp_api is not [major, minor]")
    firmware = data.get("snp_firmware") or []
    if not isinstance(firmware, list) or not all(isinstance(f, str) for f in firmware):
        raise DomainError("facts cache: snp_firmware is not a list of paths")
    valid_for = data.get("valid_for")
    if isinstance(valid_for, bool) or not isinstance(valid_for, (int, float)) or valid_for <= 0:
        raise DomainError("facts cache: valid_for is not a positive number of seconds")
    return NodeFacts(
        valid_for=float(valid_for),
        snp_ready=verdict["ready"],
        blocking=tuple(str(b) for b in blocking),
        cbitpos=_int(data.get("cbitpos"), "cbitpos"),
        reducedPhysBits=_int(data.get("reducedPhysBits"), "reducedPhysBits"),
        snp_api=tuple(api) if api else None,
        snp_firmware=tuple(firmware),
    )


def load(path: str = DEFAULT_FACTS_CACHE, now: Optional[float] = None) -> NodeFacts:
    """Read the cache; DomainError (with what to run) when it is missing, stale or unusable."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(FACTS_LIMIT + 1)
            stamped = os.fstat(handle.fileno()).st_mtime
    except FileNotFoundError:
        raise DomainError(
            f"node SEV-SNP readiness is unknown: {path} is missing (is nfd-snp.service running?)"
        ) from None
    except OSError as exc:
        raise DomainError(f"node SEV-SNP readiness is unknown: {path}: {exc.strerror}") from None
    if len(raw) > FACTS_LIMIT:
        raise DomainError(f"node SEV-SNP readiness is unknown: {path} is too large")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise DomainError(f"node SEV-SNP readiness is unknown: {path} is not valid JSON") from None
    facts = from_summary(data)
    age = (time.time() if now is None else now) - stamped
    if age > facts.valid_for:
        raise DomainError(
            f"node SEV-SNP readiness is unknown: {path} was last refreshed {age:.0f} s ago, "
            f"longer than its {facts.valid_for:.0f} s validity (is nfd-snp.service running?)"
        )
    return facts
