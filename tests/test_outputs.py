"""Outputs are ours or refused; one service per output; the expiry stays within ttl.

Every file `run` and `features` write (feature file, facts cache, metrics textfile, and the
lock beside each) is absent or a regular file, distinct from the others, and named so the
kernel takes it, or the command stops at start: exit 2, one line, nothing touched. Devices
are made with mknod in the test's own directory (root), never the machine's /dev/null.
"""

from __future__ import annotations

import datetime
import os
import re
import signal
import stat
import subprocess
import time

import pytest

from nfd_snp.cli import cli
from tests.conftest import NFD_SNP, SAMPLES, cli_runner, need
from tests.test_service import _start, _stop, _wait_for

SAMPLE = str(SAMPLES / "genoa-snp-ready")


def _null_device(path):
    """A character device node 1:3 (what /dev/null is) at `path`: root only."""
    need(os.geteuid() == 0, "device nodes are made by root")
    os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    return path


def _service(tmp_path, *args) -> list:
    """Arguments of `run` on the sample node: `args`, and a feature file and facts cache in
    `tmp_path` unless `args` name their own."""
    base = ["--config", "/dev/null", "--host-root", SAMPLE, "--libvirt", "off"]
    if "--output" not in args:
        base += ["--output", str(tmp_path / "features.d" / "nfd-snp")]
    if "--facts-cache" not in args:
        base += ["--facts-cache", str(tmp_path / "run" / "facts.json")]
    return [*base, *args]


