"""One error hierarchy for the project.

Only the CLI and hook entry points turn these into a stderr line and an exit code:
`InputError` (bad input the user can fix) exits 2, `NotReadyError` exits 1. Anything that
is not an `NfdSnpError` is a bug and is reported as one, never swallowed into an empty value.
"""


class NfdSnpError(Exception):
    """Base for every error a user can act on; the message is one line."""

    exit_code = 1


class InputError(NfdSnpError):
    """Input the user gave us is unusable (options, snapshot, XML)."""

    exit_code = 2


class SnapshotError(InputError):
    """A snapshot directory or its nfd-snp-capture.json is malformed."""


class UnsafeXmlError(InputError):
    """XML that is malformed, too large, or carries a DTD/entities."""


class DomainError(InputError):
    """A domain that asked for SEV-SNP cannot be made a valid SNP guest (the reason says why)."""


class CaptureError(NfdSnpError):
    """A capture could not be written."""


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
