"""`nfd-snp capture`: save every input one probe read into a replayable snapshot.

The snapshot is the format `--host-root` reads (DESIGN.md "Snapshot format"): host files at
their host paths plus nfd-snp-capture.json for CPUID, MSRs, PSP replies, domcaps and file
change times. A replay of it runs the same parsing code and gives the same report.

It is written as root into a directory someone else may own and watch (inotify tells them
the moment OUT is checked), so it is never written by name: a fresh directory beside OUT,
private to us (mode 0700, our owner, checked), is filled through directory descriptors with
O_CREAT|O_EXCL|O_NOFOLLOW, synced, and renamed onto OUT in one step. Nothing planted in OUT
or its parent is ever written through, a failed capture (a full file system) removes what
it made, and OUT appears complete or not at all.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import secrets
import stat
from pathlib import Path

from nfd_snp import __version__, paths, probe
from nfd_snp.atomic import make_directories
from nfd_snp.checks import Report
from nfd_snp.config import Config
from nfd_snp.errors import CaptureError
from nfd_snp.host import NotCaptured, Recording

# What sources/guests.py reads of a process: its command line.
_GUEST_CMDLINE = re.compile(paths.PROC + r"/\d+/cmdline")
TEMP_PREFIX = ".nfd-snp-capture."
FILE_MODE = 0o644
DIRECTORY_MODE = 0o755
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _components(rel: str) -> list:
    parts = rel.split("/")
    if not rel or any(p in ("", ".", "..") for p in parts):
        raise CaptureError(f"refusing to write outside the snapshot: {rel!r}")
    return parts


class _Tree:
    """The snapshot being built: a private directory, written through descriptors only."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def directory(self, parts: list) -> int:
        """A descriptor of the directory `parts` below the tree, created 0755 if missing."""
        fd = os.dup(self.fd)
        try:
            for name in parts:
                try:
                    os.mkdir(name, DIRECTORY_MODE, dir_fd=fd)
                    created = True
                except FileExistsError:
                    created = False
                child = os.open(name, _DIRECTORY, dir_fd=fd)
                os.close(fd)
                fd = child
                if created:
                    os.fchmod(fd, DIRECTORY_MODE)  # mkdir's mode is narrowed by the umask
            return fd
        except BaseException:
            os.close(fd)
            raise

    def write(self, rel: str, data: bytes, *, exclusive: bool = True) -> None:
        """Create `rel` holding `data`; an existing one is an error unless not `exclusive`,
        when it is left as it is."""
        parts = _components(rel)
        directory = self.directory(parts[:-1])
        try:
            try:
                fd = os.open(parts[-1], _NEW_FILE, FILE_MODE, dir_fd=directory)
            except FileExistsError:
                if exclusive:
                    raise
                return
            try:
                os.fchmod(fd, FILE_MODE)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)  # ENOSPC shows here on file systems that allocate late
            finally:
                os.close(fd)
        finally:
            os.close(directory)

    def symlink(self, rel: str, target: str) -> None:
        """Create the link `rel` pointing at `target`, a path below the tree (`` for the
        root itself, as a live root's odd link may resolve): written relative to the link's
        own directory, as sysfs writes its links, so the replay reads what was read."""
        parts = _components(rel)
        aim = _components(target) if target else []
        directory = self.directory(parts[:-1])
        try:
            os.symlink(
                os.path.relpath("/".join(aim) or ".", "/".join(parts[:-1]) or "."),
                parts[-1],
                dir_fd=directory,
            )
        finally:
            os.close(directory)


def _capture_document(recording: Recording) -> dict:
    capture: dict = {
        "nfd_snp_version": __version__,
        "captured_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cpuid": recording.cpuid,
        "msr": recording.msr,
    }
    capture.update(recording.psp)
    capture.update(recording.kvm_attrs)
    if recording.domcaps is not NotCaptured:
        capture["domcaps"] = recording.domcaps
    if recording.stats:
        capture["stat"] = recording.stats
    if recording.unreadable:
        capture["unreadable"] = recording.unreadable
    if recording.hook_imports:
        capture["hook_import"] = recording.hook_imports
    return capture


