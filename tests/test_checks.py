"""The readiness tree, at the level of the typed facts the checks read (tests/facts.py):
every check's outcomes in one table, root causes and verdicts, skips and unknowns, the tree's
invariants and its documentation. The sources' byte-level parsing is tested with snapshots
(test_sources.py, test_real_hosts.py); the sample nodes' verdicts are kept here too."""

from __future__ import annotations

import re

import pytest

from nfd_snp.checks import TREE, Guest, Readiness, Status, all_checks, check_named, evaluate
from nfd_snp.model import (
    AsidFacts,
    DomainCapsFacts,
    FirmwareFacts,
    GuestFacts,
    HookFacts,
    KernelFacts,
    KvmParameter,
    LibvirtDaemon,
    MemEncryptBit,
    MemEncryptLeaf,
    MsrFacts,
)
from nfd_snp.reasons import Reason
from tests.conftest import REPO, SAMPLES, probe_root
import dataclasses

from nfd_snp.model import AmdIommu, IommuFacts, IommuGroup, PciDevice, PciFacts, SyscfgBit
from tests.facts import (
    CPUID_UNREADABLE,
    EAX,
    GENOA_LEAF,
    MSR_UNREADABLE,
    NO_LIBVIRT,
    flags,
    param,
    ready,
    sev_status,
    snp_status,
    tcb,
    unreadable,
)

# -- one line per outcome of every check -----------------------------------------------------


def leaf_without(bit: MemEncryptBit) -> dict:
    return {"mem_encrypt": MemEncryptLeaf(int(EAX & ~bit), 0x4073, 1006, 510)}


def kernel_flags(text: str) -> dict:
    return {"flags": flags(text)}


def uninit_snp(**psp) -> dict:
    return {"snp": snp_status(state=0), **psp}


def no_psp(reply: str, reason: Reason) -> dict:
    return {reply: None, f"{reply}_unreadable": unreadable(reason)}


def hook(installed=True, executable=True, started=150.0) -> HookFacts:
    daemon = LibvirtDaemon(4321, "virtqemud", started)
    return HookFacts(installed, changed=100.0, executable=executable, daemons=(daemon,))


KERNEL_UNREADABLE = KernelFacts(None, None, None, None, None, None, unreadable(Reason.FILE_DENIED))
NO_FLAGS = kernel_flags("svm")
NO_ASIDS = AsidFacts(None, None, None, None, None, unreadable(Reason.HOST_ROOT_INCOMPLETE))
NO_LIBVIRT_ASIDS = DomainCapsFacts(True, maxGuests=None, maxESGuests=None, sectypes=("sev",))
HIDING = {"ciphertext_hiding_asids": 100}
ZEN4_REFUSES_ES = {"snp": snp_status(current_tcb=tcb(snp_svn=0x1B), reported_tcb=tcb(0x1B))}
OLD_KERNEL = {"release": "6.8.0-51-generic"}
# Host SNP off, so nothing vouches for the IOMMU: what the IOMMU check reads decides.
SNP_OFF = dict(
    kvm={"sev_snp": param("sev_snp", "N")}, psp=no_psp("snp", Reason.SNP_NOT_INITIALISED)
)
EFR_SNPSUP, EFR_NONE = 0x841F77E022094ACE, 0x25BF732FA2295AFE  # bit 63 set / clear
H100 = PciDevice("0000:21:00.0", 0x10DE, 0x2331, 0x030200, "vfio-pci", 44)
DMA_GROUP = IommuGroup(44, "DMA-FQ")
NVIDIA_ON_HOST = PciDevice("0000:41:00.0", 0x10DE, 0x2331, 0x030200, "nvidia", 45)


def iommu(**changes) -> IommuFacts:
    """A translating AMD IOMMU set-up with SNPSup, as /proc/cmdline and sysfs show it."""
    base = IommuFacts(
        "BOOT_IMAGE=/vmlinuz ro",
        units=(AmdIommu("ivhd0", EFR_SNPSUP), AmdIommu("ivhd1", EFR_SNPSUP)),
        units_listed=True,
        groups=(DMA_GROUP, IommuGroup(45, "DMA-FQ")),
    )
    return dataclasses.replace(base, **changes)


def gpu_host(*gpus, members=(), groups=(DMA_GROUP,), **parts):
    return ready(
        pci=PciFacts(gpus=gpus, group_members=members), iommu=iommu(groups=groups), **parts
    )


