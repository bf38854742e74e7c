"""The readiness tree: verdicts per sample node, tree invariants, unknown vs failed."""

from __future__ import annotations

import re

import pytest

from nfd_snp.checks import TREE, Guest, Readiness, Status, all_checks, evaluate
from tests.conftest import REPO, SAMPLES, probe_root

EXPECTED = {
    "genoa-snp-ready": {"sev": ("yes", ()), "sev-es": ("yes", ()), "sev-snp": ("yes", ())},
    # Root causes only: SNP_EN, the kernel flag, the SNP firmware and libvirt follow from the
    # missing RMP; kvm_amd.sev_snp does not exist on 6.8 (a cause of its own).
    "milan-snp-off": {
        "sev": ("yes", ()),
        "sev-es": ("yes", ()),
        "sev-snp": ("no", ("bios.rmp", "kvm.sev_snp", "firmware.snp")),
    },
    # KVM turns SEV-ES off without ES ASIDs: kvm.sev_es follows from asid.sev_es.
    "rome-sev-only": {
        "sev": ("yes", ()),
        "sev-es": ("no", ("psp.sev_es_init", "asid.sev_es")),
        "sev-snp": ("no", ("psp.sev_es_init", "asid.snp", "cpu.snp")),
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
        gates = set(check.gates)
        assert gates <= parent_gates, check.name
        if not check.gates:
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


def test_tcb_mismatch_warns_without_blocking(snapshot):
    import struct

    data = struct.pack("<BBBBIIIQQ", 1, 55, 1, 3, 5, 0, 0, 0x0900000000000009, 0x0800000000000009)
    root = snapshot(base="genoa-snp-ready", capture={"snp_platform_status": data.hex()})
    report = evaluate(probe_root(root))
    results = {r.check.name: r for r in report.results}
    assert results["psp.tcb"].outcome.status is Status.WARN
    assert "snphost commit" in results["psp.tcb"].fix
    assert report.verdict(Guest.SEV_SNP).ready is Readiness.YES
    assert report.verdict(Guest.SEV_SNP).warnings == ("psp.tcb",)
    assert report.verdict(Guest.SEV).warnings == ()


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
    assert results["cpu.snp"].outcome.inferred_from == "the kernel flag 'sev_snp'"
    # VMPL support has no kernel flag; an initialised SNP firmware proves it
    assert results["cpu.vmpl"].outcome.inferred_from == "SNP firmware state INIT"
    assert report.verdict(Guest.SEV_SNP).ready is Readiness.YES


@pytest.mark.parametrize(
    "release, attr, accepted, required",
    [
        ("6.8.0-51-generic", None, None, None),  # no SNP in KVM
        # SMT and single socket: refused by upstream 6.10-6.16 only, relaxed by backports
        ("6.12.0-55.9.1.el10_0.x86_64", None, 0x1BFFFF, 0x20000),
        ("6.17.1", None, 0x1BFFFF, 0x20000),
        ("6.19.0", None, None, None),  # the attribute decides; unreadable means unknown
        ("6.19.0", 0x1FBFFFF, 0x1FBFFFF, 0x20000),
        ("6.12.0", 0x1BFFFF, 0x1BFFFF, 0x20000),  # a backport publishing it wins
    ],
)
def test_snp_policy_rule(release, attr, accepted, required):
    from nfd_snp.model import KernelFacts, KvmFacts, KvmParameter, snp_policy_rule

    off = KvmParameter("x", False, None)
    kvm = KvmFacts(True, True, off, off, off, snp_policy_bits=attr)
    rule = snp_policy_rule(kvm, KernelFacts(release, None, None, None, None, None))
    got = (rule.accepted, rule.required) if rule else (None, None)
    assert got == (accepted, required)
    if rule:
        assert rule.rejected_bits(0x70000) == (0x40000 if not accepted & 0x40000 else 0)


def test_psp_init_on_probe_yes_and_uninit_is_a_failure(snapshot):
    root = snapshot(
        base="genoa-snp-ready",
        files={"sys/module/ccp/parameters/psp_init_on_probe": "Y\n"},
        capture={"sev_platform_status": "013700000000002500000000"},
    )
    results = {r.check.name: r for r in evaluate(probe_root(root)).results}
    assert results["psp.sev_init"].outcome.status is Status.FAIL
    assert results["psp.sev_init"].outcome.detail.endswith("psp_init_on_probe=Y")
    assert results["psp.sev_es_init"].outcome.status is Status.SKIP


# -- review cases: deferred SEV INIT, kvm_amd.sev off on 6.16+, blocking lists ---------------

DEFERRED = REPO / "tests/data/hosts/milan-psp-init-deferred"


def _flags_without(root, flag):
    text = (root / "proc/cpuinfo").read_text()
    return text.replace(f" {flag}", "")


def test_deferred_sev_init_fails_when_snp_init_failed(snapshot):
    """psp_init_on_probe=N, SNP not initialised on a host with SNP on: KVM's SEV INIT at the
    first guest runs SNP_INIT first and stops on its failure (sev-dev.c)."""
    root = snapshot(
        base=DEFERRED,
        files={"sys/module/kvm_amd/parameters/sev_snp": "N\n"},
        capture={"snp_platform_status": {"errno": 22}},
    )
    report = evaluate(probe_root(root))
    results = {r.check.name: r for r in report.results}
    sev_init = results["psp.sev_init"].outcome
    assert (sev_init.status, sev_init.root_cause) == (Status.FAIL, "psp.snp_init")
    assert report.verdict(Guest.SEV).blocking == ("psp.sev_init",)
    assert report.verdict(Guest.SEV_ES).ready is Readiness.NO


def test_deferred_sev_init_is_fine_with_host_snp_off(snapshot):
    root = snapshot(base=DEFERRED, capture={"snp_platform_status": {"errno": 22}})
    (root / "proc/cpuinfo").write_text(_flags_without(root, "sev_snp"))
    (root / "sys/module/kvm_amd/parameters/sev_snp").write_text("N\n")
    report = evaluate(probe_root(root))
    assert report.verdict(Guest.SEV).ready is Readiness.YES
    assert report.verdict(Guest.SEV_ES).ready is Readiness.YES


def test_deferred_sev_init_unknown_when_host_snp_is_unknown(snapshot):
    # Linux 7.1+: SNP_EN is set only at SNP INIT, and the msr driver is missing anyway
    root = snapshot(
        base=DEFERRED,
        files={
            "proc/sys/kernel/osrelease": "7.2.0\n",
            "sys/module/kvm_amd/parameters/sev_snp": "N\n",
        },
        capture={"snp_platform_status": {"errno": 22}, "msr": {}},
    )
    report = evaluate(probe_root(root))
    results = {r.check.name: r for r in report.results}
    assert results["psp.sev_init"].outcome.status is Status.UNKNOWN
    assert report.verdict(Guest.SEV).ready is Readiness.UNKNOWN


def test_kvm_amd_sev_off_on_6_16_is_named_in_the_fix(snapshot):
    root = snapshot(
        base="genoa-snp-ready",
        files={
            "proc/sys/kernel/osrelease": "6.16.1\n",
            "sys/module/kvm_amd/parameters/sev": "N\n",
            "sys/module/kvm_amd/parameters/sev_es": "N\n",
            "sys/module/kvm_amd/parameters/sev_snp": "N\n",
        },
        capture={
            "sev_platform_status": "013700000000002500000000",
            "snp_platform_status": {"errno": 22},
        },
    )
    results = {r.check.name: r for r in evaluate(probe_root(root)).results}
    # 6.16: SNP_PLATFORM_STATUS is not sent while kvm_amd.sev_snp is N (it would init SNP)
    assert results["psp.snp_init"].outcome.reason.code == "snp-status-not-queried"
    assert "kvm_amd.sev reads N" in results["psp.sev_init"].fix


def test_an_echo_whose_cause_gates_other_guests_stays_in_the_verdict(snapshot):
    """SEV: the ASIDs and the failed SEV INIT (which follows from SNP_INIT, a cause that
    does not gate SEV) are both named."""
    root = snapshot(
        base=REPO / "tests/data/hosts/milan-rome2d16-fw-1.49",
        files={"sys/fs/cgroup/misc.capacity": "sev_es 99\n"},
        capture={
            "cpuid": {
                **__import__("json").loads(
                    (
                        REPO / "tests/data/hosts/milan-rome2d16-fw-1.49/nfd-snp-capture.json"
                    ).read_text()
                )["cpuid"],
                "0x8000001f": [0x1FFFF, 0x4173, 509, 510],
            }
        },
    )
    report = evaluate(probe_root(root))
    assert report.verdict(Guest.SEV).blocking == ("psp.sev_init", "asid.sev")


def test_snp_status_is_not_sent_where_it_would_initialise_snp(snapshot):
    root = snapshot(
        base="genoa-snp-ready",
        files={
            "proc/sys/kernel/osrelease": "6.17.3\n",
            "sys/module/kvm_amd/parameters/sev_snp": "N\n",
        },
        capture={"snp_platform_status": "BROKEN, never read"},
    )
    report = evaluate(probe_root(root))  # the capture's garbage is never replayed
    results = {r.check.name: r for r in report.results}
    assert results["psp.snp_init"].outcome.status is Status.UNKNOWN
    assert report.verdict(Guest.SEV_SNP).blocking == ("kvm.sev_snp",)


def test_a_guest_without_the_sev_leaf_is_told_it_runs_under_a_hypervisor(snapshot):
    import json

    capture = json.loads((SAMPLES / "genoa-snp-ready/nfd-snp-capture.json").read_text())
    root = snapshot(
        base="genoa-snp-ready",
        files={"proc/cpuinfo": "vendor_id\t: AuthenticAMD\nflags\t\t: hypervisor\n\n"},
        capture={"cpuid": {**capture["cpuid"], "0x8000001f": [0, 0, 0, 0]}},
    )
    report = evaluate(probe_root(root))
    sme = {r.check.name: r for r in report.results}["cpu.sme"]
    assert sme.outcome.reason.code == "no-mem-encrypt-leaf"
    assert "runs under a hypervisor" in sme.outcome.detail and "bare-metal" in sme.fix


@pytest.mark.parametrize("sample, hint", [("intel", True), ("milan-snp-off", False)])
def test_a_live_host_without_sev_hardware_is_shown_the_sample(sample, hint):
    import dataclasses

    from nfd_snp.report import SAMPLE_HINT, render_table

    report = evaluate(probe_root(SAMPLES / sample))
    live = dataclasses.replace(report, facts=dataclasses.replace(report.facts, snapshot=False))
    assert (SAMPLE_HINT in render_table(live)) is hint
    assert SAMPLE_HINT not in render_table(report)  # a snapshot is not this host
