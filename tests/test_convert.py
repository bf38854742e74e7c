"""`nfd-snp domain convert` through libvirt-python: a libvirt that can define the result
(libvirt 11.3 in a Debian trixie chroot, test driver) and one that cannot (the host's 9.0).
Also `nfd-snp domain rewrite` as a filter."""

from __future__ import annotations

import shutil
import subprocess
import textwrap
import uuid

import pytest
from click.testing import CliRunner

from nfd_snp.cli import cli
from nfd_snp import xmlio
from tests.conftest import NFD_SNP, REPO, SAMPLES, built_chroot, cli_runner, probe_root

OWN = REPO / "tests" / "data" / "domains"


@pytest.fixture(scope="session")
def trixie_chroot():
    """A trixie chroot with libvirt 11.3's Python bindings (built once, cached)."""
    return built_chroot("trixie")


def run_in_chroot(root, script: str, *files):
    """Run `script` with python3 inside the chroot, with this checkout's nfd_snp copied in."""
    work = root / "opt" / "nfd-snp-test"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    shutil.copytree(
        REPO / "nfd_snp", work / "nfd_snp", ignore=shutil.ignore_patterns("__pycache__")
    )
    for path in files:
        shutil.copy(path, work / path.name)
    (work / "run.py").write_text(textwrap.dedent(script))
    return subprocess.run(
        ["chroot", str(root), "python3", "/opt/nfd-snp-test/run.py"],
        capture_output=True,
        text=True,
        timeout=300,
    )


CONVERT_IN_TEST_DRIVER = """
    import sys, libvirt
    sys.path.insert(0, "/opt/nfd-snp-test")
    from nfd_snp.cli import cli
    from nfd_snp import xmlio
    from nfd_snp.domain import engine
    # test:///default is one shared driver per process: define, convert, then look.
    conn = libvirt.open("test:///default")
    conn.defineXML(open("/opt/nfd-snp-test/{fixture}").read())
    try:
        cli({args!r}, standalone_mode=False)
    except SystemExit as exc:
        assert not exc.code, exc.code
    xml = conn.lookupByName("{name}").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    print(xml)
    root = xmlio.parse(xml)
    engine.verify(root, None)  # what the hook's prepare check demands
    print("VERIFIED libvirt", libvirt.getVersion())
"""


@pytest.mark.parametrize(
    "fixture, name, options",
    [
        ("plain-virtio.xml", "plain", []),
        (
            "kubevirt-sev.xml",
            "default_vmi-sev",
            ["--option", "hostData=" + "A" * 43 + "=", "--option", "policy=0x30133"],
        ),
        ("direct-kernel.xml", "direct", ["--option", "kernelHashes=yes"]),
    ],
)
def test_convert_defines_in_libvirt_that_knows_snp(trixie_chroot, fixture, name, options):
    args = ["domain", "convert", name, "--connect", "test:///default", "--facts", "none", *options]
    proc = run_in_chroot(
        trixie_chroot,
        CONVERT_IN_TEST_DRIVER.format(fixture=fixture, name=name, args=args),
        OWN / fixture,
    )
    assert proc.returncode == 0, proc.stderr
    assert "VERIFIED libvirt 11" in proc.stdout
    # libvirt's own formatting of what it stored
    assert "<launchSecurity type='sev-snp'" in proc.stdout
    assert "urn:nfd-snp:1" in proc.stdout
    if fixture == "kubevirt-sev.xml":
        assert "<policy>0x00030133</policy>" in proc.stdout
        assert "<hostData>" + "A" * 43 + "=</hostData>" in proc.stdout


DRY_RUN_IN_TEST_DRIVER = """
    import sys, libvirt
    sys.path.insert(0, "/opt/nfd-snp-test")
    from click.testing import CliRunner
    from nfd_snp.cli import cli
    conn = libvirt.open("test:///default")
    conn.defineXML(open("/opt/nfd-snp-test/direct-kernel.xml").read())
    args = ["domain", "convert", "direct", "--connect", "test:///default", "--facts", "none"]
    result = CliRunner().invoke(cli, [*args, "--dry-run"])
    print(result.exit_code)
    print(result.output, end="")
"""


