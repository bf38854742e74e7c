"""The SEV firmware (PSP) through /dev/sev: SEV_PLATFORM_STATUS and SNP_PLATFORM_STATUS.

Layouts are `nfd_snp.uapi` (psp-sev.h). The kernel answers SNP_PLATFORM_STATUS with EINVAL
while SNP is not initialised; opening /dev/sev needs root (EACCES otherwise). The ccp
module's `psp_init_on_probe` parameter says whether the firmware is initialised when the
driver loads or later, by KVM, when the first guest starts (drivers/crypto/ccp/sev-dev.c).
"""

from __future__ import annotations

import errno
from typing import Optional, Tuple

from nfd_snp import paths, uapi
from nfd_snp.errors import NotCaptured, PspError
from nfd_snp.host import Host
from nfd_snp.model import (
    CpuFacts,
    KernelFacts,
    KvmFacts,
    PspFacts,
    SevPlatformStatus,
    SnpPlatformStatus,
    TcbLayout,
    TcbVersion,
    Unreadable,
)
from nfd_snp.reasons import Reason
from nfd_snp.sources import decode_text, unreadable_from

COMMAND_NAMES = {
    uapi.SEV_PLATFORM_STATUS: "SEV_PLATFORM_STATUS",
    uapi.SNP_PLATFORM_STATUS: "SNP_PLATFORM_STATUS",
}


def decode_sev_status(data: bytes) -> SevPlatformStatus:
    s = uapi.SevUserDataStatus.from_buffer_copy(data)
    return SevPlatformStatus(s.api_major, s.api_minor, s.state, s.flags, s.build, s.guest_count)


def decode_snp_status(data: bytes, layout: TcbLayout) -> SnpPlatformStatus:
    s = uapi.SevUserDataSnpStatus.from_buffer_copy(data)
    features = s.feature_flags
    return SnpPlatformStatus(
        api_major=s.api_major,
        api_minor=s.api_minor,
        state=s.state,
        # Bit 0 only: bit 1 (alias check complete, newer firmware) must not read as "RMP".
        rmp_initialized=bool(s.rmp_flags & 0x1),
        alias_check_complete=bool(s.rmp_flags & 0x2),
        build_id=s.build_id,
        mask_chip_id=bool(features & 1 << 0),
        mask_chip_key=bool(features & 1 << 1),
        vlek_en=bool(features & 1 << 2),
        feature_info=bool(features & 1 << 3),
        rapl_dis=bool(features & 1 << 4),
        ciphertext_hiding_cap=bool(features & 1 << 5),
        ciphertext_hiding_en=bool(features & 1 << 6),
        guest_count=s.guest_count,
        current_tcb=TcbVersion.decode(s.current_tcb_version, layout),
        reported_tcb=TcbVersion.decode(s.reported_tcb_version, layout),
    )


def classify(exc: BaseException, command: int) -> Unreadable:
    what = f"/{paths.SEV_DEVICE} {COMMAND_NAMES[command]}"
    err = getattr(exc, "errno", None)
    fw_error = getattr(exc, "fw_error", None)
    if command == uapi.SNP_PLATFORM_STATUS and err == errno.EINVAL:
        return Unreadable(
            Reason.SNP_NOT_INITIALISED, f"{what}: EINVAL (SNP is not initialised)", errno=err
        )
    if err == errno.ENODEV:
        return Unreadable(Reason.PSP_DEVICE_MISSING, f"{what}: no PSP (ENODEV)", errno=err)
    if err == errno.EBUSY:
        # sev-dev.c: after "sev command %#x timed out, disabling PSP" psp_dead is set and
        # every later command returns -EBUSY until the driver is loaded again.
        return Unreadable(
            Reason.PSP_DEAD, f"{what}: EBUSY (the driver has given up on the PSP)", errno=err
        )
    if fw_error:
        return Unreadable(
            Reason.PSP_COMMAND_FAILED,
            f"{what}: firmware error {uapi.firmware_error_name(fw_error)}",
            errno=err,
            fw_error=fw_error,
        )
    return unreadable_from(
        exc,
        what,
        missing=Reason.PSP_DEVICE_MISSING,
        denied=Reason.DEVICE_DENIED,
        other=Reason.PSP_COMMAND_FAILED,
    )


