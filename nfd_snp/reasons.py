"""Why a check failed or a source could not be read, and what fixes it.

Every failure carries one of these typed reasons; the fix shown to the admin comes from the
reason, never from matching error text. `docs/troubleshooting.md` has a section per check.
"""

from __future__ import annotations

import enum


class Reason(enum.Enum):
    """A cause with its fix. The value is (stable code, fix text[, unknown]).

    `unknown` marks reasons that say a source could not be read, so the answer is unknown,
    as opposed to reasons that are themselves the answer (a missing /dev/sev is a real "no").
    """

    def __init__(self, code: str, fix: str, unknown: bool = False) -> None:
        self.code = code
        self.fix = fix
        self.unknown = unknown

    # -- sources that could not be read ------------------------------------------------
    CPUID_DEVICE_MISSING = (
        "cpuid-device-missing",
        "Load the cpuid driver: `modprobe cpuid` (the nfd-snp package loads it at boot through "
        "/usr/lib/modules-load.d/nfd-snp.conf; in a container, load it on the node).",
        True,
    )
    MSR_DEVICE_MISSING = (
        "msr-device-missing",
        "Load the msr driver: `modprobe msr` (the nfd-snp package loads it at boot through "
        "/usr/lib/modules-load.d/nfd-snp.conf; in a container, load it on the node).",
        True,
    )
    DEVICE_DENIED = (
        "device-denied",
        "Run as root (the CPUID, MSR and /dev/sev devices need root / CAP_SYS_RAWIO).",
        True,
    )
    DEVICE_ERROR = (
        "device-error",
        "The device returned an I/O error; on a VM the hypervisor may not expose it.",
        True,
    )
    FILE_DENIED = ("file-denied", "Run as root so the file can be read.", True)
    FILE_GARBLED = (
        "file-garbled",
        "The file holds unexpected content; attach `nfd-snp capture` output to a bug report.",
        True,
    )
    HOST_ROOT_INCOMPLETE = (
        "host-root-incomplete",
        "The host root lacks this part of /proc or /sys: on a node run nfd-snp with the host "
        "root /; in a container mount the host's /proc, /sys and /dev under /host "
        "(deploy/node/daemonset.yaml).",
        True,
    )
    NOT_IN_SNAPSHOT = (
        "not-in-snapshot",
        "The snapshot lacks this source; capture it again as root with `nfd-snp capture`.",
        True,
    )
    PSP_DEVICE_MISSING = (
        "psp-device-missing",
        "Load the ccp driver (modprobe ccp) and check `dmesg | grep -i -e ccp -e sev`; "
        "without /dev/sev the SEV firmware cannot be queried.",
    )
    PSP_DEAD = (
        "psp-dead",
        "The SEV firmware stopped answering and the ccp driver has given up on it (dmesg: "
        "'sev command 0x.. timed out, disabling PSP'; every later command fails with EBUSY). "
        "Reboot the node: reloading ccp cannot revive a PSP that hung. When it happens at every "
        "boot during SNP_INIT (commands 0x84/0x85), update the BIOS and check its IOMMU setting "
        "(AMDESE/AMDSEV#184: 'Enabled' -> 'Auto' fixed it).",
    )
    PSP_COMMAND_FAILED = (
        "psp-command-failed",
        "The SEV firmware rejected the command; check `dmesg | grep -i sev` and update the "
        "SEV firmware (BIOS update or /lib/firmware/amd/amd_sev_fam*.sbin).",
    )
    SNP_STATUS_NOT_QUERIED = (
        "snp-status-not-queried",
        "On Linux 6.16 up to the fix of January 2026 the SNP status command initialises and "
        "shuts down SNP when it is not initialised, so it is only sent with kvm_amd.sev_snp=Y; "
        "see kvm.sev_snp for why SNP is off.",
        True,
    )
    LIBVIRT_PYTHON_MISSING = (
        "libvirt-python-missing",
        "Install libvirt-python (python3-libvirt) so libvirt's domain capabilities can be read.",
        True,
    )
    LIBVIRT_QUERY_FAILED = (
        "libvirt-query-failed",
        "libvirt did not answer getDomainCapabilities; check that virtqemud/libvirtd runs "
        "and that this runs as root (libvirt refuses the query on read-only connections).",
        True,
    )
    LIBVIRT_TIMEOUT = (
        "libvirt-timeout",
        "libvirt did not answer in time; check `systemctl status virtqemud libvirtd`.",
        True,
    )
    # -- CPU ---------------------------------------------------------------------------
    NOT_AMD = (
        "not-amd",
        "SEV needs an AMD EPYC CPU: 7002 (Rome) or later; SEV-SNP needs 7003 (Milan) or later.",
    )
    NO_MEM_ENCRYPT_LEAF = (
        "no-mem-encrypt-leaf",
        "The CPU (or the hypervisor in front of it) does not expose CPUID leaf 0x8000001F; "
        "SEV needs bare-metal AMD EPYC.",
    )
    CPU_NO_SME = ("cpu-no-sme", "This CPU has no AMD memory encryption (CPUID 0x8000001F EAX[0]).")
    CPU_NO_SEV = ("cpu-no-sev", "This CPU does not support SEV (CPUID 0x8000001F EAX[1]).")
    CPU_NO_SEV_ES = ("cpu-no-sev-es", "This CPU does not support SEV-ES (CPUID 0x8000001F EAX[3]).")
    CPU_NO_SNP = (
        "cpu-no-snp",
        "This CPU does not support SEV-SNP (CPUID 0x8000001F EAX[4]); use EPYC 7003 (Milan) "
        "or later.",
    )
    CPU_NO_VMPL = ("cpu-no-vmpl", "This CPU does not support VMPLs (CPUID 0x8000001F EAX[5]).")
    UNKNOWN_GENERATION = (
        "unknown-generation",
        "Informational: this family/model is not a known EPYC server part; TCB values are "
        "decoded with the layout of its CPU family.",
        True,
    )
    CPU_DRIVERS_NOT_LOADED = (
        "cpu-drivers-not-loaded",
        "Load the CPU register drivers: `modprobe cpuid msr` (the nfd-snp package does it at "
        "boot through /usr/lib/modules-load.d/nfd-snp.conf and when its service starts); "
        "until then the checks that need them are inferred from other evidence.",
    )
    # -- BIOS / MSRs ------------------------------------------------------------------
    BIOS_MEM_ENCRYPT_OFF = (
        "bios-mem-encrypt-off",
        "Enable memory encryption in the BIOS (AMD CBS: 'SMEE' / 'SEV Control' enabled).",
    )
    BIOS_SNP_OFF = (
        "bios-snp-off",
        "The kernel has not enabled SNP (it sets SNP_EN itself once the BIOS reserved the RMP "
        "and the IOMMU allows SNP): enable 'SEV-SNP Support' and 'SNP Memory (RMP Table) "
        "Coverage' in the BIOS, keep the IOMMU on and out of passthrough (no iommu=pt), use "
        "Linux 6.11 or later, and see `dmesg | grep -i -e SEV-SNP -e 'SNP:'`.",
    )
    RMP_NOT_RESERVED = (
        "rmp-not-reserved",
        "The BIOS reserved no RMP table: enable 'SNP Memory (RMP Table) Coverage' in the BIOS.",
    )
    KERNEL_TOO_OLD_FOR_SEGMENTED_RMP = (
        "kernel-too-old-for-segmented-rmp",
        "The BIOS set up a segmented RMP (Zen 5), which Linux reads from 6.14 on; an older "
        "kernel sees no RMP ('Memory for the RMP table has not been reserved by BIOS') and "
        "turns SEV-SNP off: use Linux 6.14 or later (or a vendor kernel with segmented-RMP "
        "support).",
    )
    RMP_TOO_SMALL = (
        "rmp-too-small",
        "The RMP the BIOS reserved covers less memory than the host has, and the kernel "
        "refuses such an RMP ('does not cover full system RAM'): set 'SNP Memory (RMP Table) "
        "Coverage' to Enabled (all memory), not Custom.",
    )
    RMP_REGISTERS_CONTRADICTED = (
        "rmp-registers-contradicted",
        "Nothing to fix for SEV-SNP: the SNP firmware runs with an initialised RMP, so the BIOS "
        "reserved one. The RMP registers read otherwise; attach `nfd-snp capture` output to a "
        "bug report so nfd-snp learns this RMP layout.",
    )
    # -- the IOMMU ----------------------------------------------------------------------
    IOMMU_PASSTHROUGH = (
        "iommu-passthrough",
        "The IOMMU is in passthrough (or off), and the kernel then turns SEV-SNP off (dmesg: "
        "'AMD-Vi: SNP: IOMMU disabled or configured in passthrough mode, SNP cannot be "
        "supported'): remove iommu=pt / iommu.passthrough=1 / iommu=off from the kernel command "
        "line (or add iommu=nopt), then reboot. Guides that pair SNP with iommu=pt are wrong "
        "for Linux 6.9 and later.",
    )
    IOMMU_OFF = (
        "iommu-off",
        "amd_iommu=off disables the AMD IOMMU, and the kernel then turns SEV-SNP off without a "
        "message: remove amd_iommu=off from the kernel command line and reboot.",
    )
    IOMMU_PGTBL_V2 = (
        "iommu-pgtbl-v2",
        "amd_iommu=pgtbl_v2 makes the IOMMU use its v2 page table, and the kernel then turns "
        "SEV-SNP off (dmesg: 'SNP: IOMMU is configured with V2 page table mode, SNP cannot be "
        "supported'): remove pgtbl_v2 from the kernel command line and reboot.",
    )
    IOMMU_NO_SNPSUP = (
        "iommu-no-snpsup",
        "An AMD IOMMU does not offer SNP (EFR bit 63, SNPSup), so the kernel turns SEV-SNP off "
        "(dmesg: 'SNP: IOMMU SNP feature not enabled'): enable 'SEV-SNP Support' under the "
        "BIOS's NBIO/IOMMU settings and update the BIOS.",
    )
    IOMMU_ABSENT = (
        "iommu-absent",
        "No AMD IOMMU is registered (/sys/class/iommu has no ivhd unit): enable the IOMMU in "
        "the BIOS (NBIO Common Options -> IOMMU); SEV-SNP needs it translating.",
    )
    IOMMU_FEATURES_FORMAT_UNKNOWN = (
        "iommu-features-format-unknown",
        "The IOMMU's feature register (/sys/class/iommu/ivhd*/amd-iommu/features) is shown in "
        "a format that depends on the kernel version, and this kernel's is not known, so "
        "whether every IOMMU offers SNP (SNPSup) is unknown: `dmesg | grep AMD-Vi` shows "
        "'SNP: IOMMU SNP feature not enabled' when one does not.",
        True,
    )
    # -- confidential GPUs --------------------------------------------------------------
    GPU_NOT_VFIO = (
        "gpu-not-vfio",
        "Bind the GPU to vfio-pci (e.g. `driverctl set-override <BDF> vfio-pci`, or vfio-pci.ids="
        "<vendor>:<device> on the kernel command line with the vendor driver blacklisted).",
    )
    GPU_GROUP_SHARED = (
        "gpu-group-shared",
        "The GPU's IOMMU group holds devices bound to other drivers, and VFIO passes a group "
        "whole: bind them to vfio-pci too, or move the GPU to a slot with a group of its own "
        "(ACS on the upstream bridge).",
    )
    GPU_GROUP_PASSTHROUGH = (
        "gpu-group-passthrough",
        "The GPU's IOMMU group is not translated, or there is none: keep the IOMMU on and out "
        "of passthrough (no iommu=pt; a group set to `identity` through its sysfs `type` back "
        "to DMA-FQ), which SEV-SNP needs anyway.",
    )
    NO_GPU = ("no-gpu", "Informational: no GPU (PCI class 0x03) on this host.")
    QEMU_TOO_OLD_FOR_SNP_VFIO = (
        "qemu-too-old-for-snp-vfio",
        "QEMU before 9.2 cannot pass devices to SEV-SNP guests ('Cannot set discarding of RAM "
        "broken', fixed in 9.2; kubevirt/kubevirt#16407): install QEMU 9.2 or later.",
    )
    # -- kernel -----------------------------------------------------------------------
    KERNEL_NO_SEV = (
        "kernel-no-sev",
        "The host kernel disabled SEV (no 'sev' flag in /proc/cpuinfo): enable SEV in the "
        "BIOS, boot without mem_encrypt=off and check `dmesg | grep -i sev`.",
    )
    KERNEL_NO_SEV_ES = (
        "kernel-no-sev-es",
        "The host kernel disabled SEV-ES (no 'sev_es' flag in /proc/cpuinfo); check "
        "`dmesg | grep -i sev`.",
    )
    KERNEL_NO_SNP = (
        "kernel-no-snp",
        "The host kernel disabled SEV-SNP (no 'sev_snp' flag in /proc/cpuinfo): enable SNP "
        "and the RMP table in the BIOS, use Linux 6.11 or later, and check "
        "`dmesg | grep -i -e SEV-SNP -e RMP`.",
    )
    # -- PSP firmware ------------------------------------------------------------------
    SEV_FIRMWARE_UNINIT = (
        "sev-firmware-uninit",
        "The SEV firmware is not initialised (kvm_amd initialises it when it loads from "
        "Linux 6.16, and only with kvm_amd.sev=1; ccp before): if kvm_amd.sev reads N, look at "
        "/etc/modprobe.d and the kernel command line first; otherwise check "
        "`dmesg | grep -i -e ccp -e sev` for 'SEV: failed to INIT error 0x..' (0x13: enable "
        "SMEE in the BIOS; 0x1 or 0x3: update the BIOS so the PSP bootloader fits the SEV "
        "firmware), then reload kvm_amd and ccp or reboot.",
    )
    SEV_ES_NOT_CONFIGURED = (
        "sev-es-not-configured",
        "The SEV firmware runs without SEV-ES (CONFIG_ES clear); check the BIOS SEV-ES "
        "settings and `dmesg | grep -i sev`.",
    )
    SNP_NOT_INITIALISED = (
        "snp-not-initialised",
        "The SNP firmware is not initialised. From Linux 6.16 kvm_amd initialises it when it "
        "loads, and only with kvm_amd.sev=1: if kvm_amd.sev reads N, look at /etc/modprobe.d "
        "and the kernel command line first. Otherwise enable SNP in the BIOS, keep the IOMMU "
        "on and out of passthrough, use Linux 6.11 or later, and check "
        "`dmesg | grep -i -e SEV-SNP -e 'SNP:' -e ccp` for the failing step.",
    )
    SNP_AND_SEV_INIT_FAILED = (
        "snp-and-sev-init-failed",
        "SNP_INIT failed, and the SEV INIT after it: when dmesg shows 'SEV-SNP: failed to INIT "
        "... error 0x3' and 'SEV: failed to INIT error 0x1', the SEV firmware is newer than "
        "the PSP bootloader of the BIOS (AMDESE/AMDSEV README, AMDESE/AMDSEV#189): update the "
        "BIOS. Otherwise `dmesg | grep -i -e SEV-SNP -e 'SNP:' -e ccp` names the failing step.",
    )
    SNP_INIT_FAILED_HOTLOADED = (
        "snp-init-failed-hotloaded-firmware",
        "SNP_INIT failed, and the SEV INIT after it, with an SEV firmware file that ccp loads "
        "over the BIOS's at boot: firmware newer than the BIOS's PSP bootloader fails this way "
        "('SEV: failed to INIT error 0x1', AMDESE/AMDSEV#176). Update the BIOS, or remove that "
        "file and reboot to run the BIOS's own firmware.",
    )
    SNP_API_TOO_OLD = (
        "snp-api-too-old",
        "Update the SEV firmware to API 1.51 or later, the minimum Linux accepts for SEV-SNP: "
        "a BIOS update (newer firmware often needs a newer PSP bootloader too), or AMD's "
        "/lib/firmware/amd/amd_sev_fam19h_model*.sbin loaded by ccp.",
    )
    RMP_NOT_INITIALISED = (
        "rmp-not-initialised",
        "The firmware reports the RMP as not initialised; check "
        "`dmesg | grep -i -e RMP -e SEV-SNP`.",
    )
    TCB_NOT_COMMITTED = (
        "tcb-not-committed",
        "After a firmware update the reported TCB (the one attestation reports carry and VCEK "
        "certificates are issued for) stays at the old level until committed: once the update "
        "is final, run `snphost commit`; until then attestation of guests here may fail.",
    )
    ALIAS_CHECK_PENDING = (
        "alias-check-pending",
        "The SNP firmware has not completed its memory alias check (AMD-SB-3015, 'BadRAM') since "
        "the last update: reboot so SNP_INIT runs it; attestation fails until it has.",
    )
    ALIAS_CHECK_UNSUPPORTED = (
        "alias-check-unsupported",
        "This SNP firmware predates the memory alias check of AMD-SB-3015 ('BadRAM'; Milan "
        "1.55.22, Genoa 1.55.38 and later report it): update the BIOS / SEV firmware.",
    )
    SEV_ES_REFUSED_WITH_SNP = (
        "sev-es-refused-with-snp",
        "This SEV firmware carries the AMD-SB-3023 (CVE-2025-48514) mitigation and refuses "
        "SEV-ES guests while SEV-SNP is initialised: run those guests as SEV-SNP guests, or "
        "schedule them on nodes with SEV-SNP off.",
    )
    # -- KVM -----------------------------------------------------------------------------
    KVM_DEVICE_MISSING = (
        "kvm-device-missing",
        "/dev/kvm is missing: enable SVM in the BIOS and load kvm_amd (modprobe kvm_amd).",
    )
    KVM_AMD_NOT_LOADED = (
        "kvm-amd-not-loaded",
        "Load the kvm_amd module (modprobe kvm_amd).",
    )
    KVM_SEV_OFF = (
        "kvm-sev-off",
        "KVM has SEV off: set `options kvm_amd sev=1` in /etc/modprobe.d/ and reload kvm_amd; "
        "KVM also turns it off when the SEV firmware failed to initialise (see dmesg).",
    )
    KVM_SEV_ES_OFF = (
        "kvm-sev-es-off",
        "KVM has SEV-ES off: set `options kvm_amd sev_es=1`; KVM also turns it off when no "
        "SEV-ES ASIDs exist (BIOS 'SEV-ES ASID Space Limit').",
    )
    KVM_SNP_OFF = (
        "kvm-snp-off",
        "KVM has SEV-SNP off: set `options kvm_amd sev_snp=1`; KVM also turns it off when SNP "
        "failed to initialise (see `dmesg | grep -i SEV-SNP`).",
    )
    KVM_NO_VMSA_ATTRIBUTE = (
        "kvm-no-vmsa-attribute",
        "Informational: this kernel does not publish KVM_X86_SEV_VMSA_FEATURES (Linux 6.11+), "
        "so which optional SEV features (Secure TSC) KVM offers guests is not known.",
        True,
    )
    KVM_NO_POLICY_ATTRIBUTE = (
        "kvm-no-policy-attribute",
        "Informational: this kernel does not publish KVM_X86_SNP_POLICY_BITS (Linux 6.19+), "
        "and its version does not tell which SNP policy bits KVM accepts; policy 0x30000 "
        "works on every kernel.",
        True,
    )
    KVM_NO_SNP_PARAMETER = (
        "kvm-no-snp-parameter",
        "kvm_amd has no sev_snp parameter: this kernel predates host SEV-SNP support; use "
        "Linux 6.11 or later.",
    )
    # -- ASIDs ---------------------------------------------------------------------------
    NO_SEV_ASIDS = (
        "no-sev-asids",
        "The BIOS gave every ASID to SEV-ES/SEV-SNP (minimum SEV ASID above the maximum), so "
        "plain SEV guests cannot start; SEV-ES and SEV-SNP are not affected. If plain SEV "
        "guests are wanted, lower the BIOS 'SEV-ES ASID Space Limit'.",
    )
    NO_ES_ASIDS = (
        "no-es-asids",
        "No SEV-ES/SNP ASIDs exist (minimum SEV ASID is 1): raise the BIOS 'SEV-ES ASID Space "
        "Limit' so ES and SNP guests get ASIDs.",
    )
    ES_ASIDS_TAKEN_BY_CIPHERTEXT_HIDING = (
        "es-asids-taken-by-ciphertext-hiding",
        "kvm_amd.ciphertext_hiding_asids gives every SEV-ES/SNP ASID to SEV-SNP, which leaves "
        "none for SEV-ES guests: lower it below the minimum SEV ASID - 1 if SEV-ES guests are "
        "wanted (kernel-parameters.txt, kvm-amd.ciphertext_hiding_asids).",
    )
    SPLIT_ASIDS_IN_USE = (
        "split-asids-in-use",
        "Every ASID of this guest type is taken by a running guest (KVM answers EBUSY for the "
        "next): with ciphertext hiding, kvm_amd.ciphertext_hiding_asids sets SEV-SNP's share "
        "of the SEV-ES/SNP range and SEV-ES gets the rest; move the split (up to the minimum "
        "SEV ASID - 1), or raise the BIOS 'SEV-ES ASID Space Limit' when the whole range is "
        "in use.",
    )
    ES_ASIDS_IN_USE = (
        "es-asids-in-use",
        "Every ASID of this guest type is taken by a running guest: new guests of the type fail "
        "to start (KVM answers EBUSY) until one stops; raise the BIOS 'SEV-ES ASID Space "
        "Limit' for more.",
    )
    # -- libvirt / firmware -----------------------------------------------------------
    NO_HOST_LIBVIRT = (
        "no-host-libvirt",
        "Nothing to do on KubeVirt nodes (libvirt runs in each VM's pod); on a libvirt host, "
        "start virtqemud or libvirtd.",
    )
    LIBVIRT_REQUIRED = (
        "libvirt-required",
        "The configuration requires host libvirt (libvirt = required) but no libvirt daemon "
        "socket exists: start virtqemud or libvirtd, or set libvirt = auto.",
    )
    LIBVIRT_NO_SEV = (
        "libvirt-no-sev",
        "libvirt reports SEV unsupported: check that QEMU sees /dev/sev (permissions) and "
        "restart virtqemud/libvirtd after enabling SEV.",
    )
    LIBVIRT_TOO_OLD_FOR_SNP = (
        "libvirt-too-old-for-snp",
        "This libvirt predates SEV-SNP: install libvirt 10.5 or later with QEMU 9.1 or later, "
        "then restart virtqemud/libvirtd.",
    )
    LIBVIRT_NO_SNP = (
        "libvirt-no-snp",
        "libvirt offers launchSecurity 'sev-snp' only when its QEMU (9.1 or later) and KVM "
        "support SEV-SNP: check the QEMU version and kvm_amd.sev_snp, then restart "
        "virtqemud/libvirtd (it caches QEMU's capabilities).",
    )
    HOOK_NOT_LOADED = (
        "hook-not-loaded",
        "The libvirt daemon started before nfd-snp's hook was installed or replaced, and "
        "libvirt looks for hooks only when it starts: run `systemctl try-restart virtqemud "
        "libvirtd` (running guests keep running; without systemd, `nfd-snp install` restarts "
        "the daemon as it was started). Until then domains that ask for SEV-SNP start "
        "unchecked.",
    )
    HOOK_NOT_EXECUTABLE = (
        "hook-not-executable",
        "libvirt skips a hook that is not executable: `chmod 0755 "
        "/etc/libvirt/hooks/qemu.d/50-nfd-snp` (or install it again: `nfd-snp install`, or "
        "the nfd-snp-libvirt package), then restart virtqemud or libvirtd.",
    )
    HOOK_CANNOT_LOAD = (
        "hook-cannot-load",
        "The Python the hook names cannot import nfd_snp, so libvirt refuses every domain "
        "that asks for SEV-SNP (other domains start): run `nfd-snp install` from the Python "
        "environment that has nfd-snp (it writes its own Python into the hook), or install "
        "nfd-snp for the Python the hook names.",
    )
    PROCESSES_UNREADABLE = (
        "processes-unreadable",
        "The process table could not be read: give nfd-snp the host's /proc (in a container, "
        "mount it at <host-root>/proc), or capture the snapshot again with this version.",
        True,
    )
    NO_SNP_FIRMWARE = (
        "no-snp-firmware",
        "No QEMU firmware descriptor lists 'amd-sev-snp': install an OVMF build for SEV-SNP "
        "(e.g. edk2-ovmf's OVMF.amdsev.fd) with its descriptor in /usr/share/qemu/firmware.",
    )
