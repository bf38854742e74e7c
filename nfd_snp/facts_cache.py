"""The host facts cache: what `nfd-snp run` tells the libvirt hook about this node.

The hook runs as root on every VM start and must not probe the host itself (no devices, no
libvirt calls from a hook), so the service writes this compact summary, and the hook decides
with it whether an SNP guest may start. Both sides live here, with the one schema constant.

Format (JSON, `/run/nfd-snp/facts.json`): `schema`, then one key per fact, each declared
once as a `Fact` of `NodeFacts` (where it sits in the document, its kind, how the service
takes it from the readiness report): the class, the document the service writes and the
reader all follow from those lines. `valid_for` (the service's ttl),
`verdicts["sev-snp"]` (`ready` yes/no/unknown and the `blocking` check names),
`blocked_by` (each blocking check's `check` name, `title` and `fix`, for the hook's
refusal), `cbitpos` (null when unknown, never 0),
`reducedPhysBits`, `snp_api` ([major, minor]), `snp_firmware` (SNP-capable OVMF paths),
`snp_policy` (`accepted` and `required` SNP guest policy bits of this node's KVM, or null
when unknown) and `asids_shared` (SEV-ES and SEV-SNP guests share one ASID range, i.e. no
ciphertext hiding; null when unknown). Facts are only added within v1; a reader takes an
absent one for unknown. A cache of another schema (`nfd-snp.facts/v2`, from another version
of nfd-snp during an upgrade) gives no facts, with that reason (`OtherSchema`).
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

SCHEMA_FAMILY = "nfd-snp.facts/"
SCHEMA = SCHEMA_FAMILY + "v1"
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


# -- the facts ----------------------------------------------------------------------------


# How each kind of fact is read back from JSON: a function that returns the typed value or
# raises ValueError, and what it expects, for the reader's refusal. (Functions, not classes:
# the hook imports this module on every SNP domain's start.)


def _small_int(value):
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 16:
        raise ValueError
    return value


def _readiness(value):
    if value not in ("yes", "no", "unknown"):
        raise ValueError
    return value


def _strings(value):
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError
    return tuple(value)


def _version(value):
    if not isinstance(value, list) or len(value) != 2:
        raise ValueError
    return _small_int(value[0]), _small_int(value[1])


def _bool(value):
    if not isinstance(value, bool):
        raise ValueError
    return value


def _seconds(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError
    if not TTL_MIN <= value <= TTL_MAX:
        raise ValueError
    return float(value)


def _policy_rule(value):
    """nfd_snp.snp_policy.SnpPolicyRule from {accepted, required, source}."""
    from nfd_snp.snp_policy import SnpPolicyRule

    if not isinstance(value, dict):
        raise ValueError
    bits = [value.get("accepted"), value.get("required")]
    source = value.get("source")
    if not isinstance(source, str) or not all(
        isinstance(b, int) and not isinstance(b, bool) and 0 <= b < 1 << 64 for b in bits
    ):
        raise ValueError
    return SnpPolicyRule(bits[0], bits[1], source)


def _cbit(value):
    """A C-bit position; 0, which caches written before unknown became null hold when the
    CPU hid the SEV leaf, is no position: unknown."""
    return _small_int(value) or None


def _blocked_by(value):
    """((check, title, fix or None), ...) from [{check, title, fix}, ...]."""
    if not isinstance(value, list):
        raise ValueError
    out = []
    for entry in value:
        if not isinstance(entry, dict):
            raise ValueError
        check, title, fix = entry.get("check"), entry.get("title"), entry.get("fix")
        if not isinstance(check, str) or not isinstance(title, str):
            raise ValueError
        if fix is not None and not isinstance(fix, str):
            raise ValueError
        out.append((check, title, fix))
    return tuple(out)


def _blocked_by_json(value) -> list:
    return [{"check": c, "title": t, "fix": f} for c, t, f in value]


def _policy_rule_json(rule) -> dict:
    return {"accepted": rule.accepted, "required": rule.required, "source": rule.source}


SMALL_INT = (_small_int, "a small integer")
READINESS = (_readiness, "yes, no or unknown")
VERSION = (_version, "[major, minor]")
BOOL = (_bool, "true, false or null")
SECONDS = (_seconds, f"{TTL_MIN:g}..{TTL_MAX:g} seconds (the service's ttl)")
POLICY_RULE = (_policy_rule, "{accepted, required, source}")


class Fact:
    """One node fact: where it sits in the cache (`key`, a path through nested objects), its
    kind (how it is read back, and what a reader expects), its value when the cache lacks
    it (`default`; `required` facts have none), how the service takes it from a readiness
    report (`of_report`), and where needed how it is written (`write`) and the refusal of a
    malformed value (`invalid`).

    As a class attribute of NodeFacts it declares the attribute of the same name; the
    class, the document the service writes and the reader all follow from these lines.
    """

    def __init__(
        self, key, kind, of_report, default=None, *, required=False, write=None, invalid=""
    ):
        self.key = key
        self.path = tuple(key.split("/"))
        self.kind, self.expected = kind
        self.of_report = of_report
        self.default = default
        self.required = required
        self.write_json = write
        self.invalid = invalid
        self.name = ""

    def __set_name__(self, owner, name: str) -> None:
        self.name = name

    def __get__(self, instance, owner=None):
        return self if instance is None else self.default

    def read(self, document):
        """The typed value in a decoded cache document; DomainError when it is malformed."""
        value = document
        for part in self.path:
            value = value.get(part) if isinstance(value, dict) else None
        if value is None and not self.required:
            return self.default
        try:
            if value is None:
                raise ValueError
            return self.kind(value)
        except ValueError:
            why = self.invalid or f"{self.path[-1]} is not {self.expected}"
            raise DomainError(f"facts cache: {why}") from None

    def write(self, document: dict, value) -> None:
        *parents, leaf = self.path
        for part in parents:
            document = document.setdefault(part, {})
        if value is not None and self.write_json is not None:
            value = self.write_json(value)
        elif isinstance(value, tuple):
            value = list(value)  # as JSON reads it back
        document[leaf] = value


# What the service takes from a readiness report (nfd_snp.checks.Report) for each fact.


def _snp_verdict(report):
    from nfd_snp.checks import Guest

    return report.verdict(Guest.SEV_SNP)


def _cbitpos(report):
    cbit = report.facts.cbit()
    return cbit.cbitpos if cbit else None


def _reduced_phys_bits(report):
    cbit = report.facts.cbit()
    return cbit.reducedPhysBits if cbit else None


def _blocked_by_of(report):
    """Each check blocking SEV-SNP with its title and fix, so that the hook's refusal says
    what a person reads in `nfd-snp check`, not only the check's name."""
    results = {r.check.name: r for r in report.results}
    return tuple(
        (name, results[name].check.title, results[name].fix)
        for name in _snp_verdict(report).blocking
    )


