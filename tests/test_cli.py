"""The `nfd-snp` CLI as a user runs it: exit codes, one-line errors, JSON, help."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from nfd_snp.cli import cli
from tests.conftest import NFD_SNP, REPO

SCHEMA_KEYS = {"schema", "version", "host_root", "snapshot", "checks", "verdicts", "facts"}
CHECK_KEYS = {
    "name",
    "title",
    "parent",
    "depth",
    "gates",
    "gated",
    "status",
    "detail",
    "inferred_from",
    "root_cause",
    "root_causes",
    "reason",
    "fix",
}


def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.mark.parametrize(
    "sample, code",
    [("genoa-snp-ready", 0), ("milan-snp-off", 1), ("rome-sev-only", 1), ("intel", 1)],
)
def test_check_exit_code_follows_snp_verdict(sample, code):
    result = run("check", "--sample", sample)
    assert result.exit_code == code
    assert "SEV-SNP" in result.output


def test_json_report_schema():
    result = run("check", "--sample", "milan-snp-off", "--json")
    data = json.loads(result.output)
    assert set(data) == SCHEMA_KEYS and data["schema"] == "nfd-snp.check/v2"
    assert all(set(c) == CHECK_KEYS for c in data["checks"])
    assert data["verdicts"]["sev-snp"]["ready"] == "no"
    failed = {c["name"]: c for c in data["checks"] if c["status"] == "FAIL"}
    assert failed["bios.rmp"]["reason"] == "rmp-not-reserved" and failed["bios.rmp"]["fix"]
    # SNP_EN is set by the kernel once the RMP is there: an echo, pointing at its cause
    assert failed["bios.snp_en"]["root_cause"] == "bios.rmp"
    assert failed["bios.snp_en"]["fix"] == "Follows from bios.rmp: fix that first."
    assert "bios.snp_en" not in data["verdicts"]["sev-snp"]["blocking"]
    assert data["facts"]["psp"]["snp_unreadable"]["errno"] == 22
    gated = {c["name"]: c["gated"] for c in data["checks"]}
    assert gated["asid.sev"] == ["sev"] and gated["cpu.sev"] == ["sev", "sev-es", "sev-snp"]


def test_failures_only():
    result = run("check", "--sample", "rome-sev-only", "--failures")
    assert "PASS" not in result.output
    assert "kvm_amd sev_es parameter" in result.output


def test_table_has_no_ansi_when_not_a_tty():
    assert "\x1b[" not in run("check", "--sample", "intel").output


def test_colour_on_a_terminal_unless_no_color(monkeypatch):
    result = CliRunner().invoke(cli, ["check", "--sample", "intel"], color=True)
    assert "\x1b[31" in result.output  # FAIL in red
    monkeypatch.setenv("NO_COLOR", "1")
    result = CliRunner().invoke(cli, ["check", "--sample", "intel"], color=True)
    assert "\x1b[" not in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["check", "--host-root", "/nonexistent/x"], "not a directory"),
        (["check", "--sample", "genoa-snp-ready", "--host-root", "/tmp"], "exclude each other"),
        (["check", "--sample", "nosuch"], "Invalid value for '--sample'"),
        (["check", "--bogus"], "No such option"),
    ],
)
def test_usage_and_input_errors_exit_2(args, message):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ("[]", "expected a JSON object"),
        ('{"cpuid": {"0x00000000": [1, 2]}}', "expected [eax, ebx, ecx, edx]"),
        ('{"msr": {"0xc0010010": "big"}}', "expected an unsigned integer"),
        ('{"sev_platform_status": "abc"}', "expected 12 bytes"),
        ('{"snp_platform_status": {"errno": "x"}}', "errno must be a positive integer"),
        ('{"domcaps": 5}', "'domcaps' must be a string or null"),
        ("[" * 100000, "not valid JSON"),
        # an errno beyond a C int used to crash os.strerror (OverflowError)
        ('{"snp_platform_status": {"errno": 2147483648}}', "errno must be a positive integer"),
        ('{"sev_platform_status": {"errno": 18446744073709551617}}', "must be a positive integer"),
        (
            '{"unreadable": {"cpuid:0x00000000": {"errno": 2147483648}}}',
            "unreadable['cpuid:0x00000000']: errno must be a positive integer",
        ),
        ('{"unreadable": {"file:proc/cpuinfo": {"errno": -5}}}', "must be a positive integer"),
    ],
)
def test_corrupt_snapshot_is_one_line_exit_2(tmp_path, content, message):
    (tmp_path / "nfd-snp-capture.json").write_text(content)
    # a release before 6.16: SNP_PLATFORM_STATUS is asked for (an unknown one withholds it)
    (tmp_path / "proc/sys/kernel").mkdir(parents=True)
    (tmp_path / "proc/sys/kernel/osrelease").write_text("6.12.0\n")
    result = CliRunner().invoke(cli, ["check", "--host-root", str(tmp_path)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nfd-snp: error:") and message in lines[0]


def test_capture_of_a_missing_host_root_is_refused(tmp_path):
    out = tmp_path / "snap"
    result = CliRunner().invoke(cli, ["capture", str(out), "--host-root", "/nonexistent"])
    assert result.exit_code == 2
    assert result.output == "nfd-snp: error: --host-root: /nonexistent is not a directory\n"
    assert not out.exists()


def test_capture_of_a_snapshot_is_refused(tmp_path):
    from tests.conftest import SAMPLES

    root = SAMPLES / "intel"
    result = CliRunner().invoke(cli, ["capture", str(tmp_path / "s"), "--host-root", str(root)])
    assert result.exit_code == 2
    assert result.output == f"nfd-snp: error: {root} is a snapshot already; copy it instead\n"


def test_internal_error_has_its_own_exit_status(monkeypatch):
    """A bug is not "not ready" (1): it exits 70 (EX_SOFTWARE), in one escaped line."""
    from nfd_snp import probe
    from nfd_snp.errors import EXIT_INTERNAL_ERROR

    def broken(*args, **kwargs):
        raise RuntimeError("oops\nsecond line")

    monkeypatch.setattr(probe, "probe_report", broken)
    result = CliRunner().invoke(cli, ["check", "--sample", "intel"])
    assert result.exit_code == EXIT_INTERNAL_ERROR == 70
    assert result.output == (
        "nfd-snp: internal error: RuntimeError: oops\\nsecond line "
        "(run with -v for a traceback and report it)\n"
    )
    assert "70 internal error" in " ".join(run("--help").output.split())


def test_host_strings_reach_the_terminal_escaped(snapshot):
    """A snapshot's CPU model name carrying terminal escapes is printed inert."""
    from tests.conftest import SAMPLES

    cpuinfo = (SAMPLES / "genoa-snp-ready" / "proc/cpuinfo").read_text()
    evil = "AMD EPYC \x1b]0;pwned\x07\x1b[2J 9654\u202e"
    root = snapshot(
        base="genoa-snp-ready",
        files={"proc/cpuinfo": cpuinfo.replace("AMD EPYC 9654 96-Core Processor", evil)},
    )
    for colour in (False, True):
        text = CliRunner().invoke(cli, ["check", "--host-root", str(root)], color=colour).output
        header = text.splitlines()[1]
        assert header.startswith("CPU: AMD EPYC \\x1b]0;pwned\\x07\\x1b[2J 9654\\u202e;")
        assert "\x07" not in text and "\u202e" not in text and "\x1b]" not in text
        assert "\x1b[2J" not in text


