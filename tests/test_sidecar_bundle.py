"""The one-file onDefineDomain script of the sidecar ConfigMap, run as KubeVirt's shim runs it:
in a venv with only the standard library, and under a real Python 3.9 (Debian bullseye's, in
a chroot), the version of KubeVirt's CentOS Stream 9 sidecar-shim image. Its output must be
the engine's output under this project's Python with lxml, for every domain we have."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from nfd_snp.kubevirt import sidecar_bundle
from nfd_snp import xmlio
from nfd_snp.errors import ProgrammingError
from tests.conftest import REPO, SHARED, built_chroot, domain_inputs

HOST_DATA = "aGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGg="
SNP_DOMAIN = REPO / "tests" / "data" / "kubevirt" / "kubevirt-snp.xml"


def vmi(annotations, launch):
    return json.dumps(
        {
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachineInstance",
            "metadata": {"name": "vm", "namespace": "default", "annotations": annotations},
            "spec": {"domain": {"launchSecurity": launch, "devices": {}}},
        }
    )


ASK = {"sev-snp.kubevirt.io/secure-nested-paging": "true"}
REQUESTS = {
    "sev-path": vmi({**ASK, "sev-snp.kubevirt.io/vcek": "yes"}, {"sev": {}}),
    "upstream-snp": vmi({"sev-snp.kubevirt.io/host-data": HOST_DATA}, {"snp": {}}),
    "not-asked": vmi({}, {"sev": {}}),
}


def canonical(xml: str) -> str:
    return ET.canonicalize(xml, strip_text=True, rewrite_prefixes=True)


def _domains():
    paths = domain_inputs() + [SNP_DOMAIN]
    if (SHARED / "fixtures" / "domains").is_dir():
        paths += sorted((SHARED / "fixtures" / "domains").glob("*.xml"))
    return paths


# -- the script itself ---------------------------------------------------------------------


def sections(script: str) -> dict:
    """{module: (path, source)} as the loader in the script reads them."""
    body = script.split("MODULES = r'''\n", 1)[1].rsplit("'''\n", 1)[0]
    parts = re.split(r"^# ==== nfd-snp module (\S+) \((\S+)\) ====\n", body, flags=re.M)
    assert parts[0] == ""
    return {parts[i]: (parts[i + 1], parts[i + 2]) for i in range(1, len(parts), 3)}


def test_script_carries_the_package_modules_verbatim():
    found = sections(sidecar_bundle.build_script())
    assert list(found) == [name for name, _rel in sidecar_bundle.MODULES]
    for name, rel in sidecar_bundle.MODULES:
        path, source = found[name]
        assert path == f"nfd_snp/{rel}"
        assert source == (REPO / "nfd_snp" / rel).read_text(), name


def test_script_is_plain_source_not_escaped_strings():
    script = sidecar_bundle.build_script()
    # the module text appears as lines of Python, e.g. a def line of the kubevirt module
    assert "\ndef on_define_domain(vmi_text, domain_xml) -> str:\n" in script
    assert "\\n" not in script.split("MODULES = r'''", 1)[1].split("\n", 1)[0]
    compile(script, "onDefineDomain", "exec")


@pytest.mark.parametrize(
    "text, why",
    [
        ('x = """a"""\ny = ' + "'" * 3 + "b" + "'" * 3 + "\n", "raw string"),
        ("x = 1 \\\n", "raw string"),
        ("# ==== nfd-snp module fake (x.py) ====\n", "raw string"),
        ("x = 1", "newline"),
    ],
)
def test_a_module_that_cannot_be_carried_verbatim_is_refused(monkeypatch, tmp_path, text, why):
    (tmp_path / "errors.py").write_text(text)
    monkeypatch.setattr(sidecar_bundle, "PACKAGE_DIR", tmp_path)
    monkeypatch.setattr(sidecar_bundle, "MODULES", (("nfd_snp.errors", "errors.py"),))
    with pytest.raises(ProgrammingError, match=why):
        sidecar_bundle.build_script()


# -- running it ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def script(tmp_path_factory):
    path = tmp_path_factory.mktemp("sidecar") / "onDefineDomain"
    path.write_text(sidecar_bundle.build_script())
    path.chmod(0o755)
    return path


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory):
    """A venv with nothing but the standard library (like the sidecar-shim image)."""
    env = tmp_path_factory.mktemp("bare")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    for module in ("lxml", "libvirt", "click", "nfd_snp"):
        probe = subprocess.run([str(python), "-I", "-c", f"import {module}"], capture_output=True)
        assert probe.returncode != 0, f"{module} must not be importable in the bare venv"
    return str(python)


@pytest.fixture(scope="module")
def bullseye():
    """Debian bullseye with python3 = 3.9 and nothing else (scripts/make-bullseye-chroot.sh)."""
    return built_chroot("bullseye")


def run_reference(args):
    """The repository's hook entry under this project's Python (lxml installed)."""
    cmd = [sys.executable, "-I", str(REPO / "hooks" / "onDefineDomain"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def run_bare(bare_python, script, args):
    cmd = [bare_python, "-I", str(script), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def run_py39(root, script, args):
    """The script exec'd by its own #! line in the chroot, as the shim execs it."""
    target = root / "opt" / "nfd-snp-sidecar" / "onDefineDomain"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(script, target)
    cmd = [shutil.which("chroot"), str(root), "/opt/nfd-snp-sidecar/onDefineDomain", *args]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"}
    )