def _snp_api(report):
    snp = report.facts.psp.snp
    return (snp.api_major, snp.api_minor) if snp else None


def _snp_firmware(report):
    return tuple(i.executable for i in report.facts.firmware.snp_images if i.executable)


def _asids_shared(report):
    snp_asids = report.facts.guest_asids("sev-snp")
    return snp_asids.shared_es_snp if snp_asids else None


class NodeFacts:
    """What the libvirt hook knows of this node: SNP readiness, cbitpos, reducedPhysBits,
    SNP firmware ABI and images, the SNP guest policies its KVM accepts, whether SEV-ES and
    SEV-SNP share their ASIDs, and how long the facts are valid.

    One declaration per fact. An attribute is None (or empty) when unknown. (No `typing`
    or `dataclasses` import: either alone costs the hook more than reading this file.)
    """

    snp_ready = Fact(  # "yes", "no" or "unknown"
        "verdicts/sev-snp/ready",
        READINESS,
        lambda report: _snp_verdict(report).ready.value,
        required=True,
        invalid="no sev-snp verdict",
    )
    blocking = Fact(  # the checks blocking SEV-SNP (or leaving it unknown)
        "verdicts/sev-snp/blocking",
        (_strings, "a list of check names"),
        lambda report: _snp_verdict(report).blocking,
        (),
    )
    blocked_by = Fact(  # (check, title, fix or None) of each blocking check
        "blocked_by",
        (_blocked_by, "a list of {check, title, fix}"),
        _blocked_by_of,
        (),
        write=_blocked_by_json,
    )
    cbitpos = Fact("cbitpos", (_cbit, "a small integer"), _cbitpos)
    reducedPhysBits = Fact("reducedPhysBits", SMALL_INT, _reduced_phys_bits)
    snp_api = Fact("snp_api", VERSION, _snp_api)  # (major, minor)
    snp_firmware = Fact("snp_firmware", (_strings, "a list of paths"), _snp_firmware, ())
    snp_policy = Fact(  # nfd_snp.snp_policy.SnpPolicyRule of this node's KVM
        "snp_policy",
        POLICY_RULE,
        lambda report: report.facts.snp_policy_rule(),
        write=_policy_rule_json,
    )
    asids_shared = Fact("asids_shared", BOOL, _asids_shared)  # no ciphertext hiding
    valid_for = Fact("valid_for", SECONDS, None, required=True)  # the service's ttl

    def __init__(self, **values) -> None:
        for fact in FACTS:
            self.__dict__[fact.name] = values.pop(fact.name, fact.default)
        if values:
            raise TypeError(f"NodeFacts has no {', '.join(sorted(values))}")

    def __repr__(self) -> str:
        return f"NodeFacts({', '.join(f'{k}={v!r}' for k, v in self.__dict__.items())})"

    @classmethod
    def of_report(cls, report, valid_for: float = DEFAULT_VALID_FOR) -> "NodeFacts":
        """The facts of a readiness report (nfd_snp.checks.Report), as the service writes
        them and the hook reads them back."""
        values = {f.name: f.of_report(report) for f in FACTS if f.of_report is not None}
        return cls(valid_for=valid_for, **values)

    def summary(self) -> dict:
        """The cache document."""
        document = {"schema": SCHEMA}
        for fact in FACTS:
            fact.write(document, getattr(self, fact.name))
        return document


