"""The RPM as a packager checks it: built by `make rpm` in a clean clone, its files, modes and
scriptlets, rpmlint, the unit as installed, and the installed hook run from the payload."""

from __future__ import annotations

import configparser
import shutil
import subprocess

import pytest

from nfd_snp import facts_cache
from nfd_snp.checks import evaluate
from tests.conftest import REPO, SAMPLES, need, probe_root
from tests.test_convert import trixie_chroot  # noqa: F401  (fixture)
from tests.test_deploy import _verify

VERSION = (lambda c: (c.read(REPO / "setup.cfg"), c["metadata"]["version"])[1])(
    configparser.ConfigParser()
)
HOOK = "/etc/libvirt/hooks/qemu.d/50-nfd-snp"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """`make rpm` in a fresh clone of this repository's committed tree."""
    for tool in ("rpmbuild", "rpmlint", "rpm2cpio", "cpio", "make", "git"):
        need(shutil.which(tool) is not None, f"{tool} is not installed")
    clone = tmp_path_factory.mktemp("clone") / "nfd-snp"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    proc = subprocess.run(["make", "rpm"], cwd=clone, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rpm = clone / "dist" / f"nfd-snp-{VERSION}-1.noarch.rpm"
    srpm = clone / "dist" / f"nfd-snp-{VERSION}-1.src.rpm"
    assert rpm.exists() and srpm.exists()
    return clone, rpm, srpm, proc.stdout


def rpmq(*args):
    return subprocess.run(["rpm", "-qp", *args], capture_output=True, text=True, check=True).stdout


def test_check_section_ran_the_unit_tests(built):
    *_, log = built
    if "--with check" in log:
        assert " passed" in log and " failed" not in log


def test_version_comes_from_setup_cfg(built):
    _, rpm, srpm, _ = built
    assert rpmq("--qf", "%{VERSION}", str(rpm)) == VERSION
    assert rpmq("--qf", "%{VERSION}", str(srpm)) == VERSION


def test_files_and_modes(built):
    _, rpm, _, _ = built
    rows = rpmq("--qf", "[%{FILEMODES:perms} %{FILEFLAGS:fflags} %{FILENAMES}\n]", str(rpm))
    files = {}
    for line in rows.splitlines():
        perms, flags, name = (line.split(" ", 2) + [""])[:3]
        if name == "":  # no flags: "perms  name"
            perms, name = line.split(None, 1)
            flags = ""
        files[name.strip()] = (perms, flags)
    expected = {
        "/usr/bin/nfd-snp": "-rwxr-xr-x",
        HOOK: "-rwxr-xr-x",
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
    requires = rpmq("--requires", str(rpm)).split()
    for dep in ("python3-libvirt", "python3-lxml", "python3-click", "python3-psutil"):
        assert dep in requires


def test_scriptlets(built):
    _, rpm, _, _ = built
    scripts = rpmq("--scripts", str(rpm))
    assert "systemctl --no-reload preset nfd-snp.service" in scripts or "systemd-update" in scripts
    assert "disable --now nfd-snp.service" in scripts or "systemd-update" in scripts
    assert "try-restart nfd-snp.service" in scripts or "systemd-update" in scripts
    assert "restart virtqemud or libvirtd to load the libvirt hook" in scripts
    assert "restart libvirtd\n" not in scripts  # a message, never a forced daemon restart


def test_rpmlint_has_no_errors(built):
    clone, rpm, srpm, _ = built
    proc = subprocess.run(
        [
            "rpmlint",
            "-r",
            str(clone / "packaging/rpm/nfd-snp.rpmlintrc"),
            str(rpm),
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
    _, rpm, _, _ = built
    root = tmp_path_factory.mktemp("payload")
    cpio = subprocess.run(f"rpm2cpio {rpm} | cpio -idm --quiet", shell=True, cwd=root)
    assert cpio.returncode == 0
    return root


def test_unit_as_installed_verifies_clean(payload, tmp_path):
    unit = (payload / "usr/lib/systemd/system/nfd-snp.service").read_text()
    assert unit == (REPO / "systemd/nfd-snp.service").read_text()
    assert _verify(unit, tmp_path) == (0, "")


def test_erase_removes_the_feature_file(built, tmp_path):
    _, rpm, _, _ = built
    root = tmp_path / "root"
    subprocess.run(["rpm", "--root", str(root), "--initdb"], check=True)
    quiet = {"capture_output": True, "check": True}
    subprocess.run(["rpm", "--root", str(root), "--nodeps", "--noscripts", "-i", str(rpm)], **quiet)
    feature = root / "etc/kubernetes/node-feature-discovery/features.d/nfd-snp"
    feature.write_text("sev-snp.node.kubevirt.io/enabled=true\n")
    subprocess.run(
        ["rpm", "--root", str(root), "--nodeps", "--noscripts", "-e", "nfd-snp"], **quiet
    )
    assert not feature.exists()


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
    import sys

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
        [sys.executable, "-I", str(REPO / "hooks/qemu"), *argv],
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
