"""The domain-capabilities parser on libvirt's and KubeVirt's own test data, and hostile XML."""

from __future__ import annotations

import subprocess
import sys

import pytest

from nfd_snp.errors import UnsafeXmlError
from nfd_snp.sources import domcaps
from tests.conftest import REPO, SAMPLES

# file: (sev supported, cbitpos, reducedPhysBits, maxGuests, maxESGuests, launchSecurity
#        supported, sectypes)
SHARED_EXPECTED = {
    "libvirt-qemu_10.0.0-q35.x86_64+amdsev.xml": (True, 51, 1, 59, 450, True, ("sev", "sev-snp")),
    "libvirt-qemu_9.2.0-q35.x86_64+amdsev.xml": (True, 51, 1, 59, 450, True, ("sev", "sev-snp")),
    "libvirt-qemu_10.0.0-tcg.x86_64+amdsev.xml": (True, 51, 1, 59, 450, True, ("sev", "sev-snp")),
    "libvirt-qemu_10.0.0-q35.x86_64.xml": (False, None, None, None, None, False, ()),
    "libvirt-qemu_2.12.0-q35.x86_64.xml": (True, 47, 1, None, None, None, ()),
    "kubevirt-domcapabilities_sevsnp.xml": (True, 47, 1, 15, 15, True, ("sev", "sev-snp")),
    "kubevirt-domcapabilities_sev.xml": (True, 47, 1, None, None, None, ()),
    "kubevirt-domcapabilities_noseves.xml": (True, 47, 1, 15, 0, None, ()),
}


def test_every_shared_fixture_is_covered(shared_dir):
    assert sorted(p.name for p in (shared_dir / "fixtures" / "domaincaps").glob("*.xml")) == sorted(
        SHARED_EXPECTED
    )


@pytest.mark.parametrize("name", sorted(SHARED_EXPECTED))
def test_shared_fixture(shared_dir, name):
    facts = domcaps.parse((shared_dir / "fixtures" / "domaincaps" / name).read_bytes())
    got = (
        facts.sev_supported,
        facts.cbitpos,
        facts.reducedPhysBits,
        facts.maxGuests,
        facts.maxESGuests,
        facts.launch_security_supported,
        facts.sectypes,
    )
    assert got == SHARED_EXPECTED[name]
    assert facts.snp_supported is ("sev-snp" in SHARED_EXPECTED[name][6])


def test_tcg_fixture_reports_virt_type(shared_dir):
    facts = domcaps.parse(
        (shared_dir / "fixtures/domaincaps/libvirt-qemu_10.0.0-tcg.x86_64+amdsev.xml").read_text()
    )
    assert facts.virt_type == "qemu" and facts.emulator.endswith("qemu-system-x86_64")


@pytest.mark.parametrize("sample", ["genoa-snp-ready", "milan-snp-off", "rome-sev-only", "intel"])
def test_project_samples(sample):
    import json

    xml = json.loads((SAMPLES / sample / "nfd-snp-capture.json").read_text())["domcaps"]
    facts = domcaps.parse(xml)
    assert facts.snp_supported is (sample == "genoa-snp-ready")
    assert facts.sev_supported is (sample != "intel")


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<domainCapabilities><path>&lol3;</path></domainCapabilities>"""

EXTERNAL_FILE = b"""<?xml version="1.0"?>
<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<domainCapabilities><path>&x;</path></domainCapabilities>"""

EXTERNAL_NET = b"""<?xml version="1.0"?>
<!DOCTYPE d SYSTEM "http://127.0.0.1:9/dtd">
<domainCapabilities/>"""


@pytest.mark.parametrize(
    "xml, message",
    [
        (BILLION_LAUGHS, "DOCTYPE"),
        (EXTERNAL_FILE, "DOCTYPE"),
        (EXTERNAL_NET, "DOCTYPE"),
        (b"<domainCapabilities><features>", "not well-formed"),
        (b"", "empty input"),
        (b"<domain/>", "root element is <domain>"),
        (
            b"<domainCapabilities><features><sev supported='yes'><cbitpos>x51</cbitpos>"
            b"</sev></features></domainCapabilities>",
            "not a count",
        ),
        (b"<a>" * 300 + b"</a>" * 300, "nested deeper than 256 levels"),
        (
            b"<domainCapabilities>" + b" " * (5 * 1024 * 1024) + b"</domainCapabilities>",
            "bytes is more than",
        ),
    ],
    ids=[
        "billion-laughs",
        "external-file",
        "external-dtd",
        "truncated",
        "empty",
        "wrong-root",
        "bad-int",
        "deep-nesting",
        "oversized",
    ],
)
def test_hostile_domcaps_rejected(xml, message):
    with pytest.raises(UnsafeXmlError) as exc:
        domcaps.parse(xml)
    text = str(exc.value)
    assert message in text and "\n" not in text
    assert "root:" not in text  # /etc/passwd never leaks into a message


def test_malformed_domcaps_in_snapshot_is_unknown_not_false(snapshot):
    from nfd_snp.checks import Status
    from tests.conftest import report_of

    root = snapshot(base="genoa-snp-ready", capture={"domcaps": "<domainCapabilities><oops"})
    report = report_of(root)
    by_name = {r.check.name: r for r in report.results}
    assert by_name["libvirt.sev_snp"].outcome.status is Status.UNKNOWN
    assert "not well-formed" in by_name["libvirt.sev_snp"].outcome.detail


def test_probe_parses_with_the_standard_library_alone():
    """`nfd-snp check` neither imports lxml (about twice the interpreter's start) nor the
    domain rewrite engine: the hardened parser is nfd_snp.xmlio."""
    code = (
        "import sys; from nfd_snp.sources import domcaps; "
        "assert domcaps.parse('<domainCapabilities><path>/usr/bin/qemu</path>"
        "</domainCapabilities>').emulator == '/usr/bin/qemu'; "
        "print(sorted(m for m in sys.modules if m.startswith(('lxml', 'nfd_snp.domain'))))"
    )
    # Not -I: the RPM's %check finds the package through PYTHONPATH.
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert (proc.returncode, proc.stdout) == (0, "[]\n"), proc.stderr
