"""Shared test fixtures: snapshot builder, shared/ fixtures, trixie assets, a real libvirtd."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
SAMPLES = REPO / "nfd_snp" / "samples"
DOMAINS = REPO / "tests" / "data" / "domains"
IN_CI = os.environ.get("CI", "").lower() == "true"


def domain_inputs() -> list:
    """The domains of tests/data/domains (NAME.xml), not their expected outputs
    (NAME.VARIANT.xml, tests/test_golden.py)."""
    return sorted(p for p in DOMAINS.glob("*.xml") if p.name.count(".") == 1)


def need(condition: bool, why: str) -> None:
    """Skip a test whose real component is missing, but fail in CI, where it must be there."""
    if not condition:
        if IN_CI:
            pytest.fail(f"required in CI: {why}")
        pytest.skip(why)


def _nfd_snp_command() -> list:
    """The `nfd-snp` under test: $NFD_SNP (the RPM's %check names the entry point it built),
    else the console script next to this Python (a virtualenv), else this Python running the
    package it imports."""
    if os.environ.get("NFD_SNP"):
        return [os.environ["NFD_SNP"]]
    script = Path(sys.executable).with_name("nfd-snp")
    return [str(script)] if script.exists() else [sys.executable, "-m", "nfd_snp"]


NFD_SNP = _nfd_snp_command()


def cli_runner():
    """A CliRunner whose result keeps stdout and stderr apart (click 8.2 always does; 8.1,
    as Debian 12 and EL9 ship it, when asked)."""
    from click.testing import CliRunner

    try:
        return CliRunner(mix_stderr=False)
    except TypeError:
        return CliRunner()


# Fixtures that bring a real component, and the markers saying so. `system`: builds a chroot
# or an RPM or starts a daemon, so `-m "not system"` is the quick edit-test loop; `libvirtd`
# and `network` (a running libvirtd, Debian packages fetched) are what a build host lacks, so
# `-m "not libvirtd and not network"` is the RPM's %check.
FIXTURE_MARKERS = {
    "libvirtd": ("libvirtd", "system"),
    "trixie_root": ("network",),
    "trixie_chroot": ("network", "system"),
    "bullseye": ("network", "system"),
    "node_exporter": ("system",),
}


def pytest_addoption(parser):
    parser.addoption(
        "--regenerate-golden",
        action="store_true",
        help="Rewrite the expected files of tests/test_golden.py from the current code.",
    )


def pytest_collection_modifyitems(items):
    for item in items:
        for fixture, markers in FIXTURE_MARKERS.items():
            if fixture in getattr(item, "fixturenames", ()):
                for marker in markers:
                    item.add_marker(marker)


@pytest.fixture
def snapshot(tmp_path):
    """Build a snapshot directory: snapshot(files={rel: text|bytes}, capture={...}), on top
    of `base`: a bundled sample's name or any snapshot directory's path."""

    def build(files=None, capture=None, base=None):
        root = tmp_path / f"snap{len(list(tmp_path.iterdir()))}"
        if base:
            shutil.copytree(SAMPLES / base, root, symlinks=True)  # sysfs links loop
            merged = json.loads((root / "nfd-snp-capture.json").read_text())
        else:
            root.mkdir()
            merged = {}
        merged.update(capture or {})
        for rel, content in (files or {}).items():
            path = root / rel
            if content is None:
                path.unlink()
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
        (root / "nfd-snp-capture.json").write_text(json.dumps(merged))
        return root

    return build


def probe_root(root):
    from nfd_snp.host import open_host
    from nfd_snp.probe import probe

    with open_host(root) as host:
        return probe(host)


def report_of(root):
    from nfd_snp.checks import evaluate

    return evaluate(probe_root(root))


@pytest.fixture(scope="session")
def shared_dir():
    if not SHARED.is_dir():
        pytest.skip("../shared is absent (fixtures from libvirt and KubeVirt live there)")
    return SHARED


@pytest.fixture(scope="session")
def trixie_root():
    """Debian trixie's linux-libc-dev and libvirt-common unpacked (fetched once, cached)."""
    dest = REPO / ".cache" / "trixie"
    script = REPO / "scripts" / "fetch-trixie-assets.sh"
    result = subprocess.run(["bash", str(script), str(dest)], capture_output=True, text=True)
    need(result.returncode == 0, f"cannot fetch trixie packages: {result.stderr.strip()[-300:]}")
    return dest / "root"


def need_libvirt_python() -> None:
    try:
        import libvirt  # noqa: F401
    except ImportError:
        need(False, "libvirt-python is not installed")


@pytest.fixture(scope="session")
def libvirtd():
    """A real libvirtd answering on qemu:///system (started by scripts/start-libvirtd.sh),
    and libvirt-python to talk to it."""
    need(shutil.which("libvirtd") is not None, "libvirtd is not installed")
    need_libvirt_python()
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "start-libvirtd.sh")], capture_output=True, text=True
    )
    need(result.returncode == 0, f"libvirtd did not start: {result.stderr.strip()}")
    return "qemu:///system"


def built_chroot(release: str):
    """A Debian chroot built (once, cached in .cache/) by scripts/make-<release>-chroot.sh."""
    need(os.geteuid() == 0, "building and entering a chroot needs root")
    root = REPO / ".cache" / f"{release}-chroot"
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / f"make-{release}-chroot.sh"), str(root)],
        capture_output=True,
        text=True,
    )
    need(proc.returncode == 0, f"cannot build the {release} chroot: {proc.stderr[-400:]}")
    return root


def install_hook(directory: Path, python: str = sys.executable, *python_flags) -> Path:
    """The hook as `nfd-snp install` writes it, in `directory`, for a wrapper of `python`
    (run with `python_flags`) that appends one line to `directory`/starts per Python start:
    tests count how often the hook started Python."""
    from nfd_snp import hook_script

    directory.mkdir(parents=True, exist_ok=True)
    wrapper = directory / "python"
    flags = " ".join(python_flags)
    wrapper.write_text(
        f'#!/bin/sh\necho "$2" >> "{directory}/starts"\nexec "{python}" {flags} "$@"\n'
    )
    wrapper.chmod(0o755)
    hook = directory / "50-nfd-snp"
    hook.write_text(hook_script.render(str(wrapper)))
    hook.chmod(0o755)
    return hook


def python_starts(hook: Path) -> int:
    """How many times the wrapper of `install_hook` has started Python so far."""
    starts = hook.parent / "starts"
    return len(starts.read_text().splitlines()) if starts.exists() else 0
