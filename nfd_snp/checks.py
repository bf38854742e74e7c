"""The readiness tree: which guest types can run on this host, and why not.

Checks follow snphost `ok` (REFERENCE §5) plus kvm_amd parameters, ASID capacity, libvirt
and firmware. Each check is data (name, title, the guest types it gates, a pure function of
the already-read `HostFacts`, children) and does no I/O. A failed parent skips its children;
an unknown parent does not, so the report still says what else is known. A failure carries a
typed `Reason`; the fix shown comes from it.

Real hosts rarely let every register be read (the cpuid and msr drivers are not loaded by
default, /dev/sev needs root), so a check whose own source is unreadable passes *as
inferred* when a fact the kernel or firmware only shows in its presence proves it; the
evidence is named. Unknown remains only where no evidence decides. A failure that merely
follows from another failure (KVM turns SNP off because the firmware failed) names that root
cause and is not itself counted as a blocker, so the admin is sent to the cause, not its echo.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, replace
from typing import Callable, Dict, Iterator, Optional, Tuple

from nfd_snp import paths
from nfd_snp.errors import ProgrammingError
from nfd_snp.model import FirmwareState, Generation, HostFacts, Unreadable, zen_of
from nfd_snp.reasons import Reason


class Status(enum.Enum):
    PASS = "PASS"
    WARN = "WARN"
    FAIL = "FAIL"
    SKIP = "SKIP"
    UNKNOWN = "UNKNOWN"


class Guest(enum.Enum):
    SEV = "sev"
    SEV_ES = "sev-es"
    SEV_SNP = "sev-snp"

    @property
    def label(self) -> str:
        return {"sev": "SEV", "sev-es": "SEV-ES", "sev-snp": "SEV-SNP"}[self.value]


SEV, ES, SNP = Guest.SEV, Guest.SEV_ES, Guest.SEV_SNP
# Which guest types a check gates. ES and SNP guests need SEV; SNP guests are ES guests and
# share the ES ASID range. ASID checks gate only their own type (a BIOS may give every ASID
# to SEV-ES/SNP), and informational checks gate nothing.
ALL = (SEV, ES, SNP)
ES_AND_SNP = (ES, SNP)
ONLY_SEV = (SEV,)
ONLY_ES = (ES,)
ONLY_SNP = (SNP,)
INFO = ()


@dataclass(frozen=True)
class Outcome:
    status: Status
    detail: str
    reason: Optional[Reason] = None
    # PASS proven by other evidence while the check's own source could not be read.
    inferred_from: Optional[str] = None
    # FAIL that follows from other failed checks (the first named), not a cause of its own.
    root_cause: Optional[str] = None
    root_causes: Tuple[str, ...] = ()


def passed(detail: str) -> Outcome:
    return Outcome(Status.PASS, detail)


def inferred(evidence: str, detail: str) -> Outcome:
    return Outcome(Status.PASS, detail, inferred_from=evidence)


def failed(reason: Reason, detail: str) -> Outcome:
    return Outcome(Status.FAIL, detail, reason)


def warned(reason: Reason, detail: str) -> Outcome:
    return Outcome(Status.WARN, detail, reason)


def skipped(detail: str) -> Outcome:
    return Outcome(Status.SKIP, detail)


def from_unreadable(unreadable: Optional[Unreadable], what: str = "not read") -> Outcome:
    """UNKNOWN when the source could not be read, FAIL when the failure is the answer."""
    if unreadable is None:
        return Outcome(Status.UNKNOWN, what)
    if unreadable.reason.unknown:
        return Outcome(Status.UNKNOWN, unreadable.detail, unreadable.reason)
    return Outcome(Status.FAIL, unreadable.detail, unreadable.reason)


@dataclass(frozen=True)
class Check:
    name: str
    title: str
    gates: Tuple[Guest, ...]
    evaluate: Callable[[HostFacts], Outcome]
    children: Tuple["Check", ...] = ()
    # Checks whose failure makes this one fail too (see ROOT_CAUSES).
    caused_by: Tuple[str, ...] = ()
    # Guest types a WARN of this check concerns (its gates, or given for informational ones).
    concerns: Tuple[Guest, ...] = ()

    @property
    def guest(self) -> Optional[Guest]:
        """The lowest guest type gated (the `gates` field of `check --json`)."""
        return self.gates[0] if self.gates else None

    def walk(self) -> Iterator["Check"]:
        yield self
        for child in self.children:
            yield from child.walk()


# -- evidence: facts that the kernel or the firmware show only when another fact holds --------


def kernel_flag(flag: str, why: str = ""):
    """Evidence from a /proc/cpuinfo flag (arch/x86/kernel/cpu/amd.c early_detect_mem_encrypt
    clears sme/sev/sev_es/sev_snp unless SYSCFG MEM_ENCRYPT is set and the feature usable)."""

    def probe(f: HostFacts) -> Optional[str]:
        return f"the kernel flag '{flag}'{why}" if f.kernel.has_flag(flag) else None

    return probe


def kvm_enabled(param: str):
    """Evidence from a kvm_amd parameter: KVM writes Y back only after it found the CPU
    feature (arch/x86/kvm/svm/sev.c sev_hardware_setup checks X86_FEATURE_SEV/_ES/_SNP)."""

    def probe(f: HostFacts) -> Optional[str]:
        p = getattr(f.kvm, param)
        return f"kvm_amd.{param}={p.raw}" if p.enabled else None

    return probe


def snp_firmware_initialised(f: HostFacts) -> Optional[str]:
    """SNP firmware in INIT proves SYSCFG SNP_EN, VMPL_EN and the RMP: the kernel sets SNP_EN
    and VMPL_EN on every CPU before SNP_INIT (arch/x86/virt/svm/sev.c snp_enable; a CPU
    without VMPLs would refuse the write) and SNP_INIT requires them (SNP firmware ABI)."""
    snp = f.psp.snp
    if snp is None or snp.state == FirmwareState.UNINIT:
        return None
    return f"SNP firmware state {_state_name(snp.state)}"


# The kernel keeps the `sev_snp` flag only on bare metal with the RMP reserved by the BIOS
# (amd.c bsp_determine_snp -> snp_probe_rmptable_info), so the flag proves CPU support and
# the RMP. It does not prove SYSCFG SNP_EN: the kernel sets that later, and only when the
# IOMMU and RMP set-up succeed (up to 7.0) or the SNP firmware initialises (7.1+).
SNP_FLAG = kernel_flag("sev_snp")


def snp_flag_proves_rmp(f: HostFacts) -> Optional[str]:
    """The `sev_snp` flag vouches for the RMP from Linux 6.9, which added the RMP probe to
    the flag's conditions; before, the flag followed CPUID alone."""
    version = f.kernel.version
    return SNP_FLAG(f) if version is not None and version >= (6, 9) else None


