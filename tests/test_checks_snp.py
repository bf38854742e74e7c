"""The SEV-SNP checks at their edges, on typed facts (tests/facts.py): the firmware API at
exactly 1.51, a readable SNP firmware that is not initialised, an RMP the firmware did not
initialise, evidence that vouches for unreadable registers only from the kernel versions
that make it evidence, and the verdict these give: SEV-SNP "yes" only where every gate
passed. tests/test_checks.py has one line per outcome of every check; these are the
boundaries between outcomes."""

from __future__ import annotations

import pytest

from nfd_snp.checks import Guest, Readiness, check_named, evaluate
from nfd_snp.model import (
    FirmwareFacts,
    FirmwareImage,
    Generation,
    MemEncryptBit,
    MemoryFacts,
    MsrFacts,
)
from nfd_snp.reasons import Reason
from tests.facts import (
    CPUID_UNREADABLE,
    MSR_UNREADABLE,
    SNP_OVMF,
    flags,
    param,
    ready,
    sev_status,
    snp_status,
    unreadable,
)
from tests.test_checks import (
    KERNEL_UNREADABLE,
    SNP_OFF,
    _shown,
    iommu,
    hook,
    kernel_flags,
    leaf_without,
    no_psp,
    uninit_snp,
)


DEFERRED = uninit_snp(sev=sev_status(state=0), init_on_probe=False)
SNP_N = {"sev_snp": param("sev_snp", "N")}


def outcome(name, facts):
    return check_named(name).evaluate(facts)


def snp_verdict(facts):
    verdict = evaluate(facts).verdict(Guest.SEV_SNP)
    return verdict.ready, verdict.blocking


