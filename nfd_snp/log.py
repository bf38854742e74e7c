"""Diagnostics on stderr, one line each: journald priorities under systemd, plain on a terminal.

Under systemd, stderr is a stream into the journal, and journald files a line that starts
with `<N>` at syslog priority N (sd-daemon(3), SD_ERR "<3>" ... SD_DEBUG "<7>"), so
`journalctl -p err -u nfd-snp` shows the errors. systemd says that stderr is the journal by
setting $JOURNAL_STREAM to "<device>:<inode>" of that stream (systemd.exec(5),
"JOURNAL_STREAM"): the prefixes are written only while stderr still is that stream, never
into a file or pipe stderr was redirected to. Elsewhere a line reads `nfd-snp: warning: ...`.

Verbosity is the same for every command: errors and warnings, and what a command did, by
default; `-q` errors only; `-v` also debug lines (what each source read, timings). The
standard library's logging is not used: importing it costs more than a probe.
"""

from __future__ import annotations

import os
import sys
from typing import Optional, TextIO

from nfd_snp.errors import printable

# syslog priorities (sd-daemon(3), syslog(3))
CRIT = 2  # a bug in nfd-snp
ERR = 3
WARNING = 4
NOTICE = 5
INFO = 6
DEBUG = 7

# The word a line carries after the program name, on a terminal and in the journal alike.
WORDS = {CRIT: "internal error: ", ERR: "error: ", WARNING: "warning: ", DEBUG: "debug: "}

_threshold = INFO
_stream: Optional[TextIO] = None  # the stream whose journal status is cached
_journal = False


def configure(verbose: int = 0, quiet: bool = False) -> None:
    """-v shows debug lines, -q errors only (-q wins: a script asked for silence)."""
    global _threshold
    _threshold = ERR if quiet else DEBUG if verbose else INFO


def enabled(priority: int) -> bool:
    return priority <= _threshold


def stream_is_journal(stream: TextIO, env: Optional[dict] = None) -> bool:
    """Whether `stream` is the journal stream systemd connected ($JOURNAL_STREAM)."""
    expected = (os.environ if env is None else env).get("JOURNAL_STREAM", "")
    if not expected:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):  # no file descriptor (a test's buffer)
        return False
    return expected == f"{st.st_dev}:{st.st_ino}"


def format_line(priority: int, message: str, journal: bool) -> str:
    text = WORDS.get(priority, "") + printable(message)
    return f"<{priority}>{text}\n" if journal else f"nfd-snp: {text}\n"


def emit(priority: int, message: str) -> None:
    """Write one line at `priority` if the verbosity lets it through."""
    global _stream, _journal
    if priority > _threshold:
        return
    stream = sys.stderr
    if stream is None:
        return
    if stream is not _stream:
        _stream, _journal = stream, stream_is_journal(stream)
    try:
        stream.write(format_line(priority, message, _journal))
        stream.flush()
    except (BrokenPipeError, ValueError):  # stderr closed under us: nothing to tell
        pass


def critical(message: str) -> None:
    emit(CRIT, message)


def error(message: str) -> None:
    emit(ERR, message)


def warning(message: str) -> None:
    emit(WARNING, message)


def info(message: str) -> None:
    emit(INFO, message)


def debug(message: str) -> None:
    emit(DEBUG, message)