SME_EVIDENCE = (
    kernel_flag("sme"),
    # SEV encrypts guest memory with SME's engine (AMD64 APM vol. 2, "Secure Encrypted
    # Virtualization"): a usable SEV proves the SME hardware.
    kernel_flag("sev", " (SEV uses the SME encryption engine)"),
    kernel_flag("sev_es", " (SEV-ES uses the SME encryption engine)"),
    SNP_FLAG,
)


def _first(f: HostFacts, evidence) -> Optional[str]:
    for probe in evidence:
        found = probe(f)
        if found:
            return found
    return None


# -- evaluation functions (pure; one per check) -----------------------------------------


def _vendor(f: HostFacts) -> Optional[str]:
    return f.cpu.vendor or f.kernel.vendor_id


def check_vendor(f: HostFacts) -> Outcome:
    vendor = _vendor(f)
    if vendor is None:
        return from_unreadable(f.cpu.unreadable or f.kernel.unreadable)
    name = f.kernel.model_name or "model name unknown"
    if vendor != "AuthenticAMD":
        return failed(Reason.NOT_AMD, f"{vendor}: {name}")
    return passed(f"{vendor}: {name}")


def check_generation(f: HostFacts) -> Outcome:
    family, model = f.family, f.model
    if family is None:
        return from_unreadable(f.cpu.unreadable or f.kernel.unreadable)
    generation = f.generation
    detail = f"family {family:#x} model {model:#x}" if model is not None else f"family {family:#x}"
    if generation is Generation.UNKNOWN:
        layout = "1Ah" if family >= 0x1A else "19h"
        return Outcome(
            Status.UNKNOWN,
            f"{detail}: not a known EPYC server model (TCB values use the family {layout} layout)",
            Reason.UNKNOWN_GENERATION,
        )
    return passed(f"{detail} ({generation.value})")


def check_drivers(f: HostFacts) -> Outcome:
    """Whether the CPUID and MSR devices could be read; a note, never a blocker."""
    missing = [u for u in (f.cpu.unreadable, f.msr.unreadable) if u is not None]
    if not missing:
        return passed(f"/dev/cpu/0/cpuid and /dev/cpu/0/msr read{_snapshot_note(f)}")
    reasons = {u.reason for u in missing}
    detail = "; ".join(u.detail for u in missing) + ": checks below use other evidence"
    drivers = {Reason.CPUID_DEVICE_MISSING, Reason.MSR_DEVICE_MISSING}
    if reasons <= drivers:
        return warned(Reason.CPU_DRIVERS_NOT_LOADED, detail)
    return warned(next(u.reason for u in missing if u.reason not in drivers), detail)


def _snapshot_note(f: HostFacts) -> str:
    return " (from the snapshot)" if f.snapshot else ""


def _leaf_bit(attr: str, bit: int, reason: Reason, evidence=()):
    """A CPUID 0x8000001F EAX bit; other evidence vouches for it when CPUID is unreadable."""

    def evaluate(f: HostFacts) -> Outcome:
        leaf = f.cpu.mem_encrypt
        where = f"CPUID 0x8000001F EAX[{bit}]"
        if leaf is None:
            found = _first(f, evidence)
            if found:
                return inferred(found, f"{where} not read")
            if f.cpu.unreadable is not None:
                return from_unreadable(f.cpu.unreadable)
            return failed(
                Reason.NO_MEM_ENCRYPT_LEAF,
                f"highest extended CPUID leaf is {f.cpu.max_extended_leaf or 0:#x}",
            )
        if getattr(leaf, attr):
            return passed(f"{where} = 1 (EAX {leaf.eax:#010x})")
        if f.kernel.has_flag("hypervisor"):
            # A guest's CPUID is what its hypervisor shows: it says nothing about the host.
            return failed(
                Reason.NO_MEM_ENCRYPT_LEAF,
                f"{where} = 0 (EAX {leaf.eax:#010x}): this kernel runs under a hypervisor",
            )
        return failed(reason, f"{where} = 0 (EAX {leaf.eax:#010x})")

    return evaluate


def check_vmpl(f: HostFacts) -> Outcome:
    outcome = _leaf_bit("vmpl", 5, Reason.CPU_NO_VMPL, (snp_firmware_initialised,))(f)
    if outcome.status is Status.PASS and f.cpu.mem_encrypt is not None:
        return passed(f"{f.cpu.mem_encrypt.vmpl_count} VMPLs (CPUID 0x8000001F EBX[15:12])")
    return outcome


def _syscfg_bit(attr: str, bit: int, reason: Reason, evidence):
    """A SYSCFG bit; kernel and firmware facts that need it vouch when the MSR is unreadable."""

    def evaluate(f: HostFacts) -> Outcome:
        value = getattr(f.msr, attr)
        where = f"SYSCFG[{bit}]"
        if value is None:
            found = _first(f, evidence)
            if found:
                return inferred(found, f"{where} not read")
            return from_unreadable(f.msr.unreadable)
        if value:
            return passed(f"{where} = 1 (SYSCFG {f.msr.syscfg:#x})")
        return failed(reason, f"{where} = 0 (SYSCFG {f.msr.syscfg:#x})")

    return evaluate


def _size(shift: int) -> str:
    size = 1 << shift
    return f"{size >> 30} GB" if size >= 1 << 30 else f"{size} bytes"


def rmp_registers(msr) -> str:
    """The RMP registers as read, with the layout they describe."""
    span = f"RMP_BASE {msr.rmp_base:#x}, RMP_END {msr.rmp_end:#x}"
    if msr.rmp_segmented:
        return (
            f"segmented RMP, {_size(msr.rmp_segment_shift)} segments (RMP_CFG "
            f"{msr.rmp_cfg:#x}): segment table at RMP_BASE {msr.rmp_base:#x}, RMP_END "
            f"{msr.rmp_end:#x}"
        )
    if msr.rmp_cfg is None:
        return f"{span}; RMP_CFG not read"
    return span


def rmp_initialised_in_firmware(f: HostFacts) -> Optional[str]:
    """An SNP firmware past UNINIT whose RMP is initialised: SNP_INIT validated the RMP the
    BIOS reserved (SNP firmware ABI, SNP_INIT_EX), whatever the registers seem to say."""
    snp = f.psp.snp
    if snp is None or snp.state == FirmwareState.UNINIT or not snp.rmp_initialized:
        return None
    return f"the SNP firmware is {_state_name(snp.state)} with its RMP initialised"