@pytest.mark.parametrize(
    "message",
    ["line 1\nline 2", "tab\there", "\x1b[31mred", "a\r\nb", "bidi \u202e tail", "nul \0"],
)
def test_every_error_is_one_printable_line(message, monkeypatch):
    """Messages quoting parsers (lxml) or names (domains) are escaped into one line."""
    from nfd_snp.domain import cli_support
    from nfd_snp.errors import UnsafeXmlError, printable

    def refuse(*args, **kwargs):
        raise UnsafeXmlError(f"domain XML: not well-formed XML ({message})")

    monkeypatch.setattr(cli_support, "rewrite_text", refuse)
    result = CliRunner().invoke(cli, ["domain", "rewrite", "--facts", "none"], input="<a/>")
    assert result.exit_code == 2
    assert result.output.count("\n") == 1
    line = result.output.rstrip("\n")
    assert line.isprintable(), line
    assert line == f"nfd-snp: error: domain XML: not well-formed XML ({printable(message)})"


def test_domain_name_with_a_newline_is_escaped():
    pytest.importorskip("libvirt")  # libvirt-python: its test:///default driver, no daemon
    result = CliRunner().invoke(
        cli, ["domain", "convert", "evil\nname\x1b[31m", "-c", "test:///default", "--dry-run"]
    )
    assert result.exit_code == 2
    assert result.output == (
        "nfd-snp: error: no domain named 'evil\\nname\\x1b[31m' on test:///default\n"
    )


