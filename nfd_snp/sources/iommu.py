"""The IOMMU as it gates SEV-SNP: the kernel command line, the AMD IOMMUs, the IOMMU groups.

From Linux 6.9 the AMD IOMMU driver turns host SNP off (CC_ATTR_HOST_SEV_SNP cleared, so no
`sev_snp` flag, kvm_amd.sev_snp=N) when the IOMMU is off or in passthrough, uses the v2 page
table, or an IOMMU lacks SNPSup (drivers/iommu/amd/init.c iommu_snp_enable: "SNP: IOMMU
disabled or configured in passthrough mode, SNP cannot be supported.", "configured with V2
page table mode", "IOMMU SNP feature not enabled"). `amd_iommu=off` turns SNP off without a
word (amd_iommu_detect / snp_rmptable_init). Real hosts: AMDESE/AMDSEV#88 and #113
(`iommu=pt`), NVIDIA's confidential-computing reference architecture (`iommu=pt` next to
SNP).

`/sys/class/iommu/ivhdN/amd-iommu/features` changed format twice: the EFR as `%llx` up to
Linux 5.19, `features2:features` (EFR2:EFR) from 6.0, and the global `efr:efr2` by 6.8
(absent in 6.6, present in 6.8; 6.7 is not pinned). It is parsed by kernel version, and
not at all where the version does not say which (6.7, a release that cannot be read, or an
older version number with the two-value format: a vendor backport of unknown order).
"""

from __future__ import annotations

import re
from typing import List, Optional, Tuple

from nfd_snp import paths
from nfd_snp.host import Host
from nfd_snp.model import AmdIommu, IommuFacts, IommuGroup, KernelFacts, Unreadable
from nfd_snp.reasons import Reason
from nfd_snp.sources import decode_text, unreadable_from

# Bounds: a command line is at most a few KB (COMMAND_LINE_SIZE 2048 on x86); large hosts
# have a few hundred IOMMU groups and a handful of IOMMUs.
CMDLINE_LIMIT = 16 * 1024
MAX_GROUPS = 8192
MAX_UNITS = 256
GROUP_TYPES = frozenset({"identity", "DMA", "DMA-FQ", "unmanaged", "blocked", "unknown"})


def passthrough_option(options: List[Tuple[str, str]]) -> Optional[str]:
    """The option that leaves the IOMMU in passthrough or off, or None; the last one wins,
    as the kernel parses them in order. `iommu=pt|nopt|off` (arch/x86/kernel/pci-dma.c
    iommu_setup, a comma list; `off` sets no_iommu, which iommu_snp_enable refuses like
    passthrough) and `iommu.passthrough=` (drivers/iommu/iommu.c, a kstrtobool)."""
    chosen = off = None
    for key, value in options:
        if key == "iommu":
            for item in value.split(","):
                if item == "off":
                    off = f"iommu={value}"  # no_iommu: no later option turns it back on
                elif item.startswith("nopt"):
                    chosen = None
                elif item.startswith("pt"):
                    chosen = f"iommu={value}"
        elif key == "iommu.passthrough":
            flag = value[:1].lower()
            if flag in ("1", "y") or value.lower() == "on":
                chosen = f"iommu.passthrough={value}"
            elif flag in ("0", "n") or value.lower() == "off":
                chosen = None
    return off or chosen


def parse_cmdline(text: str) -> List[Tuple[str, str]]:
    """`key=value` words of a kernel command line (quoted values as the kernel unquotes
    them, lib/cmdline.c next_arg); bare words get an empty value."""
    words = re.findall(r'(?:[^\s"]|"[^"]*")+', text)
    out = []
    for word in words:
        if word == "--":
            break  # what follows goes to init, not to the kernel (init/main.c parse_args)
        key, _, value = word.partition("=")
        out.append((key.replace('"', ""), value.replace('"', "")))
    return out