def check_rmp_reserved(f: HostFacts) -> Outcome:
    """RMP_BASE/RMP_END, read as the kernel reads them: contiguous, or segmented (Zen 5,
    RMP_CFG bit 0) where RMP_END is 0 by design (arch/x86/virt/svm/sev.c
    probe_segmented_rmptable_info)."""
    msr = f.msr
    reserved = msr.rmp_reserved
    if reserved is None:
        found = _first(f, (snp_flag_proves_rmp, snp_firmware_initialised))
        read = rmp_registers(msr) if msr.rmp_base is not None else "RMP_BASE/RMP_END not read"
        if found:
            return inferred(found, read)
        return from_unreadable(msr.unreadable or msr.rmp_unreadable or msr.rmp_cfg_unreadable)
    shown = rmp_registers(msr)
    if reserved:
        return passed(shown)
    firmware = rmp_initialised_in_firmware(f)
    if firmware:
        return warned(Reason.RMP_REGISTERS_CONTRADICTED, f"{shown}, but {firmware}")
    return failed(Reason.RMP_NOT_RESERVED, shown)


def _kernel_flag(flag: str, reason: Reason):
    def evaluate(f: HostFacts) -> Outcome:
        present = f.kernel.has_flag(flag)
        if present is None:
            return from_unreadable(f.kernel.unreadable)
        if present:
            return passed(f"'{flag}' in /proc/cpuinfo flags")
        hint = " (the kernel runs under a hypervisor)" if f.kernel.has_flag("hypervisor") else ""
        return failed(reason, f"no '{flag}' in /proc/cpuinfo flags{hint}")

    return evaluate


def _with_reply(which: str):
    """A check of one firmware status reply (`psp.sev` or `psp.snp`); why the reply is
    missing decides otherwise."""

    def wrap(evaluate_status):
        def evaluate(f: HostFacts) -> Outcome:
            reply = getattr(f.psp, which)
            if reply is None:
                return from_unreadable(getattr(f.psp, f"{which}_unreadable"))
            return evaluate_status(f, reply)

        return evaluate

    return wrap


with_sev_status = _with_reply("sev")  # SEV_PLATFORM_STATUS
with_snp_status = _with_reply("snp")  # SNP_PLATFORM_STATUS


@with_sev_status
def check_sev_firmware(f: HostFacts, status) -> Outcome:
    return passed(f"SEV API {status.api_version} build {status.build}, {status.guest_count} guests")


def _state_name(state: int) -> str:
    try:
        return FirmwareState(state).name
    except ValueError:
        return f"state {state}"


def host_snp(f: HostFacts) -> Optional[bool]:
    """Whether the kernel has host SNP on (CC_ATTR_HOST_SEV_SNP), None when nothing tells.

    It matters to a deferred SEV INIT: KVM's init at the first guest runs SNP_INIT first and
    stops on its failure (sev-dev.c _sev_platform_init_locked: "if (rc && rc != -ENODEV)
    return rc"); with host SNP off SNP_INIT returns -ENODEV and the SEV INIT goes on.
    """
    if f.kernel.has_flag("sev_snp") is False:
        return False  # the flag goes with the attribute (amd.c bsp_determine_snp)
    if f.kernel.has_flag("sev_snp") is None:
        return None
    if snp_firmware_initialised(f) or f.kvm.sev_snp.enabled:
        return True  # KVM enables SNP only with the attribute (sev_hardware_setup)
    version = f.kernel.version
    # Up to Linux 7.0 the kernel sets SNP_EN at boot exactly when it keeps the attribute
    # (after the IOMMU allowed it); from 7.1 only at SNP firmware INIT, which tells nothing.
    if f.msr.snp_en is not None and version is not None and (6, 9) <= version < (7, 1):
        return f.msr.snp_en
    return None


@with_sev_status
def check_sev_initialised(f: HostFacts, status) -> Outcome:
    name = _state_name(status.state)
    if status.state != FirmwareState.UNINIT:
        return passed(f"platform state {name}")
    if f.psp.init_on_probe is not False:
        return failed(
            Reason.SEV_FIRMWARE_UNINIT,
            f"platform state {name} with ccp.psp_init_on_probe="
            + {True: "Y", None: "Y (default)"}[f.psp.init_on_probe],
        )
    # ccp.psp_init_on_probe=N: ccp leaves the SEV firmware UNINIT and KVM initialises it at
    # the first SEV guest (sev-dev.c: "Else the PSP will be initialized on the first command
    # requiring it"), AMD's firmware hot-load set-up. That works unless SNP_INIT stops it.
    deferred = f"platform state {name}; ccp.psp_init_on_probe=N"
    snp = host_snp(f)
    if snp is False or snp_firmware_initialised(f):
        return passed(f"{deferred}: KVM initialises the firmware when the first guest starts")
    if snp is None:
        return Outcome(
            Status.UNKNOWN,
            f"{deferred}, and whether a failed SNP_INIT would stop KVM's SEV INIT at the first "
            "guest is unknown (host SNP not known)",
            f.msr.unreadable.reason if f.msr.unreadable else Reason.SEV_FIRMWARE_UNINIT,
        )
    return failed(
        Reason.SEV_FIRMWARE_UNINIT,
        f"{deferred}, but SNP is not initialised: KVM's SEV INIT at the first guest runs "
        "SNP_INIT first and stops on its failure",
    )


@with_sev_status
def check_sev_es_initialised(f: HostFacts, status) -> Outcome:
    if status.state == FirmwareState.UNINIT:
        # CONFIG_ES is set by INIT (the kernel asks for SEV-ES whenever the CPU has it); an
        # UNINIT firmware says nothing about it. psp.sev_init decides whether that is fine.
        return skipped("firmware not initialised yet: CONFIG_ES is set when it is")
    if status.config_es:
        return passed(f"CONFIG_ES set (flags {status.flags:#x})")
    return failed(Reason.SEV_ES_NOT_CONFIGURED, f"CONFIG_ES clear (flags {status.flags:#x})")


# Linux drivers/crypto/ccp/sev-dev.c refuses SNP with firmware older than 1.51
# (SNP_MIN_API_MAJOR/MINOR, "SEV-SNP support requires firmware version >= 1:51").
SNP_MIN_API = (1, 51)


def _api_too_old(major: int, minor: int) -> bool:
    return (major, minor) < SNP_MIN_API


def firmware_api(f: HostFacts) -> Optional[Tuple[int, int, str]]:
    """(major, minor, "API x.y build n") of the SEV firmware: one firmware serves SEV and
    SNP, and the kernel compares SEV_PLATFORM_STATUS's version with 1.51 for SNP
    (sev-dev.c sev_version_greater_or_equal)."""
    sev, snp = f.psp.sev, f.psp.snp
    if sev is not None:
        return sev.api_major, sev.api_minor, f"API {sev.api_version} build {sev.build}"
    if snp is not None:
        return snp.api_major, snp.api_minor, f"API {snp.api_version} build {snp.build_id}"
    return None


