"""One error hierarchy for the project, and the exit statuses it maps to.

Only the CLI and hook entry points turn these into a stderr line and an exit code:
`InputError` (bad input the user can fix) exits 2, any other `NfdSnpError` exits 1 (not
ready, refused, could not write). Anything that is not an `NfdSnpError` is a bug: the CLI
reports it as one and exits `EXIT_INTERNAL_ERROR`, never swallowing it into an empty value.

This module is imported by the libvirt hook before anything else: standard library only,
and nothing imported at module level.
"""

EXIT_OK = 0
EXIT_NOT_READY = 1  # not ready, refused, or an action that could not be done
EXIT_INPUT_ERROR = 2  # usage or input error (click uses 2 for usage errors too)
EXIT_INTERNAL_ERROR = 70  # a bug in nfd-snp: EX_SOFTWARE in BSD sysexits.h

# C0 and C1 control characters, DEL, Unicode line/paragraph separators and the bidirectional
# overrides and isolates (Unicode TR #9): what can move a terminal's cursor, start an escape
# sequence, break a line or reorder what a reader sees.
_UNPRINTABLE = "[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]"


def printable(text) -> str:
    """`text` on one line with control characters escaped (`\\n`, `\\x1b`, `\\u202e`).

    Host strings (a CPU model name from a snapshot), domain names and parser messages are
    untrusted: printed raw, they could rewrite the terminal or forge a second log line.
    Idempotent: escaping an escaped text changes nothing.
    """
    import re  # off the import path of the hook, which rarely prints anything

    return re.sub(_UNPRINTABLE, _escape, str(text))


def excerpt(text, limit: int = 80) -> str:
    """`text` escaped as `printable` does and cut to its first `limit` characters, saying how
    long it was: how any value from untrusted input (a manifest's names, a setting's value or
    key) is echoed in a message, which stays one readable line (journald splits lines longer
    than 48 KiB; a 1 MB key helps nobody)."""
    text = str(text)
    if len(text) <= limit:
        return printable(text)
    return printable(text[:limit]) + f"... ({len(text)} characters)"


def _escape(match) -> str:
    return match.group().encode("unicode_escape").decode("ascii")


class NfdSnpError(Exception):
    """Base for every error a user can act on; the message is one printable line."""

    exit_code = EXIT_NOT_READY

    def __str__(self) -> str:
        return printable(super().__str__())


class InputError(NfdSnpError):
    """Input the user gave us is unusable (options, configuration, snapshot, XML)."""

    exit_code = EXIT_INPUT_ERROR


class SnapshotError(InputError):
    """A snapshot directory or its nfd-snp-capture.json is malformed."""


class UnsafeXmlError(InputError):
    """XML that is malformed, too large, or carries a DTD/entities."""


class DomainError(InputError):
    """A domain that asked for SEV-SNP cannot be made a valid SNP guest (the reason says why)."""


class CaptureError(NfdSnpError):
    """A capture could not be written."""


class WriteError(NfdSnpError):
    """An output file or its directory could not be written."""


class AlreadyRunningError(NfdSnpError):
    """Another `nfd-snp run` holds the lock on the same files."""


class ProgrammingError(Exception):
    """A bug in nfd-snp itself (a broken invariant), never caused by input."""


# -- how the byte sources of a host report what they could not read ---------------------------
# Raised by nfd_snp.host (live devices and snapshots alike) and turned into typed
# `Unreadable` data by the sources; never shown to a user as such.


class NotCaptured(Exception):
    """A snapshot does not hold this source at all."""


class PspError(OSError):
    """SEV_ISSUE_CMD (or opening /dev/sev) failed: errno plus the firmware's status code."""

    def __init__(self, err: int, fw_error=None, message: str = "") -> None:
        import os

        super().__init__(err, message or os.strerror(err))
        self.fw_error = fw_error


class LibvirtError(Exception):
    """libvirt's domain capabilities could not be obtained; `reason` (a Reason) says why."""

    def __init__(self, reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
