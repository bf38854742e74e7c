"""The ctypes layouts in nfd_snp.uapi against the real kernel header (Linux 6.12 uapi)."""

from __future__ import annotations

import ctypes
import shutil
import subprocess

import pytest

from nfd_snp import uapi
from tests.conftest import need

C_PROGRAM = r"""
#include <stdio.h>
#include <stddef.h>
#include <linux/ioctl.h>
#include <linux/psp-sev.h>
#include <linux/kvm.h>
#define F(s, m) printf(#s "." #m " %zu\n", offsetof(struct s, m))
int main(void) {
    printf("sev_issue_cmd %zu\n", sizeof(struct sev_issue_cmd));
    F(sev_issue_cmd, cmd); F(sev_issue_cmd, data); F(sev_issue_cmd, error);
    printf("sev_user_data_status %zu\n", sizeof(struct sev_user_data_status));
    F(sev_user_data_status, api_major); F(sev_user_data_status, api_minor);
    F(sev_user_data_status, state); F(sev_user_data_status, flags);
    F(sev_user_data_status, build); F(sev_user_data_status, guest_count);
    printf("sev_user_data_snp_status %zu\n", sizeof(struct sev_user_data_snp_status));
    F(sev_user_data_snp_status, api_major); F(sev_user_data_snp_status, api_minor);
    F(sev_user_data_snp_status, state); F(sev_user_data_snp_status, build_id);
    F(sev_user_data_snp_status, guest_count);
    F(sev_user_data_snp_status, current_tcb_version);
    F(sev_user_data_snp_status, reported_tcb_version);
    printf("SEV_ISSUE_CMD %lu\n", (unsigned long)SEV_ISSUE_CMD);
    printf("SEV_PLATFORM_STATUS %d\n", SEV_PLATFORM_STATUS);
    printf("SNP_PLATFORM_STATUS %d\n", SNP_PLATFORM_STATUS);
    printf("SEV_STATUS_FLAGS_CONFIG_ES %d\n", SEV_STATUS_FLAGS_CONFIG_ES);
    printf("SEV_RET_INVALID_PLATFORM_STATE %d\n", SEV_RET_INVALID_PLATFORM_STATE);
    printf("SEV_RET_INVALID_KEY %d\n", SEV_RET_INVALID_KEY);
    printf("SEV_RET_SECURE_DATA_INVALID %d\n", SEV_RET_SECURE_DATA_INVALID);
    printf("kvm_device_attr %zu\n", sizeof(struct kvm_device_attr));
    F(kvm_device_attr, flags); F(kvm_device_attr, group);
    F(kvm_device_attr, attr); F(kvm_device_attr, addr);
    printf("KVM_GET_DEVICE_ATTR %lu\n", (unsigned long)KVM_GET_DEVICE_ATTR);
    printf("KVM_X86_GRP_SEV %d\n", KVM_X86_GRP_SEV);
    return 0;
}
"""


@pytest.fixture(scope="module")
def header_facts(trixie_root, tmp_path_factory):
    need(shutil.which("gcc") is not None, "gcc is not installed")
    build = tmp_path_factory.mktemp("uapi")
    (build / "layout.c").write_text(C_PROGRAM)
    include = trixie_root / "usr" / "include"
    multiarch = include / "x86_64-linux-gnu"  # the package's asm/ headers
    subprocess.run(
        [
            "gcc",
            "-I",
            str(include),
            "-I",
            str(multiarch),
            "-o",
            str(build / "layout"),
            str(build / "layout.c"),
        ],
        check=True,
    )
    out = subprocess.run([str(build / "layout")], check=True, capture_output=True, text=True)
    return {k: int(v) for k, v in (line.split() for line in out.stdout.splitlines())}


def offsets(struct) -> dict:
    return {name: getattr(struct, name).offset for name, _ in struct._fields_}


def test_issue_cmd_layout(header_facts):
    assert ctypes.sizeof(uapi.SevIssueCmd) == header_facts["sev_issue_cmd"] == 16
    for field, offset in offsets(uapi.SevIssueCmd).items():
        assert offset == header_facts[f"sev_issue_cmd.{field}"], field


def test_ioctl_number(header_facts):
    assert uapi.SEV_ISSUE_CMD == header_facts["SEV_ISSUE_CMD"] == 0xC0105300


def test_sev_status_layout(header_facts):
    assert ctypes.sizeof(uapi.SevUserDataStatus) == header_facts["sev_user_data_status"] == 12
    for field, offset in offsets(uapi.SevUserDataStatus).items():
        assert offset == header_facts[f"sev_user_data_status.{field}"], field


def test_snp_status_layout(header_facts):
    assert (
        ctypes.sizeof(uapi.SevUserDataSnpStatus) == header_facts["sev_user_data_snp_status"] == 32
    )
    ours = offsets(uapi.SevUserDataSnpStatus)
    # rmp_flags and feature_flags stand for bitfield groups offsetof() cannot name.
    for field in (
        "api_major",
        "api_minor",
        "state",
        "build_id",
        "guest_count",
        "current_tcb_version",
        "reported_tcb_version",
    ):
        assert ours[field] == header_facts[f"sev_user_data_snp_status.{field}"], field
    assert ours["rmp_flags"] == 3 and ours["feature_flags"] == 8


def test_command_ids_and_codes(header_facts):
    assert uapi.SEV_PLATFORM_STATUS == header_facts["SEV_PLATFORM_STATUS"]
    assert uapi.SNP_PLATFORM_STATUS == header_facts["SNP_PLATFORM_STATUS"]
    assert header_facts["SEV_STATUS_FLAGS_CONFIG_ES"] == 1 << 8
    assert (
        uapi.FIRMWARE_ERRORS[header_facts["SEV_RET_INVALID_PLATFORM_STATE"]]
        == "INVALID_PLATFORM_STATE"
    )
    assert (
        uapi.FIRMWARE_ERRORS[header_facts["SEV_RET_SECURE_DATA_INVALID"]] == "SECURE_DATA_INVALID"
    )
    assert uapi.FIRMWARE_ERRORS[header_facts["SEV_RET_INVALID_KEY"]] == "INVALID_KEY"


def test_firmware_error_names():
    assert uapi.firmware_error_name(0x1) == "INVALID_PLATFORM_STATE (0x1)"
    assert uapi.firmware_error_name(0x99) == "0x99"


def test_kvm_device_attr_layout(header_facts):
    assert ctypes.sizeof(uapi.KvmDeviceAttr) == header_facts["kvm_device_attr"] == 24
    for field, offset in offsets(uapi.KvmDeviceAttr).items():
        assert offset == header_facts[f"kvm_device_attr.{field}"], field
    assert uapi.KVM_GET_DEVICE_ATTR == header_facts["KVM_GET_DEVICE_ATTR"] == 0x4018AEE2
    # Linux 6.12's header has the SEV group; KVM_X86_SNP_POLICY_BITS (attribute 1 of it)
    # arrived in 6.19 (arch/x86/include/uapi/asm/kvm.h), after this header.
    assert uapi.KVM_X86_GRP_SEV == header_facts["KVM_X86_GRP_SEV"] == 1
