"""Diagnostics: journald priorities when stderr is the journal, plain lines elsewhere, -v/-q.

journald files a stream line that starts with `<N>` at priority N, and systemd tells a
service that its stderr is such a stream with $JOURNAL_STREAM = "<st_dev>:<st_ino>". The
commands run here as real processes whose stderr is a file; pointing $JOURNAL_STREAM at
that file's device and inode is exactly what systemd does for its stream socket.
"""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from nfd_snp import log
from nfd_snp.cli import cli
from tests.conftest import NFD_SNP, cli_runner
from tests.test_service import _args, _start, _wait_for


def _run(args, tmp_path, journal: bool, stale: bool = False, **kw):
    """Run nfd-snp with stderr in a file; (exit status, stderr lines)."""
    err = tmp_path / f"stderr{len(list(tmp_path.glob('stderr*')))}"
    with open(err, "w") as handle:
        st = os.fstat(handle.fileno())
        env = dict(os.environ)
        env.pop("JOURNAL_STREAM", None)
        if journal:
            # stale: systemd's stream, but stderr was redirected elsewhere since
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino + 1 if stale else st.st_ino}"
        proc = subprocess.run(
            [*NFD_SNP, *args], stderr=handle, stdout=subprocess.DEVNULL, env=env, timeout=60, **kw
        )
    return proc.returncode, err.read_text().splitlines()


@pytest.fixture
def broken_snapshot(tmp_path):
    root = tmp_path / "broken"
    root.mkdir()
    (root / "nfd-snp-capture.json").write_text("[1, 2")  # not JSON: an input error
    return root


def test_an_error_has_priority_err_in_the_journal(tmp_path, broken_snapshot):
    code, lines = _run(["check", "--host-root", str(broken_snapshot)], tmp_path, journal=True)
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("<3>error: ")
    assert "nfd-snp-capture.json: not valid JSON" in lines[0]


@pytest.mark.parametrize("stale", [False, True], ids=["terminal", "redirected"])
def test_plain_lines_anywhere_else(tmp_path, broken_snapshot, stale):
    code, lines = _run(
        ["check", "--host-root", str(broken_snapshot)], tmp_path, journal=stale, stale=stale
    )
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("nfd-snp: error: ")


@pytest.mark.system  # the node service as a daemon
def test_the_service_logs_each_line_at_its_priority(tmp_path):
    """`journalctl -p err` shows the service's errors; changes are notices and infos."""
    metrics = tmp_path / "metrics" / "nfd_snp.prom"
    args = _args(tmp_path, "--metrics-textfile", str(metrics), "--interval", "1", "--ttl", "60")
    proc, err = _start(args, tmp_path, journal=True)
    try:
        assert _wait_for(metrics.exists, timeout=20)
        # a directory where the metrics file was is never replaced: an error each cycle
        metrics.unlink()
        (metrics / "not-a-file").mkdir(parents=True)
        assert _wait_for(lambda: "<3>" in open(err.name).read(), timeout=20)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
    lines = open(err.name).read().splitlines()
    assert all(line[:3] in ("<3>", "<4>", "<5>", "<6>") for line in lines), lines
    errors = [line for line in lines if line.startswith("<3>")]
    assert len(errors) == 1 and f"{metrics}: it is a directory" in errors[0], lines
    assert any(line.startswith("<6>probing ") for line in lines)
    assert lines[-1] == "<6>stopped"
    assert not any("nfd-snp: " in line for line in lines)  # journald adds the identifier


def test_quiet_keeps_only_errors_and_verbose_shows_what_was_read(tmp_path):
    args = ["features", "--sample", "genoa-snp-ready", "--output", str(tmp_path / "f")]
    _, default = _run(args, tmp_path, journal=False)
    assert default == [f"nfd-snp: wrote {tmp_path / 'f'} (first)"]
    _, quiet = _run(["-q", *args[:-1], str(tmp_path / "g")], tmp_path, journal=False)
    assert quiet == [] and (tmp_path / "g").exists()
    _, verbose = _run(["-v", *args], tmp_path, journal=True)
    debug = [line for line in verbose if line.startswith("<7>debug: ")]
    assert any(line.startswith("<7>debug: cpuid: read CPUID 0x00000000") for line in debug)
    assert any("proc/cpuinfo" in line and " ms" in line for line in debug)
    assert any(line.startswith("<7>debug: checks evaluated in ") for line in debug)
    assert verbose[-1] == f"<6>{tmp_path / 'f'} is up to date"


def test_quiet_still_shows_errors(broken_snapshot):
    result = cli_runner().invoke(cli, ["-q", "check", "--host-root", str(broken_snapshot)])
    assert result.exit_code == 2
    assert result.stderr.startswith("nfd-snp: error: ")


def test_verbose_names_unreadable_sources(snapshot):
    root = snapshot(base="milan-snp-off")
    result = cli_runner().invoke(cli, ["-v", "check", "--host-root", str(root)])
    assert "debug: psp: read sev_platform_status, snp_platform_status" in result.stderr
    assert "(snp-not-initialised)" in result.stderr
    assert result.stdout.startswith("nfd-snp check: snapshot ")  # the report stays on stdout


@pytest.mark.parametrize(
    "priority, journal, line",
    [
        (log.CRIT, True, "<2>internal error: x\\ny"),
        (log.ERR, True, "<3>error: x\\ny"),
        (log.WARNING, True, "<4>warning: x\\ny"),
        (log.NOTICE, True, "<5>x\\ny"),
        (log.INFO, False, "nfd-snp: x\\ny"),
        (log.DEBUG, False, "nfd-snp: debug: x\\ny"),
    ],
)
def test_one_line_per_message(priority, journal, line):
    # a newline in a message cannot forge a second entry with another priority
    assert log.format_line(priority, "x\ny", journal) == line + "\n"
