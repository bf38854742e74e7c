"""The host facts cache: what `nfd-snp run` tells the libvirt hook about this node.

The hook runs as root on every VM start and must not probe the host itself (no devices, no
libvirt calls from a hook), so the service writes this compact summary, and the hook decides
with it whether an SNP guest may start. Both sides live here, with the one schema constant.

Format (JSON, `/run/nfd-snp/facts.json`): `schema`, `valid_for` (the service's ttl),
`verdicts["sev-snp"]` (`ready` yes/no/unknown and the `blocking` check names),
`blocked_by` (each blocking check's `check` name, `title` and `fix`, for the hook's
refusal), `cbitpos` (null when unknown, never 0),
`reducedPhysBits`, `snp_api` ([major, minor]), `snp_firmware` (SNP-capable OVMF paths),
`snp_policy` (`accepted` and `required` SNP guest policy bits of this node's KVM, or null
when unknown) and `asids_shared` (SEV-ES and SEV-SNP guests share one ASID range, i.e. no
ciphertext hiding; null when unknown). Fields are only added within v1; a reader takes an
absent one for unknown.
It holds no timestamp, so an unchanged node never rewrites it; the service stamps the file's
mtime every cycle instead, and a stamp stays good for `valid_for` seconds: facts from a
service that stopped expire, like its labels.

The reader trusts the file only as far as root wrote it: it opens it with
O_NOFOLLOW|O_NONBLOCK (no symlink, and a FIFO cannot block a VM start), and requires a
regular file and its directory both owned by root (or by the reading user) and not
writable by group or others. Anything else, or facts that are stale, stamped in the
future or claim a validity outside the service's ttl range, make the node's SEV-SNP
readiness unknown, and the hook refuses SNP domains with the reason.

The hook imports this module on its hot path: standard library only, nothing heavy.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import time
from nfd_snp.errors import DomainError

SCHEMA = "nfd-snp.facts/v1"
DEFAULT_FACTS_CACHE = "/run/nfd-snp/facts.json"
FACTS_LIMIT = 64 * 1024  # the cache is a few hundred bytes
# The service's ttl range (nfd_snp.config uses these bounds for its `ttl` setting): the
# smallest is twice the smallest interval, the largest a week.
TTL_MIN = 2.0
TTL_MAX = 7 * 86400.0
DEFAULT_VALID_FOR = 600.0
# A stamp further ahead of the reader's clock than this is not fresh but wrong (a clock
# stepped back, or a file stamped on purpose to stay valid for a year).
CLOCK_SKEW = 60.0
UNKNOWN = "node SEV-SNP readiness is unknown"


class NodeFacts:
    """SNP readiness, cbitpos, reducedPhysBits, SNP firmware ABI and images, and the SNP
    guest policies this node's KVM accepts. (No `typing` import: it alone costs the hook
    more than reading this file.)"""

    __slots__ = (
        "snp_ready",
        "blocking",
        "cbitpos",
        "reducedPhysBits",
        "snp_api",
        "snp_firmware",
        "snp_policy",
        "asids_shared",
        "valid_for",
        "blocked_by",
    )

    def __init__(
        self,
        snp_ready: str | None = None,  # "yes", "no", "unknown" or None (no cache)
        blocking: tuple = (),
        cbitpos: int | None = None,
        reducedPhysBits: int | None = None,
        snp_api: tuple | None = None,  # (major, minor)
        snp_firmware: tuple = (),
        snp_policy: tuple | None = None,  # (accepted bits, required bits, where from)
        asids_shared: bool | None = None,
        valid_for: float | None = None,
        blocked_by: tuple = (),  # (name, title, fix or None) of each blocking check
    ) -> None:
        self.snp_ready = snp_ready
        self.blocking = blocking
        self.blocked_by = blocked_by
        self.cbitpos = cbitpos
        self.reducedPhysBits = reducedPhysBits
        self.snp_api = snp_api
        self.snp_firmware = snp_firmware
        self.snp_policy = snp_policy
        self.asids_shared = asids_shared
        self.valid_for = valid_for


# -- writing (nfd-snp run) ---------------------------------------------------------------


def summary(report, valid_for: float = DEFAULT_VALID_FOR) -> dict:
    """The cache document for a readiness report (nfd_snp.checks.Report)."""
    from nfd_snp.checks import Guest

    facts = report.facts
    cbit = facts.cbit()
    cbitpos, reduced = (cbit.cbitpos, cbit.reducedPhysBits) if cbit else (None, None)
    snp = facts.psp.snp
    verdict = report.verdict(Guest.SEV_SNP)
    rule = facts.snp_policy_rule()
    snp_asids = facts.guest_asids("sev-snp")
    results = {r.check.name: r for r in report.results}
    return {
        "schema": SCHEMA,
        "valid_for": valid_for,
        "verdicts": {"sev-snp": {"ready": verdict.ready.value, "blocking": list(verdict.blocking)}},
        "blocked_by": [
            {"check": name, "title": results[name].check.title, "fix": results[name].fix}
            for name in verdict.blocking
        ],
        "cbitpos": cbitpos,
        "reducedPhysBits": reduced,
        "snp_api": [snp.api_major, snp.api_minor] if snp else None,
        "snp_firmware": [i.executable for i in facts.firmware.snp_images if i.executable],
        "snp_policy": (
            {"accepted": rule.accepted, "required": rule.required, "source": rule.source}
            if rule
            else None
        ),
        "asids_shared": snp_asids.shared_es_snp if snp_asids else None,
    }


def encode(report, valid_for: float = DEFAULT_VALID_FOR) -> bytes:
    data = summary(report, valid_for)
    return (json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n").encode()


def write_if_changed(path: str, data: bytes) -> bool:
    """Write `data` unless the file already holds it; either way the file is fresh after.

    Returns whether the content was written. The file on disk is compared each time (it is
    a few hundred bytes), so a cache edited, replaced or removed behind the service's back
    is mended; only a regular file the reader would trust is stamped in place, anything
    else (a symlink, a FIFO, loose permissions) is replaced.
    """
    from nfd_snp.atomic import write_atomic
    from nfd_snp.errors import WriteError

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        fd = None
    except OSError:
        fd = None  # a symlink (ELOOP) or worse: replaced below
    if fd is not None:
        try:
            st = os.fstat(fd)
            trusted = stat.S_ISREG(st.st_mode) and untrusted_because(st, "it") is None
            if trusted and _read(fd, len(data) + 1) == data:
                os.utime(fd)  # still true: renew its freshness, not its content
                return False
        except OSError as exc:
            raise WriteError(f"cannot refresh {path}: {exc.strerror or exc}") from None
        finally:
            os.close(fd)
    write_atomic(path, data, 0o644)
    return True


# -- reading (the libvirt hook, `nfd-snp domain`) ----------------------------------------


def _read(fd: int, limit: int) -> bytes:
    chunks, size = [], 0
    while size < limit:
        chunk = os.read(fd, limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def untrusted_because(st: os.stat_result, what: str) -> str | None:
    """Why a file or directory with this status could have been written by someone else.

    Root's files only, or the reading user's own (`nfd-snp domain rewrite` as a user); never
    writable by group or others.
    """
    if st.st_uid not in (0, os.geteuid()):
        return f"{what} is owned by uid {st.st_uid}, not root"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{what} is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def directory_untrusted_because(path: str) -> str | None:
    """Why the directory holding the cache `path` is not trusted (None: it is, or is absent)."""
    directory = os.path.dirname(path) or "."
    try:
        st = os.stat(directory)
    except OSError:
        return None
    return untrusted_because(st, f"its directory {directory}")


def _open_trusted(path: str) -> tuple[bytes, float]:
    """(content, mtime) of the cache; DomainError saying why it cannot be trusted."""
    directory, name = os.path.split(path)
    try:
        dir_fd = os.open(directory or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise DomainError(f"{UNKNOWN}: {path} is missing (is nfd-snp.service running?)") from None
    except OSError as exc:
        raise DomainError(f"{UNKNOWN}: {directory}: {exc.strerror or exc}") from None
    try:
        why = untrusted_because(os.fstat(dir_fd), f"its directory {directory or '.'}")
        if why:
            raise DomainError(f"{UNKNOWN}: {path} is not trusted: {why}")
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
        try:
            fd = os.open(name, flags, dir_fd=dir_fd)
        except FileNotFoundError:
            raise DomainError(
                f"{UNKNOWN}: {path} is missing (is nfd-snp.service running?)"
            ) from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink
                raise DomainError(f"{UNKNOWN}: {path} is a symbolic link, not trusted") from None
            raise DomainError(f"{UNKNOWN}: {path}: {exc.strerror or exc}") from None
    finally:
        os.close(dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise DomainError(f"{UNKNOWN}: {path} is not a regular file")
        why = untrusted_because(st, "it")
        if why:
            raise DomainError(f"{UNKNOWN}: {path} is not trusted: {why}")
        return _read(fd, FACTS_LIMIT + 1), st.st_mtime
    except OSError as exc:
        raise DomainError(f"{UNKNOWN}: {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def _int(value, name):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 16:
        raise DomainError(f"facts cache: {name} is not a small integer")
    return value


def _bool(value, name):
    if value is None or isinstance(value, bool):
        return value
    raise DomainError(f"facts cache: {name} is not true, false or null")


def _policy(value):
    """(accepted, required, source) from `snp_policy`, None when the node's rule is unknown."""
    if value is None:
        return None
    bits = [value.get(k) if isinstance(value, dict) else None for k in ("accepted", "required")]
    source = value.get("source") if isinstance(value, dict) else None
    if not isinstance(source, str) or not all(
        isinstance(b, int) and not isinstance(b, bool) and 0 <= b < 1 << 64 for b in bits
    ):
        raise DomainError("facts cache: snp_policy is not {accepted, required, source}")
    return bits[0], bits[1], source


