"""`nfd-snp install` / `uninstall` into a staging root: what is written, for which Python,
a unit systemd accepts, and an uninstall that leaves the tree as it found it.

The whole path on the host's real libvirtd (restart, check, a VM start, uninstall) is
tests/test_admin_path.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nfd_snp import hook_script, install
from nfd_snp.cli import cli
from nfd_snp.install import Interpreter, InstallError
from tests.conftest import NFD_SNP, cli_runner, need

THIS = Interpreter.current()


def tree(root: Path) -> dict:
    """Every path under `root` with its content (files) or None (directories)."""
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


# A Python under /tmp (the RPM's %check builds its environment in a clone there) is one
# install refuses: the service's PrivateTmp= would hide it.
UNDER_TMP = THIS.hidden_by(install.TMP_TREES)


@pytest.fixture
def root(tmp_path):
    """A host root with libvirt's configuration directory (libvirt is installed there)."""
    if UNDER_TMP:
        pytest.skip(f"this Python runs from {UNDER_TMP[0][0]}, which install refuses")
    base = tmp_path / "host"
    (base / "etc/libvirt/qemu").mkdir(parents=True)
    return base


def run(*args):
    result = cli_runner().invoke(cli, list(args))
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result.stdout


def test_install_writes_what_the_rpm_installs_for_this_python(root):
    out = run("install", "--root", str(root))
    hook = root / "etc/libvirt/hooks/qemu.d/50-nfd-snp"
    assert hook_script.interpreter(hook.read_text()) == sys.executable
    assert hook.read_text() == hook_script.render(sys.executable)
    assert oct(hook.stat().st_mode & 0o777) == "0o755"
    data = Path(install.__file__).parent / "data"
    for rel, shipped in (
        ("etc/tmpfiles.d/nfd-snp.conf", "nfd-snp.tmpfiles.conf"),
        ("etc/modules-load.d/nfd-snp.conf", "nfd-snp.modules-load.conf"),
        ("etc/nfd-snp/nfd-snp.conf", "nfd-snp.conf"),
    ):
        assert (root / rel).read_bytes() == (data / shipped).read_bytes(), rel
        assert oct((root / rel).stat().st_mode & 0o777) == "0o644"
    unit = (root / "etc/systemd/system/nfd-snp.service").read_text()
    assert f"\nExecStart={sys.executable} -I -m nfd_snp run\n" in unit
    assert "/usr/bin/nfd-snp" not in unit and "/usr/share/doc" not in unit
    # what tmpfiles.d would create: the unit's ReadWritePaths= must exist
    assert (root / "etc/kubernetes/node-feature-discovery/features.d").is_dir()
    assert (root / "run/nfd-snp").is_dir()
    assert f"wrote {hook}" in out and "nothing started or restarted" in out


def test_nfd_snp_is_on_roots_path(root, tmp_path):
    script = Path(sys.executable).with_name("nfd-snp")
    if not script.exists():
        pytest.skip("no console script next to this Python")
    run("install", "--root", str(root))
    assert os.readlink(root / install.COMMAND_LINK) == str(script)
    other = tmp_path / "other"
    other.mkdir()
    (other / "usr/local/bin").mkdir(parents=True)
    (other / install.COMMAND_LINK).write_text("#!/bin/sh\n")  # someone else's nfd-snp
    out = run("install", "--root", str(other))
    assert f"kept {other / install.COMMAND_LINK} (not nfd-snp install's)" in out
    run("uninstall", "--root", str(other))
    assert (other / install.COMMAND_LINK).read_text() == "#!/bin/sh\n"


def test_the_unit_verifies_clean_and_sees_this_python(root, tmp_path):
    """systemd-analyze checks the unit and that its ExecStart exists and is executable."""
    need(shutil.which("systemd-analyze") is not None, "systemd-analyze is not installed")
    run("install", "--root", str(root))
    unit = tmp_path / "nfd-snp.service"
    shutil.copy(root / "etc/systemd/system/nfd-snp.service", unit)
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, cwd=tmp_path
    )
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")
    broken = unit.read_text().replace(sys.executable, "/nonexistent/python3")
    unit.write_text(broken)
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, cwd=tmp_path
    )
    assert "Command /nonexistent/python3 is not executable" in proc.stderr