def fill(tree: _Tree, recording: Recording) -> None:
    """Write what a probe recorded into the (empty) tree."""
    for rel in sorted(recording.dirs):
        os.close(tree.directory(_components(rel)))
    for rel, is_dir in sorted(recording.present.items()):
        if is_dir:
            os.close(tree.directory(_components(rel)))
    for rel, data in sorted(recording.files.items()):
        tree.write(rel, data)
    for rel, is_dir in sorted(recording.present.items()):
        if not is_dir:  # a placeholder for what is not a plain file (/dev/kvm)
            tree.write(rel, b"", exclusive=False)
    for rel, target in sorted(recording.links.items()):
        # sysfs links (a device's `driver`, `iommu_group`), rewritten relative to where they
        # sit in the snapshot, which keeps the device directory at the path it was read by
        tree.symlink(rel, target)
    for rel, names in sorted(recording.entries.items()):
        for name in names:  # a listing whose names are the fact (an IOMMU group's devices)
            if f"{rel}/{name}" not in recording.links:
                tree.write(f"{rel}/{name}", b"", exclusive=False)
    document = json.dumps(_capture_document(recording), indent=2, sort_keys=True) + "\n"
    tree.write(paths.CAPTURE_FILE, document.encode())


def _remove(parent_fd: int, name: str) -> None:
    """Remove the tree `name` (ours; its links are removed, never followed) below the
    directory `parent_fd`."""
    for _root, dirs, files, fd in os.fwalk(name, dir_fd=parent_fd, topdown=False):
        for entry in files:
            os.unlink(entry, dir_fd=fd)
        for entry in dirs:  # a link to a directory is listed here, and not walked
            if stat.S_ISLNK(os.stat(entry, dir_fd=fd, follow_symlinks=False).st_mode):
                os.unlink(entry, dir_fd=fd)
            else:
                os.rmdir(entry, dir_fd=fd)
    os.rmdir(name, dir_fd=parent_fd)


def _private_directory(parent_fd: int) -> tuple:
    """(name, descriptor) of a fresh directory in `parent_fd` that only we can write."""
    name = TEMP_PREFIX + secrets.token_hex(8)
    os.mkdir(name, 0o700, dir_fd=parent_fd)
    fd = os.open(name, _DIRECTORY, dir_fd=parent_fd)
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or stat.S_IMODE(st.st_mode) & 0o077:
        os.close(fd)  # swapped for someone else's between mkdir and open: not ours
        raise CaptureError(f"the temporary directory {name} was replaced while being made")
    return name, fd


def write_snapshot(recording: Recording, out: Path) -> None:
    """Build the snapshot beside `out` and rename it onto `out` (absent or an empty
    directory); on any failure remove what was made and leave `out` as it was."""
    out = Path(os.path.abspath(out))
    make_directories(out.parent)
    parent_fd = os.open(out.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        name, fd = _private_directory(parent_fd)
        try:
            try:
                fill(_Tree(fd), recording)
                os.fchmod(fd, DIRECTORY_MODE)  # readable, like the host files it holds
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(name, out.name, src_dir_fd=parent_fd, dst_dir_fd=parent_fd)
        except BaseException:
            try:
                _remove(parent_fd, name)
            except OSError:
                pass  # what cannot be removed is a dot-directory with our name on it
            raise
        os.fsync(parent_fd)
    finally:
        os.close(parent_fd)


def _check_out(out: Path) -> None:
    """OUT may be absent or an empty directory (not a link to one); nothing else."""
    try:
        st = os.lstat(out)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise CaptureError(f"{out}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        with os.scandir(out) as entries:
            if next(entries, None) is None:
                return
    raise CaptureError(f"{out}: exists and is not an empty directory")


def without_guests(recording: Recording) -> None:
    """Drop the running guests' QEMU command lines (disk paths, networks, device details):
    the replay then shows no running guests."""
    for rel in [r for r in recording.files if _GUEST_CMDLINE.fullmatch(r)]:
        del recording.files[rel]


def capture(out: os.PathLike | str, config: Config, *, guests: bool = True) -> Report:
    """Probe `config.host_root` live and write what was read to `out` (absent, or an empty
    directory, which the snapshot replaces). `guests`: keep the running guests' QEMU
    command lines."""
    out_path = Path(out)
    _check_out(out_path)
    result = probe.probe_report(config, record=True)  # before creating OUT: a bad root leaves none
    assert result.recording is not None
    if not guests:
        without_guests(result.recording)
    try:
        write_snapshot(result.recording, out_path)
    except OSError as exc:
        raise CaptureError(f"{out}: cannot write the snapshot ({exc.strerror or exc})") from None
    return result.report
