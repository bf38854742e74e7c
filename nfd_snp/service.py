"""The node service (`nfd-snp run`) and the one-shot feature writer (`nfd-snp features`).

Each cycle probes once and derives every output from that one report: the NFD feature file
(rewritten only when labels/features change or the expiry needs renewal), the hooks' facts
cache (only when it changes) and, optionally, a Prometheus textfile. A change is logged in
one line, at a journald priority (`nfd_snp.log`): errors at err, a guest type that stops
being ready at warning, readiness changes at notice, label changes at info; an unchanged
cycle logs nothing but its debug line (-v).

Stale-label bound: while the service runs, the expiry stays between ttl/2 and ttl ahead
(it is renewed once less than half is left, and rewritten at once when it is further ahead
than ttl plus a minute of clock skew: a clock stepped back, a hand-edited file). When the
service dies, its labels therefore disappear at most `ttl` later, plus one nfd-worker rescan
(60 s by default).

Its outputs are checked before anything is written (`nfd_snp.outputs`: regular files or
absent, distinct, names the kernel takes), and each is locked (`.NAME.lock` beside it) for the
life of the service, so a second `run` sharing any one of them stops at start. SIGTERM ends
the service within a second whatever it is doing (`nfd_snp.signals`).
"""

from __future__ import annotations

import datetime
import fcntl
import os
import socket
import stat
import time
from dataclasses import dataclass
from typing import Callable, Optional

from nfd_snp import facts_cache, nfd, outputs, probe
from nfd_snp.atomic import make_directories, remove_stale_temps, write_atomic
from nfd_snp.checks import Readiness, Report
from nfd_snp.config import Config
from nfd_snp.errors import AlreadyRunningError, InputError, NfdSnpError, WriteError, printable
from nfd_snp.log import DEBUG, ERR, INFO, NOTICE, WARNING, emit
from nfd_snp.signals import SignalFlags, Stopped

# How far ahead of ttl a written expiry may lie before it is rewritten: the facts cache's
# allowance for clock skew.
EXPIRY_SKEW = facts_cache.CLOCK_SKEW

Clock = Callable[[], float]


def _utc(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)


@dataclass(frozen=True)
class FeatureWrite:
    written: bool
    reason: str  # "changed", "renewal", "first" or "unchanged"
    expiry: datetime.datetime  # when the labels in the file expire


def write_features(path: str, pub: nfd.Publication, now: float, ttl: float) -> FeatureWrite:
    """Write the feature file unless it already says the same with enough time left."""
    body = nfd.render_body(pub)
    existing = _read_existing(path)
    reason = "first"
    if existing is not None:
        expiry, old_body = nfd.parse_written(existing)
        if expiry is not None and old_body == body:
            left = (expiry - _utc(now)).total_seconds()
            if ttl / 2 <= left <= ttl + EXPIRY_SKEW:
                return FeatureWrite(False, "unchanged", expiry)
            reason = "renewal" if left < ttl / 2 else "expiry too far ahead"
        else:
            reason = "changed"
    expiry = _utc(now + ttl)
    write_atomic(path, nfd.render(pub, expiry).encode(), 0o644)
    return FeatureWrite(True, reason, expiry)


