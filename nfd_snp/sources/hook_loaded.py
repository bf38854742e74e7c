"""Whether libvirt runs nfd-snp's qemu hook: the hook file, the libvirt daemons' start, and
whether the Python the hook names can load nfd_snp.

A libvirt daemon looks for hooks once, when it starts (and on SIGHUP): virHookInitialize
in libvirt's src/util/virhook.c records which drivers have an executable hook, and
virHookCall runs none for a driver it found none for. A virtqemud or libvirtd that started
before the hook file appeared therefore does not run it until it is restarted. The file's
change time (ctime) is compared, not its mtime: rpm and `cp -p` give a new file the mtime of
the build.

The process table is read through `Host.read` and `Host.listdir` like every other file, so
a node, a container's /host and a snapshot are read the same way, below their root: process
names, owners and start times from /proc/<pid>/stat, /proc/<pid>/status and /proc/stat's
btime, parsed here as proc(5) defines them (what psutil's Process.name, uids and create_time
read). Not psutil itself: it opens the files by name again, which in a snapshot would follow
a link planted after `Host.read` had refused it. A capture keeps /proc/stat's btime line and
the stat and status of the daemons only.

The hook's shell front runs one Python, named on its `PYTHON=` line (nfd_snp.hook_script);
if that Python cannot import nfd_snp, every domain that asks for SEV-SNP is refused. The
source runs it as the hook does (`Host.hook_import`, recorded by `capture` and replayed from
the snapshot), on the root's own file system only: a container's /host holds the host's
interpreter but not a way to run it as the host would.
"""

from __future__ import annotations

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
_BTIME = re.compile(rb"^btime \d{1,20}$", re.M)  # seconds: 20 digits outlast any clock
_UID = re.compile(rb"^Uid:\s+(\d+)", re.M)


def btime_line(data: bytes) -> bytes:
    """What a capture keeps of /proc/stat: the boot time, not every CPU's counters."""
    match = _BTIME.search(data)
    return match.group() + b"\n" if match else b""


def names_a_daemon(stat: bytes) -> bool:
    """Whether /proc/<pid>/stat may be a libvirt daemon's: its name field is `(name)`."""
    return any(b"(" + name.encode() + b")" in stat for name in DAEMONS)


def _clock_ticks() -> int:
    """USER_HZ, the unit of /proc/<pid>/stat's starttime (sysconf(_SC_CLK_TCK), 100 on x86)."""
    return os.sysconf("SC_CLK_TCK")


def boot_time(proc_stat: bytes) -> int:
    """/proc/stat's btime: seconds since the epoch at boot. RuntimeError without one."""
    match = _BTIME.search(proc_stat)
    if match is None:
        raise RuntimeError("/proc/stat has no btime line")
    return int(match.group().split()[1])


def parse_process(stat: bytes, status: bytes, booted: int):
    """(name, real uid, start time) of a process from its /proc/<pid>/stat and status.

    proc(5): stat is `pid (comm) state ppid ...`, comm may itself hold spaces and
    parentheses (it ends at the last ')'), and field 22 is the start time in clock ticks
    after boot; status has `Uid:\treal\teffective\tsaved\tfs`. ValueError when they are not
    what procfs writes.
    """
    head, paren, rest = stat.rpartition(b")")
    name = head.partition(b"(")[2]
    fields = rest.split()
    uid = _UID.search(status)
    if not paren or len(fields) < 20 or uid is None:
        raise ValueError("not a /proc/<pid>/stat and status")
    started = booted + int(fields[19]) / _clock_ticks()  # fields[0] is field 3, state
    return name.decode("utf-8", "replace"), int(uid.group(1)), started


def libvirt_daemons(host: Host) -> tuple:
    """Running virtqemud/libvirtd processes owned by root, by pid (a zombie is not running).

    A process may call itself anything; only root can run the daemons that read
    /etc/libvirt/hooks (KubeVirt's non-root virt-launcher pods run theirs as qemu).
    Raises OSError or RuntimeError (no btime line) when the process table is unreadable.
    """
    booted = boot_time(host.read(paths.PROC_STAT, PROC_STAT_LIMIT, redact=btime_line))
    found = []
    for entry in host.listdir(paths.PROC):
        if not (entry.isascii() and entry.isdigit()):
            continue
        rel = f"{paths.PROC}/{entry}"
        try:
            stat = host.read(f"{rel}/stat", PID_STAT_LIMIT, keep=names_a_daemon)
            if not names_a_daemon(stat):
                continue
            status = host.read(f"{rel}/status", PID_STATUS_LIMIT)
            name, uid, started = parse_process(stat, status, booted)
        except (OSError, ValueError):
            continue  # exited meanwhile, or a file that is not what procfs writes
        if stat.rpartition(b")")[2].split()[:1] == [b"Z"]:
            continue  # exited, not yet reaped: it runs nothing
        if name in DAEMONS and uid == 0:
            found.append(LibvirtDaemon(int(entry), name, started))
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
