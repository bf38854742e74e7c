"""One probe: read every source once from one host into `HostFacts`, and its report.

`probe_report` is the one entry point of the commands: probe, then evaluate the checks.
With -v each source logs one debug line: what it read (paths, registers, firmware commands,
libvirt), what it could not read, and how long it took.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import time
from typing import TYPE_CHECKING, Callable, Dict, List, NamedTuple, Optional

from nfd_snp import log
from nfd_snp.errors import InputError
from nfd_snp.host import KVM_ATTR_CAPTURE_KEYS, PSP_CAPTURE_KEYS, Host, Recording, hexkey, open_host
from nfd_snp.model import HostFacts, Unreadable

if TYPE_CHECKING:
    from nfd_snp.checks import Report
    from nfd_snp.config import Config

# HostFacts' fields that a source reads, in order: (field, source module, fields it needs).
SOURCES = tuple(
    (f.name, f.metadata["source"], f.metadata["needs"])
    for f in dataclasses.fields(HostFacts)
    if "source" in f.metadata
)


def probe(host: Host) -> HostFacts:
    """Every source of HostFacts, read once from `host` (nfd_snp.model.source)."""
    read = _traced if log.enabled(log.DEBUG) else _untraced
    facts: Dict[str, object] = {}
    for field, name, needs in SOURCES:
        module = importlib.import_module(f"nfd_snp.sources.{name}")
        known = [facts[need] for need in needs]
        facts[field] = read(name, lambda h, m=module, k=known: m.read(h, *k), host)
    return HostFacts(root=str(host.root), snapshot=host.snapshot, **facts)


def _untraced(_name: str, read: Callable, host: Host):
    return read(host)


class _Trace:
    """A host that notes what a source asks of it, for the source's debug line."""

    def __init__(self, host: Host) -> None:
        self._host = host
        self.items: List[str] = []

    def __getattr__(self, name: str):
        attr = getattr(self._host, name)
        describe = _DESCRIBE.get(name)
        if describe is None:
            return attr

        def noted(*args, **kwargs):
            self.items.append(describe(*args))
            return attr(*args, **kwargs)

        return noted


def _path(rel: str, *_rest) -> str:
    # One process's files stand for all: /proc/<pid>/cmdline is read once per process.
    return re.sub(r"^proc/\d+/", "proc/<pid>/", rel)


_DESCRIBE: Dict[str, Callable[..., str]] = {
    "read": _path,
    "listdir": lambda rel: rel + "/",
    "exists": lambda rel: f"{_path(rel)} (exists?)",
    "cpuid": lambda leaf: f"CPUID {hexkey(leaf)}",
    "msr": lambda index: f"MSR {hexkey(index)}",
    "psp_command": lambda command: PSP_CAPTURE_KEYS[command],
    "kvm_attribute": lambda group, attr: KVM_ATTR_CAPTURE_KEYS[(group, attr)],
    "domain_capabilities": lambda: "libvirt domain capabilities",
    "readlink": lambda rel: f"{_path(rel)} (link)",
    "stat": lambda rel: f"{rel} (stat)",
    "hook_import": lambda python: f"{python} -I -c 'import nfd_snp.hook'",
}


def _unreadables(value) -> List[Unreadable]:
    if isinstance(value, Unreadable):
        return [value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [u for f in dataclasses.fields(value) for u in _unreadables(getattr(value, f.name))]
    return []


def _traced(name: str, read: Callable, host: Host):
    trace = _Trace(host)
    started = time.perf_counter()
    facts = read(trace)
    elapsed = 1000 * (time.perf_counter() - started)
    counts: Dict[str, int] = {}
    for item in trace.items:
        counts[item] = counts.get(item, 0) + 1
    what = ", ".join(f"{item} x{n}" if n > 1 else item for item, n in counts.items())
    failed = "; ".join(f"{u.detail} ({u.reason.code})" for u in _unreadables(facts))
    log.debug(
        f"{name}: read {what or 'nothing'} in {elapsed:.1f} ms"
        + (f"; unreadable: {failed}" if failed else "")
    )
    return facts


class Probe(NamedTuple):
    """One probe's evaluated report and, for `capture`, what it read."""

    report: "Report"
    recording: Optional[Recording]


def probe_report(config: "Config", *, record: bool = False) -> Probe:
    """Probe `config.host_root` (live or snapshot) and evaluate it: `check`, `features`,
    `run` and `capture` all come through here.

    `config.libvirt`: "auto" asks host libvirt when a daemon runs, "off" never asks,
    "required" makes a node without host libvirt not ready. `record` keeps every input a
    live probe reads (a snapshot is not recorded again: copy it instead).
    """
    from nfd_snp.checks import evaluate

    with open_host(
        config.host_root,
        libvirt=config.libvirt != "off",
        libvirt_timeout=config.libvirt_timeout,
        record=record,
    ) as host:
        if record and host.snapshot:
            raise InputError(f"{config.host_root} is a snapshot already; copy it instead")
        facts = probe(host)
        recording = host.recording if record else None
    started = time.perf_counter()
    report = evaluate(facts, require_libvirt=config.libvirt == "required")
    log.debug(f"checks evaluated in {1000 * (time.perf_counter() - started):.1f} ms")
    return Probe(report, recording)
