"""Whether libvirt runs nfd-snp's qemu hook: the hook file, the libvirt daemons' start, and
whether the Python the hook names can load nfd_snp.

A libvirt daemon looks for hooks once, when it starts (and on SIGHUP): virHookInitialize
in libvirt's src/util/virhook.c records which drivers have an executable hook, and
virHookCall runs none for a driver it found none for. A virtqemud or libvirtd that started
before the hook file appeared therefore does not run it until it is restarted. The file's
change time (ctime) is compared, not its mtime: rpm and `cp -p` give a new file the mtime of
the build.

psutil reads the process table from the root's proc directory (`Host.procfs()`, its
PROCFS_PATH), so a node, a container's /host and a snapshot are read the same way: process
names and owners, and start times from /proc/<pid>/stat's starttime and /proc/stat's btime.
Every file psutil reads goes through `Host.read` first, which bounds it, refuses anything
but a regular file (a FIFO in a snapshot would block psutil) and records it for `capture`:
/proc/stat's btime line, and stat and status of the daemons only.

The hook's shell front runs one Python, named on its `PYTHON=` line (nfd_snp.hook_script);
if that Python cannot import nfd_snp, every domain that asks for SEV-SNP is refused. The
source runs it as the hook does (`Host.hook_import`, recorded by `capture` and replayed from
the snapshot), on the root's own file system only: a container's /host holds the host's
interpreter but not a way to run it as the host would.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat as stat_mod

from nfd_snp import hook_script, paths
from nfd_snp.errors import NotCaptured
from nfd_snp.host import Host
from nfd_snp.model import HookFacts, LibvirtDaemon
from nfd_snp.reasons import Reason
from nfd_snp.sources import unreadable_from

# The modular QEMU daemon and the monolithic one (libvirt's "Daemons" documentation).
DAEMONS = ("virtqemud", "libvirtd")
# /proc/stat grows with CPUs and interrupts; /proc/<pid>/stat and status are small.
PROC_STAT_LIMIT = 4 * 1024 * 1024
PID_STAT_LIMIT = 4096
PID_STATUS_LIMIT = 16384
# The hook script is about 3 KiB; its PYTHON= line is near the top.
HOOK_LIMIT = 64 * 1024
_BTIME = re.compile(rb"^btime \d+$", re.M)


def btime_line(data: bytes) -> bytes:
    """What a capture keeps of /proc/stat: the boot time, not every CPU's counters."""
    match = _BTIME.search(data)
    return match.group() + b"\n" if match else b""


def names_a_daemon(stat: bytes) -> bool:
    """Whether /proc/<pid>/stat may be a libvirt daemon's: its name field is `(name)`."""
    return any(b"(" + name.encode() + b")" in stat for name in DAEMONS)


@contextlib.contextmanager
def _psutil_at(procfs: str):
    """psutil reading `procfs`; its module-wide PROCFS_PATH is restored afterwards."""
    import psutil  # ~20 ms: imported only on hosts that have the hook installed

    saved = psutil.PROCFS_PATH
    psutil.PROCFS_PATH = procfs
    try:
        # psutil 5.9 keeps the boot time of the first root it read in a module global;
        # asking for it here reads this root's.
        psutil.boot_time()
        yield psutil
    finally:
        psutil.PROCFS_PATH = saved


def libvirt_daemons(host: Host) -> tuple:
    """Running virtqemud/libvirtd processes owned by root, by pid (a zombie is not running).

    A process may call itself anything; only root can run the daemons that read
    /etc/libvirt/hooks (KubeVirt's non-root virt-launcher pods run theirs as qemu).
    Raises OSError or RuntimeError (no btime line) when the process table is unreadable.
    """
    host.read(paths.PROC_STAT, PROC_STAT_LIMIT, redact=btime_line)
    found = []
    with _psutil_at(host.procfs()) as psutil:
        try:
            pids = psutil.pids()
        except IndexError:  # psutil reads the lowest pid of the list: a root with none
            pids = []
        for pid in pids:
            rel = f"{paths.PROC}/{pid}"
            try:
                stat = host.read(f"{rel}/stat", PID_STAT_LIMIT, keep=names_a_daemon)
                if not names_a_daemon(stat):
                    continue
                host.read(f"{rel}/status", PID_STATUS_LIMIT)
                process = psutil.Process(pid)
                name = process.name()
                if process.status() == psutil.STATUS_ZOMBIE:
                    continue  # exited, not yet reaped: it runs nothing
                if name in DAEMONS and process.uids().real == 0:
                    found.append(LibvirtDaemon(pid, name, process.create_time()))
            except (OSError, psutil.Error, ValueError, IndexError):
                continue  # exited meanwhile, or a file that is not what procfs writes
    return tuple(found)


def interpreter_loads(host: Host) -> tuple:
    """(the hook's Python, whether it imports nfd_snp, why not or why that is unknown)."""
    try:
        text = host.read(paths.LIBVIRT_QEMU_HOOK, HOOK_LIMIT, truncate=True)
    except (OSError, NotCaptured) as exc:
        return None, None, f"the hook could not be read ({getattr(exc, 'strerror', None) or exc})"
    python = hook_script.interpreter(text.decode("utf-8", "replace"))
    if python is None:
        return None, None, "the hook names no Python (not nfd-snp's hook script)"
    if not host.snapshot and os.path.realpath(host.root) != "/":
        return python, None, f"not run under host root {host.root}, only on the host itself"
    try:
        error = host.hook_import(python)
    except NotCaptured:
        return python, None, "not in the snapshot"
    return python, error is None, error


def read(host: Host) -> HookFacts:
    hook = "/" + paths.LIBVIRT_QEMU_HOOK
    try:
        st = host.stat(paths.LIBVIRT_QEMU_HOOK)
    except (OSError, NotCaptured) as exc:
        if getattr(exc, "errno", None) == errno.ENOENT:
            return HookFacts(installed=False)
        return HookFacts(None, unreadable=unreadable_from(exc, hook, missing=Reason.FILE_GARBLED))
    # libvirt runs a regular file with any execute bit (virFileIsExecutable).
    executable = stat_mod.S_ISREG(st.mode) and bool(st.mode & 0o111)
    python, loads, why = interpreter_loads(host) if executable else (None, None, None)
    loaded = {"interpreter": python, "loads": loads, "load_error": why}
    try:
        daemons = libvirt_daemons(host)
    except (OSError, RuntimeError) as exc:
        unreadable = Reason.PROCESSES_UNREADABLE
        failure = unreadable_from(exc, "/" + paths.PROC_STAT, missing=unreadable, other=unreadable)
        return HookFacts(True, st.ctime, executable, daemons_unreadable=failure, **loaded)
    return HookFacts(True, st.ctime, executable, daemons, **loaded)
