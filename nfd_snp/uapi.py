"""Mirror of the kernel uapi the probe uses: include/uapi/linux/psp-sev.h (the /dev/sev
ioctl ABI, Linux 6.12) and the KVM device-attribute ioctl of include/uapi/linux/kvm.h.

The ctypes structures are the single definition of the layouts: the live path hands them to
ioctl(2), and snapshot bytes are decoded through the same structures. tests/test_uapi.py
compiles C against the real headers and compares sizeof/offsetof with these.
"""

from __future__ import annotations

import ctypes

# enum sev_cmd (psp-sev.h). Only the two read-only status commands are ever issued.
SEV_PLATFORM_STATUS = 1
SNP_PLATFORM_STATUS = 9


class SevIssueCmd(ctypes.Structure):
    """struct sev_issue_cmd { __u32 cmd; __u64 data; __u32 error; } __packed"""

    _pack_ = 1
    _fields_ = [
        ("cmd", ctypes.c_uint32),
        ("data", ctypes.c_uint64),
        ("error", ctypes.c_uint32),
    ]


class SevUserDataStatus(ctypes.Structure):
    """struct sev_user_data_status (12 bytes, __packed)."""

    _pack_ = 1
    _fields_ = [
        ("api_major", ctypes.c_uint8),
        ("api_minor", ctypes.c_uint8),
        ("state", ctypes.c_uint8),
        ("flags", ctypes.c_uint32),
        ("build", ctypes.c_uint8),
        ("guest_count", ctypes.c_uint32),
    ]


class SevUserDataSnpStatus(ctypes.Structure):
    """struct sev_user_data_snp_status (32 bytes, __packed).

    The header declares two bitfield groups; they are kept as whole integers here
    (`rmp_flags` is the byte holding is_rmp_initialized:1, `feature_flags` the u32 holding
    mask_chip_id:1, mask_chip_key:1, vlek_en:1, ...) and decoded bit by bit, because ctypes
    bitfields in packed structures are not laid out portably.
    """

    _pack_ = 1
    _fields_ = [
        ("api_major", ctypes.c_uint8),
        ("api_minor", ctypes.c_uint8),
        ("state", ctypes.c_uint8),
        ("rmp_flags", ctypes.c_uint8),
        ("build_id", ctypes.c_uint32),
        ("feature_flags", ctypes.c_uint32),
        ("guest_count", ctypes.c_uint32),
        ("current_tcb_version", ctypes.c_uint64),
        ("reported_tcb_version", ctypes.c_uint64),
    ]


# Reply structure per command: what SEV_ISSUE_CMD's `data` points to.
REPLY_STRUCTS = {
    SEV_PLATFORM_STATUS: SevUserDataStatus,
    SNP_PLATFORM_STATUS: SevUserDataSnpStatus,
}


def _ioc(direction: int, ioc_type: int, nr: int, size: int) -> int:
    """_IOC() from include/uapi/asm-generic/ioctl.h (dir bits 30-31, size 16-29)."""
    return (direction << 30) | (size << 16) | (ioc_type << 8) | nr


def _iowr(ioc_type: str, nr: int, size: int) -> int:
    return _ioc(3, ord(ioc_type), nr, size)  # _IOC_READ | _IOC_WRITE


# #define SEV_ISSUE_CMD _IOWR(SEV_IOC_TYPE, 0x0, struct sev_issue_cmd) == 0xC0105300
SEV_ISSUE_CMD = _iowr("S", 0x0, ctypes.sizeof(SevIssueCmd))

# enum sev_ret_code (psp-sev.h): firmware status codes returned in sev_issue_cmd.error.
FIRMWARE_ERRORS = {
    0x00: "SUCCESS",
    0x01: "INVALID_PLATFORM_STATE",
    0x02: "INVALID_GUEST_STATE",
    0x03: "INVALID_CONFIG",
    0x04: "INVALID_LEN",
    0x05: "ALREADY_OWNED",
    0x06: "INVALID_CERTIFICATE",
    0x07: "POLICY_FAILURE",
    0x08: "INACTIVE",
    0x09: "INVALID_ADDRESS",
    0x0A: "BAD_SIGNATURE",
    0x0B: "BAD_MEASUREMENT",
    0x0C: "ASID_OWNED",
    0x0D: "INVALID_ASID",
    0x0E: "WBINVD_REQUIRED",
    0x0F: "DFFLUSH_REQUIRED",
    0x10: "INVALID_GUEST",
    0x11: "INVALID_COMMAND",
    0x12: "ACTIVE",
    0x13: "HWSEV_RET_PLATFORM",
    0x14: "HWSEV_RET_UNSAFE",
    0x15: "UNSUPPORTED",
    0x16: "INVALID_PARAM",
    0x17: "RESOURCE_LIMIT",
    0x18: "SECURE_DATA_INVALID",
    0x19: "INVALID_PAGE_SIZE",
    0x1A: "INVALID_PAGE_STATE",
    0x1B: "INVALID_MDATA_ENTRY",
    0x1C: "INVALID_PAGE_OWNER",
    0x1D: "AEAD_OFLOW",
    0x1F: "EXIT_RING_BUFFER",
    0x20: "RMP_INIT_REQUIRED",
    0x21: "BAD_SVN",
    0x22: "BAD_VERSION",
    0x23: "SHUTDOWN_REQUIRED",
    0x24: "UPDATE_FAILED",
    0x25: "RESTORE_REQUIRED",
    0x26: "RMP_INITIALIZATION_FAILED",
    0x27: "INVALID_KEY",
}


def firmware_error_name(code: int) -> str:
    """`INVALID_PLATFORM_STATE (0x1)` for a known code, `0x42` for any other."""
    name = FIRMWARE_ERRORS.get(code)
    return f"{name} ({code:#x})" if name else f"{code:#x}"


# -- KVM system attributes (include/uapi/linux/kvm.h, arch/x86/include/uapi/asm/kvm.h) ------


class KvmDeviceAttr(ctypes.Structure):
    """struct kvm_device_attr { __u32 flags; __u32 group; __u64 attr; __u64 addr; }"""

    _fields_ = [
        ("flags", ctypes.c_uint32),
        ("group", ctypes.c_uint32),
        ("attr", ctypes.c_uint64),
        ("addr", ctypes.c_uint64),
    ]


KVMIO = 0xAE
# #define KVM_GET_DEVICE_ATTR _IOW(KVMIO, 0xe2, struct kvm_device_attr) == 0x4018aee2; on the
# /dev/kvm system fd it reads a system attribute (KVM API doc, "KVM_GET_DEVICE_ATTR").
KVM_GET_DEVICE_ATTR = _ioc(1, KVMIO, 0xE2, ctypes.sizeof(KvmDeviceAttr))
# asm/kvm.h: KVM_X86_GRP_SEV 1 { KVM_X86_SEV_VMSA_FEATURES 0, KVM_X86_SNP_POLICY_BITS 1 }.
# The policy-bits attribute (Linux 6.19) is the u64 mask of SNP guest policy bits KVM and
# the firmware accept; older kernels answer ENXIO.
KVM_X86_GRP_SEV = 1
# The VMSA-features attribute (Linux 6.11) is the u64 of SEV features KVM lets a guest's VMSA
# carry (sev_supported_vmsa_features, arch/x86/kvm/svm/sev.c): SVM_SEV_FEAT_SECURE_TSC is bit
# 9 (asm/svm.h), set from Linux 6.18 when SNP, the TSC frequency and the CPU allow it.
KVM_X86_SEV_VMSA_FEATURES = 0
KVM_X86_SNP_POLICY_BITS = 1
