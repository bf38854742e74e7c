"""The node service (`nfd-snp run`) and the one-shot feature writer (`nfd-snp features`).

Each cycle probes once and derives every output from that one report: the NFD feature file
(rewritten only when labels/features change or the expiry needs renewal), the hooks' facts
cache (only when it changes) and, optionally, a Prometheus textfile. A change is logged in
one line; an unchanged cycle logs nothing.

Stale-label bound: while the service runs, the expiry stays between ttl/2 and ttl ahead
(it is renewed once less than half is left). When the service dies, its labels therefore
disappear at most `ttl` later, plus one nfd-worker rescan (60 s by default).
"""

from __future__ import annotations

import datetime
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

from nfd_snp import facts_cache, nfd, probe
from nfd_snp.atomic import WriteError, remove_stale_temps, write_atomic
from nfd_snp.checks import Report
from nfd_snp.config import Config
from nfd_snp.errors import NfdSnpError

Clock = Callable[[], float]


def probe_report(config: Config) -> Report:
    return probe.probe_report(
        config.host_root, libvirt=config.libvirt, libvirt_timeout=config.libvirt_timeout
    )


def _utc(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)


@dataclass(frozen=True)
class FeatureWrite:
    written: bool
    reason: str  # "changed", "renewal", "first" or "unchanged"


def write_features(path: str, pub: nfd.Publication, now: float, ttl: float) -> FeatureWrite:
    """Write the feature file unless it already says the same with enough time left."""
    body = nfd.render_body(pub)
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            existing = handle.read(nfd.NFD_MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        existing = None
    except OSError as exc:
        raise WriteError(f"cannot read {path}: {exc.strerror or exc}") from None
    reason = "first"
    if existing is not None:
        expiry, old_body = nfd.parse_written(existing)
        if expiry is not None and old_body == body:
            if (expiry - _utc(now)).total_seconds() >= ttl / 2:
                return FeatureWrite(False, "unchanged")
            reason = "renewal"
        else:
            reason = "changed"
    write_atomic(path, nfd.render(pub, _utc(now + ttl)).encode(), 0o644)
    return FeatureWrite(True, reason)


def _describe_change(old: Optional[nfd.Publication], new: nfd.Publication) -> Optional[str]:
    if old is None:
        labels = ", ".join(f"{k}={v}" for k, v in new.labels) or "none"
        return f"labels: {labels}"
    before, after = dict(old.labels + old.features), dict(new.labels + new.features)
    if before == after:
        return None
    parts = [f"-{k}" for k in sorted(before.keys() - after.keys())]
    parts += [f"+{k}={after[k]}" for k in sorted(after.keys() - before.keys())]
    parts += [
        f"{k}: {before[k]} -> {after[k]}"
        for k in sorted(before.keys() & after.keys())
        if before[k] != after[k]
    ]
    return "changed: " + ", ".join(parts)


def _verdict_line(report: Report) -> str:
    parts = []
    for v in report.verdicts:
        text = f"{v.guest.label} {v.ready.value}"
        if v.blocking:
            text += f" ({', '.join(v.blocking)})"
        parts.append(text)
    return "; ".join(parts)


class Service:
    """One node's refresh loop. `cycle()` is one probe and its writes; `run()` loops."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Clock = time.time,
        log: Callable[[str], None] = lambda line: print(
            f"nfd-snp: {line}", file=sys.stderr, flush=True
        ),
        reload: Optional[Callable[[], Config]] = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.log = log
        self.reload = reload
        self.published: Optional[nfd.Publication] = None
        self.verdicts: Optional[str] = None
        self.last_error: Optional[str] = None
        self.wake = threading.Event()
        self.stopping = False
        self.reload_requested = False

    def cycle(self) -> Optional[FeatureWrite]:
        """Probe and write what changed. Errors are logged once, not per cycle."""
        now = self.clock()
        try:
            report = probe_report(self.config)
            pub = nfd.publication(report)
            result = write_features(self.config.output, pub, now, self.config.ttl)
            data = facts_cache.encode(report, self.config.ttl)
            if facts_cache.write_if_changed(self.config.facts_cache, data):
                self.log(f"facts cache updated: {self.config.facts_cache}")
            if self.config.metrics_textfile:
                from nfd_snp import metrics

                metrics.write_textfile(self.config.metrics_textfile, report, now)
        except NfdSnpError as exc:
            if str(exc) != self.last_error:
                self.log(f"error: {exc}")
                self.last_error = str(exc)
            return None
        if self.last_error is not None:
            self.log("recovered")
            self.last_error = None
        verdicts = _verdict_line(report)
        if verdicts != self.verdicts:
            self.log(f"readiness: {verdicts}")
            self.verdicts = verdicts
        change = _describe_change(self.published, pub)
        if change:
            self.log(change)
        self.published = pub
        return result

    # -- the loop --------------------------------------------------------------------

    def _on_stop(self, signum, _frame) -> None:
        self.stopping = True
        self.wake.set()

    def _on_hup(self, _signum, _frame) -> None:
        self.reload_requested = True
        self.wake.set()

    def _reload(self) -> None:
        self.reload_requested = False
        if self.reload is None:
            return
        try:
            config = self.reload()
        except NfdSnpError as exc:
            self.log(f"reload failed, keeping the running configuration: {exc}")
            return
        if config != self.config:
            self.log(f"configuration reloaded: every {config.interval:g} s -> {config.output}")
        self.config = config

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)
        remove_stale_temps(os.path.dirname(self.config.output) or ".")
        self.log(
            f"probing {self.config.host_root} every {self.config.interval:g} s; labels in "
            f"{self.config.output} (ttl {self.config.ttl:g} s)"
        )
        while not self.stopping:
            if self.reload_requested:
                self._reload()
            self.cycle()
            self.wake.wait(self.config.interval)
            self.wake.clear()
        self.log("stopped")
        return 0


def write_once(config: Config, output: str) -> tuple:
    """`nfd-snp features`: one probe; write `output` (or return the text for '-')."""
    report = probe_report(config)
    pub = nfd.publication(report)
    now = time.time()
    if output == "-":
        return None, nfd.render(pub, _utc(now + config.ttl))
    return write_features(output, pub, now, config.ttl), None
