"""Open a path below a root directory without ever leaving it, and nothing but what is asked.

A host root is a live node (`/`, or `/host` in a container) or a snapshot directory, and a
snapshot is untrusted input: a support bundle may hold `proc/sys/kernel/osrelease ->
/root/secret`, or a device node whose mere opening has side effects (`/dev/watchdog` arms a
reboot). So every path below a root is resolved here, one component at a time, from a file
descriptor of the root:

- each component is opened with O_PATH|O_NOFOLLOW, which neither follows a link nor opens
  the object itself (no driver's open() runs, a FIFO cannot block), and fstat tells what
  it is, race-free;
- a symbolic link is read (readlinkat on that O_PATH descriptor) and resolved by this code,
  relative to the directory that holds it, so a relative link that stays inside resolves
  as the kernel resolves sysfs's own (`sys/bus/pci/devices/<BDF> -> ../../../devices/...`);
- in a snapshot (BENEATH) an absolute link, or `..` above the root, is refused with EXDEV,
  as openat2(2) RESOLVE_BENEATH refuses it; on a live root (IN_ROOT) both stay at the root,
  as RESOLVE_IN_ROOT (and chroot) resolve them, so `/host/etc/...` links that name host
  paths mean the host's;
- the object is opened only once its type is the one asked for (a regular file; a
  character device for the live devices; a directory), with O_NOFOLLOW|O_NONBLOCK|O_NOCTTY,
  and its device and inode are checked against what was resolved. A swap in between could
  only put a device node there by creating one (CAP_MKNOD) or hard-linking one on the same
  file system, which fs.protected_hardlinks forbids for devices the user cannot open.

Errors are OSError with an errno and a strerror that says why ("symbolic link to /etc/shadow
leaves the root"), which the sources turn into typed "unreadable" data like any other read
failure. openat2(2) would do the walk in the kernel; it is not used so that one code path,
testable on every kernel and under seccomp filters that hide openat2, serves every host.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import List, NamedTuple, Tuple

BENEATH = "beneath"  # a snapshot: nothing may lead out of it
IN_ROOT = "in-root"  # a live root: absolute links and '..' stay at the root, like chroot

# The kernel follows at most 40 links in one lookup (MAXSYMLINKS, include/linux/namei.h).
MAX_LINKS = 40
_PATH = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_OPEN = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC

REGULAR, DIRECTORY, CHAR_DEVICE = stat.S_IFREG, stat.S_IFDIR, stat.S_IFCHR
# The errno a path of the wrong type gives: what the kernel says when it meets one (ENOTDIR),
# ENODEV where a device was expected (no such device there), EINVAL for a file.
_WRONG_KIND = {stat.S_IFDIR: errno.ENOTDIR, stat.S_IFCHR: errno.ENODEV}
KIND_NAMES = {
    stat.S_IFREG: "a regular file",
    stat.S_IFDIR: "a directory",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFLNK: "a symbolic link",
}


def kind_of(mode: int) -> str:
    """`a FIFO`, `a character device`, ... for an st_mode."""
    return KIND_NAMES.get(stat.S_IFMT(mode), "an unknown file type")


class Found(NamedTuple):
    """A resolved path: its O_PATH descriptor, what fstat said of it, and the directory
    that holds it (a descriptor) with its name there. The caller closes both (`close`)."""

    fd: int
    st: os.stat_result
    parent: int
    name: str

    def close(self) -> None:
        os.close(self.fd)
        os.close(self.parent)


def _fail(err: int, why: str, rel: str) -> OSError:
    return OSError(err, why, rel)


class Root:
    """A directory that paths are resolved below; `mode` is BENEATH or IN_ROOT."""

    def __init__(self, path: os.PathLike | str, mode: str = BENEATH) -> None:
        if mode not in (BENEATH, IN_ROOT):
            raise ValueError(f"unknown mode {mode!r}")
        self.path = os.fspath(path)
        self.mode = mode
        self.fd = os.open(self.path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "Root":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def resolve(self, rel: str, follow: bool = True) -> Found:
        """The object `rel` names below the root, never opened itself (O_PATH).

        `follow=False` leaves a final symbolic link unresolved (lstat's view).
        """
        return self._walk(rel, follow)[0]

    def _walk(self, rel: str, follow: bool) -> Tuple[Found, List[str]]:
        """`resolve`, and the names of the directories from the root to the one that holds
        the object, as the walk really went (links resolved, '..' applied)."""
        if "\0" in rel:
            raise _fail(errno.EINVAL, "contains a NUL character", rel)
        todo: List[str] = list(reversed(rel.split("/")))
        stack: List[int] = [os.dup(self.fd)]  # the directories walked through, owned here
        names: List[str] = []  # their names below the root (stack[1:])
        links = 0
        try:
            while todo:
                name = todo.pop()
                if name in ("", "."):
                    continue
                if name == "..":
                    if len(stack) > 1:
                        os.close(stack.pop())
                        names.pop()
                    elif self.mode == BENEATH:
                        raise _fail(errno.EXDEV, "'..' leads above the root", rel)
                    continue
                fd = os.open(name, _PATH, dir_fd=stack[-1])
                st = os.fstat(fd)
                if stat.S_ISLNK(st.st_mode) and (todo or follow):
                    target = os.readlink("", dir_fd=fd)
                    os.close(fd)
                    links += 1
                    if links > MAX_LINKS:
                        raise _fail(errno.ELOOP, "too many levels of symbolic links", rel)
                    if target.startswith("/"):
                        if self.mode == BENEATH:
                            raise _fail(
                                errno.EXDEV, f"symbolic link to {target} leaves the root", rel
                            )
                        while len(stack) > 1:
                            os.close(stack.pop())
                        names.clear()
                    todo.extend(reversed(target.split("/")))
                    continue
                if not todo:
                    return Found(fd, st, stack.pop(), name), names
                if not stat.S_ISDIR(st.st_mode):
                    os.close(fd)
                    raise _fail(errno.ENOTDIR, "not a directory", rel)
                stack.append(fd)
                names.append(name)
            # `rel` named the root itself, or a directory reached through '..'
            here = stack.pop()
            return Found(os.dup(here), os.fstat(here), here, "."), names[:-1]
        finally:
            for fd in stack:
                os.close(fd)

    def readlink(self, rel: str) -> str:
        """Where the symbolic link `rel` points, as a path below the root: its text taken
        from the directory that really holds the link (sysfs's relative links are relative
        to the device's own directory, reached through /sys/bus/pci/devices/<BDF>). Only
        the path is worked out, nothing at the target is opened; a target above the root
        is EXDEV in a snapshot and the root itself on a live root, as in `resolve`."""
        found, where = self._walk(rel, follow=False)
        try:
            if not stat.S_ISLNK(found.st.st_mode):
                raise _fail(errno.EINVAL, f"{kind_of(found.st.st_mode)}, not a symbolic link", rel)
            target = os.readlink("", dir_fd=found.fd)
        finally:
            found.close()
        parts = list(where)
        if target.startswith("/"):
            if self.mode == BENEATH:
                raise _fail(errno.EXDEV, f"symbolic link to {target} leaves the root", rel)
            parts = []
        for name in target.split("/"):
            if name in ("", "."):
                continue
            if name == "..":
                if parts:
                    parts.pop()
                elif self.mode == BENEATH:
                    raise _fail(errno.EXDEV, f"symbolic link to {target} leaves the root", rel)
                continue
            parts.append(name)
        return "/".join(parts)

    def lstat(self, rel: str) -> os.stat_result:
        found = self.resolve(rel, follow=False)
        found.close()
        return found.st

    def stat(self, rel: str) -> os.stat_result:
        found = self.resolve(rel)
        found.close()
        return found.st

    def open(self, rel: str, kinds: Tuple[int, ...] = (REGULAR,), flags: int = os.O_RDONLY):
        """A descriptor of `rel` opened with `flags`, only if it is one of `kinds` (S_IFREG,
        S_IFCHR, S_IFDIR); OSError naming what it is otherwise, with nothing opened."""
        found = self.resolve(rel)
        try:
            kind = stat.S_IFMT(found.st.st_mode)
            if kind not in kinds:
                wanted = " or ".join(KIND_NAMES[k] for k in kinds)
                err = _WRONG_KIND.get(kinds[0], errno.EINVAL)
                raise _fail(err, f"{kind_of(found.st.st_mode)}, not {wanted}", rel)
            if kind == DIRECTORY:
                flags |= os.O_DIRECTORY
            fd = os.open(found.name, flags | _OPEN, dir_fd=found.parent)
        finally:
            found.close()
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (found.st.st_dev, found.st.st_ino):
            os.close(fd)
            raise _fail(errno.EAGAIN, "changed while it was opened", rel)
        return fd


def read_limited(fd: int, limit: int) -> bytes:
    """At most `limit` bytes from `fd`, to its end or the limit, whichever comes first."""
    chunks = []
    size = 0
    while size < limit:
        chunk = os.read(fd, min(65536, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