# (check, facts, "STATUS reason-code" or "PASS inferred", a fragment of the detail)
# fmt: off
CASES = [
    ("cpu.vendor", ready(), "PASS", "AuthenticAMD: AMD EPYC 9654 96-Core Processor"),
    ("cpu.vendor", ready(cpu={"vendor": "GenuineIntel"}), "FAIL not-amd", "GenuineIntel"),
    ("cpu.vendor", ready(cpu=CPUID_UNREADABLE), "PASS", "AuthenticAMD"),  # /proc/cpuinfo's
    ("cpu.vendor", ready(cpu=CPUID_UNREADABLE, kernel=KERNEL_UNREADABLE),
     "UNKNOWN cpuid-device-missing", ""),
    ("cpu.generation", ready(), "PASS", "family 0x19 model 0x11 (Genoa)"),
    ("cpu.generation", ready(cpu={"model": 0x61}), "UNKNOWN unknown-generation", "19h layout"),
    ("cpu.drivers", ready(), "PASS", "msr read (from the snapshot)"),
    ("cpu.drivers", ready(msr=MSR_UNREADABLE), "WARN cpu-drivers-not-loaded", "other evidence"),
    ("cpu.drivers", ready(msr=MsrFacts(None, None, None, unreadable(Reason.DEVICE_DENIED))),
     "WARN device-denied", ""),
    ("cpu.sme", ready(), "PASS", "CPUID 0x8000001F EAX[0] = 1 (EAX 0x0000003f)"),
    ("cpu.sme", ready(cpu=leaf_without(MemEncryptBit.SME)), "FAIL cpu-no-sme", "EAX[0] = 0"),
    ("cpu.sme", ready(cpu=leaf_without(MemEncryptBit.SME), kernel=kernel_flags("hypervisor")),
     "FAIL no-mem-encrypt-leaf", "this kernel runs under a hypervisor"),
    ("cpu.sme", ready(cpu={"mem_encrypt": None, "max_extended_leaf": 0x8000001E}, kernel=NO_FLAGS),
     "FAIL no-mem-encrypt-leaf", "highest extended CPUID leaf is 0x8000001e"),
    ("cpu.sme", ready(cpu=CPUID_UNREADABLE), "PASS inferred", ""),
    ("cpu.sme", ready(cpu=CPUID_UNREADABLE, kernel=NO_FLAGS), "UNKNOWN cpuid-device-missing", ""),
    ("bios.mem_encrypt", ready(), "PASS", "SYSCFG[23] = 1 (SYSCFG 0x3800000)"),
    ("bios.mem_encrypt", ready(msr={"syscfg": 0}), "FAIL bios-mem-encrypt-off", "SYSCFG[23] = 0"),
    ("bios.mem_encrypt", ready(msr=MSR_UNREADABLE), "PASS inferred", ""),
    ("bios.mem_encrypt", ready(msr=MSR_UNREADABLE, kernel=NO_FLAGS),
     "UNKNOWN msr-device-missing", ""),
    ("cpu.sev", ready(), "PASS", "EAX[1] = 1"),
    ("cpu.sev", ready(cpu=leaf_without(MemEncryptBit.SEV)), "FAIL cpu-no-sev", "EAX[1] = 0"),
    ("cpu.sev", ready(cpu=CPUID_UNREADABLE, kernel=NO_FLAGS), "PASS inferred", ""),  # kvm_amd
    ("kernel.sev", ready(), "PASS", "'sev' in /proc/cpuinfo flags"),
    ("kernel.sev", ready(kernel=kernel_flags("sme")), "FAIL kernel-no-sev", ""),
    ("kernel.sev", ready(kernel=kernel_flags("sme hypervisor")), "FAIL kernel-no-sev",
     "(the kernel runs under a hypervisor)"),
    ("kernel.sev", ready(kernel=KERNEL_UNREADABLE), "UNKNOWN file-denied", ""),
    ("psp.sev_status", ready(), "PASS", "SEV API 1.55 build 37, 1 guests"),
    ("psp.sev_status", ready(psp=no_psp("sev", Reason.PSP_DEVICE_MISSING)),
     "FAIL psp-device-missing", ""),
    ("psp.sev_status", ready(psp=no_psp("sev", Reason.DEVICE_DENIED)), "UNKNOWN device-denied", ""),
    ("psp.sev_init", ready(), "PASS", "platform state INIT"),
    ("psp.sev_init", ready(psp={"sev": sev_status(state=0)}), "FAIL sev-firmware-uninit",
     "UNINIT with ccp.psp_init_on_probe=Y (default)"),
    ("psp.sev_init", ready(psp={"sev": sev_status(state=0), "init_on_probe": False}), "PASS",
     "KVM initialises the firmware when the first guest starts"),
    ("psp.sev_init", ready(psp=uninit_snp(sev=sev_status(state=0), init_on_probe=False),
                           kernel=kernel_flags("sme sev sev_es")),
     "PASS", "KVM initialises the firmware"),  # host SNP off: SNP_INIT cannot stop it
    # Deferred INIT with host SNP on and SNP not initialised: SNP_INIT would stop it.
    ("psp.sev_init", ready(psp=uninit_snp(sev=sev_status(state=0), init_on_probe=False),
                           kvm={"sev_snp": param("sev_snp", "N")}),
     "FAIL sev-firmware-uninit", "runs SNP_INIT first"),
    ("psp.sev_init", ready(psp=uninit_snp(sev=sev_status(state=0), init_on_probe=False),
                           kvm={"sev_snp": param("sev_snp", "N")}, kernel={"release": "7.2.0"}),
     "UNKNOWN sev-firmware-uninit", "host SNP not known"),
    ("kvm.device", ready(), "PASS", "/dev/kvm present"),
    ("kvm.device", ready(kvm={"device_present": False}), "FAIL kvm-device-missing", ""),
    ("kvm.sev", ready(), "PASS", "kvm_amd.sev = Y"),
    ("kvm.sev", ready(kvm={"sev": param("sev", "N")}), "FAIL kvm-sev-off", "kvm_amd.sev = N"),
    ("kvm.sev", ready(kvm={"sev": param("sev", None)}), "FAIL kvm-sev-off",
     "kvm_amd.sev does not exist (kernel without SEV)"),
    ("kvm.sev", ready(kvm={"module_loaded": False}), "FAIL kvm-amd-not-loaded", ""),
    ("kvm.sev", ready(kvm={"sev": KvmParameter("sev", False, None, None,
                                              unreadable(Reason.FILE_DENIED))}),
     "UNKNOWN file-denied", ""),
    ("asid.sev", ready(), "PASS", "497 SEV ASIDs (/sys/fs/cgroup/misc.capacity), 0 in use"),
    ("asid.sev", ready(asids={"sev_capacity": 0}), "FAIL no-sev-asids", "0 SEV ASIDs"),
    ("asid.sev", ready(asids=NO_ASIDS), "PASS", "497 SEV ASIDs (CPUID ASIDs 510-1006)"),
    ("asid.sev", ready(asids=NO_ASIDS, cpu=CPUID_UNREADABLE, domcaps=NO_LIBVIRT_ASIDS),
     "UNKNOWN host-root-incomplete", ""),
    ("libvirt.sev", ready(), "PASS", "cbitpos 51, reducedPhysBits 1, maxGuests 497"),
    ("libvirt.sev", ready(domcaps={"sev_supported": False}), "FAIL libvirt-no-sev", ""),
    ("libvirt.sev", ready(domcaps=NO_LIBVIRT), "SKIP no-host-libvirt", "no libvirt on this host"),
    ("libvirt.sev", ready(domcaps=DomainCapsFacts(None, unreadable(Reason.LIBVIRT_TIMEOUT))),
     "UNKNOWN libvirt-timeout", ""),
    ("cpu.sev_es", ready(), "PASS", "EAX[3] = 1"),
    ("cpu.sev_es", ready(cpu=leaf_without(MemEncryptBit.SEV_ES)), "FAIL cpu-no-sev-es", ""),
    ("cpu.sev_es", ready(cpu=CPUID_UNREADABLE), "PASS inferred", ""),
    ("kernel.sev_es", ready(), "PASS", "'sev_es' in /proc/cpuinfo flags"),
    ("kernel.sev_es", ready(kernel=kernel_flags("sme sev")), "FAIL kernel-no-sev-es", ""),
    ("psp.sev_es_init", ready(), "PASS", "CONFIG_ES set (flags 0x100)"),
    ("psp.sev_es_init", ready(psp={"sev": sev_status(flags=0)}), "FAIL sev-es-not-configured",
     "CONFIG_ES clear"),
    ("psp.sev_es_init", ready(psp={"sev": sev_status(state=0)}), "SKIP", "not initialised yet"),
    ("kvm.sev_es", ready(), "PASS", "kvm_amd.sev_es = Y"),
    ("kvm.sev_es", ready(kvm={"sev_es": param("sev_es", "N")}), "FAIL kvm-sev-es-off", ""),
    ("kvm.sev_es", ready(kvm={"sev_es": param("sev_es", None)}), "FAIL kvm-sev-es-off",
     "does not exist (this kernel predates SEV-ES hosts)"),
    ("asid.sev_es", ready(), "PASS", "509 SEV-ES ASIDs (/sys/fs/cgroup/misc.capacity), 1 in use"),
    ("asid.sev_es", ready(asids={"sev_es_capacity": 0}), "FAIL no-es-asids", ""),
    ("asid.sev_es", ready(asids={"sev_es_current": 509}), "WARN es-asids-in-use", "509 in use"),
    ("asid.sev_es", ready(kvm={"ciphertext_hiding_asids": 509}),
     "FAIL es-asids-taken-by-ciphertext-hiding", "ciphertext hiding gives SEV-SNP 509"),
    ("asid.sev_es", ready(asids=NO_ASIDS, cpu=CPUID_UNREADABLE, domcaps=NO_LIBVIRT_ASIDS),
     "PASS inferred", "SEV-ES ASID count not read"),
    ("asid.snp", ready(), "PASS", "509 SEV-SNP ASIDs"),
    ("asid.snp", ready(kvm=HIDING), "PASS", "100 SEV-SNP ASIDs"),
    ("asid.snp", ready(kvm=HIDING, asids={"sev_es_current": 100},
                       guests={"snp_pids": tuple(range(100))}),
     "WARN split-asids-in-use", "100 in use"),
    ("psp.sev_es_with_snp", ready(), "PASS", "SVN 23 predates the AMD-SB-3023 restriction"),
    ("psp.sev_es_with_snp", ready(psp=ZEN4_REFUSES_ES), "FAIL sev-es-refused-with-snp",
     "SNP firmware SVN 27 (>= 0x1b"),
    ("psp.sev_es_with_snp", ready(psp=uninit_snp()), "PASS", "SEV-SNP is not initialised"),
    ("psp.sev_es_with_snp", ready(psp=no_psp("snp", Reason.DEVICE_DENIED)),
     "UNKNOWN device-denied", ""),
    ("cpu.snp", ready(), "PASS", "EAX[4] = 1"),
    ("cpu.snp", ready(cpu=leaf_without(MemEncryptBit.SNP)), "FAIL cpu-no-snp", ""),
    ("cpu.snp", ready(cpu=CPUID_UNREADABLE), "PASS inferred", ""),
    ("cpu.vmpl", ready(), "PASS", "4 VMPLs (CPUID 0x8000001F EBX[15:12])"),
    ("cpu.vmpl", ready(cpu=leaf_without(MemEncryptBit.VMPL)), "FAIL cpu-no-vmpl", ""),
    ("cpu.vmpl", ready(cpu=CPUID_UNREADABLE), "PASS inferred", "EAX[5] not read"),
    ("bios.snp_en", ready(), "PASS", "SYSCFG[24] = 1"),
    ("bios.snp_en", ready(msr={"syscfg": 0x800000}), "FAIL bios-snp-off", "SYSCFG[24] = 0"),
    ("bios.snp_en", ready(msr=MSR_UNREADABLE), "PASS inferred", "SYSCFG[24] not read"),
    ("bios.snp_en", ready(msr=MSR_UNREADABLE, psp=uninit_snp()), "UNKNOWN msr-device-missing", ""),
    ("bios.rmp", ready(), "PASS", "RMP_BASE 0x1a3f00000, RMP_END 0x1e3efffff"),
    ("bios.rmp", ready(msr={"rmp_base": 0}, psp=uninit_snp()), "FAIL rmp-not-reserved", ""),
    ("bios.rmp", ready(msr={"rmp_base": 0}), "WARN rmp-registers-contradicted",
     "but the SNP firmware is INIT with its RMP initialised"),
    ("bios.rmp", ready(msr={"rmp_end": 0, "rmp_cfg": 0x2501}, kernel={"release": "6.14.0"}), "PASS",
     "segmented RMP, 128 GB segments (RMP_CFG 0x2501)"),
    # a segmented RMP on a kernel that cannot read one (before 6.14): host SNP goes off
    ("bios.rmp", ready(msr={"rmp_end": 0, "rmp_cfg": 0x2501}, kernel=kernel_flags("sme sev sev_es"),
                       **SNP_OFF),
     "FAIL kernel-too-old-for-segmented-rmp", "Linux 6.12 reads no segmented RMP"),
    ("bios.rmp", ready(msr={"rmp_end": 0, "rmp_cfg": 0x2501}), "PASS inferred",
     "segmented RMP"),  # 6.12 with the flag: a vendor kernel that reads it
    ("bios.rmp", ready(msr={"rmp_end": 0, "rmp_cfg": None}), "PASS inferred", "RMP_CFG not read"),
    ("bios.rmp", ready(msr=MSR_UNREADABLE, kernel=OLD_KERNEL, psp=uninit_snp()),
     "UNKNOWN msr-device-missing", ""),
    ("kernel.sev_snp", ready(), "PASS", "'sev_snp' in /proc/cpuinfo flags"),
    ("kernel.sev_snp", ready(kernel=kernel_flags("sme sev sev_es")), "FAIL kernel-no-snp", ""),
    ("psp.snp_init", ready(), "PASS", "SNP platform state INIT, build 37, 1 guests"),
    ("psp.snp_init", ready(psp=uninit_snp()), "FAIL snp-not-initialised", "state UNINIT"),
    ("psp.snp_init", ready(psp=no_psp("snp", Reason.PSP_COMMAND_FAILED) | {
        "sev": sev_status(api=(1, 49))}),
     "FAIL snp-api-too-old", "SEV firmware API 1.49 build 37 is below 1.51"),
    ("psp.snp_init", ready(psp=no_psp("snp", Reason.SNP_STATUS_NOT_QUERIED)),
     "UNKNOWN snp-status-not-queried", ""),
    ("psp.snp_api", ready(), "PASS", "SNP API 1.55 >= 1.51"),
    ("psp.snp_api", ready(psp={"snp": snp_status(api=(1, 49))}), "FAIL snp-api-too-old", "< 1.51"),
    ("psp.rmp_init", ready(), "PASS", "RMP initialised (byte 3 bit 0)"),
    ("psp.rmp_init", ready(psp={"snp": snp_status(rmp_initialized=False)}),
     "FAIL rmp-not-initialised", ""),
    ("psp.tcb", ready(), "PASS", "reported TCB bl=9 tee=0 snp=23 ucode=84 is the current one"),
    ("psp.tcb", ready(psp={"snp": snp_status(reported_tcb=tcb(snp_svn=22))}),
     "WARN tcb-not-committed", "differs from the current"),
    ("psp.alias_check", ready(), "PASS", "alias check complete"),
    ("psp.alias_check", ready(psp={"snp": snp_status(alias_check_complete=False)}),
     "WARN alias-check-unsupported", "needs 1.55.38 or later"),
    ("psp.alias_check", ready(psp={"snp": snp_status(alias_check_complete=False, build=40)}),
     "WARN alias-check-pending", ""),
    ("kvm.sev_snp", ready(), "PASS", "kvm_amd.sev_snp = Y"),
    ("kvm.sev_snp", ready(kvm={"sev_snp": param("sev_snp", "N")}), "FAIL kvm-snp-off", ""),
    ("kvm.sev_snp", ready(kvm={"sev_snp": param("sev_snp", None)}), "FAIL kvm-no-snp-parameter",
     "kvm_amd.sev_snp does not exist"),
    ("kvm.snp_policy", ready(), "PASS",
     "accepts policy bits 0x1bffff, requires 0x20000 (the rule of Linux 6.12); upstream"),
    ("kvm.snp_policy", ready(kvm={"snp_policy_bits": 0x1FBFFFF}), "PASS",
     "0x1fbffff, requires 0x20000 (KVM_X86_SNP_POLICY_BITS)"),
    ("kvm.snp_policy", ready(kernel=OLD_KERNEL, kvm={"sev_snp": param("sev_snp", None)}),
     "SKIP", "Linux 6.8 predates SEV-SNP in KVM"),
    # kvm_amd.sev_snp on a kernel numbered before it: SNP backported (RHEL 9.5's 5.14)
    ("kvm.snp_policy", ready(kernel={"release": "5.14.0-503.11.1.el9_5.x86_64"}),
     "UNKNOWN kvm-no-policy-attribute", "a kernel with SEV-SNP backported"),
    ("kvm.snp_policy", ready(kernel={"release": "6.19.0"}, kvm={
        "snp_policy_bits_unreadable": unreadable(Reason.KVM_NO_POLICY_ATTRIBUTE)}),
     "UNKNOWN kvm-no-policy-attribute", ""),
    ("libvirt.sev_snp", ready(), "PASS", "launchSecurity sectype 'sev-snp' offered"),
    ("libvirt.sev_snp", ready(domcaps={"sectypes": ("sev",)}), "FAIL libvirt-no-snp", ": sev"),
    ("libvirt.sev_snp", ready(domcaps={"launch_security_supported": None, "sectypes": ()}),
     "FAIL libvirt-too-old-for-snp", "libvirt older than 10.5"),
    ("libvirt.sev_snp", ready(domcaps=NO_LIBVIRT), "SKIP no-host-libvirt", ""),
    ("firmware.snp", ready(), "PASS", "amd-sev-snp firmware: /usr/share/edk2/ovmf/OVMF.amdsev.fd"),
    ("firmware.snp", ready(firmware=FirmwareFacts(())), "FAIL no-snp-firmware", "none of 0"),
    ("firmware.snp", ready(domcaps=NO_LIBVIRT), "SKIP no-host-libvirt",
     "firmware comes from the VM's launcher image"),
    ("libvirt.hook", ready(), "SKIP", "the nfd-snp-libvirt package installs it"),
    ("libvirt.hook", ready(hook=hook()), "PASS", "virtqemud (pid 4321) started"),
    ("libvirt.hook", ready(hook=hook(started=50.0)), "WARN hook-not-loaded", "before the hook"),
    ("libvirt.hook", ready(hook=hook(executable=False)), "WARN hook-not-executable", ""),
    ("libvirt.hook", ready(hook=HookFacts(None, unreadable=unreadable(Reason.FILE_DENIED))),
     "UNKNOWN file-denied", ""),
    ("cpu.cbit", ready(), "PASS", "C-bit 51 (CPUID), reducedPhysBits 1 (libvirt)"),
    ("cpu.cbit", ready(domcaps=NO_LIBVIRT), "PASS", "reducedPhysBits 1 (QEMU's value)"),
    ("cpu.cbit", ready(cpu=CPUID_UNREADABLE, domcaps=NO_LIBVIRT), "UNKNOWN cpuid-device-missing",
     ""),
    ("guests.running", ready(), "PASS", "1 SEV-SNP and 0 SEV/SEV-ES QEMU guests running"),
    ("guests.running", ready(guests=GuestFacts((), (), unreadable(Reason.PROCESSES_UNREADABLE))),
     "UNKNOWN processes-unreadable", ""),
    ("iommu.snp", ready(), "PASS inferred", "the kernel kept host SNP"),
    ("iommu.snp", ready(iommu=iommu(), **SNP_OFF), "PASS",
     "translated: 2 AMD IOMMUs; SNPSup on each; 2 groups DMA-FQ"),
    ("iommu.snp", ready(iommu=iommu(passthrough_option="iommu=pt"), **SNP_OFF),
     "FAIL iommu-passthrough", "iommu=pt on the kernel command line"),
    ("iommu.snp", ready(iommu=iommu(amd_iommu_off=True), **SNP_OFF), "FAIL iommu-off", ""),
    ("iommu.snp", ready(iommu=iommu(pgtbl_v2=True), **SNP_OFF), "FAIL iommu-pgtbl-v2", ""),
    ("iommu.snp", ready(iommu=iommu(units=(AmdIommu("ivhd0", EFR_SNPSUP),
                                           AmdIommu("ivhd1", EFR_NONE))), **SNP_OFF),
     "FAIL iommu-no-snpsup", "no SNPSup (EFR bit 63) on ivhd1"),
    ("iommu.snp", ready(iommu=iommu(units=()), **SNP_OFF), "FAIL iommu-absent", ""),
    ("iommu.snp", ready(iommu=iommu(groups=(IommuGroup(3, "identity"),)), **SNP_OFF),
     "FAIL iommu-passthrough", "identity-mapped"),
    ("iommu.snp", ready(iommu=iommu(units=(AmdIommu("ivhd0"),), efr_unreadable=unreadable(
        Reason.IOMMU_FEATURES_FORMAT_UNKNOWN)), **SNP_OFF),
     "UNKNOWN iommu-features-format-unknown", ""),
    ("iommu.snp", ready(iommu=IommuFacts(None, unreadable=unreadable(Reason.FILE_DENIED)),
                        **SNP_OFF), "UNKNOWN file-denied", ""),
    ("gpu.vfio", ready(), "SKIP", "no GPU"),
    ("gpu.vfio", gpu_host(H100), "PASS", "1 GPU ready: 0000:21:00.0 (NVIDIA 0x2331)"),
    ("gpu.vfio", gpu_host(dataclasses.replace(H100, driver="nvidia")), "WARN gpu-not-vfio",
     "0000:21:00.0 (NVIDIA 0x2331) is bound to nvidia"),
    ("gpu.vfio", gpu_host(H100, groups=(IommuGroup(44, "identity"),)),
     "WARN gpu-group-passthrough", "IOMMU group 44 is identity"),
    ("gpu.vfio", gpu_host(
        H100,
        members=(PciDevice("0000:21:00.1", None, None, None, "snd_hda_intel", 44),),
        groups=(IommuGroup(44, "DMA-FQ"),)),
     "WARN gpu-group-shared", "also holds 0000:21:00.1 (snd_hda_intel)"),
    ("gpu.vfio", gpu_host(
        H100,
        members=(PciDevice("0000:20:01.1", None, None, None, "pcieport", 44),),
        groups=(IommuGroup(44, "DMA-FQ"),)),
     "PASS", "1 GPU ready"),  # a bridge on pcieport keeps the group viable for VFIO
    ("gpu.vfio", gpu_host(H100, domcaps={"machine": "pc-q35-9.1"}),
     "WARN qemu-too-old-for-snp-vfio", "libvirt's QEMU is 9.1"),
    ("gpu.vfio", gpu_host(H100, domcaps={"machine": "pc-q35-10.0"}), "PASS", "1 GPU ready"),
    ("gpu.vfio", gpu_host(H100, domcaps=NO_LIBVIRT), "PASS", "1 GPU ready"),  # KubeVirt
    ("gpu.vfio", ready(pci=PciFacts(unreadable=unreadable(Reason.FILE_DENIED))),
     "UNKNOWN file-denied", ""),
    ("gpu.vfio", gpu_host(dataclasses.replace(H100, iommu_group=None)),
     "WARN gpu-group-passthrough", "0000:21:00.0 (NVIDIA 0x2331) is in no IOMMU group"),
    ("gpu.vfio", gpu_host(dataclasses.replace(H100, unreadable=unreadable(Reason.FILE_DENIED))),
     "UNKNOWN file-denied", ""),
    # One GPU ready, one not: PASS for the ready one, the other named.
    ("gpu.vfio", gpu_host(H100, NVIDIA_ON_HOST), "PASS",
     "1 GPU ready: 0000:21:00.0 (NVIDIA 0x2331); QEMU version unknown (libvirt named no "
     "machine type); not ready: 0000:41:00.0 (NVIDIA 0x2331) is bound to nvidia"),
    # No GPU ready: an old QEMU is not the reason given.
    ("gpu.vfio", gpu_host(NVIDIA_ON_HOST, domcaps={"machine": "pc-q35-9.1"}),
     "WARN gpu-not-vfio", "bound to nvidia"),
    ("gpu.vfio", gpu_host(H100, domcaps={"machine": "pc-q35-9.2"}), "PASS", "1 GPU ready"),
    ("gpu.vfio", gpu_host(H100, domcaps={"machine": "pc-q35-rhel9.6.0"}), "PASS",
     "QEMU version not told by its machine type 'pc-q35-rhel9.6.0'"),
    ("snp.secure_tsc", ready(kvm={"vmsa_features": 0x220}), "PASS", "KVM offers Secure TSC"),
    ("snp.secure_tsc", ready(kvm={"vmsa_features": 0x20}), "SKIP",
     "the CPU has no Secure TSC"),
    ("snp.secure_tsc", ready(kvm={"vmsa_features": 0x20},
                             cpu={"mem_encrypt": MemEncryptLeaf(int(EAX | MemEncryptBit.SECURE_TSC),
                                                                0x4073, 1006, 510)}),
     "SKIP", "the CPU has Secure TSC, but KVM does not offer it"),
    ("snp.secure_tsc", ready(kvm={"vmsa_features_unreadable": unreadable(Reason.DEVICE_DENIED)},
                             cpu={"mem_encrypt": MemEncryptLeaf(int(EAX | MemEncryptBit.SECURE_TSC),
                                                                0x4073, 1006, 510)}),
     "UNKNOWN device-denied", ""),
    ("snp.ciphertext_hiding", ready(kvm=HIDING), "PASS", "SEV-SNP ASIDs 1-100"),
    ("snp.ciphertext_hiding", ready(kvm={"ciphertext_hiding_asids": 0}), "SKIP", "off"),
    ("snp.ciphertext_hiding", ready(), "SKIP", "no ciphertext_hiding_asids"),
]
# fmt: on


