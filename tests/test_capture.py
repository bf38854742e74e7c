"""capture then check --host-root reproduces the live report, also through a real libvirtd."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from nfd_snp.cli import cli
from nfd_snp.host import LiveHost
from nfd_snp.sources import domcaps


def _json_check(*args):
    result = CliRunner().invoke(cli, ["check", "--json", *args])
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.output)


def _assert_same_report(live, replay):
    assert replay["snapshot"] is True and live["snapshot"] is False
    assert replay["checks"] == live["checks"]
    assert replay["verdicts"] == live["verdicts"]
    for key in live["facts"]:
        if key not in ("root", "snapshot"):
            assert replay["facts"][key] == live["facts"][key], key


def test_capture_then_replay_without_libvirt(tmp_path):
    out = tmp_path / "node"
    result = CliRunner().invoke(cli, ["capture", str(out), "--libvirt", "off"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "nfd-snp-capture.json").read_text())["domcaps"] is None
    _assert_same_report(_json_check("--libvirt", "off"), _json_check("--host-root", str(out)))


@pytest.mark.libvirtd
def test_capture_then_replay_with_libvirt(tmp_path, libvirtd):
    out = tmp_path / "node"
    assert CliRunner().invoke(cli, ["capture", str(out)]).exit_code == 0
    capture = json.loads((out / "nfd-snp-capture.json").read_text())
    assert capture["domcaps"].startswith("<domainCapabilities")
    _assert_same_report(_json_check(), _json_check("--host-root", str(out)))


@pytest.mark.libvirtd
def test_live_domain_capabilities_from_real_libvirtd(libvirtd):
    """The live code path: read-only connection refused by libvirt, read-write answers."""
    with LiveHost("/") as host:
        facts = domcaps.read(host)
    assert facts.unreadable is None, facts.unreadable
    assert facts.libvirt_present is True
    assert facts.emulator and facts.emulator.endswith("qemu-system-x86_64")
    assert facts.sev_supported is False  # no SEV on this machine
    assert facts.snp_supported is False


def test_host_without_libvirt_socket_has_no_libvirt(tmp_path):
    with LiveHost(tmp_path) as host:
        facts = domcaps.read(host)
    assert facts.libvirt_present is False and facts.unreadable is None


def test_capture_keeps_only_qemu_command_lines():
    import os

    from nfd_snp.sources import guests

    with LiveHost("/", record=True, libvirt=False) as host:
        guests.read(host)
        files = host.recording.files
    assert f"proc/{os.getpid()}/cmdline" not in files  # pytest's own arguments stay private
    assert all(guests.is_qemu(data) for rel, data in files.items() if rel.endswith("/cmdline"))


@pytest.fixture
def snp_guest():
    """A process whose command line reads as an SEV-SNP QEMU guest's."""
    import subprocess
    import time

    argv = ["qemu-system-x86_64", "-c", "import time; time.sleep(60)"]
    argv += ["-object", "sev-snp-guest,id=sev0,cbitpos=51", "-drive", "file=/srv/secret.qcow2"]
    process = subprocess.Popen(argv, executable="/usr/bin/python3")
    time.sleep(0.3)
    yield process.pid
    process.kill()
    process.wait()


@pytest.mark.parametrize("no_guests", [False, True], ids=["guests", "no-guests"])
def test_capture_keeps_guest_command_lines_unless_told(tmp_path, snp_guest, no_guests):
    out = tmp_path / "node"
    args = ["capture", str(out), "--libvirt", "off", *(["--no-guests"] if no_guests else [])]
    assert CliRunner().invoke(cli, args).exit_code == 0
    kept = out / "proc" / str(snp_guest) / "cmdline"
    guests = _json_check("--host-root", str(out))["checks"]
    (running,) = [c for c in guests if c["name"] == "guests.running"]
    if no_guests:
        assert not kept.exists()
        assert running["detail"].startswith("0 SEV-SNP and 0 SEV/SEV-ES QEMU guests running")
    else:
        assert b"/srv/secret.qcow2" in kept.read_bytes()
        assert running["detail"].startswith("1 SEV-SNP and 0 SEV/SEV-ES QEMU guests running")
