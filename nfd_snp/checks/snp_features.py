"""What an SEV-SNP node offers beyond SNP itself: GPUs for confidential guests, Secure TSC,
ciphertext hiding. Informational: none gates a guest type; each is published as a label only
beside `sev-snp.node.kubevirt.io/enabled=true` (nfd_snp/nfd.py).

Declared as in sev.py: one `Check(...)` each in CHECKS, its evaluation function above it.
"""

from __future__ import annotations

import re
from typing import List, Optional, Tuple

from nfd_snp.checks.engine import (
    INFO,
    Check,
    Outcome,
    from_unreadable,
    passed,
    skipped,
    warned,
)
from nfd_snp.model import HostFacts, PciDevice
from nfd_snp.reasons import Reason

# -- confidential GPUs ---------------------------------------------------------------------

# Drivers a device may have and still leave its IOMMU group to VFIO (drivers/vfio/vfio_main.c
# and pci/vfio_pci_core.c: members bound to vfio-pci or pci-stub, or to none, and bridges
# bound to pcieport, keep a group viable).
VFIO_GROUP_DRIVERS = frozenset({None, "vfio-pci", "pci-stub", "pcieport"})
# QEMU 9.1 broke device passthrough into SEV-SNP guests ("Cannot set discarding of RAM
# broken"), QEMU 9.2 fixed it (its ChangeLog, VFIO: "Fixed regression when passing through
# devices in SEV-SNP guests"; kubevirt/kubevirt#16407).
QEMU_SNP_VFIO = (9, 2)
_MACHINE = re.compile(r"^pc-(?:q35|i440fx)-(\d{1,3})\.(\d{1,3})$")