def _shown(outcome) -> str:
    words = [outcome.status.value]
    if outcome.reason is not None:
        words.append(outcome.reason.code)
    if outcome.inferred_from is not None:
        words.append("inferred")
    return " ".join(words)


@pytest.mark.parametrize(
    "name, facts, expected, detail", CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES]
)
def test_check(name, facts, expected, detail):
    outcome = check_named(name).evaluate(facts)
    assert _shown(outcome) == expected, outcome
    assert detail in outcome.detail


@pytest.mark.parametrize(
    "facts, gpus",
    [
        (gpu_host(H100), "1"),
        (gpu_host(H100, NVIDIA_ON_HOST), "1"),
        (
            gpu_host(
                H100,
                dataclasses.replace(H100, bdf="0000:41:00.0", iommu_group=45),
                groups=(DMA_GROUP, IommuGroup(45, "DMA-FQ")),
            ),
            "2",
        ),
        (
            gpu_host(
                H100, dataclasses.replace(NVIDIA_ON_HOST, unreadable=unreadable(Reason.FILE_DENIED))
            ),
            "1",
        ),
        # the check WARNs (libvirt's QEMU cannot pass it to an SNP guest): nothing published
        (gpu_host(H100, domcaps={"machine": "pc-q35-9.1"}), None),
        (gpu_host(NVIDIA_ON_HOST), None),
        # no SNP, no GPU label: it is published only beside enabled=true
        (gpu_host(H100, kvm={"sev_snp": param("sev_snp", "N")}), None),
    ],
)
def test_the_gpus_published_are_those_the_check_passes(facts, gpus):
    """`gpu-passthrough` and `gpus=N` count only GPUs an SEV-SNP guest can be given."""
    from nfd_snp import nfd

    published = nfd.publication(evaluate(facts)).as_dict()
    label = published["labels"].get(nfd.SNP_NS + "gpu-passthrough")
    assert (label, published["features"].get(nfd.SNP_NS + "gpus")) == (
        "true" if gpus else None,
        gpus,
    )


