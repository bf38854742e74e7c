"""The files nfd-snp writes are its own or refused: checked at start, and again by the writer.

`nfd-snp run` and `features` write the NFD feature file, the hooks' facts cache, the
Prometheus textfile and, beside each, the service's lock. As root, any of them named wrongly
does damage: `-o /dev/null` replaced the machine's /dev/null with a regular file, a FIFO
blocked the service, two settings naming one file made the labels vanish or the facts
invalid. So each of them must be

- absent, or a regular file: never a symbolic link (someone meant another file), a device,
  a FIFO, a socket or a directory;
- in a directory that exists or can be made (the nearest existing ancestor is a directory);
- a name the kernel takes (a 5,000-character path fails at start, not in every cycle);
- a file no other output of the same service is (compared by resolved directory and name,
  and by device and inode where it exists, which catches hard links).

A refusal is one line naming the setting, exit status 2, and nothing is written. The writer
(`nfd_snp.atomic.write_atomic`) checks the target's type again, since the check at start
cannot hold for ever. `none` writes no feature file (`--output none`): a libvirt-only host
needs only the facts cache.
"""

from __future__ import annotations

import os
import stat
from typing import Dict, List, Optional, Sequence, Tuple

from nfd_snp.confined import kind_of
from nfd_snp.errors import InputError, excerpt

NONE = "none"  # `--output none`, `metrics-textfile = none`: no such file
LOCK_SUFFIX = ".lock"
PATH_SHOWN = 200  # characters of a refused path echoed in the message

# (where it was set, path): "--output", "nfd-snp.conf: facts-cache", ...
Named = Tuple[str, str]


def lock_path(path: str) -> str:
    """The service's lock for the output `path`: `.NAME.lock` beside it, a dot-file that NFD
    (it skips names starting with '.') and node-exporter (it reads *.prom) ignore."""
    directory, name = os.path.split(path)
    return os.path.join(directory, f".{name}{LOCK_SUFFIX}")


def not_writable_because(path: str) -> Optional[str]:
    """Why nfd-snp may not write `path` (None: it may): what is there, or why it cannot be."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return _directory_problem(path)
    except OSError as exc:  # ENAMETOOLONG, ENOTDIR (a parent is a file), ELOOP, EACCES
        return f"cannot be written: {exc.strerror or exc}"
    if stat.S_ISREG(st.st_mode):
        return None
    return f"is {kind_of(st.st_mode)}; nfd-snp writes only regular files, which it replaces"


def _name_max(directory: str) -> int:
    try:
        return os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def _directory_problem(path: str) -> Optional[str]:
    """Why an absent `path` cannot be created: its directory cannot be, or its name (or its
    lock's) is longer than the file system takes."""
    directory = os.path.dirname(os.path.abspath(path))
    existing = directory
    while True:
        try:
            st = os.stat(existing)
            break
        except (FileNotFoundError, NotADirectoryError):  # missing, or below a file
            existing = os.path.dirname(existing)
        except OSError as exc:
            return f"cannot be written: {existing}: {exc.strerror or exc}"
    if not stat.S_ISDIR(st.st_mode):
        return f"cannot be written: {excerpt(existing, PATH_SHOWN)} is not a directory"
    if existing != directory and not os.access(existing, os.W_OK | os.X_OK):
        return (
            f"cannot be written: its directory is missing and cannot be made in "
            f"{excerpt(existing, PATH_SHOWN)}"
        )
    if len(os.fsencode(os.path.basename(lock_path(path)))) > _name_max(existing):
        return "cannot be written: File name too long"
    return None


def identity(path: str) -> Tuple[str, str]:
    """(resolved directory, name): one file whatever the spelling of its directory."""
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.realpath(directory), name


def _inode(path: str) -> Optional[Tuple[int, int]]:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def check(
    outputs: Sequence[Named], hints: Optional[Dict[str, str]] = None, *, locks: bool = True
) -> None:
    """InputError for the first output (or, with `locks`, its lock) that nfd-snp may not
    write, or that is the same file as another one. `hints[where]` says how to switch that
    output off; it is added when a device is in the way (`-o /dev/null`)."""
    files: List[Named] = []
    for where, path in outputs:
        files.append((where, path))
        if locks:
            files.append((f"the lock of {where}", lock_path(path)))
    for where, path in files:
        why = not_writable_because(path)
        if why:
            message = f"{where}: {excerpt(path, PATH_SHOWN)} {why}"
            hint = (hints or {}).get(where)
            if hint and stat.S_ISCHR(_mode(path)):
                message += f"; {hint}"
            raise InputError(message)
    seen: dict = {}
    for where, path in files:
        for key in (identity(path), _inode(path)):
            if key is None:
                continue
            if key in seen and seen[key] != where:
                raise InputError(
                    f"{where}: {excerpt(path, PATH_SHOWN)} is the same file as {seen[key]}; "
                    "each file nfd-snp writes needs its own path"
                )
            seen.setdefault(key, where)


def _mode(path: str) -> int:
    try:
        return os.lstat(path).st_mode
    except OSError:
        return 0
