"""Write a file so readers never see a partial one: dot-file, fsync, rename, fsync dir.

NFD reads feature files without locking and ignores names starting with '.', so the
temporary file is invisible to it; a crash before the rename leaves the old file intact.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from nfd_snp.errors import NfdSnpError

TEMP_PREFIX = ".nfd-snp-tmp."


class WriteError(NfdSnpError):
    """An output file or its directory could not be written."""


def write_atomic(path: os.PathLike | str, data: bytes, mode: int = 0o644) -> None:
    target = Path(path)
    directory = target.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteError(f"cannot create directory {directory}: {exc.strerror or exc}") from None
    temp = directory / f"{TEMP_PREFIX}{target.name}.{os.getpid()}"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        try:
            os.fchmod(fd, mode)  # the umask must not narrow what NFD and hooks can read
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, target)
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise WriteError(f"cannot write {target}: {exc.strerror or exc}") from None


def remove_stale_temps(directory: os.PathLike | str) -> None:
    """Delete temporary files a killed writer left behind (they are invisible to NFD)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if name.startswith(TEMP_PREFIX):
            try:
                os.unlink(os.path.join(directory, name))
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise WriteError(f"cannot remove {name}: {exc.strerror}") from None