def test_every_check_has_its_cases():
    """A pass and a problem for every check: adding a check adds its lines above."""
    for check in all_checks():
        shown = {expected.split()[0] for name, _, expected, _ in CASES if name == check.name}
        assert "PASS" in shown and shown - {"PASS"}, check.name


def test_inferred_passes_name_their_evidence():
    facts = ready(cpu=CPUID_UNREADABLE, msr=MSR_UNREADABLE)
    evidence = {r.check.name: r.outcome.inferred_from for r in evaluate(facts).results}
    assert evidence["cpu.sme"] == "the kernel flag 'sme'"
    assert evidence["cpu.snp"] == "the kernel flag 'sev_snp'"
    assert evidence["cpu.vmpl"] == evidence["bios.snp_en"] == "SNP firmware state INIT"
    assert evidence["bios.rmp"] == "the kernel flag 'sev_snp'"  # Linux 6.9+ only
    old = ready(cpu=CPUID_UNREADABLE, kernel=NO_FLAGS, msr=MSR_UNREADABLE)
    evidence = {r.check.name: r.outcome.inferred_from for r in evaluate(old).results}
    assert evidence["cpu.sev"] == "kvm_amd.sev=Y"
    assert evidence["bios.rmp"] == "SNP firmware state INIT"


# -- root causes and verdicts ----------------------------------------------------------------