def _run(tmp_path, *args, timeout=30):
    """`nfd-snp run` that must stop at start: (status, stderr)."""
    proc = subprocess.run(
        [*NFD_SNP, "run", *_service(tmp_path, *args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return proc.returncode, proc.stderr


def _one_error_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("nfd-snp: error: "), stderr
    return lines[0]


@pytest.mark.parametrize("option", ["--output", "--facts-cache", "--metrics-textfile"])
def test_a_device_is_never_replaced(tmp_path, option):
    """Finding: `nfd-snp run -o /dev/null` replaced the machine's /dev/null with a file."""
    null = _null_device(tmp_path / "null")
    status, stderr = _run(tmp_path, option, str(null))
    assert status == 2
    line = _one_error_line(stderr)
    assert f"{null} is a character device; nfd-snp writes only regular files" in line
    if option == "--output":
        assert line.endswith("; --output none writes no feature file")
    st = os.lstat(null)
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)


@pytest.mark.parametrize("option", ["--output", "--facts-cache", "--metrics-textfile"])
def test_a_fifo_is_refused_at_once(tmp_path, option):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    status, stderr = _run(tmp_path, option, str(fifo), timeout=20)
    assert status == 2 and f"{fifo} is a FIFO" in _one_error_line(stderr)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_features_into_a_fifo_does_not_hang(tmp_path):
    """Finding: `features -o FIFO` blocked for ever."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    proc = subprocess.run(
        [*NFD_SNP, "features", "--host-root", SAMPLE, "--libvirt", "off", "-o", str(fifo)],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert proc.returncode == 2 and f"{fifo} is a FIFO" in _one_error_line(proc.stderr)


def test_a_symlink_is_refused_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    link = tmp_path / "nfd-snp"
    link.symlink_to(victim)
    status, stderr = _run(tmp_path, "--output", str(link))
    assert status == 2 and f"{link} is a symbolic link" in _one_error_line(stderr)
    assert victim.read_text() == "precious" and link.is_symlink()


def test_a_fifo_at_a_lock_is_refused(tmp_path):
    """Finding: a FIFO at the facts cache's lock was an internal error."""
    (tmp_path / "run").mkdir()
    lock = tmp_path / "run" / ".facts.json.lock"
    os.mkfifo(lock)
    status, stderr = _run(tmp_path)
    assert status == 2
    assert f"the lock of facts-cache: {lock} is a FIFO" in _one_error_line(stderr)


def test_a_name_too_long_for_the_kernel_is_refused_at_start(tmp_path):
    """Finding: a 5,000-character output path was accepted, and every cycle then failed."""
    long_path = str(tmp_path / ("x" * 5000))
    status, stderr = _run(tmp_path, "--output", long_path)
    assert status == 2
    line = _one_error_line(stderr)
    assert "File name too long" in line and len(line) < 400  # the path is cut short
    assert os.listdir(tmp_path) == []
    status, stderr = _run(tmp_path, "--output", str(tmp_path / "d" / ("y" * 250)))
    assert status == 2 and "File name too long" in stderr  # its lock's name would be


def test_a_directory_that_cannot_be_made_is_refused_at_start(tmp_path):
    (tmp_path / "file").write_text("")
    status, stderr = _run(tmp_path, "--output", str(tmp_path / "file" / "features.d" / "x"))
    assert status == 2
    assert f"cannot be written: {tmp_path / 'file'} is not a directory" in stderr
    assert sorted(os.listdir(tmp_path)) == ["file"]


@pytest.mark.parametrize("how", ["same", "spelled-differently", "hard-link", "the-lock"])
def test_two_outputs_are_never_one_file(tmp_path, how):
    """Finding: output, facts cache and metrics could name one file: the labels vanished, or
    the facts became invalid and the hook refused every SNP VM."""
    (tmp_path / "d").mkdir()
    facts = tmp_path / "d" / "facts.json"
    output = {
        "same": facts,
        "spelled-differently": tmp_path / "d" / ".." / "d" / "facts.json",
        "hard-link": tmp_path / "d" / "linked",
        "the-lock": tmp_path / "d" / ".facts.json.lock",
    }[how]
    if how == "hard-link":
        facts.write_text("")
        os.link(facts, output)
    status, stderr = _run(tmp_path, "--output", str(output), "--facts-cache", str(facts))
    assert status == 2
    assert "each file nfd-snp writes needs its own path" in _one_error_line(stderr)


def test_metrics_and_output_must_differ(tmp_path):
    same = tmp_path / "m.prom"
    status, stderr = _run(tmp_path, "--output", str(same), "--metrics-textfile", str(same))
    assert status == 2 and "is the same file as output" in stderr


def test_output_none_runs_without_a_feature_file(tmp_path):
    """`--output none`: the service writes the facts cache (and metrics), no feature file."""
    facts = tmp_path / "run" / "facts.json"
    metrics = tmp_path / "m" / "nfd_snp.prom"
    args = ["--output", "none", "--facts-cache", str(facts), "--metrics-textfile", str(metrics)]
    proc, log = _start(_service(tmp_path, *args), tmp_path)
    try:
        assert _wait_for(metrics.exists)
        text = _stop(proc, log)
    finally:
        proc.kill()
    assert facts.exists() and not (tmp_path / "none").exists()
    assert "labels in no feature file (output none)" in text
    assert "nfd_snp_labels_expiry_timestamp_seconds" not in metrics.read_text()


def test_output_none_and_dash_where_they_mean_nothing(tmp_path):
    result = cli_runner().invoke(cli, ["features", "--sample", "genoa-snp-ready", "-o", "none"])
    assert result.exit_code == 2 and "'-' prints the file" in result.stderr
    status, stderr = _run(tmp_path, "--output", "-")
    assert status == 2 and "'-' prints the feature file for `features`" in stderr
    assert not (tmp_path / "-").exists()


def test_help_and_docs_name_the_switch(tmp_path):
    from tests.conftest import REPO

    result = cli_runner().invoke(cli, ["run", "--help"])
    assert "'none' for no feature file" in " ".join(result.stdout.split())
    assert "output none" in (REPO / "docs" / "service.md").read_text()
    assert "none" in (REPO / "packaging" / "nfd-snp.conf").read_text().split("output =")[0]


def _expiry(path) -> datetime.datetime:
    stamp = re.search(r"^# \+expiry-time=(\S+)$", path.read_text(), re.M).group(1)
    return datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.timezone.utc
    )


def test_an_expiry_beyond_ttl_is_brought_back(tmp_path):
    """Finding: an expiry edited to 2099 (or left by a clock stepped back) stayed, and the
    labels would outlive a dead service by years."""
    out = tmp_path / "nfd-snp"
    args = ["features", "--sample", "genoa-snp-ready", "--ttl", "600", "-o", str(out)]
    assert cli_runner().invoke(cli, args).exit_code == 0
    text = out.read_text()
    out.write_text(re.sub(r"expiry-time=\d{4}", "expiry-time=2099", text))
    result = cli_runner().invoke(cli, args)
    assert result.exit_code == 0 and "(expiry too far ahead)" in result.stderr
    left = (_expiry(out) - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
    assert 500 < left <= 600
    again = cli_runner().invoke(cli, args)
    assert "up to date" in again.stderr  # within ttl: left alone


@pytest.mark.parametrize("shared", ["output", "metrics-textfile"])
def test_one_service_per_output(tmp_path, shared):
    """Finding: the lock covered the facts cache only; two services with different caches on
    one feature file flipped the SNP label every cycle."""
    first_args = _service(
        tmp_path,
        "--output",
        str(tmp_path / "a" / "nfd-snp"),
        "--facts-cache",
        str(tmp_path / "a" / "facts.json"),
        "--metrics-textfile",
        str(tmp_path / "m" / "nfd_snp.prom"),
    )
    first, log = _start(first_args, tmp_path)
    try:
        assert _wait_for((tmp_path / "m" / "nfd_snp.prom").exists)
        output = tmp_path / ("a" if shared == "output" else "b") / "nfd-snp"
        metrics = tmp_path / ("m" if shared == "metrics-textfile" else "n") / "nfd_snp.prom"
        status, stderr = _run(
            tmp_path,
            "--output",
            str(output),
            "--facts-cache",
            str(tmp_path / "b" / "facts.json"),
            "--metrics-textfile",
            str(metrics),
        )
        shared_file = output if shared == "output" else metrics
        assert status == 1
        assert f"another nfd-snp run (pid {first.pid}) already writes {shared_file};" in stderr
        assert not (tmp_path / "b" / "facts.json").exists()
        assert first.poll() is None
        _stop(first, log)
    finally:
        first.kill()


def _stops_on_sigterm_within(proc, seconds: float) -> bool:
    """SIGTERM to the service: it exits 0 within `seconds`."""
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=5) == 0 and time.monotonic() - started < seconds


def test_sigterm_ends_a_service_stuck_on_a_fifo_config_after_sighup(tmp_path):
    """Finding: a FIFO as --config blocked the reload for ever and SIGTERM went unanswered.
    Now the reload is refused at once, the service keeps running, and SIGTERM stops it."""
    conf = tmp_path / "nfd-snp.conf"
    conf.write_text("[nfd-snp]\ninterval = 1\nttl = 60\n")
    out = tmp_path / "features.d" / "nfd-snp"
    args = ["--config", str(conf), "--host-root", SAMPLE, "--libvirt", "off", "--output"]
    proc, log = _start(
        [*args, str(out), "--facts-cache", str(tmp_path / "run" / "facts.json")], tmp_path
    )
    try:
        assert _wait_for(out.exists)
        conf.unlink()
        os.mkfifo(conf)
        proc.send_signal(signal.SIGHUP)
        assert _wait_for(lambda: "reload failed" in open(log.name).read())
        assert proc.poll() is None
        assert _stops_on_sigterm_within(proc, 1.5)
    finally:
        proc.kill()
    text = open(log.name).read()
    assert f"{conf}: is a FIFO, not a configuration file" in text and "Traceback" not in text


def test_sigterm_interrupts_a_cycle_that_waits(tmp_path):
    """A cycle waiting in the kernel (here: a libvirt socket that never answers, with a
    long timeout) still ends within a second of SIGTERM."""
    import socket

    pytest.importorskip("libvirt")  # the client that waits
    root = tmp_path / "host"
    (root / "run" / "libvirt").mkdir(parents=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(root / "run" / "libvirt" / "libvirt-sock-ro"))
    server.listen(4)
    out = tmp_path / "features.d" / "nfd-snp"
    proc, log = _start(
        [
            "--config",
            "/dev/null",
            "--host-root",
            str(root),
            "--libvirt-timeout",
            "300",
            "--output",
            str(out),
            "--facts-cache",
            str(tmp_path / "run" / "facts.json"),
        ],
        tmp_path,
    )
    try:
        assert _wait_for(lambda: "probing" in open(log.name).read())
        time.sleep(0.3)  # inside the cycle, waiting for libvirt
        assert _stops_on_sigterm_within(proc, 1.0)
    finally:
        proc.kill()
        server.close()
    assert not out.exists()  # the cycle never got to write
    assert not [n for n in os.listdir(tmp_path / "features.d") if n.startswith(".nfd-snp-tmp")]
