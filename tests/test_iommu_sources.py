"""The IOMMU and GPU sources: command line, AMD IOMMU features by kernel format, sysfs links.

Byte-level: these sources parse what the kernel writes, so they are tested on snapshot trees
laid out as the kernel lays them out (tests/sysfs.py), hostile ones included.
"""

from __future__ import annotations

import os

import pytest

from nfd_snp.checks import Status, check_named
from nfd_snp.model import KernelFacts
from nfd_snp.sources import iommu, pci
from tests import sysfs
from tests.conftest import probe_root

EFR_SNP = "841f77e022094ace"  # AMDESE/AMDSEV#181 (an AWS host): bit 63 set, "... SNP"
EFR_NO_SNP = "25bf732fa2295afe"  # a KVM list thread's host: bit 63 clear


@pytest.mark.parametrize(
    "cmdline, option",
    [
        ("BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro quiet", None),
        ("amd_iommu=on iommu=pt mem_encrypt=on", "iommu=pt"),  # NVIDIA's reference row
        ("iommu=pt iommu=nopt", None),  # the last one wins
        ("iommu=nopt iommu=pt", "iommu=pt"),
        ("iommu=soft,pt", "iommu=soft,pt"),
        ("iommu=off", "iommu=off"),
        ("iommu=off iommu=nopt", "iommu=off"),  # no_iommu stays set
        ("iommu=pt -- iommu=nopt", "iommu=pt"),  # after "--": init's arguments
        ("iommu.passthrough=1", "iommu.passthrough=1"),
        ("iommu.passthrough=on", "iommu.passthrough=on"),
        ("iommu.passthrough=1 iommu.passthrough=0", None),
        ('foo="iommu=pt" bar', None),  # a quoted value of another option
        ("amd_iommu=on iommu=nopt mem_encrypt=on", None),  # kubevirt#16407's working host
    ],
)
def test_passthrough_option_follows_the_kernels_parsing(cmdline, option):
    assert iommu.passthrough_option(iommu.parse_cmdline(cmdline)) == option


@pytest.mark.parametrize(
    "text, version, efr",
    [
        (EFR_SNP, (5, 19), int(EFR_SNP, 16)),  # %llx, EFR alone
        (f"0:{EFR_SNP}", (6, 1), int(EFR_SNP, 16)),  # 6.0-6.6: features2:features
        (f"{EFR_NO_SNP}:53d", (6, 8), int(EFR_NO_SNP, 16)),  # 6.8+: efr:efr2
        (f"{EFR_NO_SNP}:53d", (6, 7), None),  # the release of the change is not pinned
        (f"{EFR_NO_SNP}:53d", (5, 14), None),  # a backport of unknown order (RHEL 9)
        (EFR_SNP, (6, 12), None),  # one value where two are due: not this kernel's format
        (EFR_SNP, None, None),
        ("zz:yy", (6, 12), None),
        ("1" * 17, (5, 10), None),
    ],
)
def test_efr_is_read_only_in_the_format_of_its_kernel(text, version, efr):
    assert iommu.efr_of(text, version) == efr


def _kernel(release):
    return KernelFacts(release, None, None, None, None, frozenset())


def test_iommu_units_groups_and_cmdline_from_a_kernel_laid_out_tree(snapshot):
    root = snapshot(
        base="genoa-snp-ready",
        files={"proc/cmdline": "BOOT_IMAGE=/vmlinuz amd_iommu=on iommu=nopt\n"},
    )
    sysfs.amd_iommu(root, 0, f"{EFR_SNP}:0")
    sysfs.amd_iommu(root, 1, f"{EFR_NO_SNP}:0", bdf="0000:40:00.2")
    sysfs.pci_device(root, "0000:21:00.0")
    from nfd_snp.host import open_host

    with open_host(root) as host:
        facts = iommu.read(host, _kernel("6.14.0-37-generic"))
    assert facts.passthrough_option is None and not facts.amd_iommu_off
    assert [(u.name, u.snp_support) for u in facts.units] == [("ivhd0", True), ("ivhd1", False)]
    assert facts.group(44).type == "DMA-FQ" and facts.group(44).translated


def test_gpu_bound_to_vfio_in_its_group(snapshot):
    root = snapshot(base="genoa-snp-ready")
    sysfs.pci_device(root, "0000:21:00.0")
    sysfs.pci_device(root, "0000:21:00.1", pci_class=0x040300, driver="snd_hda_intel")
    sysfs.pci_device(root, "0000:c1:00.0", pci_class=0x020000, driver="mlx5_core", group=7)
    facts = probe_root(root).pci
    (gpu,) = facts.gpus
    assert (gpu.bdf, gpu.vendor_name, gpu.device, gpu.driver, gpu.iommu_group) == (
        "0000:21:00.0",
        "NVIDIA",
        0x2331,
        "vfio-pci",
        44,
    )
    members = [(m.bdf, m.driver, m.iommu_group) for m in facts.group_members]
    assert members == [("0000:21:00.1", "snd_hda_intel", 44)]


