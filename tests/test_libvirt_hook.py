"""The hook installed in a real libvirtd (Debian's 9.0, QEMU 7.2 TCG), restarted to see it.

libvirt 9.0 predates sev-snp: it starts plain domains, shows our refusal for a marked
unconverted domain, and on restore reports its own parse error for the sev-snp XML our
hook handed it, which proves libvirt received the rewritten XML.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from nfd_snp import facts_cache, hook_script
from nfd_snp.checks import evaluate
from nfd_snp import xmlio
from nfd_snp.domain import engine
from nfd_snp.domain.options import SnpOptions
from tests.conftest import REPO, SAMPLES, probe_root

pytestmark = pytest.mark.libvirtd

HOOK_DIR = Path("/etc/libvirt/hooks/qemu.d")
INSTALLED = HOOK_DIR / "50-nfd-snp"
FACTS = Path("/run/nfd-snp/facts.json")
URI = "qemu:///system"


def virsh(*args, check=False):
    proc = subprocess.run(["virsh", "-c", URI, *args], capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"virsh {' '.join(args)}: {proc.stderr}")
    return proc


def _restart():
    subprocess.run(
        ["bash", str(REPO / "scripts" / "start-libvirtd.sh"), "--restart"],
        check=True,
        capture_output=True,
    )


@pytest.fixture(scope="module")
def hooked(libvirtd):
    """The repository's hook installed as `nfd-snp install` writes it, for this venv's Python."""
    HOOK_DIR.mkdir(parents=True, exist_ok=True)
    INSTALLED.write_text(hook_script.render(sys.executable))
    INSTALLED.chmod(0o755)
    saved = FACTS.read_bytes() if FACTS.exists() else None
    _restart()
    yield
    INSTALLED.unlink()
    if saved is None:
        FACTS.unlink(missing_ok=True)
    else:
        FACTS.write_bytes(saved)
    _restart()


def write_facts(kind: str) -> None:
    FACTS.parent.mkdir(parents=True, exist_ok=True)
    if kind == "missing":
        FACTS.unlink(missing_ok=True)
    elif kind == "corrupt":
        FACTS.write_text("{ not json")
    else:
        FACTS.write_bytes(facts_cache.encode(evaluate(probe_root(SAMPLES / "genoa-snp-ready"))))


def domain_xml(name: str, marked: bool = False) -> str:
    xml = f"""<domain type='qemu'>
  <name>{name}</name>
  <uuid>{uuid.uuid4()}</uuid>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
  </os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <memballoon model='virtio'/>
  </devices>
</domain>
"""
    if not marked:
        return xml
    root = xmlio.parse(xml)
    engine.set_request(root, SnpOptions())
    return xmlio.serialize(root)


@pytest.fixture
def define(tmp_path):
    names = []

    def _define(name, xml):
        path = tmp_path / f"{name}.xml"
        path.write_text(xml)
        virsh("define", str(path), check=True)
        names.append(name)
        return name

    yield _define
    for name in names:
        virsh("destroy", name)
        virsh("undefine", name)


@pytest.mark.parametrize("cache", ["ready", "missing", "corrupt"])
def test_unmarked_domain_starts_and_stops(hooked, define, cache):
    write_facts(cache)
    name = define(f"nfdsnp-plain-{cache}", domain_xml(f"nfdsnp-plain-{cache}"))
    started = virsh("start", name)
    assert started.returncode == 0, started.stderr
    assert virsh("domstate", name).stdout.strip() == "running"
    assert virsh("destroy", name).returncode == 0
    assert virsh("domstate", name).stdout.strip() == "shut off"


def test_marked_unconverted_domain_is_refused_with_our_reason(hooked, define):
    write_facts("ready")
    name = define("nfdsnp-marked", domain_xml("nfdsnp-marked", marked=True))
    # libvirt 9.0 keeps the namespaced request in the persistent definition
    assert "urn:nfd-snp:1" in virsh("dumpxml", "--inactive", name).stdout
    started = virsh("start", name)
    assert started.returncode != 0
    assert "Hook script execution failed" in started.stderr
    assert (
        f"nfd-snp: refusing to start SEV-SNP domain '{name}': the domain asks for SEV-SNP "
        "but is not converted"
    ) in started.stderr
    assert f"run `nfd-snp domain convert {name}`" in started.stderr
    assert virsh("domstate", name).stdout.strip() == "shut off"


def test_marked_domain_refused_when_node_readiness_unknown(hooked, define):
    write_facts("missing")
    name = define("nfdsnp-nofacts", domain_xml("nfdsnp-nofacts", marked=True))
    started = virsh("start", name)
    assert started.returncode != 0 and "readiness is unknown" in started.stderr


def test_restore_hands_libvirt_the_rewritten_xml(hooked, define, tmp_path):
    write_facts("ready")
    name = define("nfdsnp-restore", domain_xml("nfdsnp-restore"))
    virsh("start", name, check=True)
    image = tmp_path / "save.img"
    virsh("save", name, str(image), check=True)
    # an unmarked restore passes through the hook untouched
    virsh("restore", str(image), check=True)
    assert virsh("domstate", name).stdout.strip() == "running"
    virsh("save", name, str(image), check=True)
    saved = xmlio.parse(virsh("save-image-dumpxml", str(image), check=True).stdout)
    engine.set_request(saved, SnpOptions())
    alternative = tmp_path / "marked.xml"
    alternative.write_text(xmlio.serialize(saved))
    restored = virsh("restore", str(image), "--xml", str(alternative))
    # libvirt 9.0 parses the XML our hook printed and rejects sev-snp, which it predates
    assert restored.returncode != 0
    assert (
        "Invalid value for attribute 'type' in element 'launchSecurity': 'sev-snp'"
        in restored.stderr
    ), restored.stderr