def _read_existing(path: str) -> Optional[str]:
    """The feature file as it is (None: absent). Non-blocking and regular files only: a FIFO
    there blocked `features` for ever."""
    from nfd_snp.confined import kind_of, read_limited

    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise WriteError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise WriteError(f"refusing to write {path}: it is {kind_of(st.st_mode)}")
        data = read_limited(fd, nfd.NFD_MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise WriteError(f"cannot read {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    return data.decode("utf-8", errors="replace")


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


def _lost(old: Optional[Report], new: Report) -> bool:
    """Whether a guest type that was ready is no longer (worth a warning in the journal)."""
    if old is None:
        return False
    was = {v.guest for v in old.verdicts if v.ready is Readiness.YES}
    return any(v.ready is not Readiness.YES for v in new.verdicts if v.guest in was)


OFF_HINTS = {
    "output": "--output none writes no feature file",
    "metrics-textfile": "leave metrics-textfile empty for none",
}


def check_outputs(config: Config) -> None:
    """InputError (exit 2, nothing written) for outputs nfd-snp may not write."""
    if config.output == "-":
        raise InputError("output: '-' prints the feature file for `features`; name a file")
    outputs.check(config.outputs(), OFF_HINTS)


def take_lock(output: str) -> int:
    """Hold an exclusive flock on the lock of `output` for the life of the process (the fd).

    Two services writing one file with different views of the node would flap the labels
    (or the hook's facts); the second one stops here, naming the file and the first's pid.
    The lock is opened non-blocking and must be a regular file: a FIFO planted there can
    neither block nor be mistaken for a lock.
    """
    from nfd_snp.confined import kind_of

    path = outputs.lock_path(output)
    make_directories(os.path.dirname(path) or ".")
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        raise WriteError(f"cannot open the lock {path}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise WriteError(f"the lock {path} is {kind_of(st.st_mode)}, not a regular file")
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise AlreadyRunningError(
            f"another nfd-snp run (pid {printable(holder)}) already writes {output}; "
            f"it holds {path}"
        ) from None
    except BaseException as exc:
        os.close(fd)
        if isinstance(exc, OSError):
            raise WriteError(f"cannot lock {path}: {exc.strerror or exc}") from None
        raise
    return fd


class Locks:
    """The locks of every output the service writes, taken all or none."""

    def __init__(self) -> None:
        self.held: dict = {}  # output path -> lock fd

    def hold(self, paths) -> None:
        """Hold exactly the locks of `paths`: take the new ones (all or none, so a refused
        reload keeps the old set), then let go of those no longer written."""
        wanted = sorted(set(paths))
        taken = {}
        try:
            for path in wanted:
                if path not in self.held:
                    taken[path] = take_lock(path)
        except BaseException:
            for fd in taken.values():
                os.close(fd)
            raise
        for path in [p for p in self.held if p not in wanted]:
            os.close(self.held.pop(path))
        self.held.update(taken)

    def release(self) -> None:
        for fd in self.held.values():
            os.close(fd)
        self.held.clear()


def notify_systemd(state: str) -> None:
    """sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET, if systemd set it.

    With Type=notify, systemd holds `systemctl reload` (SIGHUP) back until READY=1, which
    is sent once the signal handlers are in place.
    """
    address = os.environ.get("NOTIFY_SOCKET")
    if not address or address[0] not in "/@":
        return
    if address[0] == "@":
        address = "\0" + address[1:]  # an abstract socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError:
        pass  # outside systemd's watch nothing waits for it


class Service:
    """One node's refresh loop. `cycle()` is one probe and its writes; `run()` loops."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Clock = time.time,
        log: Callable[[int, str], None] = emit,
        reload: Optional[Callable[[], Config]] = None,
        signals: Optional[SignalFlags] = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self._log = log
        self.reload = reload
        self.signals = signals
        self.published: Optional[nfd.Publication] = None
        self.report: Optional[Report] = None
        self.verdicts: Optional[str] = None
        self.last_error: Optional[str] = None
        # What the KubeVirt node hook answers from (nfd_snp.kubevirt.node_hook.NodeView):
        # replaced whole after each probe, never changed, so a call reads one probe's facts.
        self.node_view = None
        self.node_hook = None
        self.locks = Locks()

    def log(self, line: str, priority: int = INFO) -> None:
        """One line at a syslog priority; host strings in it (model names, paths, errors)
        are escaped."""
        self._log(priority, printable(line))

    def cycle(self) -> Optional[FeatureWrite]:
        """Probe and write what changed. Errors are logged once, not per cycle."""
        now = self.clock()
        started = time.perf_counter()
        try:
            report = probe.probe_report(self.config).report
            pub = nfd.publication(report)
            result = None
            if self.config.output is not None:
                result = write_features(self.config.output, pub, now, self.config.ttl)
            data = facts_cache.encode(report, self.config.ttl)
            if facts_cache.write_if_changed(self.config.facts_cache, data):
                self.log(f"facts cache updated: {self.config.facts_cache}")
            if self.config.metrics_textfile:
                from nfd_snp import metrics

                expiry = result.expiry.timestamp() if result else None
                metrics.write_textfile(self.config.metrics_textfile, report, now, expiry)
        except NfdSnpError as exc:
            if str(exc) != self.last_error:
                self.log(str(exc), ERR)
                self.last_error = str(exc)
            return None
        if self.last_error is not None:
            self.log("recovered", NOTICE)
            self.last_error = None
        verdicts = _verdict_line(report)
        if verdicts != self.verdicts:
            self.log(f"readiness: {verdicts}", WARNING if _lost(self.report, report) else NOTICE)
            self.verdicts = verdicts
        change = _describe_change(self.published, pub)
        if change:
            self.log(change)
        self.published, self.report = pub, report
        if self.config.node_hook_socket:
            from nfd_snp.kubevirt.node_hook import NodeView

            self.node_view = NodeView.from_report(report, self.config.ttl, now)
        outcome = "no feature file"
        if result is not None:
            outcome = f"feature file {result.reason}, labels expire {nfd.rfc3339(result.expiry)}"
        self.log(f"cycle: {outcome}, {1000 * (time.perf_counter() - started):.1f} ms", DEBUG)
        return result

    # -- the loop --------------------------------------------------------------------

    def _warn_untrusted_facts(self) -> None:
        why = facts_cache.directory_untrusted_because(self.config.facts_cache)
        if why:
            self.log(
                f"the libvirt hook will not trust {self.config.facts_cache} ({why}); "
                "SEV-SNP domains will be refused",
                WARNING,
            )

    def _sweep(self) -> None:
        """Remove temporary files a killed writer left in every directory it writes."""
        for _where, path in self.config.outputs():
            remove_stale_temps(os.path.dirname(path) or ".")

    def _reload(self) -> None:
        """Re-read the settings; a file, output or lock that is refused keeps the running
        configuration (and its locks), and the journal says why."""
        if self.reload is None:
            return
        try:
            config = self.reload()
            check_outputs(config)
            self.locks.hold(path for _where, path in config.outputs())
        except NfdSnpError as exc:
            self.log(f"reload failed, keeping the running configuration: {exc}", ERR)
            return
        if config.node_hook_socket != self.config.node_hook_socket:
            self.log(
                f"node-hook-socket stays {self.config.node_hook_socket or 'off'} until the "
                "service restarts",
                NOTICE,
            )
            config = config._replace(node_hook_socket=self.config.node_hook_socket)
        if config != self.config:
            self.log(
                f"configuration reloaded: every {config.interval:g} s -> {_labels_in(config)}",
                NOTICE,
            )
            self.config = config
            self._warn_untrusted_facts()

    def _start_node_hook(self) -> None:
        """Serve KubeVirt's node hook once the first probe's facts are there to answer from."""
        from nfd_snp.kubevirt.node_hook_server import NodeHookServer

        server = NodeHookServer(
            self.config.node_hook_socket, lambda: self.node_view, self._log, self.clock
        )
        server.start()
        self.node_hook = server
        self.log(f"answering KubeVirt's node hook on {server.path}", NOTICE)

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT: check and lock the outputs, sweep, tell systemd it is
        ready, loop. A stop signal ends a cycle where it is (nothing writes in place, and
        the temporary files are removed), so the service stops within a second."""
        signals = self.signals or SignalFlags.install()
        check_outputs(self.config)
        if self.config.node_hook_socket:
            from nfd_snp.kubevirt.node_hook_server import preflight

            preflight(self.config.node_hook_socket)
        self._warn_untrusted_facts()
        self.locks.hold(path for _where, path in self.config.outputs())
        try:
            self._sweep()
            self.log(
                f"probing {self.config.host_root} every {self.config.interval:g} s; labels in "
                f"{_labels_in(self.config)} (ttl {self.config.ttl:g} s)"
            )
            notify_systemd("READY=1")
            try:
                while not signals.stop:
                    with signals.stoppable():
                        if signals.take_reload():
                            self._reload()
                        self.cycle()
                    if self.config.node_hook_socket and self.node_hook is None:
                        self._start_node_hook()
                    signals.wait(self.config.interval)
            except Stopped:
                pass
            notify_systemd("STOPPING=1")
        finally:
            if self.node_hook is not None:
                self.node_hook.stop()
            self.locks.release()
        self.log("stopped")
        return 0


def _labels_in(config: Config) -> str:
    return config.output if config.output is not None else "no feature file (output none)"


def write_once(config: Config, output: Optional[str]) -> tuple:
    """`nfd-snp features`: one probe; write `output` (or return the text for '-')."""
    if output is None:
        raise InputError("--output none: `features` writes nothing else; '-' prints the file")
    if output != "-":
        outputs.check([("output", output)], OFF_HINTS, locks=False)
    report = probe.probe_report(config).report
    pub = nfd.publication(report)
    now = time.time()
    if output == "-":
        return None, nfd.render(pub, _utc(now + config.ttl))
    return write_features(output, pub, now, config.ttl), None
