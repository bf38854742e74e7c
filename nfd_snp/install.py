"""`nfd-snp install` and `nfd-snp uninstall`: nfd-snp on a host without its RPM.

Install writes what the RPMs install, for the Python that runs it (a virtualenv or the
system's): the libvirt hook with that interpreter on its `PYTHON=` line, a systemd unit whose
ExecStart runs that interpreter and whose sandbox lets it see it, the tmpfiles.d and
modules-load.d files, and the configuration file unless one exists. It creates what
tmpfiles.d would (the feature and facts directories: the unit's ReadWritePaths= must exist or
the service fails with status 226/NAMESPACE), starts the service under systemd, and has
libvirt load the hook. Uninstall removes what install wrote (as recorded in its manifest)
and what the service wrote (feature file, facts cache and lock, metrics textfile).

Paths are those of locally installed files (/etc/systemd/system, /etc/tmpfiles.d,
/etc/modules-load.d), never the package's /usr/lib ones; a host with the RPM's unit is left
to its package manager.

libvirt looks for hooks when its daemon starts and on SIGHUP (src/util/virhook.c
virHookInitialize; remote_daemon.c daemonReloadHandler calls it for the daemon's reload
hook). Install restarts a daemon that started before the hook changed, rather than sending
SIGHUP, because only a start time tells `nfd-snp check` (libvirt.hook) that the daemon has
loaded the hook: under systemd `systemctl try-restart`, without systemd the same executable
with the same arguments and environment. Running guests keep running across a restart.
Removing the hook needs no restart: libvirt lists hooks/qemu.d again on every call.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional

from nfd_snp import __version__, hook_script, paths
from nfd_snp import config as settings
from nfd_snp.errors import InputError, NfdSnpError

DATA = Path(__file__).resolve().parent / "data"
HOOK = paths.LIBVIRT_QEMU_HOOK
UNIT = "etc/systemd/system/nfd-snp.service"
TMPFILES = "etc/tmpfiles.d/nfd-snp.conf"
MODULES_LOAD = "etc/modules-load.d/nfd-snp.conf"
CONFIG = settings.DEFAULT_CONFIG.lstrip("/")
MANIFEST = "var/lib/nfd-snp/installed.json"
# `nfd-snp` on root's PATH: a link to the console script next to the Python installed.
COMMAND_LINK = "usr/local/bin/nfd-snp"
# Where the RPM puts the unit: such a host is its package manager's.
PACKAGED_UNIT = "usr/lib/systemd/system/nfd-snp.service"
# libvirt's configuration: its absence means no libvirt daemon to hook.
LIBVIRT_CONFIG = "etc/libvirt"
# The unit's RuntimeDirectory= (systemd creates it for the service).
RUNTIME_DIRECTORY = "/run/nfd-snp"
# Persistent qemu:///system domains, one XML file each (libvirt's qemu driver configDir).
LIBVIRT_DOMAINS = "etc/libvirt/qemu"
# Trees the unit's sandbox hides (systemd.exec(5)): ProtectHome=yes makes these empty,
# PrivateTmp=yes gives the service its own /tmp and /var/tmp.
HOME_TREES = ("/home", "/root", "/run/user")
TMP_TREES = ("/tmp", "/var/tmp")
# How the service starts (one interpreter for the hook and the service, isolated from the
# environment like the RPM's /usr/bin/nfd-snp).
RPM_EXEC_START = "ExecStart=/usr/bin/nfd-snp run\n"
# The libvirt daemons' sockets, to wait for a restarted one (libvirt's "Daemons" docs).
DAEMON_SOCKETS = {"libvirtd": "run/libvirt/libvirt-sock", "virtqemud": "run/libvirt/virtqemud-sock"}
# What the hook and the service import: nfd_snp and the dependencies it declares.
REQUIRED_MODULES = ("nfd_snp", "click", "lxml")
STOP_TIMEOUT = 30.0
START_TIMEOUT = 60.0
WHAT_SNP_DOMAINS_DO = (
    "domains that ask for SEV-SNP now start without nfd-snp's check: a converted one "
    "starts as an SEV-SNP guest where libvirt and the node can run it and fails in QEMU or "
    "KVM otherwise; one that is not converted starts as a plain VM, without SEV-SNP"
)


class InstallError(NfdSnpError):
    """Install or uninstall cannot go on; the message says why and what to do."""


def _in_tree(path: str, trees) -> Optional[str]:
    for tree in trees:
        if path == tree or path.startswith(tree + "/"):
            return tree
    return None


# -- the Python being installed ---------------------------------------------------------------


@dataclass(frozen=True)
class Interpreter:
    """The Python that runs `nfd-snp install`, and what the service must be able to read."""

    python: str
    needed: tuple  # paths it runs from: the interpreter, its prefixes, nfd_snp and its deps

    @classmethod
    def current(cls) -> "Interpreter":
        from importlib.util import find_spec

        places = [sys.executable, os.path.realpath(sys.executable), sys.prefix]
        places += [sys.base_prefix, sys.exec_prefix]
        for module in REQUIRED_MODULES:
            spec = find_spec(module)
            if spec is not None and spec.origin:
                places.append(os.path.dirname(spec.origin))
        needed = sorted({os.path.realpath(p) for p in places} | {sys.executable})
        return cls(sys.executable, tuple(needed))

    def hidden_by(self, trees) -> List[tuple]:
        """(path, tree) for each needed path under one of `trees`."""
        return [(p, t) for p in self.needed if (t := _in_tree(p, trees))]


def check_interpreter(interp: Interpreter) -> None:
    """Refuse a Python the hook or the service could not run; InstallError says why."""
    python = interp.python
    if not hook_script.SAFE_PATH.match(python):
        raise InstallError(
            f"the Python {python!r} has characters that the hook and the unit cannot carry "
            "unquoted: install nfd-snp into a virtualenv at a plain path (e.g. /opt/nfd-snp)"
        )
    hidden = interp.hidden_by(TMP_TREES)
    if hidden:
        path, tree = hidden[0]
        raise InstallError(
            f"{path} is under {tree}, which the service's PrivateTmp= hides and which is "
            "emptied at boot: install nfd-snp somewhere lasting (python3 -m venv /opt/nfd-snp; "
            "/opt/nfd-snp/bin/pip install 'nfd-snp[libvirt]'; /opt/nfd-snp/bin/nfd-snp install)"
        )
    imports = ", ".join(("nfd_snp.hook", "nfd_snp.cli", *REQUIRED_MODULES[1:]))
    why = _failure([python, "-I", "-c", f"import {imports}"])
    if why is not None:
        raise InstallError(
            f"{python} -I cannot import nfd-snp ({why}), and the hook and the service run it "
            "so (isolated from PYTHONPATH and user site-packages): install nfd-snp into that "
            "Python's own site-packages, e.g. a virtualenv"
        )


def _failure(argv) -> Optional[str]:
    """Run a command, no input, output kept: None when it succeeds, else why not (one line)."""
    try:
        proc = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120
        )
    except OSError as exc:
        return f"cannot run it: {exc.strerror or exc}"
    except subprocess.TimeoutExpired:
        return "it did not finish within 120 s"
    if proc.returncode == 0:
        return None
    return _last_line(proc.stderr) or f"exit status {proc.returncode}"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


# -- what is written ------------------------------------------------------------------------


def unit_text(interp: Interpreter, writable: List[str]) -> str:
    """The shipped unit for this Python: its ExecStart, and a sandbox that lets it be seen.

    ProtectHome=yes would hide a Python under /root or /home (a pyenv, a virtualenv in a
    home directory): there the unit says ProtectHome=read-only, which keeps them unwritable.
    `writable`: directories the service writes besides the feature directory and its
    RuntimeDirectory (a metrics textfile's, an output moved elsewhere).
    """
    text = (DATA / "nfd-snp.service").read_text()
    if text.count(RPM_EXEC_START) != 1:
        raise InstallError(f"{DATA / 'nfd-snp.service'} lacks {RPM_EXEC_START.strip()!r}")
    lines = []
    for line in text.splitlines(True):
        if line.startswith("Documentation=file:///usr/share/doc/"):
            continue  # the RPM's copy of the docs; a local install has none there
        if line == RPM_EXEC_START:
            line = f"ExecStart={interp.python} -I -m nfd_snp run\nSyslogIdentifier=nfd-snp\n"
        elif line == "ProtectHome=yes\n" and interp.hidden_by(HOME_TREES):
            shown = ", ".join(sorted({t for _, t in interp.hidden_by(HOME_TREES)}))
            line = f"# The Python runs from {shown}: readable, never writable.\n"
            line += "ProtectHome=read-only\n"
        elif line.startswith("ReadWritePaths=") and writable:
            line += "".join(f"ReadWritePaths={path}\n" for path in writable)
        lines.append(line)
    head = (
        f"# Written by `nfd-snp install` (nfd-snp {__version__}) for {interp.python};\n"
        "# `nfd-snp uninstall` removes it.\n"
    )
    return head + "".join(lines)


@dataclass(frozen=True)
class File:
    rel: str
    data: bytes
    mode: int = 0o644
    keep: bool = False  # an existing file stays (the configuration, like %config(noreplace))


def _relative(rel) -> bool:
    """A path below the root, as the manifest records them (no /, no ..)."""
    return (
        isinstance(rel, str)
        and bool(rel)
        and not rel.startswith("/")
        and ".." not in rel.split("/")
    )


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Manifest:
    """What install wrote (path -> sha256) and the directories it created, in order."""

    files: dict = field(default_factory=dict)
    dirs: list = field(default_factory=list)
    python: str = ""
    links: dict = field(default_factory=dict)  # path -> the target it points to

    @classmethod
    def load(cls, root: Path) -> Optional["Manifest"]:
        path = root / MANIFEST
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise InstallError(f"{path}: unreadable ({exc})") from None
        if not isinstance(data, dict):
            raise InstallError(f"{path}: not a manifest of `nfd-snp install`")
        files, dirs, links = data.get("files"), data.get("dirs"), data.get("links", {})
        if (
            not isinstance(files, dict)
            or not isinstance(dirs, list)
            or not all(_relative(r) and isinstance(d, str) for r, d in files.items())
            or not all(isinstance(d, str) and _relative(d) for d in dirs)
            or not isinstance(links, dict)
            or not all(_relative(r) and isinstance(t, str) for r, t in links.items())
        ):
            raise InstallError(f"{path}: not a manifest of `nfd-snp install`")
        return cls(files, dirs, str(data.get("python", "")), links)

    def dump(self) -> bytes:
        data = {"nfd_snp_version": __version__, "python": self.python}
        data.update(files=self.files, dirs=self.dirs, links=self.links)
        return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


# -- doing it, or saying what would be done --------------------------------------------------

PAST = {"write": "wrote", "create": "created", "run": "ran", "restart": "restarted"}
PAST.update(remove="removed", stop="stopped", keep="kept")


class Actions:
    """Each step is printed as it is done ("wrote X"), or only printed ("would write X")."""

    def __init__(self, dry_run: bool, echo: Callable[[str], None]) -> None:
        self.dry_run = dry_run
        self.echo = echo
        self.planned: set = set()  # directories a dry run would have created

    def do(self, verb: str, what: str, work: Optional[Callable[[], object]] = None):
        if self.dry_run:
            self.echo(f"would {verb} {what}")
            return None
        result = work() if work is not None else None
        self.echo(f"{PAST.get(verb, verb)} {what}")
        return result

    def note(self, text: str) -> None:
        self.echo(text)


def _host(root: Path) -> bool:
    """Whether `root` is this host's own root, where commands run (not a staging tree)."""
    return os.path.realpath(root) == "/"


def _systemd(root: Path) -> bool:
    """Whether systemd manages this host (sd_booted(3)); never for a staging root."""
    return _host(root) and os.path.isdir("/run/systemd/system")


def _command(actions: Actions, argv: List[str], *, check: bool = True) -> None:
    """Run a command (or say that it would run); a failure stops install unless `check` is
    off, when it is reported and install goes on."""
    failure: list = []

    def work():
        why = _failure(argv)
        if why is not None:
            if check:
                raise InstallError(f"`{' '.join(argv)}` failed: {why}")
            failure.append(why)

    actions.do("run", " ".join(argv), work)
    if failure:
        actions.note(f"({argv[0]} failed: {failure[0]}; going on)")


def _make_dirs(root: Path, rel: str, actions: Actions, manifest: Manifest) -> None:
    """Create `rel` and its missing parents (0755), noting each in the manifest."""
    missing = []
    path = Path(rel)
    while str(path) not in ("", ".") and not (root / path).is_dir():
        if path in actions.planned:
            break
        missing.append(path)
        path = path.parent
    for path in reversed(missing):
        target = root / path
        actions.do("create", f"{target}/", lambda t=target: (os.mkdir(t), os.chmod(t, 0o755)))
        actions.planned.add(path)
        if str(path) not in manifest.dirs:
            manifest.dirs.append(str(path))


def _write(root: Path, item: File, actions: Actions, manifest: Manifest) -> bool:
    """Write `item` unless the file already holds it; whether it was (or would be) written."""
    from nfd_snp.atomic import write_atomic

    target = root / item.rel
    try:
        current = target.read_bytes()
    except FileNotFoundError:
        current = None
    except OSError as exc:
        raise InstallError(f"cannot read {target}: {exc.strerror or exc}") from None
    if current is not None and item.keep:
        if manifest.files.get(item.rel) != _digest(current):
            actions.note(f"kept {target} (exists; it is yours)")
        return False
    manifest.files[item.rel] = _digest(item.data)
    if current == item.data and stat.S_IMODE(target.stat().st_mode) == item.mode:
        return False
    _make_dirs(root, os.path.dirname(item.rel), actions, manifest)
    actions.do("write", str(target), lambda: write_atomic(target, item.data, item.mode))
    return True


def _link(root: Path, rel: str, target: str, actions: Actions, manifest: Manifest) -> None:
    """A symlink `rel` -> `target`, unless something else is in its place."""
    path = root / rel
    if os.path.islink(path) and os.readlink(path) == target:
        manifest.links[rel] = target
        return
    if os.path.lexists(path):
        ours = os.path.islink(path) and manifest.links.get(rel) == os.readlink(path)
        if not ours:  # another nfd-snp, or anything else: the admin's
            actions.note(f"kept {path} (not nfd-snp install's): run {target} instead")
            return
        actions.do("remove", str(path), lambda: os.unlink(path))
    _make_dirs(root, os.path.dirname(rel), actions, manifest)
    actions.do("write", f"{path} -> {target}", lambda: os.symlink(target, path))
    manifest.links[rel] = target


def _effective_config(root: Path) -> settings.Config:
    """The service's settings once installed: the existing file's, else the defaults."""
    return settings.load(str(root / CONFIG))


def _service_dirs(config: settings.Config) -> List[str]:
    return [os.path.dirname(path).lstrip("/") for _where, path in config.outputs()]


def install(
    root: str = "/",
    *,
    dry_run: bool = False,
    reload: bool = True,
    echo: Callable[[str], None] = print,
) -> None:
    """Install the hook, unit, tmpfiles.d, modules-load.d and configuration for this Python."""
    root_path = Path(root)
    if not dry_run and os.geteuid() != 0 and _host(root_path):
        raise InstallError("install writes to /etc and restarts libvirt: run it as root")
    if (root_path / PACKAGED_UNIT).exists():
        raise InstallError(
            f"nfd-snp is installed from a package here ({root_path / PACKAGED_UNIT}): keep "
            "to the package manager, or remove the package before `nfd-snp install`"
        )
    interp = Interpreter.current()
    check_interpreter(interp)
    actions = Actions(dry_run, echo)
    manifest = Manifest.load(root_path) or Manifest()
    manifest.python = interp.python
    config = _effective_config(root_path)
    # Directories the service writes that the shipped unit does not open for it.
    opened = (os.path.dirname(settings.Config().output), RUNTIME_DIRECTORY)
    extra = ["/" + d for d in _service_dirs(config) if "/" + d not in opened]
    files = [
        File(CONFIG, (DATA / "nfd-snp.conf").read_bytes(), keep=True),
        File(UNIT, unit_text(interp, extra).encode()),
        File(TMPFILES, (DATA / "nfd-snp.tmpfiles.conf").read_bytes()),
        File(MODULES_LOAD, (DATA / "nfd-snp.modules-load.conf").read_bytes()),
    ]
    libvirt = (root_path / LIBVIRT_CONFIG).is_dir()
    if libvirt:
        files.append(File(HOOK, hook_script.render(interp.python).encode(), 0o755))
    hook_changed = False
    for item in files:
        written = _write(root_path, item, actions, manifest)
        hook_changed |= written and item.rel == HOOK
    script = os.path.join(os.path.dirname(interp.python), "nfd-snp")
    if os.access(script, os.X_OK):
        _link(root_path, COMMAND_LINK, script, actions, manifest)
    # What systemd-tmpfiles would create (the unit's ReadWritePaths= must exist).
    for rel in _service_dirs(config):
        _make_dirs(root_path, rel, actions, manifest)
    _make_dirs(root_path, os.path.dirname(MANIFEST), actions, manifest)
    _write(root_path, File(MANIFEST, manifest.dump()), actions, Manifest())
    if not libvirt:
        actions.note(f"no libvirt here ({root_path / LIBVIRT_CONFIG} is absent): no hook")
    if not _host(root_path):
        actions.note(f"staged under {root_path}: nothing started or restarted")
        return
    if _systemd(root_path):
        _command(actions, ["systemctl", "daemon-reload"])
        _command(actions, ["systemd-tmpfiles", "--create", "/" + TMPFILES])
        _command(actions, ["systemctl", "enable", "nfd-snp.service"])
        _command(actions, ["systemctl", "restart", "nfd-snp.service"])
    else:
        _command(actions, ["modprobe", "-q", "-a", "cpuid", "msr"], check=False)
        actions.note(
            f"no systemd here: run `{interp.python} -I -m nfd_snp run` under your init system; "
            "until it runs, domains that ask for SEV-SNP are refused (node readiness unknown)"
        )
    if libvirt:
        _load_hook(root_path, actions, reload, hook_changed)


# -- libvirt loads the hook ------------------------------------------------------------------


def _running_daemons(root: Path) -> list:
    from nfd_snp.host import LiveHost
    from nfd_snp.sources import hook_loaded

    try:
        with LiveHost(root) as host:
            return list(hook_loaded.libvirt_daemons(host))
    except (OSError, RuntimeError) as exc:
        raise InstallError(f"cannot tell which libvirt daemons run: {exc}") from None


def _stale_daemons(root: Path) -> list:
    """Running libvirt daemons that started before the hook last changed."""
    try:
        changed = os.stat(root / HOOK).st_ctime
    except FileNotFoundError:
        return _running_daemons(root)  # a dry run: the hook is not there yet
    except OSError as exc:
        raise InstallError(f"cannot examine {root / HOOK}: {exc.strerror}") from None
    return [d for d in _running_daemons(root) if d.started < changed]


def _load_hook(root: Path, actions: Actions, reload: bool, hook_changed: bool) -> None:
    stale = _running_daemons(root) if actions.dry_run and hook_changed else _stale_daemons(root)
    if not stale:
        return
    names = " and ".join(sorted({d.name for d in stale}))
    if not reload:
        actions.note(
            f"libvirt has not loaded the hook: {names} started before it; restart it "
            "(`systemctl try-restart virtqemud libvirtd`, or `nfd-snp install` again); until "
            "then domains that ask for SEV-SNP start unchecked"
        )
        return
    if not actions.dry_run:
        # /proc/stat's btime has a one-second resolution: a daemon started within a second
        # of the hook's change may count as started before it (sources/hook_loaded.py).
        time.sleep(max(0.0, os.stat(root / HOOK).st_ctime + 1.05 - time.time()))
    if _systemd(root):
        _command(actions, ["systemctl", "try-restart", *(f"{d.name}.service" for d in stale)])
    else:
        for daemon in stale:
            actions.do(
                "restart",
                f"{daemon.name} (pid {daemon.pid}) so that it loads the hook",
                lambda d=daemon: restart_daemon(root, d),
            )
    if not actions.dry_run:
        left = _stale_daemons(root)
        if left:
            shown = ", ".join(f"{d.name} (pid {d.pid})" for d in left)
            actions.note(
                f"{shown} still runs without the hook (no systemd unit restarted it): "
                "restart it yourself; `nfd-snp check` shows libvirt.hook"
            )


def _proc(pid: int, name: str) -> bytes:
    with open(f"/proc/{pid}/{name}", "rb") as handle:
        return handle.read()


def restart_daemon(root: Path, daemon) -> None:
    """Stop a libvirt daemon that no init system manages and start it again as it was
    started: the same executable, arguments, environment and working directory."""
    try:
        argv = [a.decode() for a in _proc(daemon.pid, "cmdline").split(b"\0")[:-1]]
        env = dict(
            e.decode().split("=", 1) for e in _proc(daemon.pid, "environ").split(b"\0") if b"=" in e
        )
        exe = os.readlink(f"/proc/{daemon.pid}/exe")
        cwd = os.readlink(f"/proc/{daemon.pid}/cwd")
    except (OSError, UnicodeDecodeError) as exc:
        raise InstallError(f"cannot read how {daemon.name} was started: {exc}") from None
    os.kill(daemon.pid, signal.SIGTERM)
    _wait(lambda: not _same_process(daemon), STOP_TIMEOUT, f"{daemon.name} to stop")
    detached = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL}
    detached.update(stderr=subprocess.DEVNULL, env=env, cwd=cwd, executable=exe)
    if "-d" in argv[1:] or "--daemon" in argv[1:]:
        subprocess.run(argv, timeout=START_TIMEOUT, **detached)  # returns once it is up
    else:
        subprocess.Popen(argv, start_new_session=True, **detached)
    sock = root / DAEMON_SOCKETS.get(daemon.name, DAEMON_SOCKETS["libvirtd"])
    _wait(lambda: _answers(sock), START_TIMEOUT, f"{daemon.name} to answer on {sock}")


