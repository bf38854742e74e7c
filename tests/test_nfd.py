"""Feature files as NFD reads them: labels per sample, expiry, no-label, validity, churn."""

from __future__ import annotations

import dataclasses
import datetime
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from nfd_snp import nfd
from nfd_snp.checks import Guest, Readiness, Verdict, evaluate
from nfd_snp.cli import cli
from nfd_snp.config import Config
from nfd_snp.log import DEBUG
from nfd_snp.service import Service
from tests import nfdlocal
from tests.conftest import REPO, SAMPLES, probe_root

UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 11, 26, 12, 0, tzinfo=UTC)

EXPECTED_LABELS = {
    "genoa-snp-ready": {
        "sev.node.kubevirt.io/enabled": "true",
        "sev-es.node.kubevirt.io/enabled": "true",
        "sev-snp.node.kubevirt.io/enabled": "true",
        "sev-snp.node.kubevirt.io/api-version": "1.55",
        "sev-snp.node.kubevirt.io/build-id": "37",
        "sev-snp.node.kubevirt.io/tcb-bootloader": "9",
        "sev-snp.node.kubevirt.io/tcb-tee": "0",
        "sev-snp.node.kubevirt.io/tcb-snp": "23",
        "sev-snp.node.kubevirt.io/tcb-microcode": "84",
    },
    "milan-snp-off": {
        "sev.node.kubevirt.io/enabled": "true",
        "sev-es.node.kubevirt.io/enabled": "true",
    },
    "rome-sev-only": {"sev.node.kubevirt.io/enabled": "true"},
    "intel": {},
}
FEATURES_ONLY = {
    "genoa-snp-ready": {
        "sev.node.kubevirt.io/asids": "497",
        "sev-es.node.kubevirt.io/asids": "509",
        "sev-snp.node.kubevirt.io/asids": "509",
        "sev.node.kubevirt.io/cbitpos": "51",
        "sev.node.kubevirt.io/reduced-phys-bits": "1",
    },
    "rome-sev-only": {
        "sev.node.kubevirt.io/asids": "509",
        "sev-es.node.kubevirt.io/asids": "0",
        "sev-snp.node.kubevirt.io/asids": "0",
        "sev.node.kubevirt.io/cbitpos": "47",
        "sev.node.kubevirt.io/reduced-phys-bits": "1",
        # nfd-snp check: SEV-ES blocked by psp.sev_es_init, asid.sev_es; SEV-SNP by
        # psp.sev_es_init, asid.snp, cpu.snp
        "sev-es.node.kubevirt.io/blocked-by.psp.sev_es_init": "fail",
        "sev-es.node.kubevirt.io/blocked-by.asid.sev_es": "fail",
        "sev-snp.node.kubevirt.io/blocked-by.psp.sev_es_init": "fail",
        "sev-snp.node.kubevirt.io/blocked-by.asid.snp": "fail",
        "sev-snp.node.kubevirt.io/blocked-by.cpu.snp": "fail",
    },
    "intel": {
        "sev.node.kubevirt.io/blocked-by.cpu.vendor": "fail",
        "sev-es.node.kubevirt.io/blocked-by.cpu.vendor": "fail",
        "sev-snp.node.kubevirt.io/blocked-by.cpu.vendor": "fail",
    },
}


def _text(sample, now=NOW, ttl=600):
    pub = nfd.publication(evaluate(probe_root(SAMPLES / sample)))
    return nfd.render(pub, now + datetime.timedelta(seconds=ttl))


@pytest.mark.parametrize("sample", sorted(EXPECTED_LABELS))
def test_labels_as_nfd_reads_them(sample):
    labels, features = nfdlocal.parse_file(_text(sample), NOW)
    assert labels == EXPECTED_LABELS[sample]
    if sample in FEATURES_ONLY:
        assert {k: v for k, v in features.items() if k not in labels} == FEATURES_ONLY[sample]
    assert len(_text(sample).encode()) < nfdlocal.MAX_FILE