# fmt: off
CASES = [
    # the firmware API: 1.51 is the oldest Linux accepts, not too old
    ("psp.snp_api", ready(psp={"snp": snp_status(api=(1, 51))}), "PASS", "SNP API 1.51 >= 1.51"),
    ("psp.snp_api", ready(psp={"snp": snp_status(api=(1, 50))}), "FAIL snp-api-too-old",
     "SNP API 1.50 < 1.51"),
    ("psp.snp_api", ready(psp={"snp": snp_status(api=(2, 0))}), "PASS", "SNP API 2.0 >= 1.51"),
    ("psp.snp_api", ready(psp={"snp": snp_status(api=(0, 99))}), "FAIL snp-api-too-old", ""),
    ("psp.snp_api", ready(psp=no_psp("snp", Reason.DEVICE_DENIED)), "UNKNOWN device-denied", ""),
    # an SNP firmware that answers but is not initialised, with an API Linux accepts
    ("psp.snp_init", ready(psp=uninit_snp(sev=sev_status(api=(1, 51)))),
     "FAIL snp-not-initialised", "SNP platform state UNINIT"),
    ("psp.snp_init", ready(psp=uninit_snp(sev=sev_status(api=(1, 50)))),
     "FAIL snp-api-too-old", "SEV firmware API 1.50 build 37 is below 1.51"),
    ("psp.snp_init", ready(psp={"sev": None, "snp": snp_status(state=0, api=(1, 49))}),
     "FAIL snp-api-too-old", "SEV firmware API 1.49 build 37 is below 1.51"),  # SNP's own API
    ("psp.snp_init", ready(psp={"snp": snp_status(state=2)}), "PASS",
     "SNP platform state WORKING"),
    ("psp.snp_init", ready(psp={"snp": snp_status(state=7)}), "PASS", "SNP platform state state 7"),
    # the RMP as the firmware reports it
    ("psp.rmp_init", ready(psp={"snp": snp_status(rmp_initialized=False)}),
     "FAIL rmp-not-initialised", "RMP not initialised (byte 3 bit 0 clear)"),
    ("bios.rmp", ready(msr={"rmp_base": 0}, psp={"snp": snp_status(rmp_initialized=False)}),
     "FAIL rmp-not-reserved", "RMP_BASE 0x0"),  # no firmware RMP to outweigh the registers
    ("bios.rmp", ready(msr={"rmp_base": 0}, psp={"snp": snp_status(state=2)}),
     "WARN rmp-registers-contradicted", "the SNP firmware is WORKING with its RMP initialised"),
    ("bios.rmp", ready(msr={"rmp_end": 0, "rmp_cfg": 0x1D01}, kernel={"release": "6.14.0"}),
     "PASS", "segmented RMP, 536870912 bytes segments (RMP_CFG 0x1d01)"),
    ("bios.rmp", ready(msr={"rmp_end": 0, "rmp_cfg": 0x1E01}, kernel={"release": "6.14.0"}),
     "PASS", "segmented RMP, 1 GB segments (RMP_CFG 0x1e01)"),
    # 6.13 reads no segmented RMP; with host SNP off nothing vouches for it
    ("bios.rmp", ready(msr={"rmp_end": 0, "rmp_cfg": 0x2501},
                       kernel={"release": "6.13.7", "flags": flags("sme sev sev_es")},
                       psp={"snp": snp_status(state=0)}),
     "FAIL kernel-too-old-for-segmented-rmp", "Linux 6.13 reads no segmented RMP"),
    ("bios.rmp", ready(msr={"rmp_cfg": None}), "PASS",
     "RMP_BASE 0x1a3f00000, RMP_END 0x1e3efffff; RMP_CFG not read"),
    # the sev_snp flag vouches for the RMP from Linux 6.9 only
    ("bios.rmp", ready(msr=MSR_UNREADABLE, kernel={"release": "6.9.0"}, psp=uninit_snp()),
     "PASS inferred", "RMP_BASE/RMP_END not read"),
    ("bios.rmp", ready(msr=MSR_UNREADABLE, kernel={"release": "6.8.12"}, psp=uninit_snp()),
     "UNKNOWN msr-device-missing", ""),
    ("bios.rmp", ready(msr=MsrFacts(0x3800000, None, None, rmp_unreadable=unreadable(
        Reason.DEVICE_DENIED)), kernel=kernel_flags("sme sev sev_es"), psp=uninit_snp()),
     "UNKNOWN device-denied", ""),
    # VMPLs: a CPU without them never passes
    ("cpu.vmpl", ready(cpu=leaf_without(MemEncryptBit.VMPL)), "FAIL cpu-no-vmpl",
     "EAX[5] = 0"),
    ("cpu.vmpl", ready(cpu=CPUID_UNREADABLE, psp=uninit_snp()), "UNKNOWN cpuid-device-missing",
     ""),
    # the ES/SNP ASID range: KVM enables SEV-ES only with ES ASIDs
    ("asid.snp", ready(asids={"sev_es_capacity": None}, cpu=CPUID_UNREADABLE,
                       domcaps={"maxESGuests": None}), "PASS inferred",
     "SEV-SNP ASID count not read"),
    ("asid.snp", ready(asids={"sev_es_capacity": None}, cpu=CPUID_UNREADABLE,
                       domcaps={"maxESGuests": None}, kvm={"sev_es": param("sev_es", "N")}),
     "UNKNOWN cpuid-device-missing", ""),
    # KVM's rule for SNP guest policies: SNP in KVM from Linux 6.10
    ("kvm.snp_policy", ready(kernel={"release": "6.10.0"}), "PASS",
     "accepts policy bits 0x1bffff, requires 0x20000 (the rule of Linux 6.10); upstream"),
    ("kvm.snp_policy", ready(kernel={"release": "6.9.9"}, kvm={"sev_snp": param("sev_snp", None)}),
     "SKIP", "Linux 6.9 predates SEV-SNP in KVM"),
    ("kvm.snp_policy", ready(kernel={"release": "6.17.0"}), "PASS",
     "accepts policy bits 0x1bffff, requires 0x20000 (the rule of Linux 6.17)"),
    # libvirt's daemons against the hook: a start at the change's second is after it
    ("libvirt.hook", ready(hook=hook(started=100.0)), "PASS",
     "virtqemud (pid 4321) started 1970-01-01 00:01:40 UTC, after the hook changed "
     "1970-01-01 00:01:40 UTC"),
    ("libvirt.hook", ready(hook=hook(started=99.0)), "WARN hook-not-loaded",
     "virtqemud (pid 4321) started 1970-01-01 00:01:39 UTC, before the hook changed "
     "1970-01-01 00:01:40 UTC"),
    # host SNP decides whether a deferred SEV INIT can be stopped by SNP_INIT (evidence.py)
    ("psp.sev_init", ready(psp=DEFERRED, kernel={"release": "7.2.0"}), "FAIL sev-firmware-uninit",
     "runs SNP_INIT first"),  # kvm_amd.sev_snp=Y: host SNP on, whatever the kernel
    ("psp.sev_init", ready(psp=DEFERRED, kernel=KERNEL_UNREADABLE), "UNKNOWN sev-firmware-uninit",
     "host SNP not known"),
    ("psp.sev_init", ready(psp=DEFERRED, kvm=SNP_N, kernel={"release": "6.9.0"}),
     "FAIL sev-firmware-uninit", "runs SNP_INIT first"),  # SYSCFG SNP_EN from 6.9
    ("psp.sev_init", ready(psp=DEFERRED, kvm=SNP_N, kernel={"release": "6.8.0"}),
     "UNKNOWN sev-firmware-uninit", "host SNP not known"),
    ("psp.sev_init", ready(psp=DEFERRED, kvm=SNP_N, kernel={"release": "7.0.9"}),
     "FAIL sev-firmware-uninit", "runs SNP_INIT first"),
    ("psp.sev_init", ready(psp=DEFERRED, kvm=SNP_N, kernel={"release": "7.1.0"}),
     "UNKNOWN sev-firmware-uninit", "host SNP not known"),  # SNP_EN only at SNP INIT
    ("psp.sev_init", ready(psp=DEFERRED, kvm=SNP_N, msr={"syscfg": 0x800000}), "PASS",
     "KVM initialises the firmware"),  # SNP_EN clear: host SNP off
    # the guest firmware, named by its image or, without one, its descriptor
    ("firmware.snp", ready(firmware=FirmwareFacts((FirmwareImage(
        "/usr/share/qemu/firmware/x.json", "memory", None, None, ("uefi",), ("amd-sev-snp",),
        ("x86_64",)),))), "PASS", "amd-sev-snp firmware: /usr/share/qemu/firmware/x.json"),
    ("firmware.snp", ready(firmware=FirmwareFacts((FirmwareImage(
        "/usr/share/qemu/firmware/y.json", "memory", "/y.fd", None, ("uefi",), ("amd-sev",),
        ("x86_64",)),))), "FAIL no-snp-firmware", "none of 1 firmware descriptors"),
    # An RMP that covers exactly the host's RAM: 256 GiB at 16 bytes a 4 KiB page is 1 GiB
    # of entries after 16 KiB of bookkeeping; one byte less is too small.
    ("bios.rmp", ready(msr={"rmp_end": 0x1A3F00000 + (1 << 30) + 0x4000 - 1},
                       memory=MemoryFacts(256 << 20), psp=uninit_snp()),
     "PASS", "covers 256.0 GB of 256.0 GB of RAM"),
    ("bios.rmp", ready(msr={"rmp_end": 0x1A3F00000 + (1 << 30) + 0x4000 - 2},
                       memory=MemoryFacts(256 << 20), psp=uninit_snp()),
     "FAIL rmp-too-small", "the RMP covers 256.0 GB, the host has 256.0 GB"),
    # the IOMMU: an initialised SNP firmware proves host SNP too; IOMMUs not listed: unknown
    ("iommu.snp", ready(iommu=iommu(passthrough_option="iommu=pt"),
                        kvm={"sev_snp": param("sev_snp", "N")}),
     "PASS inferred", "the kernel kept host SNP"),
    # the command line unread though the IOMMUs are listed: what decides is unknown
    ("iommu.snp", ready(iommu=iommu(unreadable=unreadable(Reason.FILE_DENIED)), **SNP_OFF),
     "UNKNOWN file-denied", ""),
    ("iommu.snp", ready(iommu=iommu(units=(), units_listed=None, efr_unreadable=unreadable(
        Reason.HOST_ROOT_INCOMPLETE)), **SNP_OFF), "UNKNOWN host-root-incomplete", ""),
    # both INITs failed only where ccp initialises at probe; deferred, SEV UNINIT is normal
    ("psp.snp_init", ready(psp={"sev": sev_status(state=0), "init_on_probe": False,
                                **no_psp("snp", Reason.SNP_NOT_INITIALISED)}),
     "FAIL snp-not-initialised", ""),
    ("psp.snp_init", ready(psp={"sev": sev_status(state=0),
                                **no_psp("snp", Reason.SNP_NOT_INITIALISED)}),
     "FAIL snp-and-sev-init-failed", "and SEV state UNINIT"),
    # 6.19 without the attribute is no backport: the attribute's own reason
    ("kvm.snp_policy", ready(kernel={"release": "6.19.0"}, kvm={
        "snp_policy_bits_unreadable": unreadable(Reason.KVM_NO_POLICY_ATTRIBUTE, "not offered")}),
     "UNKNOWN kvm-no-policy-attribute", "not offered"),
]
# fmt: on