RMP_MISSING = ready(
    msr={"rmp_base": 0, "rmp_end": 0, "syscfg": 0x800000},
    kernel=kernel_flags("sme sev sev_es"),
    psp=no_psp("snp", Reason.PSP_COMMAND_FAILED),
    kvm={"sev_snp": param("sev_snp", "N")},
    domcaps={"sectypes": ("sev",)},
)
MEM_ENCRYPT_OFF = ready(
    msr={"syscfg": 0},
    kernel=NO_FLAGS,
    psp={"sev": sev_status(state=0), **no_psp("snp", Reason.PSP_COMMAND_FAILED)},
    kvm={name: param(name, "N") for name in ("sev", "sev_es", "sev_snp")},
    domcaps={"sev_supported": False, "sectypes": ()},
)
NO_ES_ASIDS = ready(
    asids={"sev_es_capacity": 0},
    kvm={"sev_es": param("sev_es", "N"), "sev_snp": param("sev_snp", "N")},
    psp=uninit_snp(),
)

SNP_EN_CLEAR = {"syscfg": int(SyscfgBit.MEM_ENCRYPT)}


def snp_en_clear(release: str, **parts):
    return ready(
        msr=SNP_EN_CLEAR, kernel={"release": release}, iommu=iommu(), **{**SNP_OFF, **parts}
    )