NODES = sorted(SAMPLES.iterdir()) + sorted((REPO / "tests" / "data" / "hosts").iterdir())
NOT_ROOT = {"sev_platform_status": {"errno": 13}, "snp_platform_status": {"errno": 13}}


def _blocked_by(features: dict, guest) -> dict:
    prefix = f"{guest.value}.node.kubevirt.io/blocked-by."
    return {k[len(prefix) :]: v for k, v in features.items() if k.startswith(prefix)}


def _assert_label_or_causes(report, labels, features):
    """Each guest type has its enabled label, or one blocked-by feature per check that its
    verdict names: `fail` for root causes, `unknown` for undecided checks; never both."""
    for verdict in report.verdicts:
        blocked = _blocked_by(features, verdict.guest)
        if verdict.ready is Readiness.YES:
            assert labels[nfd.ENABLED[verdict.guest]] == "true"
            assert blocked == {}
        else:
            assert nfd.ENABLED[verdict.guest] not in labels
            value = "fail" if verdict.ready is Readiness.NO else "unknown"
            assert blocked == dict.fromkeys(verdict.blocking, value), verdict
        assert not any(k.startswith(nfd.BLOCKED_BY[:-1]) for k in labels)  # features only


@pytest.mark.parametrize("root", NODES, ids=lambda p: p.name)
def test_blocked_by_features_name_each_verdicts_causes(root):
    report = evaluate(probe_root(root))
    text = nfd.render(nfd.publication(report), NOW + datetime.timedelta(seconds=600))
    _assert_label_or_causes(report, *nfdlocal.parse_file(text, NOW))


def test_undecided_checks_are_published_as_unknown(snapshot):
    report = evaluate(probe_root(snapshot(base="genoa-snp-ready", capture=NOT_ROOT)))
    text = nfd.render(nfd.publication(report), NOW + datetime.timedelta(seconds=600))
    labels, features = nfdlocal.parse_file(text, NOW)
    assert report.verdict(Guest.SEV_SNP).ready is Readiness.UNKNOWN
    assert _blocked_by(features, Guest.SEV_SNP)["psp.sev_status"] == "unknown"
    _assert_label_or_causes(report, labels, features)


def test_every_check_blocking_every_guest_type_still_fits_nfds_limit():
    """The worst case: each guest type blocked by every check that gates it."""
    report = evaluate(probe_root(SAMPLES / "genoa-snp-ready"))
    worst = dataclasses.replace(
        report,
        verdicts=tuple(
            Verdict(g, Readiness.UNKNOWN, tuple(r.check.name for r in report.results))
            for g in Guest
        ),
    )
    text = nfd.render(nfd.publication(worst), NOW + datetime.timedelta(seconds=600))
    _labels, features = nfdlocal.parse_file(text, NOW)
    assert len(features) > 100
    assert len(text.encode()) < nfdlocal.MAX_FILE // 4


def test_everything_expires_at_the_expiry():
    text = _text("genoa-snp-ready", ttl=600)
    assert text.index("# +expiry-time=2026-11-26T12:10:00Z") < text.index("=true")
    later = NOW + datetime.timedelta(seconds=601)
    assert nfdlocal.parse_file(text, later) == ({}, {})


def test_turin_tcb_has_fmc_label(snapshot):
    import struct

    raw = int.from_bytes(bytes([3, 4, 5, 6, 0, 0, 0, 7]), "little")
    data = struct.pack("<BBBBIIIQQ", 1, 57, 1, 1, 12, 0, 0, raw, raw).hex()
    root = snapshot(
        base="genoa-snp-ready",
        capture={
            "snp_platform_status": data,
            "cpuid": {
                **__import__("json").loads(
                    (SAMPLES / "genoa-snp-ready/nfd-snp-capture.json").read_text()
                )["cpuid"],
                "0x00000001": [0x00B00F21, 0, 0, 0],
            },
        },
    )
    pub = dict(nfd.publication(evaluate(probe_root(root))).labels)
    assert (
        pub["sev-snp.node.kubevirt.io/tcb-fmc"],
        pub["sev-snp.node.kubevirt.io/tcb-bootloader"],
        pub["sev-snp.node.kubevirt.io/tcb-tee"],
        pub["sev-snp.node.kubevirt.io/tcb-snp"],
        pub["sev-snp.node.kubevirt.io/tcb-microcode"],
    ) == ("3", "4", "5", "6", "7")
    assert pub["sev-snp.node.kubevirt.io/api-version"] == "1.57"


