"""The RMP as the kernel finds it: contiguous (RMP_BASE..RMP_END) or segmented (Zen 5).

A segmented RMP (RMP_CFG 0xC0010136 bit 0) has RMP_END 0 by design: the kernel needs only
RMP_BASE (arch/x86/virt/svm/sev.c probe_segmented_rmptable_info). The Turin snapshot holds
the registers of AMD's own SNP host README (AMDESE/AMDSEV, "Segmented RMP base table
physical range [0x000000009ba00000 - ...]", "Segmented RMP using 128GB segments").
"""

from __future__ import annotations

import json

import pytest

from nfd_snp import nfd
from nfd_snp.checks import Guest, Status, evaluate
from nfd_snp.model import MsrFacts
from tests.conftest import REPO, probe_root

TURIN = REPO / "tests" / "data" / "hosts" / "turin-snp-fw-1.58-es-refused"
RMP_CFG = "0xc0010136"
SEGMENTED_128G = 0x2501  # bit 0 enabled, bits 13:8 = 37 (128 GB)


def _turin(snapshot, msr=None, drop=(), **capture):
    data = json.loads((TURIN / "nfd-snp-capture.json").read_text())
    data["msr"].update(msr or {})
    for key in drop:
        data["msr"].pop(key, None)
    data.update(capture)
    root = snapshot(base=str(TURIN))
    (root / "nfd-snp-capture.json").write_text(json.dumps(data))
    return root


def _rmp(root):
    report = evaluate(probe_root(root))
    return report, {r.check.name: r for r in report.results}["bios.rmp"]


def test_segmented_rmp_with_rmp_end_zero_is_reserved_and_keeps_the_labels():
    report, rmp = _rmp(TURIN)
    assert rmp.outcome.status is Status.PASS and rmp.outcome.inferred_from is None
    assert rmp.text == (
        "segmented RMP, 128 GB segments (RMP_CFG 0x2501): segment table at RMP_BASE "
        "0x9ba00000, RMP_END 0x0"
    )
    assert report.verdict(Guest.SEV_SNP).ready.value == "yes"
    assert dict(nfd.publication(report).labels)["sev-snp.node.kubevirt.io/enabled"] == "true"


def test_contiguous_rmp_needs_rmp_end(snapshot):
    root = _turin(
        snapshot, msr={RMP_CFG: 0}, snp_platform_status={"errno": 22}
    )  # contiguous mode, nothing initialised to say otherwise
    report, rmp = _rmp(root)
    assert (rmp.outcome.status, rmp.outcome.reason.code) == (Status.FAIL, "rmp-not-reserved")
    assert rmp.text == "RMP_BASE 0x9ba00000, RMP_END 0x0"
    assert "bios.rmp" in report.verdict(Guest.SEV_SNP).blocking


def test_initialised_firmware_wins_over_registers_that_say_no(snapshot):
    """SNP_INIT validated an RMP: a register reading against it is a WARN, not a FAIL."""
    root = _turin(snapshot, msr={RMP_CFG: 0})
    report, rmp = _rmp(root)
    assert (rmp.outcome.status, rmp.outcome.reason.code) == (
        Status.WARN,
        "rmp-registers-contradicted",
    )
    assert rmp.text.endswith("but the SNP firmware is INIT with its RMP initialised")
    snp = report.verdict(Guest.SEV_SNP)
    assert snp.ready.value == "yes" and "bios.rmp" in snp.warnings


def test_unread_rmp_cfg_leaves_a_zero_rmp_end_undecided(snapshot):
    """RMP_CFG not read: RMP_BASE set with RMP_END 0 is what a segmented RMP looks like,
    so the registers alone decide nothing; the kernel flag (6.9+) then proves the RMP."""
    root = _turin(snapshot, drop=[RMP_CFG])
    _report, rmp = _rmp(root)
    assert rmp.outcome.status is Status.PASS
    assert rmp.outcome.inferred_from == "the kernel flag 'sev_snp'"
    assert "RMP_CFG not read" in rmp.text
    root = _turin(
        snapshot,
        drop=[RMP_CFG],
        snp_platform_status={"errno": 22},
    )
    (root / "proc" / "sys" / "kernel" / "osrelease").write_text("6.8.0\n")  # flag proves nothing
    _report, rmp = _rmp(root)
    assert rmp.outcome.status is Status.UNKNOWN
    assert rmp.outcome.reason.code == "not-in-snapshot"


def test_rmp_cfg_is_read_only_where_cpuid_says_it_exists(snapshot):
    data = json.loads((TURIN / "nfd-snp-capture.json").read_text())
    data["cpuid"]["0x8000001f"][0] &= ~(1 << 23)  # a CPU without segmented RMP
    root = _turin(snapshot, drop=[RMP_CFG], cpuid=data["cpuid"])
    facts = probe_root(root)
    assert facts.msr.rmp_cfg == 0 and facts.msr.rmp_cfg_unreadable is None


def test_without_cpuid_a_missing_rmp_cfg_msr_means_contiguous(snapshot):
    """The msr driver answers EIO for an MSR the CPU lacks (rdmsr_safe): no segmented RMP."""
    root = _turin(
        snapshot,
        drop=[RMP_CFG],
        cpuid={},
        unreadable={
            "cpuid:0x00000000": {"errno": 2, "message": "No such file or directory"},
            "msr:" + RMP_CFG: {"errno": 5, "message": "Input/output error"},
        },
    )
    facts = probe_root(root)
    assert facts.cpu.unreadable is not None
    assert facts.msr.rmp_cfg == 0 and facts.msr.rmp_segmented is False
    assert facts.msr.rmp_reserved is False  # contiguous with RMP_END 0


@pytest.mark.parametrize(
    "base, end, cfg, reserved",
    [
        (0x9BA00000, 0, SEGMENTED_128G, True),
        (0x1FFF, 0, SEGMENTED_128G, False),  # below bit 13: not an address (RMP_ADDR_MASK)
        (0, 0, SEGMENTED_128G, False),
        (0x3F1E00000, 0x3F21FFFFF, 0, True),
        (0x3F21FFFFF, 0x3F1E00000, 0, False),  # base above end: "RMP configuration not valid"
        (0x3F1E00000, 0x1FFF, 0, False),
        (0x3F1E00000, 0, None, None),
        (0x3F1E00000, 0x3F21FFFFF, None, True),
        (0, 0x3F21FFFFF, None, False),
    ],
)
def test_rmp_reserved_follows_the_kernel(base, end, cfg, reserved):
    msr = MsrFacts(syscfg=0x3F40000, rmp_base=base, rmp_end=end, rmp_cfg=cfg)
    assert msr.rmp_reserved is reserved


def test_segment_shift_is_bits_13_to_8():
    msr = MsrFacts(syscfg=0, rmp_base=0, rmp_end=0, rmp_cfg=(1 << 14) | 0x2501)
    assert (msr.rmp_segmented, msr.rmp_segment_shift) == (True, 37)
    assert MsrFacts(syscfg=0, rmp_base=0, rmp_end=0, rmp_cfg=0x2500).rmp_segmented is False
