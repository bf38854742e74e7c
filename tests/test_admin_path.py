"""The libvirt admin's whole path on the host's real libvirtd, as README.md tells it.

Install without the RPM while libvirtd runs, see `nfd-snp check` warn until libvirt has
loaded the hook and confirm it after, start a plain VM without the hook starting Python,
get a refusal for an SEV-SNP domain that names the check and its fix, convert it, and
uninstall leaving nothing behind. One test per step, in this order, on one host: each step
needs the ones before it. The host has no systemd: libvirtd is restarted by `nfd-snp
install` itself, and the node service is run as its note says.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from nfd_snp import facts_cache, hook, install, xmlio
from nfd_snp.domain import engine
from nfd_snp.domain.options import SnpOptions
from tests.conftest import NFD_SNP, REPO, need

pytestmark = pytest.mark.libvirtd

URI = "qemu:///system"
HOOK = Path("/") / install.HOOK
FACTS = Path(facts_cache.DEFAULT_FACTS_CACHE)
# Everything install or the service may write, and what is already there.
WATCHED = (
    "/etc/libvirt/hooks",
    "/etc/systemd/system",
    "/etc/tmpfiles.d",
    "/etc/modules-load.d",
    "/etc/nfd-snp",
    "/etc/kubernetes",
    "/run/nfd-snp",
    "/var/lib/nfd-snp",
    "/usr/local/bin",
)
PLAIN, SNP = "nfdsnp-admin-plain", "nfdsnp-admin-snp"
state: dict = {}


def listing() -> dict:
    """Each watched path and what is under it: file contents, link targets, directories."""
    found = {}
    for top in map(Path, WATCHED):
        for path in [top, *sorted(top.rglob("*"))] if top.exists() else []:
            if path.is_symlink():
                found[str(path)] = ("link", os.readlink(path))
            elif path.is_file():
                found[str(path)] = ("file", path.read_bytes())
            else:
                found[str(path)] = ("dir", None)
    return found


# Where the admin installs nfd-snp, as README.md tells it: a virtualenv in a lasting place
# (/tmp is hidden from the service by PrivateTmp= and emptied at boot, so `install` refuses a
# Python there, and a checkout may well live under /tmp).
VENV = Path("/opt/nfd-snp-admin-test")


def installed_venv() -> list:
    """`nfd-snp` of a fresh virtualenv at VENV holding this checkout's nfd-snp (built as a
    wheel; its dependencies from the system's packages, which scripts/setup.sh installs)."""
    subprocess.run(["rm", "-rf", str(VENV)], check=True)
    subprocess.run(
        ["/usr/bin/python3", "-m", "venv", "--system-site-packages", str(VENV)], check=True
    )
    pip = subprocess.run(
        [
            str(VENV / "bin/pip"),
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            str(REPO),
        ],
        capture_output=True,
        text=True,
    )
    need(pip.returncode == 0, f"cannot build nfd-snp into {VENV}: {pip.stderr[-300:]}")
    return [str(VENV / "bin/nfd-snp")]


def nfd_snp(*args, command=None):
    if command is None and args and args[0] in ("install", "uninstall"):
        command = state["installer"]
    return subprocess.run(
        [*(command or NFD_SNP), *args], capture_output=True, text=True, timeout=300
    )


def virsh(*args):
    return subprocess.run(["virsh", "-c", URI, *args], capture_output=True, text=True, timeout=120)


def hook_check() -> dict:
    proc = nfd_snp("check", "--json")
    assert proc.returncode in (0, 1), proc.stderr
    (found,) = [c for c in json.loads(proc.stdout)["checks"] if c["name"] == "libvirt.hook"]
    return found


def domain_xml(name: str, marked: bool) -> str:
    xml = (
        f"<domain type='qemu'><name>{name}</name><uuid>{uuid.uuid4()}</uuid>"
        "<memory unit='MiB'>64</memory><vcpu>1</vcpu>"
        "<os><type arch='x86_64' machine='pc'>hvm</type></os>"
        "<devices><emulator>/usr/bin/qemu-system-x86_64</emulator></devices></domain>"
    )
    if not marked:
        return xml
    root = xmlio.parse(xml)
    engine.set_request(root, SnpOptions())
    return xmlio.serialize(root)


