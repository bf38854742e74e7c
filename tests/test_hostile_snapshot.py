"""A snapshot (a support bundle) is untrusted: it is read only below its root, only its
regular files are opened, and a live root reads its devices only when they are devices.

The attacks are the ones a bundle can carry: a link to a secret of the machine that reads
it, a link that climbs out with '..', a device node or a FIFO where a file belongs. inotify
(IN_OPEN) tells whether anything opened a planted node at all.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import stat
import struct
import subprocess
import sys

import pytest

from nfd_snp import paths
from nfd_snp.cli import cli
from nfd_snp.confined import BENEATH, IN_ROOT, Root
from nfd_snp.host import LiveHost, open_host
from nfd_snp.sources import kernel
from tests.conftest import SAMPLES, cli_runner, need, probe_root

SECRET = "TOPSECRET-6.6.6"
IN_OPEN = 0x20


class Opens:
    """inotify(7) IN_OPEN on some paths: whether anything opened them (O_PATH does not)."""

    def __init__(self, *watched) -> None:
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        need(self.fd >= 0, "inotify is not available")
        for path in watched:
            if self.libc.inotify_add_watch(self.fd, os.fsencode(path), IN_OPEN) < 0:
                raise OSError(ctypes.get_errno(), f"inotify_add_watch {path}")

    def count(self) -> int:
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return 0
        events, offset = 0, 0
        while offset < len(data):
            _wd, mask, _cookie, length = struct.unpack_from("iIII", data, offset)
            events += bool(mask & IN_OPEN)
            offset += 16 + length
        return events

    def close(self) -> None:
        os.close(self.fd)


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "secret"
    path.write_text(SECRET + "\n")
    return path


def _check_json(root) -> tuple:
    result = cli_runner().invoke(cli, ["check", "--json", "--host-root", str(root)])
    return result, json.loads(result.stdout) if result.stdout.startswith("{") else None


@pytest.mark.parametrize("how", ["absolute", "climbing"])
def test_a_link_to_a_secret_is_not_read(snapshot, secret, how):
    """Finding: `ln -s /root/secret SNAP/proc/sys/kernel/osrelease` printed the secret as
    the kernel release."""
    root = snapshot(
        base="genoa-snp-ready", files={paths.KERNEL_RELEASE: None, paths.PROC_CPUINFO: None}
    )
    for rel in (paths.KERNEL_RELEASE, paths.PROC_CPUINFO):
        link = root / rel
        link.symlink_to(secret if how == "absolute" else os.path.relpath(secret, link.parent))
    result, report = _check_json(root)
    assert result.exit_code in (0, 1), result.output
    assert SECRET not in result.stdout and SECRET not in result.stderr
    assert report["facts"]["kernel"]["release"] is None
    why = "leaves the root" if how == "absolute" else "'..' leads above the root"
    assert why in report["facts"]["kernel"]["unreadable"]["detail"]
    table = cli_runner().invoke(cli, ["check", "--host-root", str(root)])
    assert SECRET not in table.output


def test_a_relative_link_inside_the_snapshot_resolves_as_sysfs_links_do(snapshot):
    """sysfs is made of relative links (/sys/bus/pci/devices/<BDF> -> ../../../devices/..);
    one that stays inside the snapshot is read like the kernel would read it."""
    root = snapshot(
        base="genoa-snp-ready",
        files={paths.KERNEL_RELEASE: None, "sys/devices/release/value": "6.99.0-inside\n"},
    )
    (root / paths.KERNEL_RELEASE).symlink_to("../../../sys/devices/release/value")
    (root / "sys" / "bus" / "pci" / "devices").mkdir(parents=True)
    (root / "sys/bus/pci/devices/0000:00:01.0").symlink_to("../../../devices/release")
    assert probe_root(root).kernel.release == "6.99.0-inside"
    with open_host(root) as host:
        assert host.read("sys/bus/pci/devices/0000:00:01.0/value") == b"6.99.0-inside\n"
        assert host.listdir("sys/bus/pci/devices/0000:00:01.0") == ["value"]


def test_a_link_loop_is_unreadable_not_a_hang(snapshot):
    root = snapshot(base="genoa-snp-ready", files={paths.PROC_CPUINFO: None})
    (root / paths.PROC_CPUINFO).symlink_to("cpuinfo")
    facts = probe_root(root)
    assert facts.kernel.flags is None
    assert "too many levels of symbolic links" in facts.kernel.unreadable.detail


def test_a_capture_file_that_is_a_link_is_refused(snapshot, secret):
    root = snapshot(base="genoa-snp-ready")
    (root / paths.CAPTURE_FILE).unlink()
    (root / paths.CAPTURE_FILE).symlink_to(secret)
    result, _ = _check_json(root)
    assert result.exit_code == 2
    assert "symbolic link to" in result.stderr and SECRET not in result.stderr


@pytest.mark.parametrize("node", ["fifo", "device", "link-to-device"])
def test_a_node_where_a_file_belongs_is_never_opened(snapshot, tmp_path, node):
    """Finding: entries of a snapshot were opened before their type was checked; opening some
    devices has side effects (/dev/watchdog arms a reboot). /dev/null stands in for them."""
    root = snapshot(base="genoa-snp-ready", files={"proc/cpuinfo": None})
    target = root / "proc" / "cpuinfo"
    if node == "fifo":
        os.mkfifo(target)
        planted = target
    else:
        need(os.geteuid() == 0, "device nodes are made by root")
        planted = root / "dev" / "null"
        os.mknod(planted, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        if node == "device":
            planted.rename(target)
            planted = target
        else:
            target.symlink_to("../dev/null")
    opens = Opens(planted)
    try:
        facts = probe_root(root)
        assert opens.count() == 0, "a node of the snapshot was opened"
    finally:
        opens.close()
    kind = "a FIFO" if node == "fifo" else "a character device"
    assert facts.kernel.unreadable.detail.endswith(f"{kind}, not a regular file")


def test_a_process_table_linked_out_of_the_snapshot_is_not_read(snapshot, tmp_path):
    """The process table is read below the root too: a snapshot's proc/<pid> linking to this
    machine's /proc/<pid> does not make a real virtqemud count."""
    need(os.geteuid() == 0, "the daemons libvirt runs are root's; so must be this one")
    exe = tmp_path / "virtqemud"
    shutil.copy(shutil.which("sleep"), exe)
    daemon = subprocess.Popen([str(exe), "60"])
    try:
        hook = {paths.LIBVIRT_QEMU_HOOK: {"mode": 0o100755, "ctime": 4_000_000_000.0}}
        root = snapshot(
            base="genoa-snp-ready",
            capture={"stat": hook},
            files={"proc/stat": "btime 1\n", paths.LIBVIRT_QEMU_HOOK: "#!/bin/sh\n"},
        )
        (root / "proc" / str(daemon.pid)).symlink_to(f"/proc/{daemon.pid}")
        facts = probe_root(root)
    finally:
        daemon.kill()
        daemon.wait()
    assert facts.hook.daemons == ()