def efr_of(text: str, version: Optional[Tuple[int, int]]) -> Optional[int]:
    """The EFR from an `amd-iommu/features` value, by the format of this kernel version;
    None when the version does not tell the format."""
    parts = text.strip().split(":")
    if version is None or not all(re.fullmatch(r"[0-9a-fA-F]{1,16}", p) for p in parts):
        return None
    if len(parts) == 1:
        return int(parts[0], 16) if version < (6, 0) else None
    if len(parts) != 2 or version < (6, 0) or version == (6, 7):
        return None
    # 6.0-6.6: "%llx:%llx" of features2, features; from 6.8: amd_iommu_efr, amd_iommu_efr2
    return int(parts[1] if version < (6, 7) else parts[0], 16)


def _read_units(host: Host, version) -> Tuple[tuple, Optional[bool], Optional[Unreadable]]:
    try:
        names = [n for n in host.listdir(paths.SYS_CLASS_IOMMU) if n.startswith("ivhd")]
    except OSError as exc:
        # The kernel registers the class at boot whether or not an IOMMU exists
        # (drivers/iommu/iommu-sysfs.c iommu_dev_init): without it this root lacks /sys.
        return (
            (),
            None,
            unreadable_from(exc, "/" + paths.SYS_CLASS_IOMMU, missing=Reason.HOST_ROOT_INCOMPLETE),
        )
    units = []
    why = None
    for name in names[:MAX_UNITS]:
        rel = f"{paths.SYS_CLASS_IOMMU}/{name}/amd-iommu/features"
        try:
            text = decode_text(host.read(rel, 256))
        except OSError as exc:
            units.append(AmdIommu(name))
            why = why or unreadable_from(exc, "/" + rel, missing=Reason.FILE_GARBLED)
            continue
        efr = efr_of(text, version)
        if efr is None and why is None:
            release = f"Linux {version[0]}.{version[1]}" if version else "an unknown release"
            why = Unreadable(
                Reason.IOMMU_FEATURES_FORMAT_UNKNOWN,
                f"/{rel}: {text.strip()[:40]!r} is not in a format known for {release}",
            )
        units.append(AmdIommu(name, efr))
    return tuple(units), True, why


def _read_groups(host: Host) -> tuple:
    try:
        names = host.listdir(paths.IOMMU_GROUPS)
    except OSError:
        return ()
    groups = []
    numbers = sorted(int(n) for n in names if n.isascii() and n.isdigit() and len(n) <= 6)
    for number in numbers[:MAX_GROUPS]:
        base = f"{paths.IOMMU_GROUPS}/{number}"
        try:
            kind = decode_text(host.read(f"{base}/type", 64)).strip()
        except OSError:
            kind = None
        groups.append(IommuGroup(number, kind if kind in GROUP_TYPES else None))
    return tuple(groups)


def read(host: Host, kernel: KernelFacts) -> IommuFacts:
    units, listed, efr_unreadable = _read_units(host, kernel.version)
    groups = _read_groups(host)
    try:
        text = decode_text(host.read(paths.PROC_CMDLINE, CMDLINE_LIMIT, truncate=True))
    except OSError as exc:
        failure = unreadable_from(
            exc, "/" + paths.PROC_CMDLINE, missing=Reason.HOST_ROOT_INCOMPLETE
        )
        return IommuFacts(
            None,
            units=units,
            units_listed=listed,
            efr_unreadable=efr_unreadable,
            groups=groups,
            unreadable=failure,
        )
    options = parse_cmdline(text)
    amd = [item for key, value in options if key == "amd_iommu" for item in value.split(",")]
    return IommuFacts(
        cmdline=text.strip(),
        passthrough_option=passthrough_option(options),
        amd_iommu_off="off" in amd,
        pgtbl_v2="pgtbl_v2" in amd,
        units=units,
        units_listed=listed,
        efr_unreadable=efr_unreadable,
        groups=groups,
    )