FACTS = tuple(v for v in vars(NodeFacts).values() if isinstance(v, Fact))


# -- writing (nfd-snp run) ---------------------------------------------------------------


def summary(report, valid_for: float = DEFAULT_VALID_FOR) -> dict:
    """The cache document for a readiness report (nfd_snp.checks.Report)."""
    return NodeFacts.of_report(report, valid_for).summary()


def encode(report, valid_for: float = DEFAULT_VALID_FOR) -> bytes:
    data = summary(report, valid_for)
    return (json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n").encode()


def write_if_changed(path: str, data: bytes) -> bool:
    """Write `data` unless the file already holds it; either way the file is fresh after.

    Returns whether the content was written. The file on disk is compared each time (it is
    a few hundred bytes), so a cache edited, replaced or removed behind the service's back
    is mended; only a regular file the reader would trust is stamped in place, a regular
    file with loose permissions is replaced, and anything else (a symlink, a FIFO) is
    refused by the writer (WriteError), never written through.
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


def _no_constant(name):
    raise ValueError(f"{name} is not JSON")


class OtherSchema(DomainError):
    """A cache written by another version of nfd-snp: this one reads no facts from it."""


def from_summary(data) -> NodeFacts:
    """NodeFacts from the decoded cache; DomainError when its shape is wrong, OtherSchema
    when another version of nfd-snp wrote it."""
    schema = data.get("schema") if isinstance(data, dict) else None
    if schema != SCHEMA:
        if isinstance(schema, str) and schema.startswith(SCHEMA_FAMILY):
            raise OtherSchema(
                f"facts cache: written by another version of nfd-snp ({schema[:40]!r}; this "
                f"one reads {SCHEMA}): no node facts until nfd-snp.service rewrites it"
            )
        raise DomainError(f"facts cache: not an {SCHEMA} document")
    return NodeFacts(**{fact.name: fact.read(data) for fact in FACTS})


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