def _no_constant(name):
    raise ValueError(f"{name} is not JSON")


def from_summary(data) -> NodeFacts:
    """NodeFacts from the decoded cache; DomainError when its shape is wrong."""
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise DomainError(f"facts cache: not an {SCHEMA} document")
    verdicts = data.get("verdicts")
    verdict = verdicts.get("sev-snp") if isinstance(verdicts, dict) else None
    if not isinstance(verdict, dict) or verdict.get("ready") not in ("yes", "no", "unknown"):
        raise DomainError("facts cache: no sev-snp verdict")
    blocking = verdict.get("blocking") or []
    if not isinstance(blocking, list) or not all(isinstance(b, str) for b in blocking):
        raise DomainError("facts cache: blocking is not a list of check names")
    api = data.get("snp_api")
    if api is not None:
        if not isinstance(api, list) or len(api) != 2 or None in api:
            raise DomainError("facts cache: snp_api is not [major, minor]")
        api = (_int(api[0], "snp_api"), _int(api[1], "snp_api"))
    firmware = data.get("snp_firmware") or []
    if not isinstance(firmware, list) or not all(isinstance(f, str) for f in firmware):
        raise DomainError("facts cache: snp_firmware is not a list of paths")
    blocked_by = data.get("blocked_by") or []
    if not isinstance(blocked_by, list) or not all(
        isinstance(b, dict)
        and isinstance(b.get("check"), str)
        and isinstance(b.get("title"), str)
        and isinstance(b.get("fix"), (str, type(None)))
        for b in blocked_by
    ):
        raise DomainError("facts cache: blocked_by is not a list of {check, title, fix}")
    valid_for = data.get("valid_for")
    if (
        isinstance(valid_for, bool)
        or not isinstance(valid_for, (int, float))
        or not TTL_MIN <= valid_for <= TTL_MAX
    ):
        raise DomainError(
            f"facts cache: valid_for is not {TTL_MIN:g}..{TTL_MAX:g} seconds (the service's ttl)"
        )
    return NodeFacts(
        snp_policy=_policy(data.get("snp_policy")),
        asids_shared=_bool(data.get("asids_shared"), "asids_shared"),
        valid_for=float(valid_for),
        snp_ready=verdict["ready"],
        blocking=tuple(blocking),
        blocked_by=tuple((b["check"], b["title"], b["fix"]) for b in blocked_by),
        cbitpos=_int(data.get("cbitpos"), "cbitpos") or None,  # 0 (older caches): unknown
        reducedPhysBits=_int(data.get("reducedPhysBits"), "reducedPhysBits"),
        snp_api=api,
        snp_firmware=tuple(firmware),
    )


def load(path: str = DEFAULT_FACTS_CACHE, now: float | None = None) -> NodeFacts:
    """Read the cache; DomainError (with what to run) when it is missing, stale or untrusted."""
    raw, stamped = _open_trusted(path)
    if len(raw) > FACTS_LIMIT:
        raise DomainError(f"{UNKNOWN}: {path} is too large")
    try:
        data = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise DomainError(f"{UNKNOWN}: {path} is not valid JSON") from None
    facts = from_summary(data)
    age = (time.time() if now is None else now) - stamped
    if age < -CLOCK_SKEW:
        raise DomainError(
            f"{UNKNOWN}: {path} is stamped {-age:.0f} s in the future, more than the "
            f"{CLOCK_SKEW:.0f} s of clock skew allowed"
        )
    if age > facts.valid_for:
        raise DomainError(
            f"{UNKNOWN}: {path} was last refreshed {age:.0f} s ago, "
            f"longer than its {facts.valid_for:.0f} s validity (is nfd-snp.service running?)"
        )
    return facts