@pytest.fixture(scope="module", autouse=True)
def host(libvirtd, tmp_path_factory):
    """A host without nfd-snp; whatever a step leaves, the end puts it back."""
    need(os.geteuid() == 0, "installs into /etc and restarts libvirtd: needs root")
    if (Path("/") / install.MANIFEST).exists() or HOOK.exists():
        pytest.fail(f"nfd-snp is already installed here ({HOOK}): uninstall it first")
    saved_facts = FACTS.read_bytes() if FACTS.exists() else None
    FACTS.unlink(missing_ok=True)
    state["before"] = listing()
    state["work"] = tmp_path_factory.mktemp("admin")
    state["installer"] = installed_venv()
    yield
    for name in (PLAIN, SNP):
        virsh("destroy", name)
        virsh("undefine", name)
    service = state.get("service")
    if service is not None and service.poll() is None:
        service.send_signal(signal.SIGTERM)
        service.wait(timeout=60)
    if (Path("/") / install.MANIFEST).exists():
        nfd_snp("uninstall")
    if saved_facts is not None:
        FACTS.parent.mkdir(parents=True, exist_ok=True)
        FACTS.write_bytes(saved_facts)
    subprocess.run(["rm", "-rf", str(VENV)], check=False)


def test_1_install_while_libvirtd_runs_and_check_warns_until_it_reloads():
    proc = nfd_snp("install", "--no-reload")
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {HOOK}" in proc.stdout
    assert "libvirt has not loaded the hook: libvirtd started before it" in proc.stdout
    found = hook_check()
    assert (found["status"], found["reason"]) == ("WARN", "hook-not-loaded"), found
    assert "systemctl try-restart virtqemud libvirtd" in found["fix"]


def test_2_install_again_reloads_libvirt_and_check_confirms_the_hook():
    proc = nfd_snp("install")
    assert proc.returncode == 0, proc.stderr
    assert "restarted libvirtd (pid " in proc.stdout and "so that it loads the hook" in proc.stdout
    assert f"wrote {HOOK}" not in proc.stdout  # already there: only the reload was missing
    # `nfd-snp` on root's PATH, as the README uses it
    found = hook_check()
    assert found["status"] == "PASS", found
    python = hook_script_python()
    assert found["detail"].endswith(f"its Python {python} loads nfd_snp")
    linked = nfd_snp("--version", command=["/" + install.COMMAND_LINK])
    assert linked.returncode == 0 and linked.stdout.startswith("nfd-snp")


def hook_script_python() -> str:
    from nfd_snp import hook_script

    return hook_script.interpreter(HOOK.read_text())


def test_3_the_node_service_writes_the_facts_the_hook_reads():
    """No systemd here: the admin runs the service as install's note says."""
    python = hook_script_python()
    note = f"no systemd here: run `{python} -I -m nfd_snp run` under your init system"
    assert note in nfd_snp("install").stdout
    log = open(state["work"] / "service.log", "wb")
    state["service"] = subprocess.Popen(
        [python, "-I", "-m", "nfd_snp", "run"], stdout=log, stderr=log, start_new_session=True
    )
    for _ in range(300):
        if FACTS.exists():
            break
        time.sleep(0.1)
    assert FACTS.exists(), (state["work"] / "service.log").read_text()
    facts_cache.load(str(FACTS))  # trusted, fresh


class CountingHook:
    """The installed hook with its Python wrapped to count starts; put back as it was."""

    def __enter__(self):
        self.original = HOOK.read_bytes()
        self.log = state["work"] / "python-starts"
        self.log.write_text("")
        wrapper = state["work"] / "python"
        python = hook_script_python()
        wrapper.write_text(f'#!/bin/sh\necho start >> "{self.log}"\nexec "{python}" "$@"\n')
        wrapper.chmod(0o755)
        text = self.original.decode().replace(f"PYTHON={python}\n", f"PYTHON={wrapper}\n")
        HOOK.write_text(text)
        return self

    @property
    def starts(self) -> int:
        return len(self.log.read_text().splitlines())

    def __exit__(self, *exc):
        HOOK.write_bytes(self.original)