def check_snp_initialised(f: HostFacts) -> Outcome:
    status = f.psp.snp
    initialised = status is not None and status.state != FirmwareState.UNINIT
    api = firmware_api(f)
    if not initialised and api is not None and _api_too_old(api[0], api[1]):
        return failed(
            Reason.SNP_API_TOO_OLD,
            f"SNP not initialised: SEV firmware {api[2]} is below 1.51, the minimum Linux "
            "accepts for SEV-SNP",
        )
    if status is None:
        return from_unreadable(f.psp.snp_unreadable)
    name = _state_name(status.state)
    if not initialised:
        return failed(Reason.SNP_NOT_INITIALISED, f"SNP platform state {name}")
    return passed(
        f"SNP platform state {name}, build {status.build_id}, {status.guest_count} guests"
    )


@with_snp_status
def check_snp_api(f: HostFacts, status) -> Outcome:
    version = f"SNP API {status.api_version}"
    if _api_too_old(status.api_major, status.api_minor):
        return failed(Reason.SNP_API_TOO_OLD, f"{version} < 1.51")
    return passed(f"{version} >= 1.51")


@with_snp_status
def check_rmp_initialised(f: HostFacts, status) -> Outcome:
    if status.rmp_initialized:
        return passed("RMP initialised (byte 3 bit 0)")
    return failed(Reason.RMP_NOT_INITIALISED, "RMP not initialised (byte 3 bit 0 clear)")


@with_snp_status
def check_tcb(f: HostFacts, status) -> Outcome:
    cur, rep = status.current_tcb, status.reported_tcb
    if cur.raw == rep.raw:
        return passed(f"reported TCB {rep.describe()} is the current one")
    return warned(
        Reason.TCB_NOT_COMMITTED,
        f"reported TCB {rep.describe()} differs from the current {cur.describe()}",
    )


# Firmware that reports the alias-check flag (SNP_PLATFORM_STATUS byte 3 bit 1): Milan
# 1.55.22 and Genoa 1.55.38 and later (AMD-SB-3015). Older firmware leaves the bit clear.
ALIAS_CHECK_FIRMWARE = {
    Generation.MILAN: (1, 55, 22),
    Generation.GENOA: (1, 55, 38),
    Generation.BERGAMO_SIENA: (1, 55, 38),
}


@with_snp_status
def check_alias(f: HostFacts, status) -> Outcome:
    if status.alias_check_complete:
        return passed("alias check complete since the last update (byte 3 bit 1)")
    version = (status.api_major, status.api_minor, status.build_id)
    shown = f"{status.api_version}.{status.build_id}"
    floor = ALIAS_CHECK_FIRMWARE.get(f.generation)
    if floor is not None and version < floor:
        return warned(
            Reason.ALIAS_CHECK_UNSUPPORTED,
            f"firmware {shown} predates the alias check (needs "
            f"{'.'.join(map(str, floor))} or later)",
        )
    return warned(Reason.ALIAS_CHECK_PENDING, f"alias check not complete (firmware {shown})")


# AMD-SB-3023 (CVE-2025-48514): firmware with the mitigation refuses SEV-ES guests while
# SNP is initialised. The kernel tells such firmware by the SNP SVN of the *current* TCB
# (drivers/crypto/ccp/sev-dev.c sev_firmware_allows_es: Zen 3/4 below 0x1B, Zen 5 below
# 0x4 still allow SEV-ES; the bulletin's mitigation bit is documented wrongly). QEMU then
# fails with "LAUNCH_START ret=1 fw_error=21 'Feature not supported'" (AMDESE/AMDSEV#282).
SEV_ES_REFUSED_FROM_SNP_SVN = {4: 0x1B, 5: 0x04}


def check_sev_es_with_snp(f: HostFacts) -> Outcome:
    snp = f.psp.snp
    if snp is None or snp.state == FirmwareState.UNINIT:
        unreadable = f.psp.snp_unreadable
        if snp is None and unreadable is not None and unreadable.reason.unknown:
            if f.kernel.has_flag("sev_snp") is False:
                return passed("SEV-SNP is not enabled on this host")
            return from_unreadable(unreadable)
        return passed("SEV-SNP is not initialised, so SEV-ES is not restricted")
    floor = SEV_ES_REFUSED_FROM_SNP_SVN.get(zen_of(f.family, f.model) or 0)
    svn = snp.current_tcb.snp
    if floor is None or svn < floor:
        return passed(f"SNP firmware SVN {svn} predates the AMD-SB-3023 restriction")
    return failed(
        Reason.SEV_ES_REFUSED_WITH_SNP,
        f"SNP firmware SVN {svn} (>= {floor:#x}, firmware {snp.api_version} build "
        f"{snp.build_id}) refuses SEV-ES guests while SEV-SNP is initialised",
    )


def check_snp_policy(f: HostFacts) -> Outcome:
    rule = f.snp_policy_rule()
    if rule is None:
        version = f.kernel.version
        if version is not None and version < (6, 10):
            return skipped(f"Linux {version[0]}.{version[1]} predates SEV-SNP in KVM")
        return from_unreadable(
            f.kvm.snp_policy_bits_unreadable, "neither KVM_X86_SNP_POLICY_BITS nor a known rule"
        )
    required = f", requires {rule.required:#x}" if rule.required else ""
    note = ""
    version = f.kernel.version
    if f.kvm.snp_policy_bits is None and version is not None and version < (6, 17):
        note = "; upstream kernels before 6.17 also want SMT (bit 16) and no SINGLE_SOCKET (20)"
    return passed(f"accepts policy bits {rule.accepted:#x}{required} ({rule.source}){note}")


def check_kvm_device(f: HostFacts) -> Outcome:
    if f.kvm.device_present:
        return passed("/dev/kvm present")
    return failed(Reason.KVM_DEVICE_MISSING, "/dev/kvm missing")


def _kvm_param(attr: str, off: Reason):
    def evaluate(f: HostFacts) -> Outcome:
        param = getattr(f.kvm, attr)
        where = f"kvm_amd.{param.name}"
        if not f.kvm.module_loaded:
            return failed(Reason.KVM_AMD_NOT_LOADED, "kvm_amd is not loaded")
        if param.unreadable is not None:
            return from_unreadable(param.unreadable)
        if not param.present:
            if attr == "sev_snp":
                return failed(Reason.KVM_NO_SNP_PARAMETER, f"{where} does not exist")
            # kvm_amd.sev_es arrived with host SEV-ES support in Linux 5.11
            why = "this kernel predates SEV-ES hosts" if attr == "sev_es" else "kernel without SEV"
            return failed(off, f"{where} does not exist ({why})")
        if param.enabled:
            return passed(f"{where} = {param.raw}")
        return failed(off, f"{where} = {param.raw}")

    return evaluate


