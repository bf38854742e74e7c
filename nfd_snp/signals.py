"""Signals of the node service, as flags: SIGTERM/SIGINT stop it, SIGHUP asks for a reload.

Handlers only set a flag; the service loop acts on the flags between cycles, so no work
(reloading, logging, locking) ever runs inside a handler, a handler never re-enters the
loop, and a storm of signals cannot recurse. The loop sleeps in `select()` on a pipe that
`signal.set_wakeup_fd` writes to on every signal, so a signal ends the sleep at once.

A cycle, though, may wait in the kernel (a libvirt daemon that does not answer, a device
that is slow), and Python retries an interrupted system call after the handler returns
(PEP 475): a flag alone left SIGTERM unanswered until SIGKILL. So inside `stoppable()` - the
cycle and a reload - a stop signal also arms a timer (SIGALRM, STOP_GRACE seconds): a cycle
that ends by then ends as usual (they take milliseconds), one that is still waiting is
unwound where it is by `Stopped`, raised from the timer's handler. Every write in a cycle
goes to a temporary file renamed into place, which the writer removes on the way out.

`install()` comes first in `nfd-snp run`, before the configuration is read: from then on a
SIGHUP (`systemctl reload`) is a reload request, never death by the default action.
Standard library only, and cheap to import: it runs before the rest of the service loads.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal


# How long a cycle may go on after SIGTERM before it is cut short: well within the second
# the service promises, and long enough for any cycle that is not stuck.
STOP_GRACE = 0.5


class Stopped(BaseException):
    """A stop signal inside `SignalFlags.stoppable()`: not an Exception, so nothing that
    handles errors swallows it."""


class SignalFlags:
    """What the signals asked for since the loop last looked."""

    def __init__(self) -> None:
        self.stop = False
        self.reload = False
        self._stoppable = False
        self._read_fd = -1
        self._write_fd = -1

    @classmethod
    def install(cls) -> "SignalFlags":
        """Install the handlers (main thread only) and the wake-up pipe."""
        flags = cls()
        flags._read_fd, flags._write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.signal(signal.SIGHUP, flags._on_reload)
        signal.signal(signal.SIGTERM, flags._on_stop)
        signal.signal(signal.SIGINT, flags._on_stop)
        signal.signal(signal.SIGALRM, flags._on_grace_over)
        # A full pipe means the loop is already due to wake: dropping more bytes is fine.
        signal.set_wakeup_fd(flags._write_fd, warn_on_full_buffer=False)
        return flags

    def _on_stop(self, _signum, _frame) -> None:
        self.stop = True
        if self._stoppable and not signal.getitimer(signal.ITIMER_REAL)[0]:
            signal.setitimer(signal.ITIMER_REAL, STOP_GRACE)

    def _on_grace_over(self, _signum, _frame) -> None:
        if self._stoppable:
            self._stoppable = False  # once: the unwinding itself is not interrupted again
            raise Stopped()

    @contextlib.contextmanager
    def stoppable(self):
        """A section a stop signal ends within STOP_GRACE seconds (raising Stopped if it
        has not ended by then), not whenever it is done."""
        if self.stop:
            raise Stopped()
        self._stoppable = True
        try:
            yield
        finally:
            self._stoppable = False
            signal.setitimer(signal.ITIMER_REAL, 0)

    def _on_reload(self, _signum, _frame) -> None:
        self.reload = True

    def take_reload(self) -> bool:
        """Whether a reload was asked for since the last call."""
        asked, self.reload = self.reload, False
        return asked

    def wait(self, timeout: float) -> None:
        """Sleep up to `timeout` seconds; return early when a signal arrives."""
        self._drain()  # wake-ups of signals the flags already show
        if not (self.stop or self.reload):
            select.select([self._read_fd], [], [], timeout)
            self._drain()

    def _drain(self) -> None:
        try:
            while os.read(self._read_fd, 512):
                pass
        except BlockingIOError:
            pass