@pytest.mark.parametrize(
    "name, facts, expected, detail", CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES]
)
def test_check_at_its_edge(name, facts, expected, detail):
    got = outcome(name, facts)
    assert _shown(got) == expected, got
    assert detail in got.detail, got.detail


def test_no_upstream_note_once_kvm_publishes_its_bits_or_from_6_17():
    assert "upstream" not in outcome("kvm.snp_policy", ready(kernel={"release": "6.17.0"})).detail
    published = ready(kvm={"snp_policy_bits": 0x1BFFFF})
    assert "upstream" not in outcome("kvm.snp_policy", published).detail


@pytest.mark.parametrize(
    "generation_model, build, reason",
    [
        ((0x01, 21), 21, Reason.ALIAS_CHECK_UNSUPPORTED),  # Milan before 1.55.22
        ((0x01, 22), 22, Reason.ALIAS_CHECK_PENDING),
        ((0x11, 37), 37, Reason.ALIAS_CHECK_UNSUPPORTED),  # Genoa before 1.55.38
        ((0x11, 38), 38, Reason.ALIAS_CHECK_PENDING),
        ((0xA0, 10), 10, Reason.ALIAS_CHECK_UNSUPPORTED),  # Bergamo/Siena like Genoa
        ((0xA0, 38), 38, Reason.ALIAS_CHECK_PENDING),
    ],
)
def test_the_alias_check_floor_per_generation(generation_model, build, reason):
    model, _ = generation_model
    facts = ready(
        cpu={"model": model},
        kernel={"model": model},
        psp={"snp": snp_status(alias_check_complete=False, build=build)},
    )
    got = outcome("psp.alias_check", facts)
    assert got.reason is reason, got


