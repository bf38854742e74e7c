"""node-exporter end to end: Debian's prometheus-node-exporter serves, through its textfile
collector, the file a real `nfd-snp run` writes; scraped over loopback like Prometheus does.

The exporter runs with only the textfile collector, on 127.0.0.1 and a free port, so it
neither sees nor disturbs the machine's own exporter.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

from tests.conftest import SAMPLES, need
from tests.test_service import _args, _start, _wait_for
from tests.test_service import _stop as _stop_service
from tests.textfiles import promtool, samples_of, value

pytest.importorskip("prometheus_client.parser")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode()
    except OSError:
        return None


def _stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait(timeout=10)


class Exporter:
    """A running node-exporter: its /metrics URL and its textfile directory."""

    def __init__(self, url: str, directory):
        self.url, self.directory = url, directory

    def scrape(self) -> dict:
        text = _get(self.url)
        assert text is not None, f"no answer from {self.url}"
        return samples_of(text)


@pytest.fixture
def node_exporter(tmp_path):
    exe = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
    need(exe is not None, "node-exporter is not installed (Debian: prometheus-node-exporter)")
    directory = tmp_path / "textfile"
    directory.mkdir()
    log = open(tmp_path / "node-exporter.log", "w+")
    for _attempt in range(3):  # another process may take the free port first
        url = f"http://127.0.0.1:{_free_port()}/metrics"
        proc = subprocess.Popen(
            [
                exe,
                f"--web.listen-address={url[7:-8]}",
                "--collector.disable-defaults",
                "--collector.textfile",
                f"--collector.textfile.directory={directory}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while proc.poll() is None and _get(url) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if proc.poll() is None and _get(url) is not None:
            break
        _stop(proc)
    else:
        log.seek(0)
        pytest.fail(f"node-exporter did not start: {log.read()[-500:]}")
    try:
        yield Exporter(url, directory)
    finally:
        _stop(proc)
        log.close()


def test_node_exporter_serves_what_nfd_snp_run_writes(node_exporter, tmp_path):
    textfile = node_exporter.directory / "nfd-snp.prom"
    # The service launcher of test_service; the later --host-root wins.
    milan = str(SAMPLES / "milan-snp-off")
    args = _args(tmp_path, "--host-root", milan, "--metrics-textfile", str(textfile))
    run, log = _start(args, tmp_path)
    try:
        assert _wait_for(textfile.exists, timeout=20), "nfd-snp run wrote no textfile"
        scraped = node_exporter.scrape()
    finally:
        try:
            _stop_service(run, log)  # exits 0 on SIGTERM, no traceback in its log
        finally:
            run.kill()  # whatever happened, no service outlives the test
            run.wait()
    written = samples_of(textfile.read_text())
    assert value(scraped, "node_textfile_scrape_error") == 0
    # Every series of the file, with its value, and nothing of it lost on the way.
    assert {k: v for k, v in scraped.items() if k[0].startswith("nfd_snp_")} == written
    assert value(scraped, "nfd_snp_readiness", guest="sev-snp", state="not_ready") == 1
    assert value(scraped, "nfd_snp_readiness", guest="sev-es", state="ready") == 1
    assert value(scraped, "nfd_snp_blocked_by", guest="sev-snp", check="bios.rmp") == 1
    assert value(scraped, "nfd_snp_blocked_by", guest="sev-snp", check="cpu.snp") == 0
    probed = value(scraped, "nfd_snp_last_probe_timestamp_seconds")
    assert abs(probed - time.time()) < 60
    # node-exporter reports the file's age, which NfdSnpNotRefreshing's probe time mirrors.
    assert value(scraped, "node_textfile_mtime_seconds", file=str(textfile)) is not None
    proc = promtool("check", "metrics", stdin=textfile.read_text())
    assert proc.returncode == 0 and not (proc.stdout + proc.stderr).strip(), proc.stdout


def test_a_file_node_exporter_cannot_parse_drops_its_series(node_exporter):
    """What NfdSnpMetricsMissing catches: the collector says scrape_error 1 and serves none of
    the file's series."""
    (node_exporter.directory / "nfd-snp.prom").write_text("nfd_snp_readiness{guest= 1\n")
    scraped = node_exporter.scrape()
    assert value(scraped, "node_textfile_scrape_error") == 1
    assert not [k for k in scraped if k[0].startswith("nfd_snp_")]