def define(name: str, marked: bool) -> None:
    path = state["work"] / f"{name}.xml"
    path.write_text(domain_xml(name, marked))
    defined = virsh("define", str(path))
    assert defined.returncode == 0, defined.stderr


def test_4_a_plain_vm_starts_and_stops_without_the_hook_starting_python():
    """libvirt runs the hook 3 times per start and twice per stop: the shell front answers
    each alone (bench/libvirt_start.py measures what that costs)."""
    define(PLAIN, marked=False)
    with CountingHook() as counting:
        started = virsh("start", PLAIN)
        assert started.returncode == 0, started.stderr
        assert virsh("domstate", PLAIN).stdout.strip() == "running"
        assert virsh("destroy", PLAIN).returncode == 0
        assert counting.starts == 0


def test_5_an_snp_domain_is_refused_naming_the_check_and_its_fix():
    define(SNP, marked=True)
    node = facts_cache.load(str(FACTS))
    if node.snp_ready == "yes":
        expected = "the domain asks for SEV-SNP but is not converted"
    else:  # this host (TCG, no SEV): the checks that block it, by title, and the first fix
        expected = hook.not_ready(node)
        assert "; blocked by: " in expected and "; fix: " in expected
    with CountingHook() as counting:
        started = virsh("start", SNP)
        assert counting.starts == 1  # the one Python start of this VM start
    assert started.returncode != 0
    assert f"nfd-snp: refusing to start SEV-SNP domain '{SNP}': {expected}" in started.stderr
    assert virsh("domstate", SNP).stdout.strip() == "shut off"


def test_6_convert_it():
    import libvirt

    conn = libvirt.open(URI)
    try:
        knows_snp = conn.getLibVersion() >= 10_005_000
    finally:
        conn.close()
    dry = nfd_snp("domain", "convert", SNP, "--dry-run")
    assert dry.stdout.startswith(f"--- {SNP} (defined)\n+++ {SNP} (SEV-SNP)\n"), dry.stderr
    assert '+  <launchSecurity type="sev-snp">' in dry.stdout
    node = facts_cache.load(str(FACTS))
    if node.cbitpos is None:  # unknown here: left to libvirt, never a guess
        assert "<cbitpos>" not in dry.stdout
        assert "the node facts hold no C-bit position" in dry.stderr
    converted = nfd_snp("domain", "convert", SNP)
    if knows_snp:
        assert (dry.returncode, converted.returncode) == (0, 0), converted.stderr
        assert "launchSecurity type='sev-snp'" in virsh("dumpxml", "--inactive", SNP).stdout
    else:  # libvirt 9.0 predates SEV-SNP: said before anything is defined
        assert dry.returncode == 1 and "defining this would fail" in dry.stderr
        assert converted.returncode == 1
        assert "predates SEV-SNP guests" in converted.stderr
        assert "the domain is unchanged" in converted.stderr
        assert "launchSecurity" not in virsh("dumpxml", "--inactive", SNP).stdout


def test_7_uninstall_leaves_nothing_behind_and_says_what_snp_domains_do_now():
    service = state["service"]
    proc = nfd_snp("uninstall")
    assert proc.returncode == 0, proc.stderr
    assert f"stopped nfd-snp run (pid {service.pid})" in proc.stdout
    assert service.wait(timeout=60) == 0
    assert f"removed {HOOK}" in proc.stdout and f"removed {FACTS}" in proc.stdout
    assert "domains that ask for SEV-SNP now start without nfd-snp's check" in proc.stdout
    assert f"one that is not converted starts as a plain VM, without SEV-SNP ({SNP})" in (
        proc.stdout
    )
    assert listing() == state["before"]
    assert hook_check()["status"] == "SKIP"
    # as it says: the domain that asked for SEV-SNP now starts, as a plain VM
    started = virsh("start", SNP)
    assert started.returncode == 0, started.stderr
    assert virsh("destroy", SNP).returncode == 0
