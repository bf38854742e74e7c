"""The RPMs as a packager checks them: built by `make rpm` in a clean clone, the split into
nfd-snp and nfd-snp-libvirt, files, modes, dependencies and scriptlets, the wheel's dist-info
and entry point, %check, rpmlint, the unit as installed, and the installed hook run from the
payload."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from nfd_snp import __version__, facts_cache, hook_script, paths
from nfd_snp.checks import evaluate
from tests.conftest import REPO, SAMPLES, install_hook, need, probe_root
from tests.test_convert import trixie_chroot  # noqa: F401  (fixture)
from tests.test_deploy import _verify

pytestmark = pytest.mark.system  # rpmbuild, and the payload run in a chroot
VERSION = __version__
HOOK = "/" + paths.LIBVIRT_QEMU_HOOK


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """`make rpm` in a fresh clone of this repository's committed tree."""
    for tool in ("rpmbuild", "rpmlint", "rpm2cpio", "cpio", "make", "git"):
        need(shutil.which(tool) is not None, f"{tool} is not installed")
    # `make rpm` archives a git checkout; the RPM's own %check runs in an unpacked tarball.
    need((REPO / ".git").exists(), f"{REPO} is not a git checkout")
    clone = tmp_path_factory.mktemp("clone") / "nfd-snp"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    # The suite runs once: this build leaves out the RPM's %check, which would run it again
    # (test_make_rpm_runs_the_suite_in_check shows that `make rpm` does run it).
    proc = subprocess.run(
        ["make", "rpm", "CHECK=--without check"],
        cwd=clone,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rpm = clone / "dist" / f"nfd-snp-{VERSION}-1.noarch.rpm"
    libvirt_rpm = clone / "dist" / f"nfd-snp-libvirt-{VERSION}-1.noarch.rpm"
    srpm = clone / "dist" / f"nfd-snp-{VERSION}-1.src.rpm"
    assert rpm.exists() and libvirt_rpm.exists() and srpm.exists()
    return clone, rpm, srpm, proc.stdout + proc.stderr, libvirt_rpm


def rpmq(*args):
    return subprocess.run(["rpm", "-qp", *args], capture_output=True, text=True, check=True).stdout


def test_make_rpm_runs_the_suite_in_check(built):
    """`make rpm` runs the whole test suite in %check, against the installed wheel, minus
    what needs a libvirt daemon or the network, wherever the builder's python3 has the test
    tools (else --without check); only this test's own build leaves it out."""
    clone, _, _, log, _ = built
    dry_run = subprocess.run(["make", "-n", "rpm"], cwd=clone, capture_output=True, text=True)
    tools = subprocess.run(
        ["/usr/bin/python3", "-c", "import pytest, hypothesis, lxml, click, venv"],
        capture_output=True,
    )
    assert ("--with check" in dry_run.stdout) is (tools.returncode == 0), dry_run.stdout
    spec = (clone / "packaging/rpm/nfd-snp.spec").read_text()
    check = spec[spec.index("\n%check\n") : spec.index("\n%post\n")]
    assert "%if %{with check}" in check
    assert re.search(r'-m "not libvirtd and not network" tests\n', check), check
    assert "--without check" in log


def test_version_has_one_source(built):
    _, rpm, srpm, _, libvirt_rpm = built
    for package in (rpm, srpm, libvirt_rpm):
        assert rpmq("--qf", "%{VERSION}", str(package)) == VERSION


def _files(rpm):
    rows = rpmq("--qf", "[%{FILEMODES:perms} %{FILEFLAGS:fflags} %{FILENAMES}\n]", str(rpm))
    files = {}
    for line in rows.splitlines():
        perms, flags, name = (line.split(" ", 2) + [""])[:3]
        if name == "":  # no flags: "perms  name"
            perms, name = line.split(None, 1)
            flags = ""
        files[name.strip()] = (perms, flags)
    return files


def test_the_hook_names_the_system_python(payload):
    """The shell front runs the distribution's python3, isolated (-I), for SNP domains only."""
    hook = (payload / HOOK.lstrip("/")).read_text()
    assert hook.startswith("#!/bin/sh\n")
    assert hook_script.interpreter(hook) == "/usr/bin/python3"
    assert hook == hook_script.render("/usr/bin/python3")


def test_the_hook_is_in_nfd_snp_libvirt_only(built):
    _, rpm, _, _, libvirt_rpm = built
    assert HOOK not in _files(rpm)
    files = _files(libvirt_rpm)
    assert files[HOOK][0] == "-rwxr-xr-x"
    assert set(files) == {HOOK, "/etc/libvirt/hooks", "/etc/libvirt/hooks/qemu.d"}
    requires = rpmq("--requires", str(libvirt_rpm)).splitlines()
    assert f"nfd-snp = {VERSION}-1" in requires
    assert "python3-libvirt" in requires and "libvirt-daemon-driver-qemu" in requires


def test_nfd_snp_pulls_no_libvirt(built):
    """KubeVirt nodes run no host libvirt: installing nfd-snp must not bring one."""
    _, rpm, _, _, _ = built
    requires = rpmq("--requires", str(rpm))
    assert "libvirt" not in requires, requires
    for dep in ("python3-lxml", "python3-click"):
        assert dep in requires.split()
    assert "python3-psutil" not in requires.split()  # /proc is parsed by nfd-snp itself
    assert "python3-libvirt" in rpmq("--recommends", str(rpm)).split()
    # the node hook's grpcio is optional too: nfd-snp installs and runs without it
    assert "grpc" not in requires, requires
    assert "python3-grpcio" in rpmq("--recommends", str(rpm)).split()
    assert "prometheus" not in rpmq("--suggests", str(rpm))


def test_files_and_modes(built):
    _, rpm, _, _, _ = built
    files = _files(rpm)
    expected = {
        "/usr/bin/nfd-snp": "-rwxr-xr-x",
        "/usr/libexec/nfd-snp/onDefineDomain": "-rwxr-xr-x",
        "/etc/nfd-snp/nfd-snp.conf": "-rw-r--r--",
        "/usr/lib/systemd/system/nfd-snp.service": "-rw-r--r--",
        "/usr/lib/tmpfiles.d/nfd-snp.conf": "-rw-r--r--",
        "/usr/lib/modules-load.d/nfd-snp.conf": "-rw-r--r--",
        "/etc/kubernetes/node-feature-discovery/features.d/nfd-snp": "-rw-r--r--",
    }
    for name, perms in expected.items():
        assert name in files, name
        assert files[name][0] == perms, (name, files[name])
    assert (
        "c" in files["/etc/nfd-snp/nfd-snp.conf"][1]
        and "n" in files["/etc/nfd-snp/nfd-snp.conf"][1]
    )  # %config(noreplace)
    assert "g" in files["/etc/kubernetes/node-feature-discovery/features.d/nfd-snp"][1]
    assert any(n.endswith("/nfd_snp/cli.py") for n in files)
    assert any(n.endswith("/nfd_snp/samples/genoa-snp-ready/nfd-snp-capture.json") for n in files)
    assert any(
        n.endswith("/licenses/nfd-snp/LICENSE") or n.endswith(f"nfd-snp-{VERSION}/LICENSE")
        for n in files
    )
    assert "/usr/share/nfd-snp/deploy/prometheus/nfd-snp-rules.yaml" in files


def test_scriptlets(built):
    _, rpm, _, _, libvirt_rpm = built
    scripts = rpmq("--scripts", str(rpm))
    assert "systemctl --no-reload preset nfd-snp.service" in scripts or "systemd-update" in scripts
    assert "disable --now nfd-snp.service" in scripts or "systemd-update" in scripts
    assert "try-restart nfd-snp.service" in scripts or "systemd-update" in scripts
    assert "virtqemud" not in scripts
    hook_scripts = rpmq("--scripts", str(libvirt_rpm))
    assert "restart virtqemud or libvirtd to load the libvirt hook" in hook_scripts
    assert "restart libvirtd\n" not in hook_scripts  # a message, never a forced daemon restart


def test_rpmlint_has_no_errors(built):
    clone, rpm, srpm, _, libvirt_rpm = built
    proc = subprocess.run(
        [
            "rpmlint",
            "-r",
            str(clone / "packaging/rpm/nfd-snp.rpmlintrc"),
            str(rpm),
            str(libvirt_rpm),
            str(srpm),
            str(clone / "packaging/rpm/nfd-snp.spec"),
        ],
        capture_output=True,
        text=True,
    )
    summary = proc.stdout.strip().splitlines()[-1]
    assert " 0 errors, 0 warnings" in summary, proc.stdout


@pytest.fixture(scope="module")
def payload(built, tmp_path_factory):
    """Both packages' files, unpacked into one tree."""
    _, rpm, _, _, libvirt_rpm = built
    root = tmp_path_factory.mktemp("payload")
    for package in (rpm, libvirt_rpm):
        cpio = subprocess.run(f"rpm2cpio {package} | cpio -idm --quiet", shell=True, cwd=root)
        assert cpio.returncode == 0
    return root


def test_payload_is_the_wheel_installed(payload):
    """The dist-info (importlib.metadata, pip list, Python provides) and the entry point the
    wheel generated, not a copy of the package and a hand-written launcher."""
    (distinfo,) = payload.glob(f"usr/lib*/python3*/*-packages/nfd_snp-{VERSION}.dist-info")
    metadata = (distinfo / "METADATA").read_text()
    assert f"Version: {VERSION}" in metadata and "Name: nfd-snp" in metadata
    # libvirt-python only as the extra [libvirt]: the Python dependency generator must not
    # make nfd-snp require it
    libvirt = [r for r in re.findall(r"^Requires-Dist: (.*)$", metadata, re.M) if "libvirt" in r]
    assert libvirt and all(re.search(r"extra == ['\"]libvirt['\"]", r) for r in libvirt)
    assert "nfd-snp = nfd_snp.cli:main" in (distinfo / "entry_points.txt").read_text()
    assert (distinfo / "INSTALLER").read_text() == "rpm\n"
    assert not (distinfo / "RECORD").exists()  # rpm, not pip, owns the files
    launcher = (payload / "usr/bin/nfd-snp").read_text()
    assert launcher.startswith("#!/usr/bin/python3 -I\n")
    assert "from nfd_snp.cli import main" in launcher and "sys.exit(main())" in launcher


def test_unit_as_installed_verifies_clean(payload, tmp_path):
    unit = (payload / "usr/lib/systemd/system/nfd-snp.service").read_text()
    assert unit == (REPO / "systemd/nfd-snp.service").read_text()
    assert _verify(unit, tmp_path) == (0, "")


def test_erase_removes_the_feature_file(built, tmp_path):
    _, rpm, _, _, _ = built
    root = tmp_path / "root"
    subprocess.run(["rpm", "--root", str(root), "--initdb"], check=True)
    quiet = {"capture_output": True, "check": True}
    subprocess.run(["rpm", "--root", str(root), "--nodeps", "--noscripts", "-i", str(rpm)], **quiet)
    feature = root / "etc/kubernetes/node-feature-discovery/features.d/nfd-snp"
    feature.write_text("sev-snp.node.kubevirt.io/enabled=true\n")
    lock = feature.parent / ".nfd-snp.lock"  # the service's lock beside it
    lock.write_text("4242\n")
    subprocess.run(
        ["rpm", "--root", str(root), "--nodeps", "--noscripts", "-e", "nfd-snp"], **quiet
    )
    assert not feature.exists() and not lock.exists()


# -- the installed hook, run from the payload in a system with its dependencies -----------------


@pytest.fixture(scope="module")
def installed_root(payload, trixie_chroot):  # noqa: F811
    """The payload copied into the trixie chroot (python3 with lxml, click, libvirt)."""
    copied = []
    for path in sorted(payload.rglob("*")):
        rel = path.relative_to(payload)
        target = trixie_chroot / rel
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            shutil.copy2(path, target)
            copied.append(target)
    facts = trixie_chroot / "run/nfd-snp/facts.json"
    facts.parent.mkdir(parents=True, exist_ok=True)
    facts.write_bytes(facts_cache.encode(evaluate(probe_root(SAMPLES / "genoa-snp-ready"))))
    yield trixie_chroot
    for target in copied:
        target.unlink(missing_ok=True)


DOMAINS = REPO / "tests" / "data" / "domains"


def _marked_plain() -> bytes:
    from nfd_snp import xmlio
    from nfd_snp.domain import engine
    from nfd_snp.domain.options import SnpOptions

    root = xmlio.parse((DOMAINS / "plain-virtio.xml").read_bytes())
    engine.set_request(root, SnpOptions())
    return xmlio.serialize(root).encode()


CASES = [
    ("noop", ["vm", "started", "begin", "-"], DOMAINS / "plain-virtio.xml"),
    ("unmarked-prepare", ["vm", "prepare", "begin", "-"], DOMAINS / "plain-virtio.xml"),
    ("converted-prepare", ["vm", "prepare", "begin", "-"], DOMAINS / "converted-snp.xml"),
    ("unconverted-prepare", ["web", "prepare", "begin", "-"], None),
    ("restore-rewrite", ["vm", "restore", "begin", "-"], None),
]


@pytest.mark.parametrize("case, argv, source", CASES, ids=[c[0] for c in CASES])
def test_installed_hook_behaves_as_in_the_repository(installed_root, tmp_path, case, argv, source):
    import os

    data = source.read_bytes() if source else _marked_plain()
    installed = subprocess.run(
        [shutil.which("chroot"), str(installed_root), HOOK, *argv],
        input=data,
        capture_output=True,
        env={"PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    facts = tmp_path / "facts.json"
    shutil.copy(installed_root / "run/nfd-snp/facts.json", facts)
    repo = subprocess.run(
        ["sh", str(install_hook(tmp_path / "repo-hook")), *argv],
        input=data,
        capture_output=True,
        env={"PATH": os.environ.get("PATH", ""), "NFD_SNP_FACTS_CACHE": str(facts)},
        timeout=120,
    )
    assert (installed.returncode, installed.stderr) == (repo.returncode, repo.stderr)
    if case == "restore-rewrite":
        import xml.etree.ElementTree as ET

        def canonical(x):
            return ET.canonicalize(x.decode(), strip_text=True, rewrite_prefixes=True)

        assert canonical(installed.stdout) == canonical(repo.stdout)
        assert b"sev-snp" in installed.stdout
    else:
        assert installed.stdout == repo.stdout == b""
    if case == "unconverted-prepare":
        assert installed.returncode == 1 and b"nfd-snp domain convert web" in installed.stderr


def test_installed_cli_runs(installed_root):
    proc = subprocess.run(
        [
            shutil.which("chroot"),
            str(installed_root),
            "/usr/bin/nfd-snp",
            "check",
            "--sample",
            "genoa-snp-ready",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "SEV-SNP  ready" in proc.stdout