# facts: {check: its root causes}, {guest: (readiness, blocking)}
ROOT_CAUSE_CASES = {
    "iommu-passthrough": (
        ready(msr=SNP_EN_CLEAR, iommu=iommu(passthrough_option="iommu=pt"), **SNP_OFF),
        {
            "bios.snp_en": ("iommu.snp",),
            "psp.snp_init": ("iommu.snp",),
            "kvm.sev_snp": ("iommu.snp",),
        },
        {"sev": ("yes", ()), "sev-es": ("yes", ()), "sev-snp": ("no", ("iommu.snp",))},
    ),
    # Linux 6.9-7.0 set SNP_EN at boot, before SNP_INIT: its absence is the cause.
    "snp-en-clear-at-boot": (
        snp_en_clear("6.12.0"),
        {"bios.snp_en": (), "psp.snp_init": ("bios.snp_en",), "kvm.sev_snp": ("bios.snp_en",)},
        {"sev": ("yes", ()), "sev-es": ("yes", ()), "sev-snp": ("no", ("bios.snp_en",))},
    ),
    # A kernel numbered before 6.9 with host SNP backported (RHEL 9.5's 5.14) sets it at boot.
    "snp-en-clear-at-boot-backport": (
        snp_en_clear("5.14.0-503.11.1.el9_5.x86_64"),
        {"bios.snp_en": (), "psp.snp_init": ("bios.snp_en",)},
        {"sev": ("yes", ()), "sev-es": ("yes", ()), "sev-snp": ("no", ("bios.snp_en",))},
    ),
    # The first and the last release that set it at boot.
    "snp-en-clear-at-boot-6.9": (
        snp_en_clear("6.9.0", kvm={"sev_snp": param("sev_snp", None)}),  # KVM SNP: 6.11
        {"bios.snp_en": (), "psp.snp_init": ("bios.snp_en",)},
        {
            "sev": ("yes", ()),
            "sev-es": ("yes", ()),
            "sev-snp": ("no", ("bios.snp_en", "kvm.sev_snp")),
        },
    ),
    "snp-en-clear-at-boot-7.0": (
        snp_en_clear("7.0.9"),
        {"bios.snp_en": (), "psp.snp_init": ("bios.snp_en",)},
        {"sev": ("yes", ()), "sev-es": ("yes", ()), "sev-snp": ("no", ("bios.snp_en",))},
    ),
    # 6.8 without kvm_amd.sev_snp has no host SNP at all: neither orders the other.
    "snp-en-clear-6.8-no-backport": (
        snp_en_clear("6.8.0-51-generic", kvm={"sev_snp": param("sev_snp", None)}),
        {"bios.snp_en": (), "psp.snp_init": ()},
        {
            "sev": ("yes", ()),
            "sev-es": ("yes", ()),
            "sev-snp": ("no", ("bios.snp_en", "psp.snp_init", "kvm.sev_snp")),
        },
    ),
    # A release that cannot be read orders neither way.
    "snp-en-clear-release-unknown": (
        snp_en_clear("vmlinuz-custom"),
        {"bios.snp_en": (), "psp.snp_init": ()},
        {
            "sev": ("yes", ()),
            "sev-es": ("yes", ()),
            "sev-snp": ("no", ("bios.snp_en", "psp.snp_init")),
        },
    ),
    # From 7.1 SNP_INIT sets it: the firmware is the cause.
    "snp-en-set-at-init": (
        snp_en_clear("7.1.0"),
        {"bios.snp_en": ("psp.snp_init",), "psp.snp_init": (), "kvm.sev_snp": ("psp.snp_init",)},
        {"sev": ("yes", ()), "sev-es": ("yes", ()), "sev-snp": ("no", ("psp.snp_init",))},
    ),
    "rmp-missing": (
        RMP_MISSING,
        {
            "kernel.sev_snp": ("bios.rmp",),
            "bios.snp_en": ("bios.rmp",),
            "psp.snp_init": ("bios.rmp",),
            "kvm.sev_snp": ("bios.rmp",),
            "libvirt.sev_snp": ("bios.rmp",),
        },
        {"sev": ("yes", ()), "sev-es": ("yes", ()), "sev-snp": ("no", ("bios.rmp",))},
    ),
    "memory-encryption-off": (
        MEM_ENCRYPT_OFF,
        {
            "kernel.sev": ("bios.mem_encrypt",),
            "psp.sev_init": ("bios.mem_encrypt",),
            "kvm.sev": ("bios.mem_encrypt",),
            "libvirt.sev": ("bios.mem_encrypt",),
        },
        {g: ("no", ("bios.mem_encrypt",)) for g in ("sev", "sev-es", "sev-snp")},
    ),
    "no-es-asids": (
        NO_ES_ASIDS,
        {"kvm.sev_es": ("asid.sev_es", "asid.snp"), "psp.snp_init": ()},
        {
            "sev": ("yes", ()),
            "sev-es": ("no", ("asid.sev_es",)),
            "sev-snp": ("no", ("asid.snp", "psp.snp_init")),
        },
    ),
}


