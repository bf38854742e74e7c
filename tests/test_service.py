"""`nfd-snp run` as a real process: signals, reload, lock, start-up checks, libvirt timeouts."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import pytest
from tests.conftest import NFD_SNP, SAMPLES

pytestmark = pytest.mark.system  # each test starts the node service as a daemon


def _wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _start(args, tmp_path, env=None, journal=False):
    """`nfd-snp run` with stdout and stderr in a log file; `journal`: announced to it as the
    journal stream, as systemd does ($JOURNAL_STREAM, the file's device and inode)."""
    log = open(tmp_path / f"run{len(list(tmp_path.glob('run*.log')))}.log", "w+")
    if journal:
        st = os.fstat(log.fileno())
        env = {**(env or os.environ), "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
    proc = subprocess.Popen(
        [*NFD_SNP, "run", *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
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


def _args(tmp_path, *more):
    return [
        "--config",
        "/dev/null",
        "--host-root",
        str(SAMPLES / "genoa-snp-ready"),
        "--libvirt",
        "off",
        "--output",
        str(tmp_path / "features.d" / "nfd-snp"),
        "--facts-cache",
        str(tmp_path / "run" / "facts.json"),
        *more,
    ]


def _stop(proc, log) -> str:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    log.seek(0)
    text = log.read()
    assert "Traceback" not in text and "internal error" not in text, text
    return text


@pytest.mark.parametrize(
    "conf, args, message",
    [
        # the reproducer: every cycle used to die with an internal error
        (
            "[nfd-snp]\ninterval = 1\nttl = nan\n",
            [],
            "c.conf: ttl: must be 2..604800 seconds, not nan",
        ),
        ("[nfd-snp]\nttl = 1e9\n", [], "c.conf: ttl: must be 2..604800 seconds, not 1e+09"),
        ("", ["--interval", "inf"], "--interval: must be 1..86400 seconds, not inf"),
        ("", ["--ttl", "1e12"], "--ttl: must be 2..604800 seconds, not 1e+12"),
        ("[nfd-snp]\noutput =\n", [], "c.conf: output: is empty (a path is needed)"),
        ("[nfd-snp]\nfacts-cache =\n", [], "c.conf: facts-cache: is empty (a path is needed)"),
        ("", ["--facts-cache", ""], "--facts-cache: is empty (a path is needed)"),
        ("[nfd-snp]\ninterval = soon\n", [], "c.conf: interval: 'soon' is not a number of seconds"),
    ],
)
def test_malformed_setting_never_reaches_the_loop(tmp_path, conf, args, message):
    (tmp_path / "c.conf").write_text(conf)
    base = ["--host-root", str(SAMPLES / "genoa-snp-ready"), "--libvirt", "off"]
    for name, path in (("output", "f"), ("facts-cache", "fc.json")):
        if f"{name} =" not in conf and f"--{name}" not in args:
            base += [f"--{name}", str(tmp_path / path)]
    proc = subprocess.run(
        [*NFD_SNP, "run", "--config", "c.conf", *base, *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert proc.stderr == f"nfd-snp: error: {message}\n"
    assert sorted(os.listdir(tmp_path)) == ["c.conf"]  # nothing written, not even a temp file


def test_config_file_feeds_the_defaults_and_the_command_line_wins(tmp_path):
    """Also after SIGHUP: the reloaded file cannot take back what the command line set."""
    conf = tmp_path / "nfd-snp.conf"
    wanted, ignored = tmp_path / "cli" / "nfd-snp", tmp_path / "file" / "nfd-snp"

    def write_conf(interval):
        conf.write_text(
            f"[nfd-snp]\ninterval = {interval}\nttl = 120\nlibvirt = off\n"
            f"host-root = {SAMPLES / 'genoa-snp-ready'}\noutput = {ignored}\n"
            f"facts-cache = {tmp_path / 'run' / 'facts.json'}\n"
        )

    write_conf(30)
    proc, log = _start(["--config", str(conf), "--output", str(wanted)], tmp_path)
    try:
        assert _wait_for(wanted.exists)
        write_conf(20)
        proc.send_signal(signal.SIGHUP)
        assert _wait_for(lambda: "configuration reloaded: every 20 s" in open(log.name).read())
        text = _stop(proc, log)
    finally:
        proc.kill()
    assert "every 30 s; labels in " + str(wanted) in text  # the interval came from the file
    assert not ignored.exists()


def _caught(pid: int) -> set:
    """Signals the process has a handler for (/proc/PID/status SigCgt, bit signum - 1)."""
    with open(f"/proc/{pid}/status") as status:
        mask = next(int(line.split()[1], 16) for line in status if line.startswith("SigCgt:"))
    return {s for s in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM) if mask >> (s - 1) & 1}


def test_ready_notification_comes_after_the_handlers(tmp_path):
    """systemd (Type=notify) holds reloads back until READY=1; by then SIGHUP is handled."""
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(20)
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify")}
    proc, log = _start(_args(tmp_path, "--interval", "1", "--ttl", "60"), tmp_path, env)
    try:
        assert notify.recv(64) == b"READY=1"
        proc.send_signal(signal.SIGHUP)  # at once: a reload right after start
        assert _caught(proc.pid) == {signal.SIGHUP, signal.SIGINT, signal.SIGTERM}
        assert _wait_for((tmp_path / "features.d" / "nfd-snp").exists)
        assert proc.poll() is None
        text = _stop(proc, log)
        assert notify.recv(64) == b"STOPPING=1"
    finally:
        proc.kill()
        notify.close()
    assert "stopped" in text


def test_sighup_as_soon_as_handled_does_not_kill(tmp_path):
    proc, log = _start(_args(tmp_path, "--interval", "1", "--ttl", "60"), tmp_path)
    try:
        assert _wait_for(lambda: signal.SIGHUP in _caught(proc.pid), timeout=20)
        proc.send_signal(signal.SIGHUP)
        assert _wait_for((tmp_path / "features.d" / "nfd-snp").exists)
        assert proc.poll() is None
        _stop(proc, log)
    finally:
        proc.kill()


def test_sighup_storm_neither_recurses_nor_kills(tmp_path):
    proc, log = _start(_args(tmp_path, "--interval", "1", "--ttl", "60"), tmp_path)
    try:
        assert _wait_for((tmp_path / "features.d" / "nfd-snp").exists)
        deadline, sent = time.monotonic() + 2, 0
        while time.monotonic() < deadline:
            os.kill(proc.pid, signal.SIGHUP)
            sent += 1
        assert sent > 1000
        assert proc.poll() is None
        text = _stop(proc, log)
    finally:
        proc.kill()
    assert "RecursionError" not in text


def test_second_instance_exits_with_a_clear_message(tmp_path):
    first, log = _start(_args(tmp_path, "--interval", "1", "--ttl", "60"), tmp_path)
    try:
        assert _wait_for((tmp_path / "features.d" / "nfd-snp").exists)
        second = subprocess.run(
            [*NFD_SNP, "run", *_args(tmp_path)], capture_output=True, text=True, timeout=30
        )
        assert second.returncode == 1
        output = tmp_path / "features.d" / "nfd-snp"
        lock = tmp_path / "features.d" / ".nfd-snp.lock"
        assert second.stderr == (
            f"nfd-snp: error: another nfd-snp run (pid {first.pid}) already writes {output}; "
            f"it holds {lock}\n"
        )
        assert first.poll() is None
        _stop(first, log)
    finally:
        first.kill()
    # the lock goes with the process: the next start takes it
    again, log = _start(_args(tmp_path, "--interval", "1", "--ttl", "60"), tmp_path)
    try:
        assert _wait_for(lambda: "probing" in open(log.name).read())
        _stop(again, log)
    finally:
        again.kill()


def test_stale_temps_are_swept_from_every_directory_it_writes(tmp_path):
    dirs = [tmp_path / "features.d", tmp_path / "run", tmp_path / "metrics"]
    for d in dirs:
        d.mkdir()
        (d / ".nfd-snp-tmp.nfd-snp.4242").write_text("left by a killed writer")
        (d / ".keep").write_text("not ours")
    args = _args(tmp_path, "--metrics-textfile", str(tmp_path / "metrics" / "nfd_snp.prom"))
    proc, log = _start(args, tmp_path)
    try:
        assert _wait_for((tmp_path / "metrics" / "nfd_snp.prom").exists)
        _stop(proc, log)
    finally:
        proc.kill()
    for d in dirs:
        assert not any(n.startswith(".nfd-snp-tmp.") for n in os.listdir(d)), d
        assert (d / ".keep").exists()


def test_required_libvirt_on_a_node_without_it(snapshot):
    from nfd_snp.config import Config
    from nfd_snp.probe import probe_report

    root = snapshot(base="genoa-snp-ready", capture={"domcaps": None})
    auto = probe_report(Config(host_root=str(root), libvirt="auto")).report
    required = probe_report(Config(host_root=str(root), libvirt="required")).report
    assert auto.verdicts[2].ready.value == "yes"
    assert required.verdicts[2].ready.value == "no"
    assert "libvirt.sev_snp" in required.verdicts[2].blocking


def test_hung_libvirt_times_out(tmp_path):
    """A daemon socket that accepts and never answers: UNKNOWN after the timeout, no hang."""
    pytest.importorskip("libvirt")  # the client whose timeout this is
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