@pytest.mark.parametrize(
    "key, value, ok",
    [
        ("sev.node.kubevirt.io/enabled", "true", True),
        ("a.b/c", "1.55", True),
        ("nodomain", "x", False),
        ("a.b/-x", "1", False),
        ("a.b/c", "-1", False),
        ("a.b/c", "x" * 64, False),
        ("A.b/c", "1", False),
        ("a.b/c", "", True),
    ],
)
def test_label_validation(key, value, ok):
    assert nfd.valid_label(key, value) is ok


# -- writing and churn ----------------------------------------------------------------


class FakeClock:
    def __init__(self, start=1_800_000_000.0):
        self.now = start

    def __call__(self):
        return self.now


def _service(tmp_path, root, clock, ttl=600, interval=60):
    config = Config(
        interval=interval,
        ttl=ttl,
        output=str(tmp_path / "features.d" / "nfd-snp"),
        facts_cache=str(tmp_path / "run" / "facts.json"),
        host_root=str(root),
        libvirt="off",
    )
    lines = []

    def log(priority, line):
        if priority != DEBUG:  # the per-cycle debug line (-v)
            lines.append(line)

    return Service(config, clock=clock, log=log), lines


def test_500_cycles_write_once_plus_renewals(tmp_path, snapshot):
    root = snapshot(base="genoa-snp-ready")
    clock = FakeClock()
    service, log = _service(tmp_path, root, clock)
    path = service.config.output
    writes, previous = 0, None
    for _ in range(500):
        result = service.cycle()
        stat = os.stat(path)
        if result.written:
            writes += 1
        else:
            assert (stat.st_ino, stat.st_mtime_ns) == previous  # untouched
        previous = (stat.st_ino, stat.st_mtime_ns)
        expiry, _ = nfd.parse_written(open(path).read())
        # while the service runs, the labels never get close to expiring
        assert (expiry - datetime.datetime.fromtimestamp(clock.now, UTC)).total_seconds() >= 300
        clock.now += 60
    # 500 cycles of 60 s = 30,000 s; renewal once less than ttl/2 (300 s) is left
    assert writes <= 1 + 30000 // 300
    assert writes >= 30000 // 600  # renewals did happen
    assert len(log) == 3  # readiness, labels, facts cache: one line per change, not per cycle


@pytest.mark.parametrize("base, cycles", [("genoa-snp-ready", 500), ("milan-snp-off", 50)])
def test_unchanged_cycles_in_real_time_never_rewrite(tmp_path, snapshot, base, cycles):
    """Ready or blocked, an unchanged node never rewrites its file (nfd-worker rescans on
    every change since v0.19)."""
    import time

    service, _ = _service(tmp_path, snapshot(base=base), time.time)
    assert service.cycle().written
    first = os.stat(service.config.output)
    for _ in range(cycles):
        assert not service.cycle().written
    again = os.stat(service.config.output)
    assert (first.st_ino, first.st_mtime_ns) == (again.st_ino, again.st_mtime_ns)