def test_dry_run_in_libvirt_that_knows_snp_shows_only_the_conversion(trixie_chroot):
    proc = run_in_chroot(trixie_chroot, DRY_RUN_IN_TEST_DRIVER, OWN / "direct-kernel.xml")
    assert proc.returncode == 0, proc.stderr
    code, *lines = proc.stdout.splitlines()
    assert code == "0" and lines[:2] == ["--- direct (defined)", "+++ direct (SEV-SNP)"]
    assert not any("warning" in line for line in lines)
    removed = [line for line in lines[2:] if line.startswith("-")]
    assert removed == ["-  <os>"], removed
    assert '+  <launchSecurity type="sev-snp">' in lines


# -- the host's libvirt 9.0, which predates sev-snp -------------------------------------------


@pytest.fixture
def defined(libvirtd, tmp_path):
    names = []

    def define(xml_path, name):
        text = xml_path.read_text()
        root = xmlio.parse(text)
        root.find("name").text = name
        for old in root.findall("uuid"):
            root.remove(old)
        text = xmlio.serialize(root).replace("</name>", f"</name><uuid>{uuid.uuid4()}</uuid>", 1)
        path = tmp_path / f"{name}.xml"
        path.write_text(text)
        subprocess.run(
            ["virsh", "-c", "qemu:///system", "define", str(path)], check=True, capture_output=True
        )
        names.append(name)
        return name

    yield define
    for name in names:
        subprocess.run(["virsh", "-c", "qemu:///system", "destroy", name], capture_output=True)
        subprocess.run(["virsh", "-c", "qemu:///system", "undefine", name], capture_output=True)


def test_convert_refused_by_libvirt_without_snp(defined):
    name = defined(OWN / "direct-kernel.xml", "nfdsnp-convert-old")
    before = subprocess.run(
        ["virsh", "-c", "qemu:///system", "dumpxml", "--inactive", name],
        capture_output=True,
        text=True,
    ).stdout
    result = CliRunner().invoke(cli, ["domain", "convert", name, "--facts", "none"])
    assert result.exit_code == 1
    line = result.output.strip()
    assert line == (
        f"nfd-snp: error: cannot convert '{name}': libvirt 9.0.0 on qemu:///system predates "
        "SEV-SNP guests: libvirt 10.5 or later is needed; the domain is unchanged"
    )
    after = subprocess.run(
        ["virsh", "-c", "qemu:///system", "dumpxml", "--inactive", name],
        capture_output=True,
        text=True,
    ).stdout
    assert after == before