def check_sev_asids(f: HostFacts) -> Outcome:
    known = f.asid_capacity(es=False)
    if known is None:
        return from_unreadable(f.asids.unreadable or f.cpu.unreadable, "no ASID information")
    capacity, source = known
    use = f", {f.asids.sev_current} in use" if f.asids.sev_current is not None else ""
    detail = f"{capacity} SEV ASIDs ({source}){use}"
    return passed(detail) if capacity > 0 else failed(Reason.NO_SEV_ASIDS, detail)


def _es_range(guest: Guest):
    """ASIDs for SEV-ES or SEV-SNP guests: ASIDs 1 .. min SEV ASID - 1, shared, or split
    between them by ciphertext hiding."""

    def evaluate(f: HostFacts) -> Outcome:
        known = f.guest_asids(guest.value)
        kind = guest.label
        if known is None:
            # KVM enables SEV-ES (and SNP) only when ES ASIDs exist ("if (min_sev_asid == 1)
            # goto out" in sev_hardware_setup).
            found = kvm_enabled("sev_es")(f)
            if found:
                return inferred(found, f"{kind} ASID count not read")
            return from_unreadable(f.asids.unreadable or f.cpu.unreadable, "no ASID information")
        detail = f"{known.count} {kind} ASIDs ({known.source})"
        if known.count <= 0:
            if f.kvm.ciphertext_hiding_asids:
                return failed(Reason.ES_ASIDS_TAKEN_BY_CIPHERTEXT_HIDING, detail)
            return failed(Reason.NO_ES_ASIDS, detail)
        used = _asids_in_use(f, guest, known.shared_es_snp)
        if used is None:
            return passed(detail)
        detail += f", {used} in use" + (
            " (SEV-ES and SEV-SNP together)" if known.shared_es_snp else ""
        )
        if used >= known.count:
            if not known.shared_es_snp:  # ciphertext hiding caps this type's share
                return warned(Reason.SPLIT_ASIDS_IN_USE, detail)
            return warned(Reason.ES_ASIDS_IN_USE, detail)
        return passed(detail)

    return evaluate


def _asids_in_use(f: HostFacts, guest: Guest, shared: bool) -> Optional[int]:
    """ASIDs in use by this guest type: misc.current `sev_es` counts SEV-ES and SNP guests
    together; with ciphertext hiding the running QEMU processes tell them apart."""
    joint = f.asids.sev_es_current
    if shared or joint is None:
        return joint
    if f.guests.unreadable is not None:
        return None
    snp = len(f.guests.snp_pids)
    return snp if guest is SNP else max(0, joint - snp)


def asids_in_use(f: HostFacts, guest: Guest) -> Optional[int]:
    """ASIDs that running guests of type `guest` hold, as the asid.* checks count them
    (the metrics show the same numbers); None when unknown."""
    if guest is SEV:
        return f.asids.sev_current
    known = f.guest_asids(guest.value)
    return None if known is None else _asids_in_use(f, guest, known.shared_es_snp)


NO_LIBVIRT = "no libvirt on this host (KubeVirt runs libvirt in each VM's pod)"


def skipped_no_libvirt(extra: str = "") -> Outcome:
    return Outcome(Status.SKIP, NO_LIBVIRT + extra, Reason.NO_HOST_LIBVIRT)


def check_libvirt_sev(f: HostFacts) -> Outcome:
    d = f.domcaps
    if d.libvirt_present is False:
        return skipped_no_libvirt()
    if d.unreadable is not None:
        return from_unreadable(d.unreadable)
    if d.sev_supported:
        return passed(
            f"sev supported: cbitpos {d.cbitpos}, reducedPhysBits {d.reducedPhysBits}"
            + (f", maxGuests {d.maxGuests}" if d.maxGuests is not None else "")
            + (f", maxESGuests {d.maxESGuests}" if d.maxESGuests is not None else "")
        )
    return failed(Reason.LIBVIRT_NO_SEV, f"<sev supported='no'/> ({d.emulator or 'QEMU'})")


def check_libvirt_snp(f: HostFacts) -> Outcome:
    d = f.domcaps
    if d.libvirt_present is False:
        return skipped_no_libvirt()
    if d.unreadable is not None:
        return from_unreadable(d.unreadable)
    if "sev-snp" in d.sectypes:
        return passed("launchSecurity sectype 'sev-snp' offered")
    if d.launch_security_supported is None:
        # <launchSecurity> in domain capabilities lists sectypes since libvirt 10.5, the
        # release that added sev-snp (formatdomaincaps.html).
        return failed(
            Reason.LIBVIRT_TOO_OLD_FOR_SNP,
            "no <launchSecurity> in domain capabilities (libvirt older than 10.5)",
        )
    offered = ", ".join(d.sectypes) or "none"
    return failed(Reason.LIBVIRT_NO_SNP, f"launchSecurity sectypes offered: {offered}")


def check_snp_firmware(f: HostFacts) -> Outcome:
    if f.domcaps.libvirt_present is False:
        return skipped_no_libvirt("; firmware comes from the VM's launcher image")
    images = f.firmware.snp_images
    if images:
        names = ", ".join(i.executable or i.descriptor for i in images)
        return passed(f"amd-sev-snp firmware: {names}")
    known = len(f.firmware.images)
    return failed(Reason.NO_SNP_FIRMWARE, f"none of {known} firmware descriptors lists amd-sev-snp")


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def check_hook_loaded(f: HostFacts) -> Outcome:
    """Whether the running libvirt daemons have loaded nfd-snp's qemu hook, and whether its
    Python can load nfd_snp.

    Evaluated on every host, whatever its CPU: fail-closed rests on the hook (a domain that
    asks for SEV-SNP through its metadata starts as a plain VM where libvirt does not run
    it). Informational, a WARN concerning SEV-SNP: a daemon that has not loaded the hook
    still starts SEV-SNP guests; what is missing is the hook's check of them. A daemon looks
    for hooks when it starts (sources/hook_loaded.py); /proc/stat's btime has a one-second
    resolution, and a start within that second of the change counts as before it, erring
    toward a restart. A hook whose Python cannot import nfd_snp refuses every domain that
    asks for SEV-SNP: a WARN too, so the alert on this check fires.
    """
    h = f.hook
    hook = "/" + paths.LIBVIRT_QEMU_HOOK
    if h.installed is None:
        return from_unreadable(h.unreadable)
    if not h.installed:
        return skipped(f"no {hook} (`nfd-snp install` or the nfd-snp-libvirt package installs it)")
    if not h.executable:
        return warned(Reason.HOOK_NOT_EXECUTABLE, f"{hook} is not executable")
    if h.loads is False:
        return warned(
            Reason.HOOK_CANNOT_LOAD,
            f"its Python {h.interpreter} cannot import nfd_snp ({h.load_error}): every domain "
            "that asks for SEV-SNP is refused",
        )
    if h.daemons_unreadable is not None:
        return from_unreadable(h.daemons_unreadable)
    changed = f"the hook changed {_when(h.changed)}"
    if h.loads:
        python = f"; its Python {h.interpreter} loads nfd_snp"
    elif h.interpreter:
        python = f"; whether its Python {h.interpreter} loads nfd_snp is unknown ({h.load_error})"
    else:
        python = f"; {h.load_error}"
    if not h.daemons:
        return passed(f"no libvirt daemon runs; the next to start loads it ({changed}){python}")
    stale = [d for d in h.daemons if d.started < h.changed]
    shown = ", ".join(
        f"{d.name} (pid {d.pid}) started {_when(d.started)}" for d in stale or h.daemons
    )
    if stale:
        return warned(Reason.HOOK_NOT_LOADED, f"{shown}, before {changed}")
    return passed(f"{shown}, after {changed}{python}")


