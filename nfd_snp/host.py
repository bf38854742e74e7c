"""Where the probe's bytes come from: a live host root or a captured snapshot.

Plain files are read the same way in both (relative to the root). What is not a plain file
(CPUID, MSRs, the /dev/sev ioctl, libvirt's domain capabilities, a file's change time) comes
from the devices on a live host and from `nfd-snp-capture.json` in a snapshot. Both raise
the same exceptions (`OSError` with an errno, `PspError`, `LibvirtError`, `NotCaptured`), so
the sources in `nfd_snp.sources` parse and classify one way only.

Every path is resolved below the root by `nfd_snp.confined`, never by the kernel from a
joined path: a snapshot is untrusted (a link in it that leads out of it is refused, and
only regular files and directories of it are ever opened), and on a live root absolute
links mean paths of that root (`/host` in a container). The devices a live probe must read
(`/dev/cpu/0/cpuid`, `msr`, `/dev/sev`, `/dev/kvm`) are opened only when they are character
devices, and with O_NONBLOCK: a FIFO planted there cannot block the service.
"""

from __future__ import annotations

import ctypes
import errno as errno_mod
import fcntl
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, NamedTuple, Optional, Tuple

from nfd_snp import confined, paths, uapi
from nfd_snp.confined import read_limited
from nfd_snp.errors import LibvirtError, NotCaptured, PspError, SnapshotError
from nfd_snp.reasons import Reason

# Largest plain file read unless a source asks for less; sysfs values are a few bytes.
DEFAULT_READ_LIMIT = 64 * 1024
# nfd-snp-capture.json holds domcaps XML (~100 KB) and a few numbers.
CAPTURE_FILE_LIMIT = 16 * 1024 * 1024
# How long the hook's Python may take to import nfd_snp (a cold start of a loaded node).
HOOK_IMPORT_TIMEOUT = 30.0
# A recorded errno is a C int (errno(3)); os.strerror() overflows on anything larger.
ERRNO_LIMIT = 1 << 31

PSP_CAPTURE_KEYS = {
    uapi.SEV_PLATFORM_STATUS: "sev_platform_status",
    uapi.SNP_PLATFORM_STATUS: "snp_platform_status",
}
# KVM system attributes a snapshot records: (group, attribute) -> key.
KVM_ATTR_CAPTURE_KEYS = {
    (uapi.KVM_X86_GRP_SEV, uapi.KVM_X86_SNP_POLICY_BITS): "kvm_snp_policy_bits",
    (uapi.KVM_X86_GRP_SEV, uapi.KVM_X86_SEV_VMSA_FEATURES): "kvm_sev_vmsa_features",
}


def hexkey(number: int) -> str:
    """Snapshot key of a CPUID leaf or MSR index: `0x` + 8 lower-case hex digits."""
    return f"0x{number:08x}"


class FileStat(NamedTuple):
    """What `stat` tells of a file: its mode and when its inode last changed (ctime)."""

    mode: int
    ctime: float


@dataclass
class Recording:
    """Every input a live probe read, kept so `capture` can write a replayable snapshot."""

    files: Dict[str, bytes] = field(default_factory=dict)
    dirs: set = field(default_factory=set)
    cpuid: Dict[str, list] = field(default_factory=dict)
    msr: Dict[str, int] = field(default_factory=dict)
    psp: Dict[str, object] = field(default_factory=dict)
    kvm_attrs: Dict[str, object] = field(default_factory=dict)
    domcaps: object = NotCaptured  # str, None (no libvirt) or NotCaptured
    stats: Dict[str, dict] = field(default_factory=dict)  # path -> {"mode", "ctime"}
    unreadable: Dict[str, dict] = field(default_factory=dict)
    present: Dict[str, bool] = field(default_factory=dict)  # path -> is a directory
    links: Dict[str, str] = field(default_factory=dict)  # link -> target, root-relative
    entries: Dict[str, list] = field(default_factory=dict)  # directory -> names it holds
    hook_imports: Dict[str, Optional[str]] = field(default_factory=dict)  # python -> error


