"""Running SEV and SEV-SNP guests: QEMU processes with sev-guest / sev-snp-guest objects.

A cross-check of misc.current (a guest counted by neither is a leak in one of them). Only
QEMU command lines are kept in a capture; other processes' arguments stay private.

A command line is all this needs: nothing else of a QEMU process is read (its stat and
status are read only for the libvirt daemons, by sources/hook_loaded.py).
"""

from __future__ import annotations

from typing import Optional

from nfd_snp import paths
from nfd_snp.host import Host
from nfd_snp.model import GuestFacts
from nfd_snp.reasons import Reason
from nfd_snp.sources import unreadable_from

CMDLINE_LIMIT = 1024 * 1024


def is_qemu(cmdline: bytes) -> bool:
    argv0 = cmdline.split(b"\0", 1)[0]
    return b"qemu" in argv0.rsplit(b"/", 1)[-1]


def guest_kind(cmdline: bytes) -> Optional[str]:
    """ "sev-snp", "sev" (SEV or SEV-ES) or None for a process's NUL-separated argv."""
    if not is_qemu(cmdline):
        return None
    # Both the QemuOpts form (-object sev-snp-guest,id=..) and the JSON form
    # (-object {"qom-type":"sev-snp-guest",..}) that libvirt uses spell the type this way.
    if b"sev-snp-guest" in cmdline:
        return "sev-snp"
    if b"sev-guest" in cmdline:
        return "sev"
    return None


def read(host: Host) -> GuestFacts:
    try:
        names = host.listdir(paths.PROC)
    except OSError as exc:
        failure = unreadable_from(exc, "/" + paths.PROC, missing=Reason.HOST_ROOT_INCOMPLETE)
        return GuestFacts((), (), failure)
    sev, snp = [], []
    for name in names:
        if not (name.isascii() and name.isdigit()):
            continue
        try:
            cmdline = host.read(
                f"{paths.PROC}/{name}/cmdline", CMDLINE_LIMIT, truncate=True, keep=is_qemu
            )
        except OSError:
            continue  # the process exited meanwhile, or is hidden from us
        kind = guest_kind(cmdline)
        if kind == "sev-snp":
            snp.append(int(name))
        elif kind == "sev":
            sev.append(int(name))
    return GuestFacts(tuple(sev), tuple(snp))
