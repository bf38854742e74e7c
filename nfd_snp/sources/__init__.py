"""One module per host source; each has `read(host) -> Facts` and does no other I/O.

A source is one module here and its field on `nfd_snp.model.HostFacts`, declared with
`source(NAME, *needs)`: the probe reads every such field in order, passing `read` the facts
of the fields it needs (`msr` the CPUID facts, `psp` the CPU, kernel and KVM facts).

`unreadable_from` turns the errors every byte source raises into typed `Unreadable` data:
ENOENT means absent (the caller says what that implies), EACCES means "run as root",
both are facts, not exceptions.
"""

from __future__ import annotations

import errno

from nfd_snp.errors import NotCaptured
from nfd_snp.model import Unreadable
from nfd_snp.reasons import Reason


def unreadable_from(
    exc: BaseException,
    what: str,
    *,
    missing: Reason,
    denied: Reason = Reason.FILE_DENIED,
    other: Reason = Reason.DEVICE_ERROR,
) -> Unreadable:
    """Classify a read failure of `what` (a path or device) by errno, never by message."""
    if isinstance(exc, NotCaptured):
        return Unreadable(Reason.NOT_IN_SNAPSHOT, f"{what}: not in the snapshot")
    err = getattr(exc, "errno", None)
    text = getattr(exc, "strerror", None) or str(exc)
    if err == errno.ENOENT:
        reason = missing
    elif err in (errno.EACCES, errno.EPERM):
        reason = denied
    elif err in (errno.EFBIG, errno.EINVAL) and other is Reason.FILE_GARBLED:
        reason = Reason.FILE_GARBLED
    else:
        reason = other
    return Unreadable(reason, f"{what}: {text}", errno=err)


def decode_text(data: bytes) -> str:
    """sysfs/procfs text; undecodable bytes become U+FFFD instead of an exception."""
    return data.decode("utf-8", errors="replace")