def test_a_device_without_driver_or_group(snapshot):
    root = snapshot(base="genoa-snp-ready")
    sysfs.pci_device(root, "0000:21:00.0", driver=None, group=None)
    (gpu,) = probe_root(root).pci.gpus
    assert gpu.unreadable is None and gpu.driver is None and gpu.iommu_group is None


@pytest.mark.parametrize(
    "plant",
    [
        "driver-outside-sys",  # a driver link pointing anywhere else
        "dangling-group-name",  # iommu_group -> a directory that is not a group number
        "garbage-class",
        "driver-loop",
    ],
)
def test_odd_sysfs_makes_the_gpu_unreadable_not_a_crash(snapshot, tmp_path, plant):
    root = snapshot(base="genoa-snp-ready")
    path = sysfs.pci_device(root, "0000:21:00.0")
    if plant == "driver-outside-sys":
        (path / "driver").unlink()
        (root / "etc").mkdir(exist_ok=True)
        os.symlink("../../../../../etc", path / "driver")
    elif plant == "dangling-group-name":
        (path / "iommu_group").unlink()
        os.symlink("../../../../kernel/iommu_groups/not-a-number", path / "iommu_group")
    elif plant == "garbage-class":
        (path / "class").write_text("\x00\xffjunk\n")
    elif plant == "driver-loop":
        (path / "driver").unlink()
        os.symlink("driver", path / "driver")
    outcome = check_named("gpu.vfio").evaluate(probe_root(root))
    assert outcome.status is Status.UNKNOWN, outcome  # no label, the reason shown


def test_capture_keeps_the_links_and_replays_the_same_facts(tmp_path):
    """A live root (here a directory laid out like /sys) captured and replayed: the links are
    rewritten for where they sit in the snapshot and read the same."""
    from nfd_snp.capture import write_snapshot
    from nfd_snp.host import LiveHost, SnapshotHost

    live = tmp_path / "live"
    sysfs.pci_device(live, "0000:21:00.0")
    sysfs.pci_device(live, "0000:21:00.1", pci_class=0x040300, driver="snd_hda_intel")
    sysfs.amd_iommu(live, 0, f"{EFR_SNP}:0")
    (live / "proc").mkdir()
    (live / "proc/cmdline").write_text("iommu=pt\n")
    kernel = _kernel("6.12.0")
    with LiveHost(live, record=True, libvirt=False) as host:
        before = (pci.read(host), iommu.read(host, kernel))
        recording = host.recording
    out = tmp_path / "snap"
    out.mkdir()
    write_snapshot(recording, out)
    assert os.path.islink(out / "sys/bus/pci/devices/0000:21:00.0/driver")
    with SnapshotHost(out) as host:
        after = (pci.read(host), iommu.read(host, kernel))
    assert after == before
    assert before[0].gpus[0].driver == "vfio-pci" and before[1].passthrough_option == "iommu=pt"


def test_a_link_to_the_root_is_captured_as_such_and_read_the_same(tmp_path):
    """A live root whose GPU's `driver` link resolves to the root itself (an odd /host): the
    capture keeps that link instead of failing, and the replay refuses it as the live read
    did."""
    from nfd_snp.capture import write_snapshot
    from nfd_snp.host import LiveHost, SnapshotHost

    live = tmp_path / "live"
    device = sysfs.pci_device(live, "0000:21:00.0")
    (device / "driver").unlink()
    os.symlink("../../../../..", device / "driver")  # sys/devices/pci0000:00/<bridge>/<bdf>
    with LiveHost(live, record=True, libvirt=False) as host:
        before = pci.read(host)
        recording = host.recording
    out = tmp_path / "snap"
    write_snapshot(recording, out)
    with SnapshotHost(out) as host:
        after = pci.read(host)
    assert before.unreadable or any(g.unreadable for g in before.gpus)
    assert after == before


@pytest.mark.parametrize("vendor, driver", [(0x1A03, "ast"), (0x102B, "mgag200"), (0x1A03, None)])
def test_the_bmc_console_vga_is_no_gpu(snapshot, vendor, driver):
    """Nearly every server has one (ASPEED, Matrox, class 0x0300): it is neither a GPU to
    warn about nor one to count."""
    root = snapshot(base="genoa-snp-ready")
    sysfs.pci_device(
        root, "0000:02:00.0", vendor=vendor, device=0x2000, pci_class=0x030000, driver=driver
    )
    assert probe_root(root).pci.gpus == ()