def test_capture_copies_no_secret_through_a_link_of_a_live_root(tmp_path, secret):
    """A live root resolves an absolute link at its own root (as /host does in a container),
    so `capture` of a root holding a link to a secret of this machine copies nothing of it."""
    root = tmp_path / "host"
    (root / "proc" / "sys" / "kernel").mkdir(parents=True)
    (root / paths.KERNEL_RELEASE).symlink_to(secret)
    with LiveHost(root, record=True, libvirt=False) as host:
        facts = kernel.read(host)
        recorded = dict(host.recording.files)
    assert facts.release is None and SECRET.encode() not in b"".join(recorded.values())


@pytest.mark.parametrize("mode", [BENEATH, IN_ROOT])
def test_dot_dot_never_climbs_out(tmp_path, mode):
    (tmp_path / "root" / "a").mkdir(parents=True)
    (tmp_path / "outside").write_text("x")
    with Root(tmp_path / "root", mode) as root:
        with pytest.raises(OSError) as err:
            root.open("a/../../outside")
    assert err.value.errno == (18 if mode == BENEATH else 2)  # EXDEV, or ENOENT at the root


def test_a_fifo_in_a_snapshot_cannot_block_the_probe(snapshot):
    """The whole report comes back with the FIFO's file unreadable (a subprocess: a hang
    here would otherwise hang the suite)."""
    root = snapshot(base="genoa-snp-ready", files={paths.PROC_CPUINFO: None})
    os.mkfifo(root / paths.PROC_CPUINFO)
    code = f"from tests.conftest import probe_root; print(probe_root({str(root)!r}).kernel)"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert "a FIFO, not a regular file" in proc.stdout


def test_samples_replay_unchanged():
    for sample in sorted(p.name for p in SAMPLES.iterdir()):
        assert probe_root(SAMPLES / sample).kernel.release, sample


def test_a_boot_time_of_5000_digits_is_unreadable_not_a_crash(snapshot):
    hook = {paths.LIBVIRT_QEMU_HOOK: {"mode": 0o100755, "ctime": 4_000_000_000.0}}
    root = snapshot(
        base="genoa-snp-ready",
        capture={"stat": hook},
        files={"proc/stat": "btime " + "9" * 5000 + "\n", paths.LIBVIRT_QEMU_HOOK: "#!/bin/sh\n"},
    )
    facts = probe_root(root)
    assert facts.hook.daemons_unreadable.reason.code == "processes-unreadable"


@pytest.mark.parametrize(
    "plant",
    ["iommu-group", "ciphertext-hiding", "proc-pid", "domcaps-number", "misc-cgroup"],
)
def test_unicode_digits_are_not_numbers(snapshot, plant):
    """str.isdigit() takes '²' for a digit and int() then raises: a hostile snapshot with one
    in a sysfs name or value is odd input (unread, or skipped), never exit 70."""
    from click.testing import CliRunner

    from nfd_snp.cli import cli
    from tests import sysfs

    capture = None
    root = snapshot(base="genoa-snp-ready")
    if plant == "iommu-group":
        sysfs.pci_device(root, "0000:21:00.0")
        (root / "sys/kernel/iommu_groups/\u00b2/devices").mkdir(parents=True)
    elif plant == "ciphertext-hiding":
        (root / "sys/module/kvm_amd/parameters/ciphertext_hiding_asids").write_text("\u00b2\n")
    elif plant == "proc-pid":
        cmdline = (root / "proc/4242/cmdline").read_bytes()
        (root / "proc/\u00b2").mkdir()
        (root / "proc/\u00b2/cmdline").write_bytes(cmdline)
    elif plant == "domcaps-number":
        data = json.loads((root / "nfd-snp-capture.json").read_text())
        capture = data["domcaps"].replace("<maxGuests>", "<maxGuests>\u00b2", 1)
        data["domcaps"] = capture
        (root / "nfd-snp-capture.json").write_text(json.dumps(data))
    else:
        (root / "sys/fs/cgroup/misc.capacity").write_text("sev \u00b2\nsev_es 509\n")
    for args in (["check", "--json"], ["features", "-o", "-"]):
        result = CliRunner().invoke(cli, [*args, "--host-root", str(root)])
        assert result.exit_code in (0, 1), result.output
        assert "Traceback" not in result.output
