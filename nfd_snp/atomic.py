"""Write a file so readers never see a partial one: dot-file, fsync, rename, fsync dir.

NFD reads feature files without locking and ignores names starting with '.', so the
temporary file is invisible to it; a crash before the rename leaves the old file intact.
The temporary name is unpredictable and created with O_EXCL|O_NOFOLLOW (tempfile.mkstemp),
so a file or symlink planted in the directory is never written through nor renamed into
place. Directories the writer creates are 0755 whatever the umask: NFD and the hook, which
run as other users or with other umasks, must be able to read what is written.

Only a regular file is ever replaced: a symbolic link, a device, a FIFO or a directory at
the target is refused (`nfd_snp.outputs` checks the same at start; this holds it at every
write), so `-o /dev/null` can never turn the machine's /dev/null into a regular file.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from nfd_snp.errors import WriteError

TEMP_PREFIX = ".nfd-snp-tmp."
DIRECTORY_MODE = 0o755


def make_directories(directory: os.PathLike | str) -> None:
    """Create `directory` and missing parents with mode 0755 (not the umask's)."""
    path = Path(directory)
    missing = []
    while not path.is_dir():
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for path in reversed(missing):
        try:
            os.mkdir(path, DIRECTORY_MODE)
        except FileExistsError:
            if not path.is_dir():
                raise WriteError(f"cannot create directory {path}: a file is in the way") from None
            continue
        except OSError as exc:
            raise WriteError(f"cannot create directory {path}: {exc.strerror or exc}") from None
        os.chmod(path, DIRECTORY_MODE)  # mkdir's mode is masked by the umask


def refuse_unless_regular(target: Path) -> None:
    """WriteError unless `target` is absent or a regular file (nothing else is replaced)."""
    from nfd_snp.confined import kind_of

    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise WriteError(f"cannot write {target}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise WriteError(
            f"refusing to write {target}: it is {kind_of(st.st_mode)}, not a regular file"
        )


def write_atomic(path: os.PathLike | str, data: bytes, mode: int = 0o644) -> None:
    import tempfile  # not on the hook's path; only writers pay for it

    target = Path(path)
    directory = target.parent
    refuse_unless_regular(target)
    make_directories(directory)
    # The temporary name keeps a target's long name short: NAME_MAX holds for both.
    prefix = f"{TEMP_PREFIX}{target.name[:64]}."
    try:
        fd, temp = tempfile.mkstemp(prefix=prefix, dir=directory)
    except OSError as exc:
        raise WriteError(f"cannot write {target}: {exc.strerror or exc}") from None
    try:
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
    except BaseException as exc:  # also a stop signal: no temporary file is left behind
        try:
            os.unlink(temp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise WriteError(f"cannot write {target}: {exc.strerror or exc}") from None
        raise


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
