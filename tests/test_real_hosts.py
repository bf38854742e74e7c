"""Snapshots rebuilt from real hosts (tests/data/hosts/*/README.md cites each source): the
verdict, the cause named, the labels and the facts cache each one must get.

These are the nodes the bundled samples did not cover: no cpuid/msr drivers, firmware
initialised on first use, firmware below API 1.51, an uncommitted TCB, CPUID's reduced
physical address bits, family 0x1A parts that are not Turin, failed firmware INIT, ASID
ranges given to one guest type, ciphertext hiding and AMD-SB-3023.
"""

from __future__ import annotations

import json

import pytest

from nfd_snp import facts_cache, nfd
from nfd_snp.checks import Guest, Status, evaluate
from nfd_snp.report import as_json
from tests.conftest import REPO, probe_root

HOSTS = REPO / "tests" / "data" / "hosts"
Y, N = "yes", "no"

# name: verdicts {guest: (ready, blocking)}, warnings {guest: (...)}, checks
# {name: (status, reason code, root cause)}, detail fragments {check: text}, labels present
# (with values) / absent, features.
EXPECTED = {
    "milan-7453-no-cpu-drivers": dict(
        verdicts={"sev": (Y, ()), "sev-es": (Y, ()), "sev-snp": (Y, ())},
        checks={"cpu.drivers": ("WARN", "cpu-drivers-not-loaded", None)},
        inferred={
            "cpu.sme": "the kernel flag 'sev' (SEV uses the SME encryption engine)",
            "bios.mem_encrypt": "the kernel flag 'sev' (SEV uses the SME encryption engine)",
            "cpu.sev": "the kernel flag 'sev'",
            "cpu.sev_es": "the kernel flag 'sev_es'",
            "cpu.snp": "the kernel flag 'sev_snp'",
            "cpu.vmpl": "SNP firmware state INIT",
            "bios.snp_en": "SNP firmware state INIT",
            "bios.rmp": "the kernel flag 'sev_snp'",
        },
        labels={
            "sev-snp.node.kubevirt.io/enabled": "true",
            "sev-snp.node.kubevirt.io/tcb-snp": "24",
        },
        features={"sev-snp.node.kubevirt.io/asids": "254", "sev.node.kubevirt.io/asids": "255"},
    ),
    "milan-snphost83-snp-init-failed": dict(
        verdicts={"sev": (Y, ()), "sev-es": (Y, ()), "sev-snp": (N, ("psp.snp_init",))},
        checks={
            "psp.snp_init": ("FAIL", "snp-not-initialised", None),
            "kvm.sev_snp": ("FAIL", "kvm-snp-off", "psp.snp_init"),
            "bios.snp_en": ("UNKNOWN", "msr-device-missing", None),
        },
        absent=["sev-snp.node.kubevirt.io/enabled", "sev-snp.node.kubevirt.io/api-version"],
        features={"sev.node.kubevirt.io/reduced-phys-bits": "1"},
    ),
    "milan-devconf-fedora-6.2": dict(
        verdicts={
            "sev": (Y, ()),
            "sev-es": (Y, ()),
            "sev-snp": (N, ("bios.rmp", "kvm.sev_snp", "libvirt.sev_snp")),
        },
        checks={
            "kernel.sev_snp": ("FAIL", "kernel-no-snp", "bios.rmp"),
            "kvm.sev_snp": ("FAIL", "kvm-no-snp-parameter", None),
            "libvirt.sev_snp": ("FAIL", "libvirt-too-old-for-snp", None),
        },
        details={
            "libvirt.sev_snp": "libvirt older than 10.5",
            "cpu.cbit": "CPUID EBX[11:6] says 5",
        },
        features={
            "sev.node.kubevirt.io/reduced-phys-bits": "1",
            "sev.node.kubevirt.io/cbitpos": "51",
            "sev-es.node.kubevirt.io/asids": "7",
        },
    ),
    "milan-psp-init-deferred": dict(
        verdicts={"sev": (Y, ()), "sev-es": (Y, ()), "sev-snp": (Y, ())},
        checks={"psp.sev_init": ("PASS", None, None), "psp.sev_es_init": ("SKIP", None, None)},
        details={"psp.sev_init": "ccp.psp_init_on_probe=N: KVM initialises the firmware"},
    ),
    "milan-7313-sev-init-0x13": dict(
        verdicts={
            "sev": (N, ("kernel.sev",)),
            "sev-es": (N, ("kernel.sev", "asid.sev_es")),
            "sev-snp": (N, ("kernel.sev", "asid.snp", "psp.snp_init", "kvm.sev_snp")),
        },
        checks={
            "psp.sev_init": ("FAIL", "sev-firmware-uninit", "kernel.sev"),
            "psp.sev_es_init": ("SKIP", None, None),
            "kvm.sev": ("FAIL", "kvm-sev-off", "kernel.sev"),
            "psp.snp_init": ("FAIL", "snp-api-too-old", None),
        },
        details={"psp.snp_init": "API 1.28 build 28 is below 1.51"},
    ),
    "milan-rome2d16-fw-1.49": dict(
        verdicts={
            "sev": (N, ("psp.sev_init",)),
            "sev-es": (N, ("psp.sev_init",)),
            "sev-snp": (N, ("psp.snp_init",)),
        },
        checks={
            "psp.snp_init": ("FAIL", "snp-api-too-old", None),
            "psp.sev_init": ("FAIL", "sev-firmware-uninit", "psp.snp_init"),
            # no release string: the accepted policy bits are unknown, not a failure
            "kvm.snp_policy": ("UNKNOWN", "kvm-no-policy-attribute", None),
        },
        details={"psp.snp_init": "SEV firmware API 1.49 build 3 is below 1.51"},
        fixes={"psp.snp_init": "Update the SEV firmware to API 1.51 or later"},
        absent=["sev.node.kubevirt.io/enabled", "sev-snp.node.kubevirt.io/build-id"],
    ),
    "milan-7313p-tcb-uncommitted": dict(
        verdicts={"sev": (Y, ()), "sev-es": (Y, ()), "sev-snp": (Y, ())},
        warnings={"sev-snp": ("psp.tcb", "psp.alias_check")},
        checks={
            "psp.tcb": ("WARN", "tcb-not-committed", None),
            "psp.alias_check": ("WARN", "alias-check-pending", None),
        },
        details={"psp.tcb": "reported TCB bl=2 tee=0 snp=23 ucode=213 differs"},
        labels={
            "sev-snp.node.kubevirt.io/tcb-snp": "23",
            "sev-snp.node.kubevirt.io/tcb-bootloader": "2",
            "sev-snp.node.kubevirt.io/tcb-microcode": "213",
            "sev-snp.node.kubevirt.io/build-id": "29",
        },
        features={"sev-snp.node.kubevirt.io/asids": "15"},
    ),
    "genoa-amd-lab-kubevirt": dict(
        verdicts={"sev": (Y, ()), "sev-es": (Y, ()), "sev-snp": (Y, ())},
        warnings={"sev-snp": ("psp.alias_check",)},
        checks={"psp.alias_check": ("WARN", "alias-check-unsupported", None)},
        details={"psp.alias_check": "firmware 1.55.24 predates the alias check (needs 1.55.38"},
        features={
            "sev.node.kubevirt.io/reduced-phys-bits": "1",
            "sev.node.kubevirt.io/cbitpos": "51",
        },
    ),
    "siena-8024p-psp-dead": dict(
        verdicts={
            "sev": (N, ("psp.sev_status",)),
            "sev-es": (N, ("psp.sev_status",)),
            "sev-snp": (N, ("psp.sev_status",)),
        },
        checks={
            "kvm.sev_snp": ("PASS", None, None),
            "psp.snp_init": ("FAIL", "psp-device-missing", "psp.sev_status"),
            "cpu.generation": ("PASS", None, None),
        },
        details={"cpu.generation": "(Bergamo/Siena)"},
        absent=["sev.node.kubevirt.io/enabled", "sev-snp.node.kubevirt.io/enabled"],
    ),
    "milan-7443p-snp-init-failed": dict(
        verdicts={
            "sev": (N, ("psp.sev_init",)),
            "sev-es": (N, ("psp.sev_init",)),
            "sev-snp": (N, ("psp.snp_init",)),
        },
        checks={
            "psp.sev_init": ("FAIL", "sev-firmware-uninit", "psp.snp_init"),
            "psp.sev_es_init": ("SKIP", None, None),
            "psp.snp_init": ("FAIL", "snp-and-sev-init-failed", None),
        },
        # The BIOS advice reaches the admin through the SNP check the SEV one echoes.
        fixes={"psp.sev_init": "Follows from psp.snp_init", "psp.snp_init": "update the BIOS"},
    ),
    "genoa-sev-unusable": dict(
        verdicts={"sev": (N, ("asid.sev",)), "sev-es": (Y, ()), "sev-snp": (Y, ())},
        checks={"asid.sev": ("FAIL", "no-sev-asids", None), "kvm.sev": ("PASS", None, None)},
        labels={
            "sev-snp.node.kubevirt.io/enabled": "true",
            "sev-es.node.kubevirt.io/enabled": "true",
        },
        absent=["sev.node.kubevirt.io/enabled"],
    ),
    "zen5-opennebula-no-es-asids": dict(
        verdicts={
            "sev": (Y, ()),
            "sev-es": (N, ("asid.sev_es",)),
            "sev-snp": (N, ("asid.snp", "kernel.sev_snp", "libvirt.sev_snp", "firmware.snp")),
        },
        checks={"kvm.sev_es": ("FAIL", "kvm-sev-es-off", "asid.sev_es")},
        details={
            "asid.sev": "1006 SEV ASIDs (/sys/fs/cgroup/misc.capacity)",
            "asid.sev_es": "0 SEV-ES ASIDs (libvirt maxESGuests)",
        },
    ),
    "turin-snp-fw-1.58-es-refused": dict(
        verdicts={"sev": (Y, ()), "sev-es": (N, ("psp.sev_es_with_snp",)), "sev-snp": (Y, ())},
        checks={"psp.sev_es_with_snp": ("FAIL", "sev-es-refused-with-snp", None)},
        details={
            "psp.sev_es_with_snp": "SNP firmware SVN 4 (>= 0x4, firmware 1.58 build 5)",
            "cpu.generation": "(Turin)",
            "bios.rmp": "segmented RMP, 128 GB segments (RMP_CFG 0x2501)",
        },
        labels={
            "sev-snp.node.kubevirt.io/tcb-fmc": "1",
            "sev-snp.node.kubevirt.io/tcb-snp": "4",
            "sev-snp.node.kubevirt.io/tcb-microcode": "74",
            "sev-snp.node.kubevirt.io/api-version": "1.58",
        },
        absent=["sev-es.node.kubevirt.io/enabled"],
    ),
    "turin-9555-iommu-pt": dict(
        verdicts={"sev": (Y, ()), "sev-es": (Y, ()), "sev-snp": (N, ("iommu.snp",))},
        checks={
            "iommu.snp": ("FAIL", "iommu-passthrough", None),
            "bios.snp_en": ("FAIL", "bios-snp-off", "iommu.snp"),
            "psp.snp_init": ("FAIL", "snp-not-initialised", "iommu.snp"),
            "kvm.sev_snp": ("FAIL", "kvm-snp-off", "iommu.snp"),
        },
        details={"iommu.snp": "iommu=pt on the kernel command line"},
        fixes={"iommu.snp": "remove iommu=pt"},
        absent=["sev-snp.node.kubevirt.io/enabled", "sev-snp.node.kubevirt.io/gpu-passthrough"],
        features={"sev-snp.node.kubevirt.io/blocked-by.iommu.snp": "fail"},
    ),
    "genoa-h100-vfio-kubevirt": dict(
        verdicts={"sev": (Y, ()), "sev-es": (Y, ()), "sev-snp": (Y, ())},
        checks={"gpu.vfio": ("PASS", None, None), "iommu.snp": ("PASS", None, None)},
        details={"gpu.vfio": "1 GPU ready: 0000:21:00.0 (NVIDIA 0x2331)"},
        labels={"sev-snp.node.kubevirt.io/gpu-passthrough": "true"},
        features={"sev-snp.node.kubevirt.io/gpus": "1"},
    ),
    "milan-7313-rmp-coverage-custom": dict(
        verdicts={"sev": (Y, ()), "sev-es": (Y, ()), "sev-snp": (N, ("bios.rmp",))},
        checks={
            "bios.rmp": ("FAIL", "rmp-too-small", None),
            "bios.snp_en": ("FAIL", "bios-snp-off", "bios.rmp"),
            "psp.snp_init": ("FAIL", "snp-not-initialised", "bios.rmp"),
        },
        details={"bios.rmp": "the RMP covers 200.0 GB, the host has 250.8 GB of RAM"},
        fixes={"bios.rmp": "'SNP Memory (RMP Table) Coverage' to Enabled"},
    ),
    "genoa-asus-psp-timeout": dict(
        verdicts={g: (N, ("psp.sev_status",)) for g in ("sev", "sev-es", "sev-snp")},
        checks={
            "psp.sev_status": ("FAIL", "psp-dead", None),
            "psp.snp_init": ("FAIL", "psp-dead", "psp.sev_status"),
        },
        fixes={"psp.sev_status": "Reboot the node"},
    ),
    "genoa-rhel95-kernel-5.14": dict(
        verdicts={"sev": (Y, ()), "sev-es": (Y, ()), "sev-snp": (Y, ())},
        checks={"kvm.snp_policy": ("UNKNOWN", "kvm-no-policy-attribute", None)},
        details={"kvm.snp_policy": "kvm_amd.sev_snp exists on Linux 5.14, a kernel with SEV-SNP"},
    ),
    "milan-amdsev176-hotloaded-fw": dict(
        verdicts={
            "sev": (N, ("psp.sev_init",)),
            "sev-es": (N, ("psp.sev_init",)),
            "sev-snp": (N, ("psp.snp_init",)),
        },
        checks={
            "psp.snp_init": ("FAIL", "snp-init-failed-hotloaded-firmware", None),
            "psp.sev_init": ("FAIL", "sev-firmware-uninit", "psp.snp_init"),
        },
        details={"psp.snp_init": "/lib/firmware/amd/amd_sev_fam19h_model0xh.sbin"},
        fixes={"psp.snp_init": "Update the BIOS, or remove that file"},
    ),
    "milan-amdsev282-es-refused": dict(
        verdicts={"sev": (Y, ()), "sev-es": (N, ("psp.sev_es_with_snp",)), "sev-snp": (Y, ())},
        details={"psp.sev_es_with_snp": "SNP firmware SVN 27 (>= 0x1b"},
        fixes={"psp.sev_es_with_snp": "AMD-SB-3023"},
    ),
    "epyc-4585px-family-1ah-model-44h": dict(
        verdicts={g: (N, ("cpu.sev",)) for g in ("sev", "sev-es", "sev-snp")},
        checks={"cpu.generation": ("UNKNOWN", "unknown-generation", None)},
        details={"cpu.generation": "family 0x1a model 0x44: not a known EPYC server model"},
    ),
    "milan-enarx-es-asids-full": dict(
        verdicts={"sev": (Y, ()), "sev-es": (Y, ()), "sev-snp": (Y, ())},
        warnings={"sev-es": ("asid.sev_es",), "sev-snp": ("asid.snp",)},
        checks={"asid.sev_es": ("WARN", "es-asids-in-use", None)},
        details={"asid.snp": "14 SEV-SNP ASIDs"},
    ),
    "genoa-ciphertext-hiding-all-snp": dict(
        verdicts={"sev": (Y, ()), "sev-es": (N, ("asid.sev_es",)), "sev-snp": (Y, ())},
        checks={"asid.sev_es": ("FAIL", "es-asids-taken-by-ciphertext-hiding", None)},
        features={"sev-es.node.kubevirt.io/asids": "0", "sev-snp.node.kubevirt.io/asids": "99"},
    ),
    "genoa-ciphertext-hiding-split-6.19": dict(
        verdicts={"sev": (Y, ()), "sev-es": (Y, ()), "sev-snp": (Y, ())},
        warnings={"sev-snp": ("asid.snp",), "sev-es": ()},
        checks={"asid.snp": ("WARN", "split-asids-in-use", None)},
        details={
            "kvm.snp_policy": "accepts policy bits 0x1fbffff, requires 0x20000 "
            "(KVM_X86_SNP_POLICY_BITS)",
            "asid.sev_es": "49 SEV-ES ASIDs",
        },
        features={"sev-es.node.kubevirt.io/asids": "49", "sev-snp.node.kubevirt.io/asids": "50"},
    ),
}