def check_cbit(f: HostFacts) -> Outcome:
    known = f.cbit()
    if known is None:
        return from_unreadable(f.cpu.unreadable, "CPUID 0x8000001F not available")
    leaf = f.cpu.mem_encrypt
    raw = (
        f"; CPUID EBX[11:6] says {leaf.reduced_phys_bits}, which QEMU and libvirt do not use"
        if leaf is not None and leaf.reduced_phys_bits != known.reducedPhysBits
        else ""
    )
    return passed(
        f"C-bit {known.cbitpos} ({known.cbitpos_source}), reducedPhysBits "
        f"{known.reducedPhysBits} ({known.reduced_source}){raw}"
    )


def check_running_guests(f: HostFacts) -> Outcome:
    g = f.guests
    if g.unreadable is not None:
        return from_unreadable(g.unreadable)
    detail = f"{len(g.snp_pids)} SEV-SNP and {len(g.sev_pids)} SEV/SEV-ES QEMU guests running"
    if f.asids.sev_current is not None or f.asids.sev_es_current is not None:
        detail += f" (misc.current: sev {f.asids.sev_current}, sev_es {f.asids.sev_es_current})"
    return passed(detail)


# -- the tree --------------------------------------------------------------------------

# (name, title, gates, evaluation, parent). Order is report order; a parent comes before its
# children. Names are the anchors in docs/troubleshooting.md.
# fmt: off
CHECKS = (
    ("cpu.vendor", "AMD CPU", ALL, check_vendor, None),
    ("cpu.generation", "EPYC generation", INFO, check_generation, "cpu.vendor"),
    ("cpu.drivers", "CPU register drivers (cpuid, msr)", INFO, check_drivers, "cpu.vendor"),
    ("cpu.sme", "Memory encryption in the CPU (SME)", ALL,
     _leaf_bit("sme", 0, Reason.CPU_NO_SME, SME_EVIDENCE), "cpu.vendor"),
    ("bios.mem_encrypt", "Memory encryption enabled (SYSCFG MEM_ENCRYPT)", ALL,
     _syscfg_bit("mem_encrypt", 23, Reason.BIOS_MEM_ENCRYPT_OFF, SME_EVIDENCE), "cpu.sme"),
    ("cpu.sev", "SEV in the CPU", ALL,
     _leaf_bit("sev", 1, Reason.CPU_NO_SEV, (kernel_flag("sev"), kvm_enabled("sev"))),
     "cpu.sme"),
    ("kernel.sev", "SEV enabled by the host kernel", ALL,
     _kernel_flag("sev", Reason.KERNEL_NO_SEV), "cpu.sev"),
    ("psp.sev_status", "SEV firmware answers (/dev/sev)", ALL, check_sev_firmware, "cpu.sev"),
    ("psp.sev_init", "SEV firmware initialised", ALL, check_sev_initialised, "psp.sev_status"),
    ("kvm.device", "KVM (/dev/kvm)", ALL, check_kvm_device, "cpu.sev"),
    ("kvm.sev", "kvm_amd sev parameter", ALL, _kvm_param("sev", Reason.KVM_SEV_OFF), "cpu.sev"),
    ("asid.sev", "ASIDs for SEV guests", ONLY_SEV, check_sev_asids, "cpu.sev"),
    ("libvirt.sev", "libvirt reports SEV", ALL, check_libvirt_sev, "cpu.sev"),
    ("cpu.sev_es", "SEV-ES in the CPU", ES_AND_SNP,
     _leaf_bit("sev_es", 3, Reason.CPU_NO_SEV_ES, (kernel_flag("sev_es"), kvm_enabled("sev_es"))),
     "cpu.sev"),
    ("kernel.sev_es", "SEV-ES enabled by the host kernel", ES_AND_SNP,
     _kernel_flag("sev_es", Reason.KERNEL_NO_SEV_ES), "cpu.sev_es"),
    ("psp.sev_es_init", "SEV-ES initialised in firmware (CONFIG_ES)", ES_AND_SNP,
     check_sev_es_initialised, "cpu.sev_es"),
    ("kvm.sev_es", "kvm_amd sev_es parameter", ES_AND_SNP,
     _kvm_param("sev_es", Reason.KVM_SEV_ES_OFF), "cpu.sev_es"),
    ("asid.sev_es", "ASIDs for SEV-ES guests", ONLY_ES, _es_range(ES), "cpu.sev_es"),
    # SNP guests use the SEV-ES ASID range: judged whether or not the CPU has SNP.
    ("asid.snp", "ASIDs for SEV-SNP guests", ONLY_SNP, _es_range(SNP), "cpu.sev_es"),
    ("psp.sev_es_with_snp", "SEV-ES allowed beside SEV-SNP (AMD-SB-3023)", ONLY_ES,
     check_sev_es_with_snp, "cpu.sev_es"),
    ("cpu.snp", "SEV-SNP in the CPU", ONLY_SNP,
     _leaf_bit("snp", 4, Reason.CPU_NO_SNP,
               (SNP_FLAG, kvm_enabled("sev_snp"), snp_firmware_initialised)), "cpu.sev_es"),
    ("cpu.vmpl", "VMPLs in the CPU", ONLY_SNP, check_vmpl, "cpu.snp"),
    ("bios.snp_en", "SNP enabled by the kernel (SYSCFG SNP_EN)", ONLY_SNP,
     _syscfg_bit("snp_en", 24, Reason.BIOS_SNP_OFF, (snp_firmware_initialised,)),
     "cpu.snp"),
    ("bios.rmp", "RMP table reserved (RMP_BASE/RMP_END)", ONLY_SNP, check_rmp_reserved, "cpu.snp"),
    ("kernel.sev_snp", "SEV-SNP enabled by the host kernel", ONLY_SNP,
     _kernel_flag("sev_snp", Reason.KERNEL_NO_SNP), "cpu.snp"),
    ("psp.snp_init", "SNP firmware initialised", ONLY_SNP, check_snp_initialised, "cpu.snp"),
    ("psp.snp_api", "SNP firmware API >= 1.51", ONLY_SNP, check_snp_api, "psp.snp_init"),
    ("psp.rmp_init", "RMP initialised in firmware", ONLY_SNP, check_rmp_initialised,
     "psp.snp_init"),
    ("psp.tcb", "Reported TCB is the current one", INFO, check_tcb, "psp.snp_init"),
    ("psp.alias_check", "Memory alias check (AMD-SB-3015)", INFO, check_alias, "psp.snp_init"),
    ("kvm.sev_snp", "kvm_amd sev_snp parameter", ONLY_SNP,
     _kvm_param("sev_snp", Reason.KVM_SNP_OFF), "cpu.snp"),
    ("kvm.snp_policy", "SNP guest policies KVM accepts", INFO, check_snp_policy, "kvm.sev_snp"),
    ("libvirt.sev_snp", "libvirt offers launchSecurity sev-snp", ONLY_SNP, check_libvirt_snp,
     "cpu.snp"),
    ("firmware.snp", "SEV-SNP guest firmware (OVMF)", ONLY_SNP, check_snp_firmware, "cpu.snp"),
    ("cpu.cbit", "C-bit position", INFO, check_cbit, "cpu.sme"),
    ("guests.running", "Running SEV/SNP guests", INFO, check_running_guests, "cpu.vendor"),
    # Wherever the hook is installed, whatever the CPU: SEV-SNP domains rely on it.
    ("libvirt.hook", "libvirt runs the nfd-snp hook", INFO, check_hook_loaded, None),
)
# fmt: on