@pytest.mark.parametrize(
    "python, needed, home",
    [
        ("/opt/nfd-snp/bin/python3", ("/opt/nfd-snp/bin/python3", "/usr/lib/python3.11"), "yes"),
        ("/root/venv/bin/python3", ("/root/venv/bin/python3",), "read-only"),
        # a virtualenv outside /home whose interpreter is a pyenv build in a home directory
        ("/srv/venv/bin/python3", ("/srv/venv/bin/python3", "/home/a/.pyenv/bin"), "read-only"),
    ],
)
def test_protect_home_lets_the_service_read_a_python_under_home(python, needed, home):
    unit = install.unit_text(Interpreter(python, needed), [])
    assert f"\nProtectHome={home}\n" in unit
    assert "ProtectSystem=strict" in unit and "PrivateTmp=yes" in unit


def test_this_python_under_tmp_is_refused(tmp_path):
    if not UNDER_TMP:
        pytest.skip("this Python does not run from /tmp")
    result = cli_runner().invoke(cli, ["install", "--root", str(tmp_path)])
    assert result.exit_code == 1 and "PrivateTmp= hides" in result.stderr
    assert not any(tmp_path.iterdir())


def test_this_python_is_seen_by_the_unit_it_gets():
    unit = install.unit_text(THIS, [])
    hidden = THIS.hidden_by(install.HOME_TREES)
    assert ("ProtectHome=read-only" in unit) == bool(hidden)


@pytest.mark.parametrize(
    "interp, message",
    [
        (
            Interpreter("/tmp/venv/bin/python3", ("/tmp/venv/bin/python3",)),
            "/tmp/venv/bin/python3 is under /tmp, which the service's PrivateTmp= hides",
        ),
        (Interpreter("/opt/my venv/bin/python3", ()), "cannot carry unquoted"),
        (
            Interpreter("/nonexistent/bin/python3", ("/nonexistent/bin/python3",)),
            "/nonexistent/bin/python3 -I cannot import nfd-snp",
        ),
    ],
    ids=["tmp", "space", "missing"],
)
def test_a_python_the_service_or_hook_could_not_run_is_refused(interp, message):
    with pytest.raises(InstallError) as exc:
        install.check_interpreter(interp)
    assert message in str(exc.value)


def test_a_python_without_nfd_snp_in_its_own_site_packages_is_refused():
    """Debian's python3 ignores the virtualenv (and -I ignores PYTHONPATH): the hook would
    refuse every SEV-SNP domain with it."""
    bare = "/usr/bin/python3"
    probe = subprocess.run([bare, "-I", "-c", "import nfd_snp"], capture_output=True)
    if not os.path.exists(bare) or probe.returncode == 0:
        pytest.skip("needs a python3 without nfd-snp")
    with pytest.raises(InstallError) as exc:
        install.check_interpreter(Interpreter(bare, (bare,)))
    assert "/usr/bin/python3 -I cannot import nfd-snp (ModuleNotFoundError: " in str(exc.value)


def test_install_again_changes_nothing(root):
    run("install", "--root", str(root))
    before = tree(root)
    again = run("install", "--root", str(root))
    assert tree(root) == before
    assert "wrote" not in again and "created" not in again


def test_dry_run_changes_nothing_and_says_what_it_would_do(root):
    before = tree(root)
    out = run("install", "--root", str(root), "--dry-run")
    assert tree(root) == before
    assert f"would write {root}/etc/libvirt/hooks/qemu.d/50-nfd-snp" in out
    assert f"would create {root}/etc/kubernetes/node-feature-discovery/features.d/" in out
    assert out.count(f"would create {root}/var/lib/nfd-snp/") == 1


def test_without_libvirt_there_is_no_hook(root):
    shutil.rmtree(root / "etc")  # a KubeVirt node: no host libvirt
    out = run("install", "--root", str(root))
    assert not (root / "etc/libvirt").exists()
    assert "no libvirt here" in out and (root / "etc/systemd/system/nfd-snp.service").exists()


def test_a_host_with_the_package_is_left_to_the_package_manager(root):
    unit = root / install.PACKAGED_UNIT
    unit.parent.mkdir(parents=True)
    unit.write_text("[Unit]\n")
    result = cli_runner().invoke(cli, ["install", "--root", str(root)])
    assert result.exit_code == 1
    assert "nfd-snp is installed from a package here" in result.stderr


def test_a_metrics_textfile_gets_a_writable_directory(root):
    config = root / "etc/nfd-snp/nfd-snp.conf"
    config.parent.mkdir(parents=True)
    config.write_text("[nfd-snp]\nmetrics-textfile = /var/lib/node_exporter/textfile/nfd.prom\n")
    out = run("install", "--root", str(root))
    assert f"kept {config} (exists; it is yours)" in out
    unit = (root / "etc/systemd/system/nfd-snp.service").read_text()
    assert "\nReadWritePaths=/var/lib/node_exporter/textfile\n" in unit
    assert (root / "var/lib/node_exporter/textfile").is_dir()