def test_every_snapshot_has_expectations_and_a_cited_readme():
    assert sorted(EXPECTED) == sorted(p.name for p in HOSTS.iterdir())
    assert len(EXPECTED) >= 10
    for root in HOSTS.iterdir():
        readme = (root / "README.md").read_text()
        assert "Source" in readme, root.name
        assert "Real:" in readme and "Derived:" in readme, root.name


@pytest.fixture(scope="module", params=sorted(EXPECTED))
def host(request):
    report = evaluate(probe_root(HOSTS / request.param))
    return request.param, report


def test_verdicts_and_root_causes(host):
    name, report = host
    got = {v.guest.value: (v.ready.value, v.blocking) for v in report.verdicts}
    assert got == EXPECTED[name]["verdicts"]
    warnings = {v.guest.value: v.warnings for v in report.verdicts}
    for guest, want in EXPECTED[name].get("warnings", {}).items():
        assert warnings[guest] == want, guest


def test_named_causes(host):
    name, report = host
    spec = EXPECTED[name]
    results = {r.check.name: r for r in report.results}
    for check, (status, reason, root) in spec.get("checks", {}).items():
        outcome = results[check].outcome
        got = (outcome.status.value, outcome.reason.code if outcome.reason else None)
        assert got == (status, reason), check
        assert outcome.root_cause == root, check
    for check, evidence in spec.get("inferred", {}).items():
        assert results[check].outcome.status is Status.PASS
        assert results[check].outcome.inferred_from == evidence, check
    for check, text in spec.get("details", {}).items():
        assert text in results[check].text, check
    for check, text in spec.get("fixes", {}).items():
        assert text in (results[check].fix or ""), check