class Host:
    """Plain-file access relative to a root; the base of the live and snapshot hosts."""

    snapshot = False
    # How links below the root resolve (nfd_snp.confined): a snapshot may not be left.
    resolution = confined.BENEATH

    def __init__(self, root: os.PathLike | str) -> None:
        self.root = Path(root)
        self._tree: Optional[confined.Root] = None

    # -- plain files -------------------------------------------------------------------

    def path(self, rel: str) -> Path:
        """Where `rel` is, for messages; it is never opened by this name."""
        return self.root / rel

    @property
    def tree(self) -> confined.Root:
        """The root directory, opened once; every path is resolved below it."""
        if self._tree is None:
            self._tree = confined.Root(self.root, self.resolution)
        return self._tree

    def read(
        self,
        rel: str,
        limit: int = DEFAULT_READ_LIMIT,
        *,
        truncate: bool = False,
        keep: Optional[Callable[[bytes], bool]] = None,
        redact: Optional[Callable[[bytes], bytes]] = None,
    ) -> bytes:
        """Read a regular file below the root, at most `limit` bytes.

        A longer file raises EFBIG unless `truncate` asks for its first `limit` bytes. Only
        regular files are opened: a FIFO or device planted in a snapshot is refused (EINVAL)
        without being opened, and a link out of a snapshot is refused (EXDEV).
        `keep` decides whether a capture records the bytes (private process data), `redact`
        what of them it records (the one line of a file that a source needs).
        """
        self._replay_unreadable("file:" + rel)
        fd = self.tree.open(rel)
        try:
            data = read_limited(fd, limit + 1)
        finally:
            os.close(fd)
        if len(data) > limit:
            if not truncate:
                raise OSError(errno_mod.EFBIG, f"larger than {limit} bytes", str(self.path(rel)))
            data = data[:limit]
        self._record_file(rel, data if redact is None else redact(data), keep)
        return data

    def listdir(self, rel: str, *, entries: bool = False) -> list:
        """The names in directory `rel`. `entries`: a capture keeps the names themselves
        (as empty files where nothing else is kept there), for directories whose listing is
        the fact (an IOMMU group's devices), not only a way to find files to read."""
        fd = self.tree.open(rel, (confined.DIRECTORY,))
        try:
            names = sorted(os.listdir(fd))
        finally:
            os.close(fd)
        self._record_dir(rel)
        if entries:
            self._record_entries(rel, names)
        return names

    def exists(self, rel: str) -> bool:
        """Whether `rel` is present below the root (a dangling link is; a link out of a
        snapshot, or through a non-directory, is not)."""
        return self._lstat(rel) is not None

    def _lstat(self, rel: str) -> Optional[os.stat_result]:
        try:
            return self.tree.lstat(rel)
        except OSError:
            return None

    def readlink(self, rel: str) -> str:
        """Where the symbolic link `rel` points, as a path relative to the root (sysfs's
        relative `driver` and `iommu_group` links resolved from the directory that really
        holds them). A target outside the root raises EXDEV, a non-link EINVAL."""
        self._replay_unreadable("link:" + rel)
        resolved = self.tree.readlink(rel)
        self._record_link(rel, resolved)
        return resolved

    def stat(self, rel: str) -> FileStat:
        """Mode and change time of a file (following a symlink, as libvirt does)."""
        st = self.tree.stat(rel)
        return FileStat(st.st_mode, st.st_ctime)

    # -- hooks for subclasses --------------------------------------------------------

    def _replay_unreadable(self, key: str) -> None:
        """Snapshots re-raise a read error recorded at capture time."""

    def _record_file(self, rel: str, data: bytes, keep) -> None:
        """Live hosts that record keep the bytes for `capture`."""

    def _record_dir(self, rel: str) -> None:
        pass

    def _record_link(self, rel: str, target: str) -> None:
        pass

    def _record_entries(self, rel: str, names: list) -> None:
        pass

    # -- what is not a plain file (overridden) ----------------------------------------

    def cpuid(self, leaf: int) -> Tuple[int, int, int, int]:
        raise NotImplementedError

    def msr(self, index: int) -> int:
        raise NotImplementedError

    def psp_command(self, command: int) -> bytes:
        raise NotImplementedError

    def kvm_attribute(self, group: int, attr: int) -> int:
        """A KVM system attribute (KVM_GET_DEVICE_ATTR on /dev/kvm) as an unsigned u64."""
        raise NotImplementedError

    def domain_capabilities(self) -> Optional[str]:
        raise NotImplementedError

    def hook_import(self, python: str) -> Optional[str]:
        """Whether `python -I` imports nfd_snp.hook, as the libvirt hook's front runs it:
        None when it does, else why not (one line)."""
        raise NotImplementedError

    def close(self) -> None:
        if self._tree is not None:
            self._tree.close()
            self._tree = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LiveHost(Host):
    """A running host (or a container's view of it under /host): devices and libvirt."""

    resolution = confined.IN_ROOT  # /host/etc/x -> /usr/y means the host's /usr/y

    def __init__(
        self,
        root: os.PathLike | str = "/",
        *,
        record: bool = False,
        libvirt: bool = True,
        libvirt_timeout: float = 10.0,
    ) -> None:
        super().__init__(root)
        self.recording: Optional[Recording] = Recording() if record else None
        self.libvirt = libvirt
        self.libvirt_timeout = libvirt_timeout
        self._fds: Dict[str, int] = {}

    def _record_file(self, rel: str, data: bytes, keep) -> None:
        if self.recording is not None and (keep is None or keep(data)):
            self.recording.files[rel] = data

    def _record_dir(self, rel: str) -> None:
        if self.recording is not None:
            self.recording.dirs.add(rel)

    def _record_link(self, rel: str, target: str) -> None:
        if self.recording is not None:
            self.recording.links[rel] = target

    def _record_entries(self, rel: str, names: list) -> None:
        if self.recording is not None:
            self.recording.entries[rel] = list(names)

    def exists(self, rel: str) -> bool:
        st = self._lstat(rel)
        if st is not None and self.recording is not None:
            self.recording.present[rel] = self._is_dir(rel)
        return st is not None

    def _is_dir(self, rel: str) -> bool:
        try:
            return stat.S_ISDIR(self.tree.stat(rel).st_mode)
        except OSError:
            return False

    def stat(self, rel: str) -> FileStat:
        try:
            st = super().stat(rel)
        except OSError as exc:
            if exc.errno != errno_mod.ENOENT:
                self._record_error("stat:" + rel, exc)
            raise
        if self.recording is not None:
            self.recording.stats[rel] = st._asdict()
        return st

    def _record_error(self, key: str, exc: BaseException) -> None:
        if self.recording is None:
            return
        entry: dict = {"message": str(exc)}
        if isinstance(exc, OSError) and exc.errno is not None:
            entry = {"errno": exc.errno, "message": exc.strerror or str(exc)}
        if isinstance(exc, LibvirtError):
            entry["reason"] = exc.reason.code
        self.recording.unreadable[key] = entry

    def read(self, rel: str, limit: int = DEFAULT_READ_LIMIT, **kw) -> bytes:
        try:
            return super().read(rel, limit, **kw)
        except OSError as exc:
            if exc.errno != errno_mod.ENOENT:  # absent files are simply absent in a snapshot
                self._record_error("file:" + rel, exc)
            raise

    def open_device(self, rel: str, flags: int = os.O_RDONLY) -> int:
        """A character device below the root, opened non-blocking; anything else (a FIFO, a
        regular file planted in /dev) is refused with EINVAL before it is opened."""
        return self.tree.open(rel, (confined.CHAR_DEVICE,), flags)

    def _device(self, rel: str) -> int:
        fd = self._fds.get(rel)
        if fd is None:
            fd = self.open_device(rel)
            self._fds[rel] = fd
        return fd

    def _pread(self, rel: str, size: int, offset: int, key: str) -> bytes:
        try:
            data = os.pread(self._device(rel), size, offset)
            if len(data) != size:
                raise OSError(errno_mod.EIO, f"short read ({len(data)} of {size} bytes)")
            return data
        except OSError as exc:
            self._record_error(key, exc)
            raise

    def cpuid(self, leaf: int) -> Tuple[int, int, int, int]:
        # arch/x86/kernel/cpuid.c: offset = leaf | subleaf << 32 (subleaf 0 here).
        data = self._pread(paths.CPUID_DEVICE, 16, leaf, "cpuid:" + hexkey(leaf))
        regs = tuple(int.from_bytes(data[i : i + 4], "little") for i in range(0, 16, 4))
        if self.recording is not None:
            self.recording.cpuid[hexkey(leaf)] = list(regs)
        return regs  # type: ignore[return-value]

    def msr(self, index: int) -> int:
        data = self._pread(paths.MSR_DEVICE, 8, index, "msr:" + hexkey(index))
        value = int.from_bytes(data, "little")
        if self.recording is not None:
            self.recording.msr[hexkey(index)] = value
        return value

    def psp_command(self, command: int) -> bytes:
        """Issue one read-only status command through SEV_ISSUE_CMD; return the reply bytes."""
        key = PSP_CAPTURE_KEYS[command]
        try:
            reply = uapi.REPLY_STRUCTS[command]()
            cmd = uapi.SevIssueCmd(cmd=command, data=ctypes.addressof(reply), error=0)
            try:
                fd = self.open_device(paths.SEV_DEVICE, os.O_RDWR)
            except OSError as exc:
                raise PspError(exc.errno or errno_mod.EIO, None, exc.strerror or "") from exc
            try:
                fcntl.ioctl(fd, uapi.SEV_ISSUE_CMD, cmd)
            except OSError as exc:
                raise PspError(exc.errno or errno_mod.EIO, cmd.error or None) from exc
            finally:
                os.close(fd)
            data = bytes(reply)
        except PspError as exc:
            if self.recording is not None:
                entry: dict = {"errno": exc.errno}
                if exc.fw_error is not None:
                    entry["fw_error"] = exc.fw_error
                self.recording.psp[key] = entry
            raise
        if self.recording is not None:
            self.recording.psp[key] = data.hex()
        return data

    def kvm_attribute(self, group: int, attr: int) -> int:
        key = KVM_ATTR_CAPTURE_KEYS[(group, attr)]
        value = ctypes.c_uint64(0)
        request = uapi.KvmDeviceAttr(flags=0, group=group, attr=attr, addr=ctypes.addressof(value))
        try:
            fd = self.open_device(paths.KVM_DEVICE, os.O_RDWR)
            try:
                fcntl.ioctl(fd, uapi.KVM_GET_DEVICE_ATTR, request)
            finally:
                os.close(fd)
        except OSError as exc:
            if self.recording is not None:
                self.recording.kvm_attrs[key] = {"errno": exc.errno or errno_mod.EIO}
            raise
        if self.recording is not None:
            self.recording.kvm_attrs[key] = value.value
        return value.value

    def domain_capabilities(self) -> Optional[str]:
        from nfd_snp import libvirtconn  # libvirt-python is imported only when needed

        try:
            xml = (
                libvirtconn.domain_capabilities(self.root, self.libvirt_timeout)
                if self.libvirt
                else None
            )
        except LibvirtError as exc:
            self._record_error("domcaps", exc)
            raise
        if self.recording is not None:
            self.recording.domcaps = xml
        return xml

    def hook_import(self, python: str) -> Optional[str]:
        """Run the hook's Python as libvirt runs the hook (a clean environment, no stdin).

        Only on the root's own file system (`/`): the interpreter a hook names is a path of
        the host, which a container's /host does not make runnable.
        """
        import subprocess  # only on hosts with the hook installed

        try:
            proc = subprocess.run(
                [python, "-I", "-c", "import nfd_snp.hook"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"},
                cwd="/",
                timeout=HOOK_IMPORT_TIMEOUT,
            )
            lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            error = None
            if proc.returncode != 0:
                error = (lines[-1].strip() if lines else f"exit status {proc.returncode}")[:300]
        except OSError as exc:
            error = f"cannot run it: {exc.strerror or exc}"
        except subprocess.TimeoutExpired:
            error = f"it did not finish within {HOOK_IMPORT_TIMEOUT:g} s"
        if self.recording is not None:
            self.recording.hook_imports[python] = error
        return error

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        super().close()


def _as_register(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 64:
        raise SnapshotError(f"{where}: expected an unsigned integer, got {value!r:.40}")
    return value


def _snapshot_errno(entry: dict, where: str) -> int:
    """The errno a snapshot recorded for a failed read: Linux errnos are 1..4095."""
    err = entry.get("errno")
    if isinstance(err, bool) or not isinstance(err, int) or not 0 < err < 4096:
        raise SnapshotError(f"{where}: errno must be an integer from 1 to 4095")
    return err


class SnapshotHost(Host):
    """A directory written by `nfd-snp capture` (or by hand): replays what it recorded."""

    snapshot = True

    def __init__(self, root: os.PathLike | str) -> None:
        super().__init__(root)
        try:
            self.capture = self._load_capture()
        except BaseException:
            self.close()
            raise

    def _load_capture(self) -> dict:
        path = self.path(paths.CAPTURE_FILE)
        try:
            fd = self.tree.open(paths.CAPTURE_FILE)
            try:
                raw = read_limited(fd, CAPTURE_FILE_LIMIT + 1)
            finally:
                os.close(fd)
            if len(raw) > CAPTURE_FILE_LIMIT:
                raise OSError(errno_mod.EFBIG, f"larger than {CAPTURE_FILE_LIMIT} bytes")
        except OSError as exc:
            raise SnapshotError(f"{path}: {exc.strerror or exc}") from None
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise SnapshotError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise SnapshotError(f"{path}: expected a JSON object at the top level")
        for key in ("cpuid", "msr", "unreadable"):
            if key in data and not isinstance(data[key], dict):
                raise SnapshotError(f"{path}: '{key}' must be an object")
        if "domcaps" in data and not (data["domcaps"] is None or isinstance(data["domcaps"], str)):
            raise SnapshotError(f"{path}: 'domcaps' must be a string or null")
        if "stat" in data and not isinstance(data["stat"], dict):
            raise SnapshotError(f"{path}: 'stat' must be an object")
        imports = data.get("hook_import", {})
        if not isinstance(imports, dict) or not all(
            v is None or isinstance(v, str) for v in imports.values()
        ):
            raise SnapshotError(f"{path}: 'hook_import' must map interpreters to null or a reason")
        for entry in data.get("unreadable", {}).values():
            if not isinstance(entry, dict):
                raise SnapshotError(f"{path}: every 'unreadable' entry must be an object")
        return data

    def _replay_unreadable(self, key: str) -> None:
        entry = self.capture.get("unreadable", {}).get(key)
        if entry is None:
            return
        if key == "domcaps":
            code = entry.get("reason")
            reason = next((r for r in Reason if r.code == code), Reason.LIBVIRT_QUERY_FAILED)
            raise LibvirtError(reason, str(entry.get("message", "")))
        err = entry.get("errno")
        if not isinstance(err, int) or isinstance(err, bool) or not 0 < err < ERRNO_LIMIT:
            raise SnapshotError(
                f"{self.path(paths.CAPTURE_FILE)}: unreadable[{key!r}]: "
                "errno must be a positive integer"
            )
        raise OSError(err, str(entry.get("message") or os.strerror(err)))

    def cpuid(self, leaf: int) -> Tuple[int, int, int, int]:
        key = hexkey(leaf)
        regs = self.capture.get("cpuid", {}).get(key)
        if regs is None:
            self._replay_unreadable("cpuid:" + key)
            raise NotCaptured(f"CPUID leaf {key}")
        if not isinstance(regs, list) or len(regs) != 4:
            raise SnapshotError(f"cpuid[{key}]: expected [eax, ebx, ecx, edx]")
        return tuple(_as_register(r, f"cpuid[{key}]") & 0xFFFFFFFF for r in regs)  # type: ignore

    def msr(self, index: int) -> int:
        key = hexkey(index)
        value = self.capture.get("msr", {}).get(key)
        if value is None:
            self._replay_unreadable("msr:" + key)
            raise NotCaptured(f"MSR {key}")
        return _as_register(value, f"msr[{key}]")

    def psp_command(self, command: int) -> bytes:
        key = PSP_CAPTURE_KEYS[command]
        if key not in self.capture:
            raise NotCaptured(key)
        value = self.capture[key]
        if isinstance(value, dict):
            err = value.get("errno")
            fw_error = value.get("fw_error")
            if not isinstance(err, int) or isinstance(err, bool) or not 0 < err < ERRNO_LIMIT:
                raise SnapshotError(f"{key}: errno must be a positive integer")
            if fw_error is not None and not isinstance(fw_error, int):
                raise SnapshotError(f"{key}: fw_error must be an integer")
            raise PspError(err, fw_error)
        size = ctypes.sizeof(uapi.REPLY_STRUCTS[command])
        try:
            data = bytes.fromhex(value) if isinstance(value, str) else None
        except ValueError:
            data = None
        if data is None or len(data) != size:
            raise SnapshotError(f'{key}: expected {size} bytes as hex or {{"errno": N}}')
        return data

    def kvm_attribute(self, group: int, attr: int) -> int:
        key = KVM_ATTR_CAPTURE_KEYS[(group, attr)]
        if key not in self.capture:
            raise NotCaptured(key)
        value = self.capture[key]
        if isinstance(value, dict):
            raise OSError(_snapshot_errno(value, key), "recorded failure")
        return _as_register(value, key)

    def domain_capabilities(self) -> Optional[str]:
        if "domcaps" not in self.capture:
            self._replay_unreadable("domcaps")
            raise NotCaptured("domcaps")
        return self.capture["domcaps"]

    def hook_import(self, python: str) -> Optional[str]:
        imports = self.capture.get("hook_import", {})
        if python not in imports:
            raise NotCaptured(f"whether {python} imports nfd_snp")
        return imports[python]

    def stat(self, rel: str) -> FileStat:
        """A file's recorded mode and change time: a copied file's own would be the copy's."""
        entry = self.capture.get("stat", {}).get(rel)
        if entry is None:
            self._replay_unreadable("stat:" + rel)
            if self.exists(rel):
                raise NotCaptured(f"stat of {rel}")
            raise FileNotFoundError(errno_mod.ENOENT, os.strerror(errno_mod.ENOENT), rel)
        where = f"{self.path(paths.CAPTURE_FILE)}: stat[{rel!r}]"
        mode, ctime = (entry.get(k) if isinstance(entry, dict) else None for k in FileStat._fields)
        if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode < 1 << 32:
            raise SnapshotError(f"{where}: mode must be an unsigned integer")
        if isinstance(ctime, bool) or not isinstance(ctime, (int, float)) or not 0 <= ctime < 1e11:
            raise SnapshotError(f"{where}: ctime must be seconds since the epoch")
        return FileStat(mode, float(ctime))


def open_host(root: os.PathLike | str = "/", **live_options) -> Host:
    """A snapshot host when `root` holds nfd-snp-capture.json, else a live host."""
    root_path = Path(root)
    if not root_path.is_dir():
        raise SnapshotError(f"{root}: not a directory")
    if os.path.lexists(root_path / paths.CAPTURE_FILE):  # a link there is refused, not missed
        return SnapshotHost(root_path)
    return LiveHost(root_path, **live_options)