def read_init_on_probe(host: Host):
    """ccp.psp_init_on_probe (bool parameter, Y/N): None when the parameter does not exist
    (ccp not loaded, or a kernel from before it, which always initialised at probe)."""
    try:
        text = decode_text(host.read(paths.CCP_PSP_INIT_ON_PROBE, 64)).strip()
    except OSError:
        return None
    return {"Y": True, "1": True, "N": False, "0": False}.get(text)


def snp_status_has_side_effects(kernel, kvm) -> bool:
    """Whether SNP_PLATFORM_STATUS would change the platform, so the probe must not send it.

    From Linux 6.16 ("crypto: ccp - Ensure implicit SEV/SNP init and shutdown in ioctls")
    the command on a host whose SNP is not initialised runs a real SNP_INIT and then
    SNP_SHUTDOWN, until "crypto: ccp - Fix a case where SNP_SHUTDOWN is missed" (posted in
    January 2026, taken here as Linux 7.0) made it report the state as it is. On those
    kernels kvm_amd.sev_snp=Y says SNP is initialised already (KVM initialises it when it
    loads and keeps sev_snp only if that worked), so only then is the command harmless.
    Distribution kernels backport either change; the version is the best guide there is.
    A release that cannot be read could be one of those kernels: it takes the cautious path.
    """
    if kvm.sev_snp.enabled is True:
        return False
    version = kernel.version
    return version is None or (6, 16) <= version < (7, 0)


def firmware_names(family: Optional[int], model: Optional[int]) -> Tuple[str, ...]:
    """The SEV firmware files ccp would load for this CPU, in its order of preference
    (sev-dev.c sev_get_firmware), each also xz- or zstd-compressed."""
    names = []
    if family is not None and model is not None:
        names += [
            f"amd/amd_sev_fam{family:02x}h_model{model:02x}h.sbin",
            f"amd/amd_sev_fam{family:02x}h_model{(model & 0xF0) >> 4:1x}xh.sbin",
        ]
    names.append("amd/sev.fw")
    return tuple(n + ext for n in names for ext in ("", ".xz", ".zst"))


def hotloaded_firmware(host: Host, family: Optional[int], model: Optional[int]) -> Optional[str]:
    """The SEV firmware file ccp loads at probe over the BIOS's, when one is installed."""
    for directory in paths.FIRMWARE_DIRS:
        for name in firmware_names(family, model):
            if host.exists(f"{directory}/{name}"):
                return f"/{directory}/{name}"
    return None


def read(host: Host, cpu: CpuFacts, kernel: KernelFacts, kvm: KvmFacts) -> PspFacts:
    """Both status replies, the TCBs decoded with the layout of the CPU family (CPUID, else
    /proc/cpuinfo). Where the kernel would initialise SNP to answer it
    (snp_status_has_side_effects), SNP_PLATFORM_STATUS is not sent at all and its reply is
    unknown with that reason."""
    family = cpu.family if cpu.family is not None else kernel.family
    layout = TcbLayout.for_family(family)
    snp_query = not snp_status_has_side_effects(kernel, kvm)
    model = cpu.model if cpu.model is not None else kernel.model
    replies = {}
    for command in (uapi.SEV_PLATFORM_STATUS, uapi.SNP_PLATFORM_STATUS):
        if command == uapi.SNP_PLATFORM_STATUS and not snp_query:
            replies[command] = (
                None,
                Unreadable(
                    Reason.SNP_STATUS_NOT_QUERIED,
                    f"/{paths.SEV_DEVICE} SNP_PLATFORM_STATUS: not sent, since on this kernel "
                    "(Linux 6.16 to 6.19, or a release that could not be read) it would "
                    "initialise and shut down SNP while kvm_amd.sev_snp is not Y",
                ),
            )
            continue
        try:
            replies[command] = (host.psp_command(command), None)
        except (PspError, OSError, NotCaptured) as exc:
            replies[command] = (None, classify(exc, command))
    sev_raw, sev_unreadable = replies[uapi.SEV_PLATFORM_STATUS]
    snp_raw, snp_unreadable = replies[uapi.SNP_PLATFORM_STATUS]
    return PspFacts(
        sev=decode_sev_status(sev_raw) if sev_raw is not None else None,
        sev_unreadable=sev_unreadable,
        snp=decode_snp_status(snp_raw, layout) if snp_raw is not None else None,
        snp_unreadable=snp_unreadable,
        init_on_probe=read_init_on_probe(host),
        hotloaded_firmware=hotloaded_firmware(host, family, model),
    )
