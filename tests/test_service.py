"""`nfd-snp run` as a real process (signals, reload), its configuration, libvirt timeouts."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from nfd_snp import config as config_mod
from nfd_snp.cli import cli
from nfd_snp.errors import InputError
from tests.conftest import SAMPLES


def _wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _start(args, tmp_path):
    exe = os.path.join(os.path.dirname(sys.executable), "nfd-snp")
    log = open(tmp_path / "run.log", "w+")
    proc = subprocess.Popen(
        [exe, "run", *args], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    return proc, log


def test_sigterm_exits_0_within_a_second(tmp_path):
    out = tmp_path / "features.d" / "nfd-snp"
    proc, log = _start(
        [
            "--config",
            "/dev/null",
            "--host-root",
            str(SAMPLES / "genoa-snp-ready"),
            "--interval",
            "30",
            "--ttl",
            "120",
            "--output",
            str(out),
            "--facts-cache",
            str(tmp_path / "facts.json"),
            "--libvirt",
            "off",
        ],
        tmp_path,
    )
    try:
        assert _wait_for(out.exists), "the service wrote no feature file"
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        assert time.monotonic() - started < 1.0
    finally:
        proc.kill()
    log.seek(0)
    text = log.read()
    assert "probing" in text and "stopped" in text and "Traceback" not in text
    assert "sev-snp.node.kubevirt.io/enabled=true" in text


def test_sighup_rereads_the_configuration(tmp_path):
    first, second = tmp_path / "a" / "nfd-snp", tmp_path / "b" / "nfd-snp"
    conf = tmp_path / "nfd-snp.conf"

    def write_conf(output):
        conf.write_text(
            "[nfd-snp]\ninterval = 1\nttl = 60\nlibvirt = off\n"
            f"host-root = {SAMPLES / 'milan-snp-off'}\n"
            f"output = {output}\nfacts-cache = {tmp_path / 'facts.json'}\n"
        )

    write_conf(first)
    proc, log = _start(["--config", str(conf)], tmp_path)
    try:
        assert _wait_for(first.exists)
        write_conf(second)
        proc.send_signal(signal.SIGHUP)
        assert _wait_for(second.exists), "SIGHUP did not switch to the new output"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=5) == 0
    finally:
        proc.kill()
    log.seek(0)
    assert "configuration reloaded" in log.read()


def test_bad_config_at_start_is_exit_2(tmp_path):
    conf = tmp_path / "bad.conf"
    conf.write_text("[nfd-snp]\ninterval = soon\n")
    result = CliRunner().invoke(cli, ["run", "--config", str(conf)])
    assert result.exit_code == 2
    assert "interval = 'soon' is not a number" in result.output


@pytest.mark.parametrize(
    "text, message",
    [
        ("[nfd-snp]\nbogus = 1\n", "unknown setting 'bogus'"),
        ("[other]\nx = 1\n", "unknown section [other]"),
        ("[nfd-snp]\ninterval = 60\nttl = 90\n", "at least twice the interval"),
        ("[nfd-snp]\nlibvirt = maybe\n", "libvirt must be one of auto, required, off"),
        ("no section\n", "File contains no section headers"),
        ("[nfd-snp]\ninterval = 0\n", "interval must be 1..86400"),
    ],
)
def test_config_errors_name_the_problem(tmp_path, text, message):
    path = tmp_path / "nfd-snp.conf"
    path.write_text(text)
    with pytest.raises(InputError) as exc:
        config_mod.load(str(path))
    assert message in str(exc.value) and str(path) in str(exc.value)


def test_config_file_and_overrides(tmp_path):
    path = tmp_path / "nfd-snp.conf"
    path.write_text("[nfd-snp]\ninterval = 30 ; seconds\nttl = 300\nmetrics-textfile =\n")
    loaded = config_mod.load(str(path))
    assert (loaded.interval, loaded.ttl, loaded.metrics_textfile) == (30.0, 300.0, None)
    assert config_mod.override(loaded, interval=10.0, output=None).interval == 10.0
    assert config_mod.load(str(tmp_path / "absent.conf")) == config_mod.Config()
    with pytest.raises(InputError):
        config_mod.load(str(tmp_path / "absent.conf"), required=True)


def test_required_libvirt_on_a_node_without_it(snapshot):
    from nfd_snp.config import Config
    from nfd_snp.service import probe_report

    root = snapshot(base="genoa-snp-ready", capture={"domcaps": None})
    auto = probe_report(Config(host_root=str(root), libvirt="auto"))
    required = probe_report(Config(host_root=str(root), libvirt="required"))
    assert auto.verdicts[2].ready.value == "yes"
    assert required.verdicts[2].ready.value == "no"
    assert "libvirt.sev_snp" in required.verdicts[2].blocking


def test_hung_libvirt_times_out(tmp_path):
    """A daemon socket that accepts and never answers: UNKNOWN after the timeout, no hang."""
    from nfd_snp import libvirtconn
    from nfd_snp.host import LiveHost
    from nfd_snp.reasons import Reason
    from nfd_snp.sources import domcaps

    (tmp_path / "run" / "libvirt").mkdir(parents=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(tmp_path / "run" / "libvirt" / "libvirt-sock-ro"))
    server.listen(4)
    try:
        started = time.monotonic()
        with LiveHost(tmp_path, libvirt_timeout=0.5) as host:
            facts = domcaps.read(host)
        assert time.monotonic() - started < 3
        assert facts.unreadable.reason is Reason.LIBVIRT_TIMEOUT
        # while that query still waits, the next cycle does not start another thread
        with LiveHost(tmp_path, libvirt_timeout=0.5) as host:
            again = domcaps.read(host)
        assert "still waiting" in again.unreadable.detail
    finally:
        server.close()
        if libvirtconn._waiting is not None:
            libvirtconn._waiting.join(10)
