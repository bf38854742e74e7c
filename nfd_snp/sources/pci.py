"""GPUs on the PCI bus, the driver each is bound to and its IOMMU group (REFERENCE §3).

A GPU goes to a confidential guest through VFIO: bound to `vfio-pci`, in an IOMMU group
whose other devices are free for VFIO too (a group is passed whole), translated by the
IOMMU. sysfs as the kernel lays it out (drivers/pci/pci-sysfs.c): `/sys/bus/pci/devices/
<BDF>` links to the device directory, which holds `vendor`/`device` (`0x%04x`) and `class`
(`0x%06x`), and the relative links `driver` (`../../../../bus/pci/drivers/vfio-pci`, the
depth following the device's place in the tree) and `iommu_group`
(`../../../../kernel/iommu_groups/N`). Only a link's last component is used, and only when
it lands where the kernel puts such links; anything else makes the device unreadable.
"""

from __future__ import annotations

import errno
import re
from typing import Optional, Tuple

from nfd_snp import paths
from nfd_snp.host import Host
from nfd_snp.model import PciDevice, PciFacts
from nfd_snp.reasons import Reason
from nfd_snp.sources import decode_text, unreadable_from

MAX_DEVICES = 4096  # PCI functions on one host: a few hundred on a large server
BDF = re.compile(r"[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]")


def _hex(host: Host, rel: str, digits: int) -> int:
    text = decode_text(host.read(rel, 32)).strip()
    if not re.fullmatch(rf"0x[0-9a-fA-F]{{{digits}}}", text):
        raise OSError(errno.EINVAL, f"unexpected value {text[:20]!r}", rel)
    return int(text, 16)


def _link_name(host: Host, rel: str, under: str) -> Optional[str]:
    """The last component of link `rel` when it points into `under`; None when there is no
    link (no driver bound, no IOMMU group)."""
    try:
        target = host.readlink(rel)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise
    head, _, name = target.rpartition("/")
    if head != under or not name:
        raise OSError(errno.EXDEV, f"link to {target} is not under /{under}", rel)
    return name


def read_device(host: Host, bdf: str) -> PciDevice:
    base = f"{paths.PCI_DEVICES}/{bdf}"
    pci_class = vendor = device = None
    driver: Optional[str] = None
    group: Optional[int] = None
    try:
        pci_class = _hex(host, f"{base}/class", 6)
        if pci_class >> 16 != 0x03:
            return PciDevice(bdf, None, None, pci_class, None, None)
        vendor = _hex(host, f"{base}/vendor", 4)
        device = _hex(host, f"{base}/device", 4)
        driver = _link_name(host, f"{base}/driver", paths.PCI_DRIVERS)
        group_name = _link_name(host, f"{base}/iommu_group", paths.IOMMU_GROUPS)
        if group_name is not None:
            if not (group_name.isascii() and group_name.isdigit()) or len(group_name) > 6:
                raise OSError(errno.EINVAL, f"IOMMU group {group_name[:20]!r}", base)
            group = int(group_name)
    except OSError as exc:
        failure = unreadable_from(
            exc, f"/{base}", missing=Reason.FILE_GARBLED, other=Reason.FILE_GARBLED
        )
        return PciDevice(bdf, vendor, device, pci_class, driver, group, failure)
    return PciDevice(bdf, vendor, device, pci_class, driver, group)


def _driver_of(host: Host, bdf: str, group: int) -> PciDevice:
    """A device that shares a GPU's IOMMU group: only its driver matters."""
    base = f"{paths.PCI_DEVICES}/{bdf}"
    try:
        driver = _link_name(host, f"{base}/driver", paths.PCI_DRIVERS)
    except OSError as exc:
        failure = unreadable_from(exc, f"/{base}", missing=Reason.FILE_GARBLED)
        return PciDevice(bdf, None, None, None, None, group, failure)
    return PciDevice(bdf, None, None, None, driver, group)


def read(host: Host) -> PciFacts:
    try:
        names = host.listdir(paths.PCI_DEVICES)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return PciFacts()  # no PCI bus in this root (a VM without one, a bare snapshot)
        return PciFacts(
            unreadable=unreadable_from(exc, "/" + paths.PCI_DEVICES, missing=Reason.FILE_GARBLED)
        )
    bdfs = [n for n in names if BDF.fullmatch(n)][:MAX_DEVICES]
    devices = (read_device(host, b) for b in bdfs)
    gpus = tuple(d for d in devices if (d.is_display and not d.is_bmc_display) or d.unreadable)
    members: Tuple[PciDevice, ...] = ()
    groups = {g.iommu_group for g in gpus if g.iommu_group is not None}
    for number in sorted(groups):
        try:
            others = host.listdir(f"{paths.IOMMU_GROUPS}/{number}/devices", entries=True)
        except OSError:
            continue
        gpu_bdfs = {g.bdf for g in gpus}
        members += tuple(
            _driver_of(host, b, number) for b in others if b not in gpu_bdfs and BDF.fullmatch(b)
        )
    return PciFacts(gpus=gpus, group_members=members)
