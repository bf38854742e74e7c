"""Every host path the probe reads, relative to the host root.

Relative paths make the live host (`/`), a container's `/host` mount and a snapshot
directory interchangeable: only the root in front changes.
"""

# /dev/cpu/N/cpuid (module `cpuid`): pread(16) at offset leaf | subleaf << 32.
# Linux arch/x86/kernel/cpuid.c
CPUID_DEVICE = "dev/cpu/0/cpuid"
# /dev/cpu/N/msr (module `msr`): pread(8) at offset = MSR index. arch/x86/kernel/msr.c
MSR_DEVICE = "dev/cpu/0/msr"
# The PSP (ccp driver); include/uapi/linux/psp-sev.h
SEV_DEVICE = "dev/sev"
KVM_DEVICE = "dev/kvm"

PROC_CPUINFO = "proc/cpuinfo"
PROC_CMDLINE = "proc/cmdline"
PROC_MEMINFO = "proc/meminfo"
KERNEL_RELEASE = "proc/sys/kernel/osrelease"
PROC = "proc"
# Its `btime` line dates the start of every process (proc(5), /proc/pid/stat starttime).
PROC_STAT = "proc/stat"

KVM_AMD_MODULE = "sys/module/kvm_amd"
KVM_AMD_PARAMETERS = "sys/module/kvm_amd/parameters"
# ccp: whether the SEV firmware is initialised when the driver loads (Y) or by KVM at the
# first guest launch (N). drivers/crypto/ccp/sev-dev.c module_param(psp_init_on_probe)
CCP_PSP_INIT_ON_PROBE = "sys/module/ccp/parameters/psp_init_on_probe"

# misc cgroup controller files live at the cgroup v2 root; on hybrid hosts that root is
# mounted at /sys/fs/cgroup/unified, and a v1 misc hierarchy at /sys/fs/cgroup/misc.
# Documentation/admin-guide/cgroup-v2.rst, "Misc"
MISC_CGROUP_DIRS = ("sys/fs/cgroup", "sys/fs/cgroup/unified", "sys/fs/cgroup/misc")

# Read-only and read-write sockets of the modular (virtqemud) and monolithic (libvirtd)
# daemons, in the order libvirt's client tries them for qemu:///system.
LIBVIRT_SOCKETS_RO = ("run/libvirt/virtqemud-sock-ro", "run/libvirt/libvirt-sock-ro")
LIBVIRT_SOCKETS_RW = ("run/libvirt/virtqemud-sock", "run/libvirt/libvirt-sock")

# nfd-snp's qemu hook, as the nfd-snp-libvirt package installs it. A libvirt daemon runs the
# hooks of a driver only if it found one when it started (or on SIGHUP): libvirt's
# src/util/virhook.c virHookInitialize, called at start-up, caches which drivers have any.
LIBVIRT_QEMU_HOOK = "etc/libvirt/hooks/qemu.d/50-nfd-snp"

# QEMU firmware descriptors (docs/interop/firmware.json): a file in /etc overrides a file
# of the same name in /usr/share; the lexically first file name wins.
FIRMWARE_DESCRIPTOR_DIRS = ("usr/share/qemu/firmware", "etc/qemu/firmware")

# What a snapshot holds besides plain host files (the contract in DESIGN.md).
CAPTURE_FILE = "nfd-snp-capture.json"

# The IOMMU (drivers/iommu/iommu-sysfs.c: class "iommu", AMD units named ivhdN with an
# "amd-iommu" attribute group) and its groups (drivers/iommu/iommu.c).
SYS_CLASS_IOMMU = "sys/class/iommu"
IOMMU_GROUPS = "sys/kernel/iommu_groups"
# PCI devices and drivers (drivers/pci/pci-sysfs.c, drivers/base/bus.c).
PCI_DEVICES = "sys/bus/pci/devices"
PCI_DRIVERS = "sys/bus/pci/drivers"

# SEV firmware that ccp loads at probe in place of the BIOS's (drivers/crypto/ccp/sev-dev.c
# sev_get_firmware: amd/amd_sev_fam%.2xh_model%.2xh.sbin, then ..._model%.1xxh.sbin, then
# amd/sev.fw), looked up in the firmware loader's directories
# (drivers/base/firmware_loader/main.c fw_path; /lib is /usr/lib on merged-/usr systems).
FIRMWARE_DIRS = ("lib/firmware/updates", "lib/firmware")
