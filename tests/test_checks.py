"""The readiness tree: verdicts per sample node, tree invariants, unknown vs failed."""

from __future__ import annotations

import re

import pytest

from nfd_snp.checks import GATED, TREE, Guest, Readiness, Status, all_checks, evaluate
from tests.conftest import REPO, SAMPLES, probe_root

EXPECTED = {
    "genoa-snp-ready": {"sev": ("yes", ()), "sev-es": ("yes", ()), "sev-snp": ("yes", ())},
    "milan-snp-off": {
        "sev": ("yes", ()),
        "sev-es": ("yes", ()),
        "sev-snp": (
            "no",
            (
                "bios.snp_en",
                "bios.rmp",
                "kernel.sev_snp",
                "psp.snp_init",
                "kvm.sev_snp",
                "libvirt.sev_snp",
                "firmware.snp",
            ),
        ),
    },
    "rome-sev-only": {
        "sev": ("yes", ()),
        "sev-es": ("no", ("psp.sev_es_init", "kvm.sev_es", "asid.sev_es")),
        "sev-snp": ("no", ("psp.sev_es_init", "kvm.sev_es", "asid.sev_es", "cpu.snp")),
    },
    "intel": {g: ("no", ("cpu.vendor",)) for g in ("sev", "sev-es", "sev-snp")},
}


@pytest.mark.parametrize("sample", sorted(EXPECTED))
def test_sample_verdicts(sample):
    report = evaluate(probe_root(SAMPLES / sample))
    got = {v.guest.value: (v.ready.value, v.blocking) for v in report.verdicts}
    assert got == EXPECTED[sample]


def test_names_unique_and_children_gate_no_more_than_parents():
    names = [c.name for c in all_checks()]
    assert len(names) == len(set(names))

    def walk(check, parent_gates):
        gates = set(GATED[check.guest])
        assert gates <= parent_gates, check.name
        if check.guest is None:
            assert not check.children, f"informational {check.name} must not gate children"
        for child in check.children:
            walk(child, gates)

    for root in TREE:
        walk(root, set(Guest))


def test_every_check_has_a_troubleshooting_section():
    doc = (REPO / "docs" / "troubleshooting.md").read_text()
    anchors = set(re.findall(r'<a id="([^"]+)"></a>', doc))
    assert {c.name for c in all_checks()} <= anchors


def test_failed_parent_skips_children(snapshot):
    root = snapshot(base="genoa-snp-ready", capture={"snp_platform_status": {"errno": 22}})
    results = {r.check.name: r for r in evaluate(probe_root(root)).results}
    assert results["psp.snp_init"].outcome.status is Status.FAIL
    for child in ("psp.snp_api", "psp.rmp_init", "psp.tcb"):
        assert results[child].outcome.status is Status.SKIP
        assert results[child].outcome.detail == "psp.snp_init failed"


def test_denied_psp_gives_unknown_verdict_with_fix(snapshot):
    root = snapshot(
        base="genoa-snp-ready",
        capture={"sev_platform_status": {"errno": 13}, "snp_platform_status": {"errno": 13}},
    )
    report = evaluate(probe_root(root))
    snp = report.verdict(Guest.SEV_SNP)
    assert snp.ready is Readiness.UNKNOWN
    assert "psp.snp_init" in snp.blocking and "psp.sev_status" in snp.blocking
    result = {r.check.name: r for r in report.results}["psp.sev_status"]
    assert result.outcome.status is Status.UNKNOWN and "Run as root" in result.fix


def test_no_host_libvirt_skips_libvirt_checks_and_stays_ready(snapshot):
    root = snapshot(base="genoa-snp-ready", capture={"domcaps": None})
    report = evaluate(probe_root(root))
    results = {r.check.name: r for r in report.results}
    for name in ("libvirt.sev", "libvirt.sev_snp", "firmware.snp"):
        assert results[name].outcome.status is Status.SKIP
    assert report.verdict(Guest.SEV_SNP).ready is Readiness.YES


def test_domcaps_not_captured_is_unknown(snapshot):
    import json

    root = snapshot(base="genoa-snp-ready")
    capture = json.loads((root / "nfd-snp-capture.json").read_text())
    del capture["domcaps"]
    (root / "nfd-snp-capture.json").write_text(json.dumps(capture))
    report = evaluate(probe_root(root))
    assert report.verdict(Guest.SEV_SNP).ready is Readiness.UNKNOWN
    assert report.verdict(Guest.SEV_SNP).blocking == ("libvirt.sev", "libvirt.sev_snp")


def test_old_snp_firmware_api_refused(snapshot):
    import struct

    data = struct.pack("<BBBBIIIQQ", 1, 49, 1, 1, 5, 0, 0, 0, 0).hex()
    root = snapshot(base="genoa-snp-ready", capture={"snp_platform_status": data})
    results = {r.check.name: r for r in evaluate(probe_root(root)).results}
    assert results["psp.snp_api"].outcome.status is Status.FAIL
    assert results["psp.snp_api"].outcome.detail == "SNP API 1.49 < 1.51"


def test_tcb_mismatch_is_informational(snapshot):
    import struct

    data = struct.pack("<BBBBIIIQQ", 1, 55, 1, 1, 5, 0, 0, 0x0900000000000009, 0x0800000000000009)
    root = snapshot(base="genoa-snp-ready", capture={"snp_platform_status": data.hex()})
    report = evaluate(probe_root(root))
    results = {r.check.name: r for r in report.results}
    assert results["psp.tcb"].outcome.status is Status.FAIL
    assert report.verdict(Guest.SEV_SNP).ready is Readiness.YES


def test_snp_under_hypervisor_explains(snapshot):
    root = snapshot(
        base="genoa-snp-ready",
        files={"proc/cpuinfo": "vendor_id\t: AuthenticAMD\nflags\t\t: sme sev hypervisor\n\n"},
    )
    results = {r.check.name: r for r in evaluate(probe_root(root)).results}
    assert "under a hypervisor" in results["kernel.sev_es"].outcome.detail


def test_cpuid_unreadable_falls_back_to_cpuinfo_vendor(snapshot):
    root = snapshot(base="genoa-snp-ready", capture={"cpuid": {}})
    report = evaluate(probe_root(root))
    results = {r.check.name: r for r in report.results}
    assert results["cpu.vendor"].outcome.status is Status.PASS
    assert results["cpu.generation"].outcome.detail == "family 0x19 model 0x11 (Genoa)"
    assert "implied by the kernel flag 'sev_snp'" in results["cpu.snp"].outcome.detail
    # VMPL support has no kernel flag: unknown, and SNP readiness with it
    assert results["cpu.vmpl"].outcome.status is Status.UNKNOWN
    assert report.verdict(Guest.SEV_SNP).ready is Readiness.UNKNOWN
