"""Build sysfs trees in a snapshot as the kernel lays them out (relative links included).

drivers/pci/pci-sysfs.c and drivers/base/core.c: a PCI function lives in
/sys/devices/pci<domain>:<bus>/<bridge BDF>/.../<BDF>; /sys/bus/pci/devices/<BDF> links
there (`../../../devices/...`); the device directory's `driver` links to
/sys/bus/pci/drivers/<name> and `iommu_group` to /sys/kernel/iommu_groups/<N>, whose
`devices/<BDF>` links back. Links are relative to the directory that really holds them, as
`ls -l` shows on real hosts (`driver -> ../../../../bus/pci/drivers/vfio-pci`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional


def _link(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(target, link.parent), link)


def pci_device(
    root: Path,
    bdf: str,
    *,
    bridges=("0000:00:01.1",),
    vendor: int = 0x10DE,
    device: int = 0x2331,
    pci_class: int = 0x030200,
    driver: Optional[str] = "vfio-pci",
    group: Optional[int] = 44,
    group_type: str = "DMA-FQ",
) -> Path:
    """One PCI function (an H100 bound to vfio-pci in group 44 by default)."""
    domain_bus = "pci" + bdf.rsplit(":", 1)[0].split(":")[0] + ":00"
    path = root / "sys" / "devices" / domain_bus
    for bridge in bridges:
        path = path / bridge
    path = path / bdf
    path.mkdir(parents=True)
    (path / "vendor").write_text(f"0x{vendor:04x}\n")
    (path / "device").write_text(f"0x{device:04x}\n")
    (path / "class").write_text(f"0x{pci_class:06x}\n")
    _link(root / "sys/bus/pci/devices" / bdf, path)
    if driver is not None:
        drivers = root / "sys/bus/pci/drivers" / driver
        drivers.mkdir(parents=True, exist_ok=True)
        _link(path / "driver", drivers)
        if not (drivers / bdf).exists():
            _link(drivers / bdf, path)
    if group is not None:
        group_dir = root / "sys/kernel/iommu_groups" / str(group)
        (group_dir / "devices").mkdir(parents=True, exist_ok=True)
        (group_dir / "type").write_text(group_type + "\n")
        _link(path / "iommu_group", group_dir)
        _link(group_dir / "devices" / bdf, path)
    return path


def amd_iommu(root: Path, index: int, features: str, bdf: str = "0000:00:00.2") -> None:
    """An AMD IOMMU unit: /sys/class/iommu/ivhdN -> the PCI device's iommu/ivhdN."""
    unit = root / "sys/devices/pci0000:00" / bdf / "iommu" / f"ivhd{index}"
    (unit / "amd-iommu").mkdir(parents=True)
    (unit / "amd-iommu" / "features").write_text(features + "\n")
    (unit / "amd-iommu" / "cap").write_text("190b5423\n")
    _link(root / "sys/class/iommu" / f"ivhd{index}", unit)