def qemu_version(machine: Optional[str]) -> Optional[Tuple[int, int]]:
    """QEMU's version from libvirt's default machine type (`pc-q35-9.2`: QEMU 9.2, whose
    newest machine type it is); None for names that do not carry it (`pc-q35-rhel9.6.0`)."""
    match = _MACHINE.match(machine or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def _named(gpu: PciDevice) -> str:
    device = f" {gpu.device:#06x}" if gpu.device is not None else ""
    return f"{gpu.bdf} ({gpu.vendor_name}{device})"


def gpu_problem(f: HostFacts, gpu: PciDevice) -> Optional[Tuple[Reason, str]]:
    """Why this GPU cannot go to an SEV-SNP guest through VFIO, or None."""
    name = _named(gpu)
    if gpu.driver != "vfio-pci":
        return Reason.GPU_NOT_VFIO, f"{name} is bound to {gpu.driver or 'no driver'}"
    group = f.iommu.group(gpu.iommu_group)
    if group is None:
        return Reason.GPU_GROUP_PASSTHROUGH, f"{name} is in no IOMMU group"
    if not group.translated:
        kind = group.type or "of an unreadable type"
        return Reason.GPU_GROUP_PASSTHROUGH, f"{name}: IOMMU group {group.number} is {kind}"
    others = [
        f"{m.bdf} ({m.driver})"
        for m in f.pci.group_members
        if m.iommu_group == group.number and m.driver not in VFIO_GROUP_DRIVERS
    ]
    if others:
        return (
            Reason.GPU_GROUP_SHARED,
            f"{name}: IOMMU group {group.number} also holds {', '.join(others)}",
        )
    return None


def ready_gpus(f: HostFacts) -> List[PciDevice]:
    """The GPUs VFIO can give an SEV-SNP guest (what the `gpu.vfio` check counts when it
    passes; whether libvirt's QEMU can, the check says)."""
    return [g for g in f.pci.gpus if g.unreadable is None and gpu_problem(f, g) is None]


def gpus(f: HostFacts) -> Outcome:
    """GPUs (PCI class 0x03) that VFIO can pass to a confidential guest: bound to vfio-pci,
    in a translated IOMMU group whose other devices VFIO may take too; on a host with
    libvirt, a QEMU that passes devices to SEV-SNP guests (9.2 or later)."""
    pci = f.pci
    if pci.unreadable is not None:
        return from_unreadable(pci.unreadable)
    if not pci.gpus:
        return skipped("no GPU (PCI class 0x03) on this host")
    unreadable = [g for g in pci.gpus if g.unreadable is not None]
    ready, problems = [], []
    for gpu in pci.gpus:
        if gpu.unreadable is None:
            problem = gpu_problem(f, gpu)
            if problem is None:
                ready.append(_named(gpu))
            else:
                problems.append(problem)
    if ready and f.domcaps.libvirt_present:
        version = qemu_version(f.domcaps.machine)
        if version is not None and version < QEMU_SNP_VFIO:
            return warned(
                Reason.QEMU_TOO_OLD_FOR_SNP_VFIO,
                f"{', '.join(ready)} on vfio-pci, but libvirt's QEMU is {version[0]}."
                f"{version[1]} ({f.domcaps.machine}): 9.2 or later passes devices to SEV-SNP "
                "guests",
            )
    notes = "; ".join(text for _, text in problems)
    if ready:
        count = len(ready)
        detail = f"{count} GPU{'s' if count != 1 else ''} ready: {', '.join(ready)}"
        machine = f.domcaps.machine
        if f.domcaps.libvirt_present and qemu_version(machine) is None:
            detail += (
                f"; QEMU version not told by its machine type {machine!r}"
                if machine
                else "; QEMU version unknown (libvirt named no machine type)"
            )
        elif not f.domcaps.libvirt_present:
            # KubeVirt and Kata bring their own QEMU: 9.1 (KubeVirt 1.7) cannot pass a device
            # to an SNP guest, 10.1 (KubeVirt 1.8) can (kubevirt/kubevirt#16407).
            detail += "; the QEMU that runs the VM must be 9.2 or later (KubeVirt 1.8+)"
        return passed(detail + (f"; not ready: {notes}" if notes else ""))
    if problems:
        return warned(problems[0][0], notes)
    return from_unreadable(unreadable[0].unreadable)


# -- optional SNP features -----------------------------------------------------------------


def secure_tsc(f: HostFacts) -> Outcome:
    """Secure TSC for SEV-SNP guests: the CPU's (CPUID 0x8000001F EAX[8]) and KVM's offer of
    it (KVM_X86_SEV_VMSA_FEATURES bit 9, SVM_SEV_FEAT_SECURE_TSC, which Linux 6.18 sets
    when SNP, the TSC frequency and the CPU allow: arch/x86/kvm/svm/sev.c
    sev_hardware_setup). snphost's `ok --features` checks the same two."""
    leaf = f.cpu.mem_encrypt
    cpu_has = None if leaf is None else leaf.secure_tsc
    offered = f.kvm.secure_tsc
    if offered:
        return passed("KVM offers Secure TSC to SEV-SNP guests (VMSA feature bit 9)")
    if cpu_has is False:
        return skipped("the CPU has no Secure TSC (CPUID 0x8000001F EAX[8] clear)")
    if offered is False:
        cpu = "the CPU has Secure TSC, but " if cpu_has else ""
        return skipped(f"{cpu}KVM does not offer it (Linux 6.18 and later do)")
    return from_unreadable(f.kvm.vmsa_features_unreadable, "KVM's VMSA features not read")


def ciphertext_hiding(f: HostFacts) -> Outcome:
    """Ciphertext hiding for SEV-SNP guests (Linux 6.18): KVM rewrites
    kvm_amd.ciphertext_hiding_asids to the ASIDs it really reserved, 0 when the firmware or
    BIOS lack it (arch/x86/kvm/svm/sev.c sev_hardware_setup)."""
    asids = f.kvm.ciphertext_hiding_asids
    snp = f.psp.snp
    if asids:
        return passed(f"active: kvm_amd.ciphertext_hiding_asids={asids} (SEV-SNP ASIDs 1-{asids})")
    if asids == 0:
        capable = ", though the firmware supports it" if snp and snp.ciphertext_hiding_cap else ""
        return skipped(f"off: kvm_amd.ciphertext_hiding_asids=0{capable}")
    return skipped("kvm_amd has no ciphertext_hiding_asids (Linux 6.18 and later)")


CHECKS = (
    Check(
        name="gpu.vfio",
        title="GPUs for SEV-SNP guests (VFIO)",
        parent="iommu.snp",
        gates=INFO,
        evaluate=gpus,
        description="GPUs on vfio-pci in translated IOMMU groups of their own; QEMU 9.2+",
    ),
    Check(
        name="snp.secure_tsc",
        title="Secure TSC for SEV-SNP guests",
        parent="kvm.sev_snp",
        gates=INFO,
        evaluate=secure_tsc,
        description="CPUID 0x8000001F EAX[8] and KVM's VMSA features (bit 9, Linux 6.18+)",
    ),
    Check(
        name="snp.ciphertext_hiding",
        title="Ciphertext hiding for SEV-SNP guests",
        parent="kvm.sev_snp",
        gates=INFO,
        evaluate=ciphertext_hiding,
        description="kvm_amd.ciphertext_hiding_asids as KVM rewrote it (Linux 6.18+)",
    ),
)