def test_convert_dry_run_prints_only_what_changes_and_defines_nothing(defined):
    name = defined(OWN / "direct-kernel.xml", "nfdsnp-convert-dry")
    before = subprocess.run(
        ["virsh", "-c", "qemu:///system", "dumpxml", name], capture_output=True, text=True
    ).stdout
    result = CliRunner().invoke(cli, ["domain", "convert", name, "--dry-run", "--facts", "none"])
    assert result.exit_code == 1, result.output  # what it shows would fail to define
    assert result.stdout.startswith(f"--- {name} (defined)\n+++ {name} (SEV-SNP)\n")
    assert '+  <launchSecurity type="sev-snp">' in result.stdout
    # libvirt writes ' and lxml ": both sides are written alike, so only real changes show.
    changed = [
        line
        for line in result.stdout.splitlines()[2:]
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    assert [line for line in changed if line.startswith("-")] == ["-  <os>"]
    assert f"   <name>{name}</name>" in result.stdout.splitlines()
    assert result.stderr == (
        "nfd-snp: error: libvirt 9.0.0 on qemu:///system predates SEV-SNP guests: "
        "libvirt 10.5 or later is needed; defining this would fail\n"
    )
    after = subprocess.run(
        ["virsh", "-c", "qemu:///system", "dumpxml", name], capture_output=True, text=True
    ).stdout
    assert after == before


@pytest.mark.parametrize(
    "marker, message",
    [
        (
            'polcy="0x30000"',
            "the <snp:sev-snp> metadata of domain '{name}': unknown option 'polcy' (known: "
            "policy, guestVisibleWorkarounds, idBlock, idAuth, hostData, kernelHashes, "
            "authorKey, vcek, firmware); correct it with `virsh edit {name}`",
        ),
        (
            'hostData="tooshort"',
            "the <snp:sev-snp> metadata of domain '{name}': hostData: decodes to 6 bytes, must "
            "be exactly 32; correct it with `virsh edit {name}`, or replace it: --option "
            "hostData=VALUE",
        ),
    ],
    ids=["unknown", "invalid"],
)
def test_convert_names_the_domain_metadata_when_the_error_is_there(
    defined, tmp_path, marker, message
):
    """No --option was given: the error is in the domain's own request, and says so."""
    source = tmp_path / "marked.xml"
    source.write_text(
        (OWN / "direct-kernel.xml")
        .read_text()
        .replace(
            "</name>",
            f"</name><metadata><snp:sev-snp xmlns:snp='urn:nfd-snp:1' {marker}/></metadata>",
            1,
        )
    )
    name = defined(source, f"nfdsnp-convert-meta-{len(marker)}")
    result = cli_runner().invoke(cli, ["domain", "convert", name, "--facts", "none"])
    assert result.exit_code == 2
    assert result.stderr == f"nfd-snp: error: {message.format(name=name)}\n"
    assert "--option:" not in result.stderr


def test_convert_running_and_missing_domains(defined):
    name = defined(OWN / "direct-kernel.xml", "nfdsnp-convert-missing")
    missing = CliRunner().invoke(
        cli, ["domain", "convert", "nfdsnp-no-such-domain", "--facts", "none"]
    )
    assert missing.exit_code == 2
    assert "no domain named 'nfdsnp-no-such-domain' on qemu:///system" in missing.output
    bad_uri = CliRunner().invoke(
        cli, ["domain", "convert", name, "--connect", "bogus:///x", "--facts", "none"]
    )
    assert bad_uri.exit_code == 1 and "cannot connect to bogus:///x" in bad_uri.output


def test_convert_refuses_a_running_domain(libvirtd, tmp_path):
    name = "nfdsnp-convert-running"
    xml = (
        f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><os>"
        "<type arch='x86_64' machine='pc'>hvm</type></os><devices>"
        "<emulator>/usr/bin/qemu-system-x86_64</emulator></devices></domain>"
    )
    path = tmp_path / "running.xml"
    path.write_text(xml)
    virsh = ["virsh", "-c", "qemu:///system"]
    subprocess.run([*virsh, "define", str(path)], check=True, capture_output=True)
    try:
        subprocess.run([*virsh, "start", name], check=True, capture_output=True)
        result = CliRunner().invoke(cli, ["domain", "convert", name, "--facts", "none"])
        assert result.exit_code == 1
        assert f"domain '{name}' is running: shut it down first" in result.output
    finally:
        subprocess.run([*virsh, "destroy", name], capture_output=True)
        subprocess.run([*virsh, "undefine", name], capture_output=True)


# -- rewrite as a filter ----------------------------------------------------------------------


def test_unusable_default_facts_cache_only_warns(tmp_path, monkeypatch):
    from nfd_snp.domain import node as node_facts

    stale = tmp_path / "facts.json"
    stale.write_text('{"schema": "nfd-snp.facts/v1"}')
    monkeypatch.setattr(node_facts, "DEFAULT_FACTS_CACHE", str(stale))
    result = CliRunner().invoke(
        cli, ["domain", "rewrite"], input=(OWN / "direct-kernel.xml").read_bytes()
    )
    assert result.exit_code == 0
    assert (
        "nfd-snp: warning: ignoring node facts (facts cache: no sev-snp verdict)" in result.output
    )
    explicit = CliRunner().invoke(
        cli,
        ["domain", "rewrite", "--facts", str(stale)],
        input=(OWN / "direct-kernel.xml").read_bytes(),
    )
    assert explicit.exit_code == 2 and "no sev-snp verdict" in explicit.output


def test_rewrite_filter_end_to_end(tmp_path):
    data = (OWN / "plain-virtio.xml").read_bytes()
    proc = subprocess.run(
        [*NFD_SNP, "domain", "rewrite", "--facts", "none", "--option", "vcek=yes"],
        input=data,
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    root = xmlio.parse(proc.stdout)
    assert root.find("launchSecurity").get("vcek") == "yes"
    again = subprocess.run(
        [*NFD_SNP, "domain", "rewrite", "--facts", "none"],
        input=proc.stdout,
        capture_output=True,
        timeout=60,
    )
    assert again.stdout == proc.stdout  # idempotent through the CLI too


@pytest.mark.parametrize(
    "args, stdin, message",
    [
        (["--option", "novalue"], b"<domain><os/></domain>", "expected NAME=VALUE"),
        ([], b"<domain><os/>", "not well-formed"),
        (["--option", "policy=0x1"], b"<domain><os/></domain>", "bit 17 is reserved"),
        (["--schemas", "/nonexistent"], b"<domain><os/></domain>", "knows sev-snp"),
        (["--facts", "/nonexistent/facts.json"], b"<domain><os/></domain>", "is missing"),
    ],
)
def test_rewrite_errors_are_one_line_exit_2(args, stdin, message):
    if "--facts" not in args:
        args = [*args, "--facts", "none"]
    result = CliRunner().invoke(cli, ["domain", "rewrite", *args], input=stdin)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_rewrite_names_the_request_in_the_xml_not_the_option_flag():
    data = (
        (OWN / "plain-virtio.xml")
        .read_bytes()
        .replace(
            b"</name>",
            b"</name><metadata><snp:sev-snp xmlns:snp='urn:nfd-snp:1' vcek='maybe'/></metadata>",
            1,
        )
    )
    result = cli_runner().invoke(cli, ["domain", "rewrite", "--facts", "none"], input=data)
    assert result.exit_code == 2
    assert result.stderr == (
        "nfd-snp: error: the domain's <snp:sev-snp>: vcek: 'maybe' is not yes or no; correct it "
        "in the XML, or replace it: --option vcek=VALUE\n"
    )
    fixed = cli_runner().invoke(
        cli, ["domain", "rewrite", "--facts", "none", "--option", "vcek=yes"], input=data
    )
    assert fixed.exit_code == 0, fixed.stderr
    bad_flag = cli_runner().invoke(
        cli, ["domain", "rewrite", "--facts", "none", "--option", "vcek=maybe"], input=data
    )
    assert "--option: vcek: 'maybe' is not yes or no" in bad_flag.stderr


def test_rewrite_leaves_an_unknown_cbit_to_libvirt(tmp_path, snapshot):
    """Node facts from a CPU that hides CPUID 0x8000001F (and no libvirt to ask) hold no
    C-bit: the rewrite writes none rather than a guess, and says so."""
    import json

    from nfd_snp import facts_cache
    from nfd_snp.checks import evaluate

    capture = json.loads((SAMPLES / "genoa-snp-ready" / "nfd-snp-capture.json").read_text())
    cpuid = {**capture["cpuid"], "0x8000001f": [0, 0, 0, 0]}
    root = snapshot(base="genoa-snp-ready", capture={"cpuid": cpuid, "domcaps": None})
    facts = tmp_path / "facts.json"
    facts_cache.write_if_changed(str(facts), facts_cache.encode(evaluate(probe_root(root))))
    result = cli_runner().invoke(
        cli,
        ["domain", "rewrite", "--facts", str(facts)],
        input=(OWN / "plain-virtio.xml").read_bytes(),
    )
    assert result.exit_code == 0, result.stderr
    launch = xmlio.parse(result.stdout).find("launchSecurity")
    assert launch.get("type") == "sev-snp" and launch.find("cbitpos") is None
    assert "the node facts hold no C-bit position" in result.stderr