def _same_process(daemon) -> bool:
    """Whether the daemon still runs (a zombie no init reaped yet does not)."""
    try:
        stat_ = _proc(daemon.pid, "stat")
    except OSError:
        return False
    name, _, rest = stat_.rpartition(b")")
    return name.endswith(b"(" + daemon.name.encode()) and not rest.strip().startswith(b"Z")


def _answers(sock: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        try:
            conn.connect(str(sock))
        except OSError:
            return False
    return True


def _wait(done: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise InstallError(f"gave up waiting {timeout:g} s for {what}")
        time.sleep(0.1)


# -- uninstall ------------------------------------------------------------------------------


def snp_domains(root: Path) -> List[str]:
    """Persistent qemu:///system domains whose definition asks for SEV-SNP (by the files
    libvirt keeps them in; no libvirt call)."""
    found = []
    try:
        entries = sorted((root / LIBVIRT_DOMAINS).glob("*.xml"))
    except OSError:
        return found
    for path in entries:
        try:
            if b"urn:nfd-snp:1" in path.read_bytes():
                found.append(path.stem)
        except OSError:
            continue
    return found


def _lock_holder(lock: str) -> Optional[str]:
    """The pid an `nfd-snp run` wrote into its lock while it holds it; None when no one
    holds it ("" when the holder's pid is unreadable)."""
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return None
        except BlockingIOError:
            return os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    finally:
        os.close(fd)


def _stop_unmanaged_service(config: settings.Config, actions: Actions) -> None:
    """Stop an `nfd-snp run` that no systemd manages: the one holding the facts lock."""
    from nfd_snp.outputs import lock_path

    lock = lock_path(config.facts_cache)
    holder = _lock_holder(lock)
    if holder is None:
        return
    if not (holder.isascii() and holder.isdigit()):
        raise InstallError(f"an nfd-snp run holds {lock} but its pid is unknown: stop it first")

    def stop():
        os.kill(int(holder), signal.SIGTERM)
        _wait(lambda: _lock_holder(lock) is None, STOP_TIMEOUT, f"nfd-snp run ({holder}) to stop")

    actions.do("stop", f"nfd-snp run (pid {holder})", stop)


def _remove(path: Path, actions: Actions) -> None:
    if os.path.lexists(path):
        actions.do("remove", str(path), lambda: os.unlink(path))


def uninstall(
    root: str = "/", *, dry_run: bool = False, echo: Callable[[str], None] = print
) -> None:
    """Remove what install wrote and what the service wrote, and say what changes."""
    from nfd_snp.atomic import TEMP_PREFIX

    root_path = Path(root)
    if not dry_run and os.geteuid() != 0 and _host(root_path):
        raise InstallError("uninstall removes files from /etc and /run: run it as root")
    manifest = Manifest.load(root_path)
    if manifest is None:
        raise InstallError(
            f"no {root_path / MANIFEST}: nothing here was installed by `nfd-snp install` "
            "(a package's files are removed by the package manager)"
        )
    actions = Actions(dry_run, echo)
    try:
        config = _effective_config(root_path)
    except InputError as exc:
        actions.note(f"{exc}; removing the default paths")
        config = settings.Config()
    if _systemd(root_path):
        _command(actions, ["systemctl", "disable", "--now", "nfd-snp.service"], check=False)
    elif _host(root_path):
        _stop_unmanaged_service(config, actions)
    # The hook first: from here on libvirt starts SEV-SNP domains unchecked.
    for rel in sorted(manifest.files, key=lambda r: r != HOOK):
        target = root_path / rel
        try:
            current = target.read_bytes()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise InstallError(f"cannot read {target}: {exc.strerror or exc}") from None
        if _digest(current) != manifest.files[rel]:
            actions.note(f"kept {target}: changed since `nfd-snp install` wrote it")
            continue
        _remove(target, actions)
    for rel, target in manifest.links.items():
        path = root_path / rel
        if os.path.islink(path) and os.readlink(path) == target:
            _remove(path, actions)
    from nfd_snp.outputs import lock_path

    outputs = [path for _where, path in config.outputs()]
    labels = bool(config.output) and os.path.lexists(root_path / config.output.lstrip("/"))
    written = [path for output in outputs for path in (output, lock_path(output))]
    for path in written:
        _remove(root_path / path.lstrip("/"), actions)
    for path in outputs:
        directory = root_path / os.path.dirname(path).lstrip("/")
        for leftover in sorted(directory.glob(TEMP_PREFIX + "*")):
            _remove(leftover, actions)
    _remove(root_path / MANIFEST, actions)
    for rel in [*reversed(manifest.dirs), os.path.dirname(MANIFEST)]:
        target = root_path / rel
        if target.is_dir() and (dry_run or not any(target.iterdir())):
            actions.do("remove", f"{target}/", lambda t=target: t.rmdir())
    if _systemd(root_path):
        _command(actions, ["systemctl", "daemon-reload"], check=False)
    if HOOK in manifest.files:
        domains = snp_domains(root_path)
        listed = f" ({', '.join(domains)})" if domains else " (none is defined here now)"
        actions.note(f"libvirt no longer runs nfd-snp's hook: {WHAT_SNP_DOMAINS_DO}{listed}")
    if labels:
        actions.note("the node's nfd-snp labels go with the feature file")