@pytest.mark.parametrize("case", sorted(ROOT_CAUSE_CASES))
def test_failures_name_their_root_causes_and_verdicts_only_those(case):
    facts, causes, expected = ROOT_CAUSE_CASES[case]
    report = evaluate(facts)
    results = {r.check.name: r for r in report.results}
    for name, roots in causes.items():
        outcome = results[name].outcome
        assert outcome.status is Status.FAIL, name
        assert outcome.root_causes == roots, name
        if roots:
            assert results[name].fix == f"Follows from {roots[0]}: fix that first."
    got = {v.guest.value: (v.ready.value, v.blocking) for v in report.verdicts}
    assert got == expected


def test_a_failed_parent_skips_its_children():
    results = {r.check.name: r for r in evaluate(ready(psp=uninit_snp())).results}
    assert results["psp.snp_init"].outcome.status is Status.FAIL
    for child in ("psp.snp_api", "psp.rmp_init", "psp.tcb", "psp.alias_check"):
        assert (results[child].outcome.status, results[child].outcome.detail) == (
            Status.SKIP,
            "psp.snp_init failed",
        )


def test_an_unknown_parent_does_not_skip_and_the_verdict_is_unknown_with_a_fix():
    facts = ready(
        psp={**no_psp("sev", Reason.DEVICE_DENIED), **no_psp("snp", Reason.DEVICE_DENIED)}
    )
    report = evaluate(facts)
    snp = report.verdict(Guest.SEV_SNP)
    assert snp.ready is Readiness.UNKNOWN
    assert "psp.snp_init" in snp.blocking and "psp.sev_status" in snp.blocking
    results = {r.check.name: r for r in report.results}
    assert results["psp.sev_init"].outcome.status is Status.UNKNOWN  # not skipped
    assert "Run as root" in results["psp.sev_status"].fix


def test_a_node_without_host_libvirt_skips_its_checks_and_stays_ready():
    report = evaluate(ready(domcaps=NO_LIBVIRT))
    results = {r.check.name: r for r in report.results}
    for name in ("libvirt.sev", "libvirt.sev_snp", "firmware.snp"):
        assert results[name].outcome.status is Status.SKIP
    assert report.verdict(Guest.SEV_SNP).ready is Readiness.YES
    required = evaluate(ready(domcaps=NO_LIBVIRT), require_libvirt=True)
    libvirt = ("libvirt.sev", "libvirt.sev_snp", "firmware.snp")
    assert required.verdict(Guest.SEV_SNP).blocking == libvirt
    assert {r.outcome.reason for r in required.results if r.check.name in libvirt} == {
        Reason.LIBVIRT_REQUIRED
    }


def test_unread_libvirt_capabilities_are_unknown():
    facts = ready(domcaps=DomainCapsFacts(None, unreadable(Reason.NOT_IN_SNAPSHOT)))
    verdict = evaluate(facts).verdict(Guest.SEV_SNP)
    assert (verdict.ready, verdict.blocking) == (
        Readiness.UNKNOWN,
        ("libvirt.sev", "libvirt.sev_snp"),
    )