def test_an_unknown_generation_has_no_alias_check_floor():
    facts = ready(
        cpu={"model": 0x7F},
        kernel={"model": 0x7F},
        psp={"snp": snp_status(alias_check_complete=False, build=1)},
    )
    assert facts.generation is Generation.UNKNOWN
    assert outcome("psp.alias_check", facts).reason is Reason.ALIAS_CHECK_PENDING


# -- the verdict -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "facts, blocking",
    [
        (ready(cpu=leaf_without(MemEncryptBit.VMPL)), ("cpu.vmpl",)),
        (ready(psp={"snp": snp_status(api=(1, 50))}), ("psp.snp_api",)),
        (ready(psp={"snp": snp_status(rmp_initialized=False)}), ("psp.rmp_init",)),
        (ready(psp=uninit_snp(), kvm={"sev_snp": param("sev_snp", "N")}), ("psp.snp_init",)),
        (ready(msr={"rmp_base": 0}, psp=uninit_snp()), ("bios.rmp",)),
    ],
    ids=["no-vmpl", "api-1.50", "rmp-not-initialised", "snp-uninit", "rmp-not-reserved"],
)
def test_a_failed_snp_gate_makes_the_node_not_ready(facts, blocking):
    assert snp_verdict(facts) == (Readiness.NO, blocking)


@pytest.mark.parametrize(
    "facts",
    [
        ready(psp={"snp": snp_status(api=(1, 51))}),
        ready(cpu=CPUID_UNREADABLE, msr=MSR_UNREADABLE),
        ready(asids={"sev_es_capacity": None}, cpu=CPUID_UNREADABLE, domcaps={"maxESGuests": None}),
        ready(psp={"snp": snp_status(state=2)}),
    ],
    ids=["api-1.51", "registers-unreadable", "asids-unreadable", "working"],
)
def test_proven_facts_leave_the_node_ready(facts):
    assert snp_verdict(facts) == (Readiness.YES, ())


def test_an_unreadable_snp_firmware_leaves_snp_unknown_not_no():
    facts = ready(psp=no_psp("snp", Reason.DEVICE_DENIED))
    ready_, blocking = snp_verdict(facts)
    assert ready_ is Readiness.UNKNOWN and "psp.snp_init" in blocking


def test_the_ready_host_lists_its_snp_image():
    assert outcome("firmware.snp", ready()).detail == f"amd-sev-snp firmware: {SNP_OVMF.executable}"