def test_the_chroot_python_is_3_9_without_lxml(bullseye):
    proc = subprocess.run(
        ["chroot", str(bullseye), "python3", "-c", "import sys; print(sys.version_info[:2])"],
        capture_output=True,
        text=True,
    )
    assert proc.stdout.strip() == "(3, 9)"
    proc = subprocess.run(["chroot", str(bullseye), "python3", "-c", "import lxml"])
    assert proc.returncode != 0


def _same_as_reference(proc, reference):
    assert (proc.returncode, proc.stderr) == (reference.returncode, reference.stderr)
    if reference.returncode == 0:
        assert canonical(proc.stdout) == canonical(reference.stdout)


# The stdlib-only venv, and (a system test: a chroot) bullseye's Python 3.9.
PYTHONS = ["stdlib", pytest.param("python3.9", marks=[pytest.mark.system, pytest.mark.network])]


@pytest.mark.parametrize("python", PYTHONS)
@pytest.mark.parametrize("request_name", sorted(REQUESTS))
@pytest.mark.parametrize("path", _domains(), ids=lambda p: p.name)
def test_script_matches_the_engine(request, script, path, request_name, python):
    args = ["--vmi", REQUESTS[request_name], "--domain", path.read_text()]
    reference = run_reference(args)
    if python == "stdlib":
        proc = run_bare(request.getfixturevalue("bare_python"), script, args)
    else:
        proc = run_py39(request.getfixturevalue("bullseye"), script, args)
    _same_as_reference(proc, reference)
    if request_name == "not-asked":
        assert reference.stdout == path.read_text()  # byte for byte


def test_script_serves_an_upstream_snp_vmi_under_python_3_9(bullseye, script):
    proc = run_py39(
        bullseye, script, ["--vmi", REQUESTS["upstream-snp"], "--domain", SNP_DOMAIN.read_text()]
    )
    assert proc.returncode == 0, proc.stderr
    root = xmlio.parse(proc.stdout)
    assert root.find("launchSecurity/hostData").text == HOST_DATA
    assert root.find("os/loader").text == "/usr/share/OVMF/OVMF.amdsev.fd"


@pytest.mark.parametrize(
    "args, status, message",
    [
        (
            ["--vmi", vmi({**ASK, "sev-snp.kubevirt.io/policy": "0x1"}, {"sev": {}})],
            1,
            "nfd-snp: refusing SEV-SNP for this VMI: policy 0x00000001: bit 17 is reserved",
        ),
        ([], 2, "nfd-snp: missing --vmi and --domain"),
        (["--vmi", "{not json"], 2, "nfd-snp: VMI: not valid JSON"),
    ],
)
def test_script_errors_are_one_line_under_python_3_9(bullseye, script, args, status, message):
    if args:
        args = args + ["--domain", (REPO / "tests/data/domains/kubevirt-sev.xml").read_text()]
    proc = run_py39(bullseye, script, args)
    assert proc.returncode == status and proc.stdout == ""
    assert proc.stderr.startswith(message) and len(proc.stderr.splitlines()) == 1


def test_script_rejects_hostile_xml_without_lxml(bare_python, script):
    deep = "<domain>" + "<a>" * 300 + "</a>" * 300 + "</domain>"
    proc = run_bare(bare_python, script, ["--vmi", vmi(ASK, {"sev": {}}), "--domain", deep])
    assert proc.returncode == 2 and "deeper than 256 levels" in proc.stderr