def test_warnings_concern_their_guest_types_without_blocking():
    report = evaluate(ready(psp={"snp": snp_status(reported_tcb=tcb(snp_svn=22))}))
    assert report.verdict(Guest.SEV_SNP).ready is Readiness.YES
    assert report.verdict(Guest.SEV_SNP).warnings == ("psp.tcb",)
    assert report.verdict(Guest.SEV).warnings == ()
    full = evaluate(ready(asids={"sev_es_current": 509}))
    assert full.verdict(Guest.SEV_ES).warnings == ("asid.sev_es",)
    assert full.verdict(Guest.SEV_SNP).warnings == ("asid.snp",)


def test_an_echo_whose_cause_gates_other_guests_stays_in_the_verdict():
    """SEV: the failed SEV INIT follows from SNP_INIT, a cause that does not gate SEV, so
    the SEV verdict still names it, beside the SEV ASIDs."""
    facts = ready(
        psp={**no_psp("snp", Reason.PSP_COMMAND_FAILED), "sev": sev_status(state=0, api=(1, 49))},
        kvm={"sev_snp": param("sev_snp", "N")},
        asids={"sev_capacity": 0},
    )
    report = evaluate(facts)
    results = {r.check.name: r for r in report.results}
    assert results["psp.sev_init"].outcome.root_cause == "psp.snp_init"
    assert report.verdict(Guest.SEV).blocking == ("psp.sev_init", "asid.sev")


# -- sample nodes --------------------------------------------------------------------------

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


@pytest.mark.parametrize("sample, hint", [("intel", True), ("milan-snp-off", False)])
def test_a_live_host_without_sev_hardware_is_shown_the_sample(sample, hint):
    import dataclasses

    from nfd_snp.report import SAMPLE_HINT, render_table

    report = evaluate(probe_root(SAMPLES / sample))
    live = dataclasses.replace(report, facts=dataclasses.replace(report.facts, snapshot=False))
    assert (SAMPLE_HINT in render_table(live)) is hint
    assert SAMPLE_HINT not in render_table(report)  # a snapshot is not this host


# -- the tree and its documentation ------------------------------------------------------------


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


def _declared(name="x.one", **changes):
    from nfd_snp.checks import Check

    values = dict(name=name, title="T", gates=(), evaluate=lambda f: None, description="d")
    return Check(**{**values, **changes})


@pytest.mark.parametrize(
    "declared, message",
    [
        (lambda: [_declared(parent="x.later"), _declared("x.later")], "not declared before it"),
        (lambda: [_declared(), _declared()], "declared twice"),
        (
            lambda: [_declared(caused_by=("x.none",), reasons_echoing=(Reason.NOT_AMD,))],
            "caused_by names undeclared x.none",
        ),
        (lambda: [_declared(caused_by=("x.one",))], "caused_by and reasons_echoing go together"),
        (lambda: [_declared(description="two\nlines")], "the description is one line"),
        (
            lambda: [_declared(gates=(Guest.SEV,), concerns=(Guest.SEV_SNP,))],
            "concerns is for informational checks",
        ),
    ],
)
def test_a_wrong_declaration_is_a_programming_error(declared, message):
    from nfd_snp.checks.engine import build_tree
    from nfd_snp.errors import ProgrammingError

    with pytest.raises(ProgrammingError, match=message):
        build_tree(tuple(declared()))


def test_each_check_leads_its_troubleshooting_section():
    """docs/troubleshooting.md: an anchor per check, a heading of its name and title, and a
    first line of what it gates and its description (what `check -v` shows)."""
    doc = (REPO / "docs" / "troubleshooting.md").read_text()
    for check in all_checks():
        scope = check.scope[0].upper() + check.scope[1:]
        section = (
            f'<a id="{check.name}"></a>\n### {check.name}: {check.title}\n'
            f"*{scope}.* {check.description}.\n\n"
        )
        assert section in doc, section
    assert len(re.findall(r'<a id="([^"]+)"></a>\n### ', doc)) == len(list(all_checks()))


def test_check_verbose_shows_each_description():
    from nfd_snp.cli import cli
    from tests.conftest import cli_runner

    result = cli_runner().invoke(cli, ["-v", "check", "--sample", "genoa-snp-ready"])
    assert result.exit_code == 0, result.output
    flat = "".join(result.stdout.split())
    for check in all_checks():
        assert "".join(check.description.split()) in flat, check.name
    plain = cli_runner().invoke(cli, ["check", "--sample", "genoa-snp-ready"]).stdout
    assert "".join(check_named("cpu.sme").description.split()) not in "".join(plain.split())


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
    facts = ready(kernel={"release": release}, kvm={"snp_policy_bits": attr})
    rule = facts.snp_policy_rule()
    got = (rule.accepted, rule.required) if rule else (None, None)
    assert got == (accepted, required)
    if rule:
        assert rule.rejected_bits(0x70000) == (0x40000 if not accepted & 0x40000 else 0)
        assert rule.missing_bits(0x10000) == 0x20000


# -- what the sources decide, from snapshots ------------------------------------------------


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
    assert results["psp.snp_init"].outcome.reason is Reason.SNP_STATUS_NOT_QUERIED
    assert report.verdict(Guest.SEV_SNP).blocking == ("kvm.sev_snp",)


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


def test_unread_cpuid_falls_back_on_cpuinfo(snapshot):
    report = evaluate(probe_root(snapshot(base="genoa-snp-ready", capture={"cpuid": {}})))
    results = {r.check.name: r for r in report.results}
    assert results["cpu.generation"].outcome.detail == "family 0x19 model 0x11 (Genoa)"
    assert report.verdict(Guest.SEV_SNP).ready is Readiness.YES


def test_genoa_leaf_is_the_sample_s():
    """tests/facts.py's ready host has the bundled Genoa sample's memory encryption leaf, so
    facts-level cases and snapshots describe the same node."""
    leaf = probe_root(SAMPLES / "genoa-snp-ready").cpu.mem_encrypt
    assert (leaf.ebx, leaf.ecx, leaf.edx) == (GENOA_LEAF.ebx, GENOA_LEAF.ecx, GENOA_LEAF.edx)
    assert GENOA_LEAF.eax & ~leaf.eax == 0