@dataclass(frozen=True)
class Cause:
    """A failed check that explains another failure: for any reason, or only for `reasons`,
    and (`if_root`) only while it is not itself explained by something else."""

    check: str
    reasons: Tuple[Reason, ...] = ()
    if_root: bool = False


# Failures that another failure explains: check -> (its reasons that can be such an echo,
# the failures that explain them). Each edge is a dependency in the kernel or libvirt:
# - the kernel clears sev/sev_es/sev_snp when SYSCFG or the RMP say no (amd.c
#   early_detect_mem_encrypt, bsp_determine_snp);
# - the kernel sets SYSCFG SNP_EN itself: at boot once the RMP and IOMMU are set up (up to
#   Linux 7.0), or when the SNP firmware initialises (snp_prepare, 7.1+);
# - SNP_INIT needs the RMP, and ccp skips it without host SNP (CC_ATTR_HOST_SEV_SNP);
# - a failed SNP_INIT stops the legacy SEV INIT after it (sev-dev.c
#   _sev_platform_init_locked returns early);
# - from Linux 6.16 kvm_amd initialises the firmware when it loads and turns sev, sev_es and
#   sev_snp off when that fails; KVM turns SEV-ES/SNP off without ES ASIDs
#   (arch/x86/kvm/svm/sev.c sev_hardware_setup);
# - libvirt offers SEV / sev-snp only when QEMU and KVM do (qemu_capabilities.c).
# A reason not listed is a cause of its own (a kernel without kvm_amd.sev_snp, firmware
# below API 1.51, a libvirt older than 10.5).
ROOT_CAUSES = {
    "kernel.sev": ((Reason.KERNEL_NO_SEV,), ("bios.mem_encrypt",)),
    "kernel.sev_es": ((Reason.KERNEL_NO_SEV_ES,), ("kernel.sev",)),
    "kernel.sev_snp": ((Reason.KERNEL_NO_SNP,), ("bios.rmp", "kernel.sev_es")),
    "bios.snp_en": ((Reason.BIOS_SNP_OFF,), ("bios.rmp", "kernel.sev_snp", "psp.snp_init")),
    "psp.sev_init": (
        (Reason.SEV_FIRMWARE_UNINIT,),
        (
            "kernel.sev",
            Cause("kvm.sev", (Reason.KVM_AMD_NOT_LOADED,)),
            "kvm.device",
            Cause("psp.snp_init", (Reason.SNP_NOT_INITIALISED, Reason.SNP_API_TOO_OLD), True),
        ),
    ),
    "psp.sev_es_init": (
        (Reason.SEV_ES_NOT_CONFIGURED, Reason.PSP_DEVICE_MISSING, Reason.PSP_COMMAND_FAILED),
        ("psp.sev_init", "psp.sev_status"),
    ),
    "psp.snp_init": (
        (Reason.SNP_NOT_INITIALISED, Reason.PSP_DEVICE_MISSING, Reason.PSP_COMMAND_FAILED),
        (
            "kernel.sev_snp",
            "bios.rmp",
            "psp.sev_status",
            Cause("kvm.sev_snp", (Reason.KVM_AMD_NOT_LOADED,)),
        ),
    ),
    "kvm.sev": (
        (Reason.KVM_SEV_OFF,),
        (
            "kernel.sev",
            "psp.sev_init",
            Cause("psp.snp_init", (Reason.SNP_NOT_INITIALISED, Reason.SNP_API_TOO_OLD), True),
        ),
    ),
    "kvm.sev_es": (
        (Reason.KVM_SEV_ES_OFF,),
        ("kvm.sev", "kernel.sev_es", "asid.sev_es", "asid.snp"),
    ),
    "kvm.sev_snp": (
        (Reason.KVM_SNP_OFF,),
        ("kvm.sev_es", "kernel.sev_snp", "psp.snp_init", "asid.snp"),
    ),
    "libvirt.sev": ((Reason.LIBVIRT_NO_SEV,), ("kvm.sev", "kernel.sev", "psp.sev_status")),
    "libvirt.sev_snp": ((Reason.LIBVIRT_NO_SNP,), ("libvirt.sev", "kvm.sev_snp", "kernel.sev_snp")),
}


def _causes(name: str) -> Tuple[Cause, ...]:
    _reasons, causes = ROOT_CAUSES.get(name, ((), ()))
    return tuple(Cause(c) if isinstance(c, str) else c for c in causes)


# Informational checks whose WARN concerns a guest type (shown with its verdict).
CONCERNS: Dict[str, Tuple[Guest, ...]] = {
    "psp.tcb": ONLY_SNP,
    "psp.alias_check": ONLY_SNP,
    "libvirt.hook": ONLY_SNP,
}