# -- uninstall -------------------------------------------------------------------------------


def _service_files(root: Path, metrics: bool = False) -> list:
    """What `nfd-snp run` writes with the installed configuration."""
    written = [
        root / "etc/kubernetes/node-feature-discovery/features.d/nfd-snp",
        root / "etc/kubernetes/node-feature-discovery/features.d/.nfd-snp-tmp.nfd-snp.x1",
        root / "etc/kubernetes/node-feature-discovery/features.d/.nfd-snp.lock",
        root / "run/nfd-snp/facts.json",
        root / "run/nfd-snp/.facts.json.lock",
    ]
    if metrics:
        written.append(root / "var/lib/node_exporter/textfile/nfd.prom")
        written.append(root / "var/lib/node_exporter/textfile/.nfd.prom.lock")
    for path in written:
        path.write_text("x\n")
    return written


@pytest.mark.parametrize("metrics", [False, True], ids=["default", "metrics-textfile"])
def test_uninstall_leaves_the_tree_as_install_found_it(root, metrics):
    config = root / "etc/nfd-snp/nfd-snp.conf"
    if metrics:  # the admin's own configuration, kept by both
        config.parent.mkdir(parents=True)
        config.write_text(
            "[nfd-snp]\nmetrics-textfile = /var/lib/node_exporter/textfile/nfd.prom\n"
        )
    before = tree(root)
    run("install", "--root", str(root))
    written = _service_files(root, metrics)
    (root / "etc/libvirt/qemu/web.xml").write_text(
        "<domain><name>web</name><metadata><snp:sev-snp xmlns:snp='urn:nfd-snp:1'/>"
        "</metadata></domain>"
    )
    (root / "etc/libvirt/qemu/plain.xml").write_text("<domain><name>plain</name></domain>")
    out = run("uninstall", "--root", str(root))
    for path in written:
        assert f"removed {path}" in out
    assert (
        "libvirt no longer runs nfd-snp's hook: domains that ask for SEV-SNP now start without "
        "nfd-snp's check: a converted one starts as an SEV-SNP guest where libvirt and the node "
        "can run it and fails in QEMU or KVM otherwise; one that is not converted starts as a "
        "plain VM, without SEV-SNP (web)"
    ) in out
    for name in ("web.xml", "plain.xml"):
        (root / "etc/libvirt/qemu" / name).unlink()
    assert tree(root) == before  # the metrics directory too: install created it


def test_uninstall_keeps_a_file_changed_since_install(root):
    run("install", "--root", str(root))
    config = root / "etc/nfd-snp/nfd-snp.conf"
    config.write_text(config.read_text() + "interval = 30\n")
    out = run("uninstall", "--root", str(root))
    assert f"kept {config}: changed since `nfd-snp install` wrote it" in out
    assert config.exists() and not (root / "etc/systemd/system/nfd-snp.service").exists()


def test_uninstall_without_install_says_so(root):
    result = cli_runner().invoke(cli, ["uninstall", "--root", str(root)])
    assert result.exit_code == 1
    assert "nothing here was installed by `nfd-snp install`" in result.stderr


@pytest.mark.parametrize(
    "manifest", ['{"files": {"../../etc/passwd": "x"}, "dirs": []}', "[]", "{"]
)
def test_a_manifest_that_points_outside_the_root_is_refused(root, manifest):
    path = root / install.MANIFEST
    path.parent.mkdir(parents=True)
    path.write_text(manifest)
    result = cli_runner().invoke(cli, ["uninstall", "--root", str(root)])
    assert result.exit_code == 1 and str(path) in result.stderr


def test_dry_run_uninstall_changes_nothing(root):
    run("install", "--root", str(root))
    before = tree(root)
    out = run("uninstall", "--root", str(root), "--dry-run")
    assert tree(root) == before
    assert f"would remove {root}/etc/libvirt/hooks/qemu.d/50-nfd-snp" in out


def test_the_installed_command_runs_install(root):
    """The console script an admin runs, not only the library."""
    proc = subprocess.run(
        [*NFD_SNP, "install", "--root", str(root)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((root / install.MANIFEST).read_text())
    assert manifest["python"] == sys.executable or manifest["python"].endswith("python3")
    assert "etc/libvirt/hooks/qemu.d/50-nfd-snp" in manifest["files"]