def test_capture_into_non_empty_directory_refused(tmp_path):
    (tmp_path / "keep").write_text("x")
    result = CliRunner().invoke(cli, ["capture", str(tmp_path), "--libvirt", "off"])
    assert result.exit_code == 1
    assert "exists and is not an empty directory" in result.output


@pytest.mark.parametrize("args", [[], ["check"], ["capture"]])
def test_help_explains(args):
    result = run(*args, "--help")
    assert result.exit_code == 0 and "Usage:" in result.output
    if args == ["check"]:
        assert "--sample" in result.output and "genoa-snp-ready" in result.output
        assert "Exit status" in result.output


def test_check_on_this_host_as_a_subprocess():
    """The real console script on this machine: a report, no traceback, exit 0 or 1."""
    proc = subprocess.run(
        [*NFD_SNP, "check", "--libvirt", "off"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode in (0, 1)
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "SEV-SNP" in proc.stdout and "nfd-snp check: host /" in proc.stdout


def test_module_entry_point():
    proc = subprocess.run(
        [sys.executable, "-m", "nfd_snp", "--version"], capture_output=True, text=True, cwd=REPO
    )
    assert proc.returncode == 0 and "nfd-snp, version" in proc.stdout


@pytest.mark.parametrize("columns", [60, 80, 100, 160])
def test_table_fits_the_terminal(columns, monkeypatch):
    from nfd_snp.checks import evaluate
    from nfd_snp.report import render_table
    from tests.conftest import SAMPLES, probe_root

    report = evaluate(probe_root(SAMPLES / "milan-snp-off"))
    text = click.unstyle(render_table(report, width=columns))
    body = text.splitlines()[3:]  # below the header, whose snapshot path is not broken
    assert max(len(line) for line in body) <= columns
    assert "fix: The BIOS reserved no RMP table" in " ".join(text.split())


@pytest.mark.parametrize(
    "args",
    [
        ["check", "--sample", "intel"],
        ["features", "--sample", "intel", "-o", "-"],
        ["capture", "{tmp}/snap", "--libvirt", "off"],
    ],
)
def test_commands_probe_through_one_entry_point(args, tmp_path, monkeypatch):
    """check, features and capture (and run: tests/test_nfd.py) call probe.probe_report."""
    from nfd_snp import probe

    seen = []

    def spy(config, **kwargs):
        seen.append((config.host_root, kwargs))
        raise RuntimeError("probed")

    monkeypatch.setattr(probe, "probe_report", spy)
    result = CliRunner().invoke(cli, [a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 70 and "RuntimeError: probed" in result.output
    assert len(seen) == 1 and seen[0][1] == ({"record": True} if args[0] == "capture" else {})


def test_convert_without_libvirt_python_names_the_package(monkeypatch):
    """nfd-snp does not require libvirt (KubeVirt nodes have none); nfd-snp-libvirt does."""
    monkeypatch.setitem(sys.modules, "libvirt", None)  # import fails
    result = CliRunner().invoke(cli, ["domain", "convert", "web", "--facts", "none"])
    assert result.exit_code == 1
    assert "install nfd-snp-libvirt" in result.output and "Traceback" not in result.output


def test_the_version_is_written_once():
    """nfd_snp/__init__.py says it; setup.cfg, the installed metadata and make rpm read it."""
    import configparser
    import importlib.metadata
    import shutil

    from nfd_snp import __version__

    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    assert setup["metadata"]["version"] == "attr: nfd_snp.__version__"
    assert importlib.metadata.version("nfd-snp") == __version__
    if shutil.which("make"):
        made = subprocess.run(["make", "-s", "version"], cwd=REPO, capture_output=True, text=True)
        assert made.stdout == f"{__version__}\n"
    result = CliRunner().invoke(cli, ["--version"])
    assert result.output == f"nfd-snp, version {__version__}\n"