def test_losing_and_regaining_snp_changes_labels_next_cycle(tmp_path, snapshot):
    root = snapshot(base="genoa-snp-ready")
    clock = FakeClock()
    service, log = _service(tmp_path, root, clock)
    labels_dir = os.path.dirname(service.config.output)
    service.cycle()
    now = datetime.datetime.fromtimestamp(clock.now, UTC)
    assert "sev-snp.node.kubevirt.io/enabled" in nfdlocal.parse_dir(labels_dir, now)[0]
    param = root / "sys/module/kvm_amd/parameters/sev_snp"
    param.write_text("N\n")
    clock.now += 60
    assert service.cycle().reason == "changed"
    labels, features = nfdlocal.parse_dir(labels_dir, now)
    assert "sev-snp.node.kubevirt.io/enabled" not in labels
    assert "sev-es.node.kubevirt.io/enabled" in labels
    assert _blocked_by(features, Guest.SEV_SNP) == {"kvm.sev_snp": "fail"}
    assert any("-sev-snp.node.kubevirt.io/enabled" in line for line in log)
    assert any("+sev-snp.node.kubevirt.io/blocked-by.kvm.sev_snp=fail" in line for line in log)
    assert any("SEV-SNP no (kvm.sev_snp)" in line for line in log)
    param.write_text("Y\n")
    clock.now += 60
    service.cycle()
    labels, features = nfdlocal.parse_dir(labels_dir, now)
    assert "sev-snp.node.kubevirt.io/enabled" in labels
    assert _blocked_by(features, Guest.SEV_SNP) == {}


def test_losing_snp_is_a_warning_and_regaining_it_a_notice(tmp_path, snapshot):
    """`journalctl -p warning -u nfd-snp` shows the node losing a guest type."""
    from nfd_snp.log import NOTICE, WARNING

    root = snapshot(base="genoa-snp-ready")
    clock = FakeClock()
    service, _ = _service(tmp_path, root, clock)
    entries = []
    service._log = lambda priority, line: entries.append((priority, line))
    service.cycle()
    assert (NOTICE, "readiness: SEV yes; SEV-ES yes; SEV-SNP yes") in entries
    param = root / "sys/module/kvm_amd/parameters/sev_snp"
    for value, priority in (("N", WARNING), ("Y", NOTICE)):
        entries.clear()
        param.write_text(value + "\n")
        clock.now += 60
        service.cycle()
        readiness = [e for e in entries if e[1].startswith("readiness: ")]
        assert [p for p, _line in readiness] == [priority], entries
        assert any(
            p == DEBUG and line.startswith("cycle: feature file changed") for p, line in entries
        )


