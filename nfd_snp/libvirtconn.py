"""Ask the host's libvirt for its domain capabilities (the only libvirt call the probe makes).

libvirt refuses virConnectGetDomainCapabilities on a read-only connection ("read only
access prevents virConnectGetDomainCapabilities", ACL connect:write), so a read-only
connection is tried first and a read-write one (root only) second; only a query is made.
A daemon that hangs cannot hang the probe: the call runs in a thread bounded by a timeout.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Optional

from nfd_snp import paths
from nfd_snp.errors import LibvirtError
from nfd_snp.reasons import Reason


# The query thread of a daemon that did not answer; while it still waits, the service does
# not start another one (a hung libvirt must not pile up threads, one per cycle).
_waiting: Optional[threading.Thread] = None


def _first_socket(root: Path, candidates) -> Optional[str]:
    for rel in candidates:
        if os.path.exists(root / rel):  # a live-only lookup, never part of a capture
            return str(root / rel)
    return None


def domain_capabilities(root: Path, timeout: float) -> Optional[str]:
    """The domain capabilities XML of the libvirt daemon under host root `root`, or None
    when that host runs no libvirt daemon."""
    sockets = [
        (sock, readonly)
        for sock, readonly in (
            (_first_socket(root, paths.LIBVIRT_SOCKETS_RO), True),
            (_first_socket(root, paths.LIBVIRT_SOCKETS_RW), False),
        )
        if sock
    ]
    if not sockets:
        return None
    try:
        import libvirt
    except ImportError:
        raise LibvirtError(
            Reason.LIBVIRT_PYTHON_MISSING, "libvirt-python is not installed"
        ) from None

    global _waiting
    if _waiting is not None and _waiting.is_alive():
        raise LibvirtError(Reason.LIBVIRT_TIMEOUT, "an earlier query is still waiting for libvirt")
    result: dict = {}

    def worker() -> None:
        try:
            result["xml"] = _query(libvirt, sockets)
        except Exception as exc:  # handed to the caller's thread below
            result["error"] = exc

    thread = threading.Thread(target=worker, name="nfd-snp-domcaps", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        _waiting = thread
        raise LibvirtError(Reason.LIBVIRT_TIMEOUT, f"libvirt gave no answer within {timeout:g} s")
    if "error" in result:
        raise result["error"]
    return result["xml"]


def _query(libvirt, sockets) -> str:
    # Without a handler libvirt prints every error to stderr itself.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    last = "no socket answered"
    for sock, readonly in sockets:
        uri = f"qemu:///system?socket={sock}"
        try:
            conn = libvirt.openReadOnly(uri) if readonly else libvirt.open(uri)
        except libvirt.libvirtError as exc:
            last = _message(exc)
            continue
        try:
            # virttype kvm first: that is what guests use; then libvirt's default (TCG on a
            # host without usable KVM still reports the host's SEV block).
            for virttype in ("kvm", None):
                try:
                    return conn.getDomainCapabilities(None, None, None, virttype, 0)
                except libvirt.libvirtError as exc:
                    last = _message(exc)
                    if exc.get_error_code() == libvirt.VIR_ERR_OPERATION_DENIED:
                        break  # read-only connection: try the read-write socket
        finally:
            conn.close()
    raise LibvirtError(Reason.LIBVIRT_QUERY_FAILED, last)


def _message(exc) -> str:
    return " ".join(str(exc.get_error_message() or exc).split())