def test_no_unknown_where_evidence_decides(host):
    """Unknown only where nothing decides: a decided verdict carries no gating UNKNOWN that
    other evidence could have settled (these snapshots were chosen so that it can)."""
    _name, report = host
    for r in report.results:
        if r.outcome.status is Status.UNKNOWN and r.check.gates:
            verdicts = [report.verdict(g).ready.value for g in r.check.gates]
            assert "unknown" not in verdicts, r.check.name


def test_labels_and_features(host):
    name, report = host
    spec = EXPECTED[name]
    pub = nfd.publication(report)
    labels, features = dict(pub.labels), dict(pub.features)
    for key, value in spec.get("labels", {}).items():
        assert labels.get(key) == value, key
    for key in spec.get("absent", []):
        assert key not in labels, key
    for key, value in spec.get("features", {}).items():
        assert features.get(key) == value, key
    # SNP firmware labels only beside enabled=true
    snp_ready = "sev-snp.node.kubevirt.io/enabled" in labels
    firmware = [k for k in labels if k.startswith(nfd.SNP_NS) and not k.endswith("/enabled")]
    assert bool(firmware) == (snp_ready and report.facts.psp.snp is not None)
    for guest in Guest:
        enabled = nfd.ENABLED[guest] in labels
        assert enabled == (report.verdict(guest).ready.value == "yes")


def test_json_and_facts_cache_agree_with_the_report(host):
    _name, report = host
    data = json.loads(json.dumps(as_json(report)))
    cache = json.loads(facts_cache.encode(report))
    for v in report.verdicts:
        assert data["verdicts"][v.guest.value]["ready"] == v.ready.value
        assert data["verdicts"][v.guest.value]["blocking"] == list(v.blocking)
    snp = report.verdict(Guest.SEV_SNP)
    assert cache["verdicts"]["sev-snp"] == {
        "ready": snp.ready.value,
        "blocking": list(snp.blocking),
    }
    cbit = report.facts.cbit()
    assert cache["reducedPhysBits"] == (cbit.reducedPhysBits if cbit else None)
    assert cache["reducedPhysBits"] in (1, None)  # QEMU's value, never CPUID's 5 or 6