def test_killed_between_write_and_rename_leaves_nfd_a_whole_file(tmp_path):
    out = tmp_path / "features.d" / "nfd-snp"
    out.parent.mkdir()
    out.write_text("# old content, complete\nexample.com/old=true\n")
    script = textwrap.dedent(f"""
        import os, signal
        from nfd_snp import nfd
        from nfd_snp.checks import Guest, Readiness, Verdict, evaluate
        from nfd_snp.host import open_host
        from nfd_snp.probe import probe
        from nfd_snp.service import write_features
        with open_host({str(SAMPLES / "genoa-snp-ready")!r}) as host:
            pub = nfd.publication(evaluate(probe(host)))
        os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)  # die right before rename
        write_features({str(out)!r}, pub, 1.8e9, 600)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    leftovers = [n for n in os.listdir(out.parent) if n != "nfd-snp"]
    assert leftovers and all(n.startswith(".") for n in leftovers)  # NFD ignores dot-files
    assert nfdlocal.parse_dir(out.parent, NOW)[0] == {"example.com/old": "true"}
    # the next service start clears the leftover temporary file
    from nfd_snp.atomic import remove_stale_temps

    remove_stale_temps(out.parent)
    assert os.listdir(out.parent) == ["nfd-snp"]


@pytest.mark.parametrize(
    "target, code, message",
    [
        (
            "/dev/null/features.d/nfd-snp",
            2,
            "error: output: /dev/null/features.d/nfd-snp cannot be written: /dev/null is not a "
            "directory",
        ),
        ("{tmp}", 2, "--output: {tmp} is a directory"),
        ("{tmp}/", 2, "is a directory"),
        ("", 2, "--output: is empty"),
    ],
)
def test_unwritable_output_is_one_line(tmp_path, target, code, message):
    target = target.format(tmp=tmp_path)
    result = CliRunner().invoke(
        cli, ["features", "--sample", "genoa-snp-ready", "--output", target]
    )
    assert result.exit_code == code
    line = result.output.strip()
    assert line.startswith("nfd-snp: error: ") and "\n" not in line
    assert message.format(tmp=tmp_path) in line


def test_features_command_writes_then_reports_up_to_date(tmp_path):
    target = tmp_path / "d" / "nfd-snp"
    args = ["features", "--sample", "genoa-snp-ready", "--output", str(target)]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0 and "wrote" in first.output
    assert oct(os.stat(target).st_mode & 0o777) == "0o644"
    second = CliRunner().invoke(cli, args)
    assert second.exit_code == 0 and "up to date" in second.output


def test_facts_cache_rewritten_only_on_change_but_kept_fresh(tmp_path, snapshot):
    import json

    clock = FakeClock()
    service, _ = _service(tmp_path, snapshot(base="genoa-snp-ready"), clock)
    service.cycle()
    path = service.config.facts_cache
    cache = json.loads(open(path).read())
    assert cache["verdicts"]["sev-snp"]["ready"] == "yes"
    assert cache["cbitpos"] == 51 and cache["snp_api"] == [1, 55]
    assert cache["snp_firmware"] == ["/usr/share/edk2/ovmf/OVMF.amdsev.fd"]
    assert cache["valid_for"] == service.config.ttl
    os.utime(path, (1, 1))  # pretend it is old
    before = os.stat(path)
    clock.now += 60
    service.cycle()
    after = os.stat(path)
    assert after.st_ino == before.st_ino  # not rewritten...
    assert after.st_mtime > before.st_mtime  # ...but stamped fresh again
    os.unlink(path)
    service.cycle()
    assert json.loads(open(path).read()) == cache  # removed behind its back: written again


def test_metrics_textfile_needs_no_client_library(tmp_path, snapshot, monkeypatch):
    """Written without prometheus_client (an optional package), read back by its parser."""
    service, log = _service(tmp_path, snapshot(base="rome-sev-only"), FakeClock())
    metrics_path = tmp_path / "textfile" / "nfd_snp.prom"
    service.config = service.config._replace(metrics_textfile=str(metrics_path))
    with monkeypatch.context() as without:
        without.setitem(sys.modules, "prometheus_client", None)  # import fails
        assert service.cycle() is not None, log
    assert oct(os.stat(metrics_path).st_mode & 0o777) == "0o644"
    from prometheus_client.parser import text_string_to_metric_families

    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics_path.read_text())
        for s in family.samples
    }
    assert samples[("nfd_snp_readiness", (("guest", "sev"), ("state", "ready")))] == 1
    assert samples[("nfd_snp_readiness", (("guest", "sev-snp"), ("state", "not_ready")))] == 1
    assert samples[("nfd_snp_asids_capacity", (("guest", "sev"),))] == 509
    assert samples[("nfd_snp_asids_used", (("guest", "sev"),))] == 2
    firmware = (("api_version", "0.24"), ("build_id", "15"))
    assert samples[("nfd_snp_firmware_info", firmware)] == 1
    check = (("check", "cpu.snp"), ("status", "fail"))
    assert samples[("nfd_snp_check_status", check)] == 1
    # the labels' expiry, as written in the feature file
    expiry, _ = nfd.parse_written(open(service.config.output).read())
    assert samples[("nfd_snp_labels_expiry_timestamp_seconds", ())] == expiry.timestamp()


def test_service_probes_through_the_one_entry_point(tmp_path, monkeypatch):
    from nfd_snp import probe

    service, _ = _service(tmp_path, SAMPLES / "intel", FakeClock())
    monkeypatch.setattr(probe, "probe_report", lambda config: 1 / 0)
    with pytest.raises(ZeroDivisionError):  # a bug is not swallowed as a cycle error
        service.cycle()


def test_service_log_lines_are_escaped(tmp_path):
    service, log = _service(tmp_path, SAMPLES / "intel", FakeClock())
    service.log("cannot write /tmp/evil\nnfd-snp: recovered\x1b[2J")
    assert log == ["cannot write /tmp/evil\\nnfd-snp: recovered\\x1b[2J"]