def build_tree(specs) -> Tuple[Check, ...]:
    """Nest the flat table into `Check` objects (children in table order)."""
    children: dict = {}
    for name, _title, _gates, _evaluate, parent in specs:
        if parent is not None and parent not in children:
            raise ProgrammingError(f"check {name}: parent {parent} is not declared before it")
        if name in children:
            raise ProgrammingError(f"check {name} is declared twice")
        children[name] = []
        children.setdefault(parent, [])
    for name in ROOT_CAUSES:
        unknown = [c for c in (name, *(c.check for c in _causes(name))) if c not in children]
        if unknown:
            raise ProgrammingError(f"ROOT_CAUSES names undeclared check {unknown[0]}")

    def make(spec) -> Check:
        name, title, gates, evaluate_, _parent = spec
        kids = tuple(make(s) for s in specs if s[4] == name)
        return Check(
            name,
            title,
            gates,
            evaluate_,
            kids,
            caused_by=tuple(c.check for c in _causes(name)),
            concerns=CONCERNS.get(name, gates),
        )

    return tuple(make(s) for s in specs if s[4] is None)


TREE: Tuple[Check, ...] = build_tree(CHECKS)


def all_checks() -> Iterator[Check]:
    for root in TREE:
        yield from root.walk()


# -- results --------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    check: Check
    depth: int
    parent: Optional[str]
    outcome: Outcome

    @property
    def text(self) -> str:
        """The detail as a person reads it: with the evidence or the root cause it names."""
        outcome = self.outcome
        if outcome.inferred_from is not None:
            return f"inferred from {outcome.inferred_from}; {outcome.detail}"
        if outcome.root_cause is not None:
            return f"{outcome.detail}: follows from {outcome.root_cause}"
        return outcome.detail

    @property
    def fix(self) -> Optional[str]:
        outcome = self.outcome
        if outcome.root_cause is not None:
            return f"Follows from {outcome.root_cause}: fix that first."
        if outcome.status in (Status.FAIL, Status.WARN, Status.UNKNOWN) and outcome.reason:
            return outcome.reason.fix
        return None


class Readiness(enum.Enum):
    YES = "yes"
    NO = "no"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Verdict:
    guest: Guest
    ready: Readiness
    blocking: Tuple[str, ...]  # root-cause failures when NO, unknown checks when UNKNOWN
    warnings: Tuple[str, ...] = ()  # WARN checks that concern this guest type


@dataclass(frozen=True)
class Report:
    facts: HostFacts
    results: Tuple[Result, ...]
    verdicts: Tuple[Verdict, ...]

    def verdict(self, guest: Guest) -> Verdict:
        return next(v for v in self.verdicts if v.guest is guest)


def _evaluate_tree(
    facts: HostFacts,
    checks,
    depth: int,
    parent: Optional[Check],
    skip: Optional[str],
    require_libvirt: bool,
):
    for check in checks:
        if skip is not None:
            outcome = skipped(skip)
        else:
            outcome = check.evaluate(facts)
            if require_libvirt and outcome.reason is Reason.NO_HOST_LIBVIRT:
                outcome = failed(Reason.LIBVIRT_REQUIRED, "no libvirt daemon socket on this host")
        yield Result(check, depth, parent.name if parent else None, outcome)
        child_skip = skip
        if child_skip is None and outcome.status is Status.FAIL:
            child_skip = f"{check.name} failed"
        elif child_skip is None and outcome.status is Status.SKIP:
            child_skip = f"{check.name} skipped"
        yield from _evaluate_tree(
            facts, check.children, depth + 1, check, child_skip, require_libvirt
        )


def _attribute_root_causes(results: Tuple[Result, ...]) -> Tuple[Result, ...]:
    """Mark failures that other failures explain with their root causes (ROOT_CAUSES)."""
    by_name = {r.check.name: r for r in results}

    def roots_of(name: str, seen: frozenset) -> Tuple[str, ...]:
        """The root causes of the failure of `name` (first the one to show); () when it is
        a cause of its own."""
        outcome = by_name[name].outcome
        if outcome.status is not Status.FAIL or outcome.reason not in ROOT_CAUSES[name][0]:
            return ()
        roots: list = []
        for cause in _causes(name):
            failure = by_name[cause.check].outcome
            if cause.check in seen or failure.status is not Status.FAIL:
                continue
            if cause.reasons and failure.reason not in cause.reasons:
                continue
            deeper = (
                roots_of(cause.check, seen | {cause.check}) if cause.check in ROOT_CAUSES else ()
            )
            if deeper and cause.if_root:
                continue
            roots += [c for c in deeper or (cause.check,) if c not in roots]
        return tuple(roots)

    out = []
    for r in results:
        name = r.check.name
        roots = roots_of(name, frozenset({name})) if name in ROOT_CAUSES else ()
        if roots:
            r = replace(r, outcome=replace(r.outcome, root_cause=roots[0], root_causes=roots))
        out.append(r)
    return tuple(out)


def verdicts(results: Tuple[Result, ...]) -> Tuple[Verdict, ...]:
    gates_of = {r.check.name: r.check.gates for r in results}
    out = []
    for guest in Guest:
        gating = [r for r in results if guest in r.check.gates]
        failures = [r for r in gating if r.outcome.status is Status.FAIL]
        # Root causes only. An echo stays when none of its causes gates this guest type
        # (SEV blocked by a failed SEV INIT that follows from SNP_INIT: the SEV verdict
        # must still name it); should echoes ever explain each other, every failure counts.
        roots = [
            r for r in failures if not any(guest in gates_of[c] for c in r.outcome.root_causes)
        ] or failures
        failed_ = tuple(r.check.name for r in roots)
        unknown = tuple(r.check.name for r in gating if r.outcome.status is Status.UNKNOWN)
        warnings = tuple(
            r.check.name
            for r in results
            if r.outcome.status is Status.WARN and guest in r.check.concerns
        )
        if failed_:
            out.append(Verdict(guest, Readiness.NO, failed_, warnings))
        elif unknown:
            out.append(Verdict(guest, Readiness.UNKNOWN, unknown, warnings))
        else:
            out.append(Verdict(guest, Readiness.YES, (), warnings))
    return tuple(out)


def evaluate(facts: HostFacts, *, require_libvirt: bool = False) -> Report:
    """The report for `facts`. `require_libvirt`: a node without host libvirt is not ready
    (for libvirt-only fleets), instead of skipping the libvirt checks (KubeVirt nodes)."""
    results = _attribute_root_causes(
        tuple(_evaluate_tree(facts, TREE, 0, None, None, require_libvirt))
    )
    return Report(facts, results, verdicts(results))
