"""The readiness tree: which guest types can run on this host, and why not.

Checks follow snphost `ok` (REFERENCE §5) plus kvm_amd parameters, ASID capacity, libvirt
and firmware. Each check is data (name, title, the guest type it gates, a pure function of
the already-read `HostFacts`, children) and does no I/O. A failed parent skips its children;
an unknown parent does not, so the report still says what else is known. A failure carries a
typed `Reason`; the fix shown comes from it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Tuple

from nfd_snp.errors import ProgrammingError
from nfd_snp.model import FirmwareState, Generation, HostFacts, Unreadable, generation_of
from nfd_snp.reasons import Reason


class Status(enum.Enum):
    PASS = "PASS"
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


# A check gating SEV also gates SEV-ES and SEV-SNP (ES and SNP guests need SEV; SNP guests
# are ES guests and share their ASIDs). Informational checks (guest None) gate nothing.
GATED = {
    None: (),
    Guest.SEV: (Guest.SEV, Guest.SEV_ES, Guest.SEV_SNP),
    Guest.SEV_ES: (Guest.SEV_ES, Guest.SEV_SNP),
    Guest.SEV_SNP: (Guest.SEV_SNP,),
}

# Reasons that say a source could not be read (so the answer is unknown), as opposed to
# reasons that are themselves the answer (a missing /dev/sev is a real "no").
UNKNOWN_REASONS = frozenset(
    {
        Reason.CPUID_DEVICE_MISSING,
        Reason.MSR_DEVICE_MISSING,
        Reason.DEVICE_DENIED,
        Reason.DEVICE_ERROR,
        Reason.FILE_DENIED,
        Reason.FILE_GARBLED,
        Reason.NOT_IN_SNAPSHOT,
        Reason.LIBVIRT_PYTHON_MISSING,
        Reason.LIBVIRT_QUERY_FAILED,
        Reason.LIBVIRT_TIMEOUT,
        Reason.UNKNOWN_GENERATION,
    }
)


@dataclass(frozen=True)
class Outcome:
    status: Status
    detail: str
    reason: Optional[Reason] = None


def passed(detail: str) -> Outcome:
    return Outcome(Status.PASS, detail)


def failed(reason: Reason, detail: str) -> Outcome:
    return Outcome(Status.FAIL, detail, reason)


def skipped(detail: str) -> Outcome:
    return Outcome(Status.SKIP, detail)


def from_unreadable(unreadable: Optional[Unreadable], what: str = "not read") -> Outcome:
    """UNKNOWN when the source could not be read, FAIL when the failure is the answer."""
    if unreadable is None:
        return Outcome(Status.UNKNOWN, what)
    if unreadable.reason in UNKNOWN_REASONS:
        return Outcome(Status.UNKNOWN, unreadable.detail, unreadable.reason)
    return Outcome(Status.FAIL, unreadable.detail, unreadable.reason)


@dataclass(frozen=True)
class Check:
    name: str
    title: str
    guest: Optional[Guest]
    evaluate: Callable[[HostFacts], Outcome]
    children: Tuple["Check", ...] = ()

    def walk(self) -> Iterator["Check"]:
        yield self
        for child in self.children:
            yield from child.walk()


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
    family = f.cpu.family if f.cpu.family is not None else f.kernel.family
    model = f.cpu.model if f.cpu.model is not None else f.kernel.model
    if family is None:
        return from_unreadable(f.cpu.unreadable or f.kernel.unreadable)
    generation = generation_of(family, model)
    detail = f"family {family:#x} model {model:#x}" if model is not None else f"family {family:#x}"
    if generation is Generation.UNKNOWN:
        return Outcome(
            Status.UNKNOWN, f"{detail}: not a known EPYC generation", Reason.UNKNOWN_GENERATION
        )
    return passed(f"{detail} ({generation.value})")


def _leaf_bit(attr: str, bit: int, reason: Reason, kernel_flag: Optional[str] = None):
    """A CPUID 0x8000001F EAX bit; the kernel flag vouches for it when CPUID is unreadable."""

    def evaluate(f: HostFacts) -> Outcome:
        leaf = f.cpu.mem_encrypt
        where = f"CPUID 0x8000001F EAX[{bit}]"
        if leaf is None:
            if kernel_flag and f.kernel.has_flag(kernel_flag):
                return passed(f"implied by the kernel flag '{kernel_flag}' ({where} not read)")
            if f.cpu.unreadable is not None:
                return from_unreadable(f.cpu.unreadable)
            return failed(
                Reason.NO_MEM_ENCRYPT_LEAF,
                f"highest extended CPUID leaf is {f.cpu.max_extended_leaf or 0:#x}",
            )
        if getattr(leaf, attr):
            return passed(f"{where} = 1 (EAX {leaf.eax:#010x})")
        return failed(reason, f"{where} = 0 (EAX {leaf.eax:#010x})")

    return evaluate


def check_vmpl(f: HostFacts) -> Outcome:
    outcome = _leaf_bit("vmpl", 5, Reason.CPU_NO_VMPL)(f)
    if outcome.status is Status.PASS and f.cpu.mem_encrypt is not None:
        return passed(f"{f.cpu.mem_encrypt.vmpl_count} VMPLs (CPUID 0x8000001F EBX[15:12])")
    return outcome


def _syscfg_bit(attr: str, bit: int, reason: Reason, kernel_flags: Tuple[str, ...]):
    """A SYSCFG bit. The kernel clears these flags when the bit is off, so a flag implies it."""

    def evaluate(f: HostFacts) -> Outcome:
        value = getattr(f.msr, attr)
        where = f"SYSCFG[{bit}]"
        if value is None:
            flag = next((k for k in kernel_flags if f.kernel.has_flag(k)), None)
            if flag:
                return passed(f"implied by the kernel flag '{flag}' ({where} not read)")
            return from_unreadable(f.msr.unreadable)
        if value:
            return passed(f"{where} = 1 (SYSCFG {f.msr.syscfg:#x})")
        return failed(reason, f"{where} = 0 (SYSCFG {f.msr.syscfg:#x})")

    return evaluate


def check_rmp_reserved(f: HostFacts) -> Outcome:
    reserved = f.msr.rmp_reserved
    if reserved is None:
        if f.kernel.has_flag("sev_snp"):
            return passed("implied by the kernel flag 'sev_snp' (RMP MSRs not read)")
        return from_unreadable(f.msr.unreadable or f.msr.rmp_unreadable)
    span = f"RMP_BASE {f.msr.rmp_base:#x}, RMP_END {f.msr.rmp_end:#x}"
    return passed(span) if reserved else failed(Reason.RMP_NOT_RESERVED, span)


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


def check_sev_firmware(f: HostFacts) -> Outcome:
    status = f.psp.sev
    if status is None:
        return from_unreadable(f.psp.sev_unreadable)
    return passed(f"SEV API {status.api_version} build {status.build}, {status.guest_count} guests")


def _state_name(state: int) -> str:
    try:
        return FirmwareState(state).name
    except ValueError:
        return f"state {state}"


def check_sev_initialised(f: HostFacts) -> Outcome:
    status = f.psp.sev
    if status is None:
        return from_unreadable(f.psp.sev_unreadable)
    name = _state_name(status.state)
    if status.state == FirmwareState.UNINIT:
        return failed(Reason.SEV_FIRMWARE_UNINIT, f"platform state {name}")
    return passed(f"platform state {name}")


def check_sev_es_initialised(f: HostFacts) -> Outcome:
    status = f.psp.sev
    if status is None:
        return from_unreadable(f.psp.sev_unreadable)
    if status.config_es:
        return passed(f"CONFIG_ES set (flags {status.flags:#x})")
    return failed(Reason.SEV_ES_NOT_CONFIGURED, f"CONFIG_ES clear (flags {status.flags:#x})")


def check_snp_initialised(f: HostFacts) -> Outcome:
    status = f.psp.snp
    if status is None:
        return from_unreadable(f.psp.snp_unreadable)
    name = _state_name(status.state)
    if status.state == FirmwareState.UNINIT:
        return failed(Reason.SNP_NOT_INITIALISED, f"SNP platform state {name}")
    return passed(
        f"SNP platform state {name}, build {status.build_id}, {status.guest_count} guests"
    )


# Linux drivers/crypto/ccp/sev-dev.c refuses SNP firmware older than 1.51.
SNP_MIN_API = (1, 51)


def check_snp_api(f: HostFacts) -> Outcome:
    status = f.psp.snp
    if status is None:
        return from_unreadable(f.psp.snp_unreadable)
    version = f"SNP API {status.api_version}"
    if (status.api_major, status.api_minor) < SNP_MIN_API:
        return failed(Reason.SNP_API_TOO_OLD, f"{version} < 1.51")
    return passed(f"{version} >= 1.51")


def check_rmp_initialised(f: HostFacts) -> Outcome:
    status = f.psp.snp
    if status is None:
        return from_unreadable(f.psp.snp_unreadable)
    alias = "alias check complete" if status.alias_check_complete else "no alias-check flag"
    if status.rmp_initialized:
        return passed(f"RMP initialised ({alias})")
    return failed(Reason.RMP_NOT_INITIALISED, f"RMP not initialised ({alias})")


def check_tcb(f: HostFacts) -> Outcome:
    status = f.psp.snp
    if status is None:
        return from_unreadable(f.psp.snp_unreadable)
    cur, rep = status.current_tcb, status.reported_tcb
    detail = f"current bl={cur.bootloader} tee={cur.tee} snp={cur.snp} ucode={cur.microcode}" + (
        f" fmc={cur.fmc}" if cur.fmc is not None else ""
    )
    if cur.raw == rep.raw:
        return passed(f"{detail}; reported TCB is the same")
    return failed(Reason.TCB_NOT_COMMITTED, f"{detail}; reported TCB {rep.raw:#018x} differs")


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
            return failed(off, f"{where} does not exist (kernel built without SEV)")
        if param.enabled:
            return passed(f"{where} = {param.raw}")
        return failed(off, f"{where} = {param.raw}")

    return evaluate


def _asids(es: bool):
    def evaluate(f: HostFacts) -> Outcome:
        a = f.asids
        kind = "SEV-ES/SNP" if es else "SEV"
        current = a.sev_es_current if es else a.sev_current
        known = f.asid_capacity(es)
        if known is None:
            return from_unreadable(a.unreadable or f.cpu.unreadable, "no ASID information")
        capacity, source = known
        use = f", {current} in use" if current is not None else ""
        detail = f"{capacity} {kind} ASIDs ({source}){use}"
        if capacity > 0:
            return passed(detail)
        return failed(Reason.NO_ES_ASIDS if es else Reason.NO_SEV_ASIDS, detail)

    return evaluate


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
        return failed(
            Reason.LIBVIRT_NO_SNP,
            "no <launchSecurity> in domain capabilities (libvirt older than 8.0)",
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


def check_cbit(f: HostFacts) -> Outcome:
    known = f.cbit()
    if known is None:
        return from_unreadable(f.cpu.unreadable, "CPUID 0x8000001F not available")
    cbitpos, reduced, source = known
    detail = f"C-bit {cbitpos}, reduced phys bits {reduced}"
    return passed(detail + (" (from libvirt)" if source == "libvirt" else ""))


def check_running_guests(f: HostFacts) -> Outcome:
    g = f.guests
    if g.unreadable is not None:
        return from_unreadable(g.unreadable)
    detail = f"{len(g.snp_pids)} SEV-SNP and {len(g.sev_pids)} SEV/SEV-ES QEMU guests running"
    if f.asids.sev_current is not None or f.asids.sev_es_current is not None:
        detail += f" (misc.current: sev {f.asids.sev_current}, sev_es {f.asids.sev_es_current})"
    return passed(detail)


# -- the tree --------------------------------------------------------------------------

SEV, ES, SNP = Guest.SEV, Guest.SEV_ES, Guest.SEV_SNP

# (name, title, lowest guest type gated, evaluation, parent). Order is report order; a
# parent comes before its children. Names are the anchors in docs/troubleshooting.md.
# fmt: off
CHECKS = (
    ("cpu.vendor", "AMD CPU", SEV, check_vendor, None),
    ("cpu.generation", "EPYC generation", None, check_generation, "cpu.vendor"),
    ("cpu.sme", "Memory encryption in the CPU (SME)", SEV,
     _leaf_bit("sme", 0, Reason.CPU_NO_SME, "sme"), "cpu.vendor"),
    ("bios.mem_encrypt", "Memory encryption enabled (SYSCFG MEM_ENCRYPT)", SEV,
     _syscfg_bit("mem_encrypt", 23, Reason.BIOS_MEM_ENCRYPT_OFF, ("sme", "sev")), "cpu.sme"),
    ("cpu.sev", "SEV in the CPU", SEV, _leaf_bit("sev", 1, Reason.CPU_NO_SEV, "sev"), "cpu.sme"),
    ("kernel.sev", "SEV enabled by the host kernel", SEV,
     _kernel_flag("sev", Reason.KERNEL_NO_SEV), "cpu.sev"),
    ("psp.sev_status", "SEV firmware answers (/dev/sev)", SEV, check_sev_firmware, "cpu.sev"),
    ("psp.sev_init", "SEV firmware initialised", SEV, check_sev_initialised, "psp.sev_status"),
    ("kvm.device", "KVM (/dev/kvm)", SEV, check_kvm_device, "cpu.sev"),
    ("kvm.sev", "kvm_amd sev parameter", SEV, _kvm_param("sev", Reason.KVM_SEV_OFF), "cpu.sev"),
    ("asid.sev", "SEV ASIDs", SEV, _asids(es=False), "cpu.sev"),
    ("libvirt.sev", "libvirt reports SEV", SEV, check_libvirt_sev, "cpu.sev"),
    ("cpu.sev_es", "SEV-ES in the CPU", ES,
     _leaf_bit("sev_es", 3, Reason.CPU_NO_SEV_ES, "sev_es"), "cpu.sev"),
    ("kernel.sev_es", "SEV-ES enabled by the host kernel", ES,
     _kernel_flag("sev_es", Reason.KERNEL_NO_SEV_ES), "cpu.sev_es"),
    ("psp.sev_es_init", "SEV-ES initialised in firmware (CONFIG_ES)", ES,
     check_sev_es_initialised, "cpu.sev_es"),
    ("kvm.sev_es", "kvm_amd sev_es parameter", ES,
     _kvm_param("sev_es", Reason.KVM_SEV_ES_OFF), "cpu.sev_es"),
    ("asid.sev_es", "SEV-ES/SNP ASIDs", ES, _asids(es=True), "cpu.sev_es"),
    ("cpu.snp", "SEV-SNP in the CPU", SNP,
     _leaf_bit("snp", 4, Reason.CPU_NO_SNP, "sev_snp"), "cpu.sev_es"),
    ("cpu.vmpl", "VMPLs in the CPU", SNP, check_vmpl, "cpu.snp"),
    ("bios.snp_en", "SNP enabled (SYSCFG SNP_EN)", SNP,
     _syscfg_bit("snp_en", 24, Reason.BIOS_SNP_OFF, ("sev_snp",)), "cpu.snp"),
    ("bios.rmp", "RMP table reserved (RMP_BASE/RMP_END)", SNP, check_rmp_reserved, "cpu.snp"),
    ("kernel.sev_snp", "SEV-SNP enabled by the host kernel", SNP,
     _kernel_flag("sev_snp", Reason.KERNEL_NO_SNP), "cpu.snp"),
    ("psp.snp_init", "SNP firmware initialised", SNP, check_snp_initialised, "cpu.snp"),
    ("psp.snp_api", "SNP firmware API >= 1.51", SNP, check_snp_api, "psp.snp_init"),
    ("psp.rmp_init", "RMP initialised in firmware", SNP, check_rmp_initialised, "psp.snp_init"),
    ("psp.tcb", "TCB committed (current == reported)", None, check_tcb, "psp.snp_init"),
    ("kvm.sev_snp", "kvm_amd sev_snp parameter", SNP,
     _kvm_param("sev_snp", Reason.KVM_SNP_OFF), "cpu.snp"),
    ("libvirt.sev_snp", "libvirt offers launchSecurity sev-snp", SNP, check_libvirt_snp, "cpu.snp"),
    ("firmware.snp", "SEV-SNP guest firmware (OVMF)", SNP, check_snp_firmware, "cpu.snp"),
    ("cpu.cbit", "C-bit position", None, check_cbit, "cpu.sme"),
    ("guests.running", "Running SEV/SNP guests", None, check_running_guests, "cpu.vendor"),
)
# fmt: on


def build_tree(specs) -> Tuple[Check, ...]:
    """Nest the flat table into `Check` objects (children in table order)."""
    children: dict = {}
    for name, _title, _gate, _evaluate, parent in specs:
        if parent is not None and parent not in children:
            raise ProgrammingError(f"check {name}: parent {parent} is not declared before it")
        if name in children:
            raise ProgrammingError(f"check {name} is declared twice")
        children[name] = []
        children.setdefault(parent, [])

    def make(spec) -> Check:
        name, title, gate, evaluate_, _parent = spec
        kids = tuple(make(s) for s in specs if s[4] == name)
        return Check(name, title, gate, evaluate_, kids)

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
    def fix(self) -> Optional[str]:
        if self.outcome.status in (Status.FAIL, Status.UNKNOWN) and self.outcome.reason:
            return self.outcome.reason.fix
        return None


class Readiness(enum.Enum):
    YES = "yes"
    NO = "no"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Verdict:
    guest: Guest
    ready: Readiness
    blocking: Tuple[str, ...]  # failed checks when NO, unknown checks when UNKNOWN


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


def verdicts(results: Tuple[Result, ...]) -> Tuple[Verdict, ...]:
    out = []
    for guest in Guest:
        gating = [r for r in results if guest in GATED[r.check.guest]]
        failed_ = tuple(r.check.name for r in gating if r.outcome.status is Status.FAIL)
        unknown = tuple(r.check.name for r in gating if r.outcome.status is Status.UNKNOWN)
        if failed_:
            out.append(Verdict(guest, Readiness.NO, failed_))
        elif unknown:
            out.append(Verdict(guest, Readiness.UNKNOWN, unknown))
        else:
            out.append(Verdict(guest, Readiness.YES, ()))
    return tuple(out)


def evaluate(facts: HostFacts, *, require_libvirt: bool = False) -> Report:
    """The report for `facts`. `require_libvirt`: a node without host libvirt is not ready
    (for libvirt-only fleets), instead of skipping the libvirt checks (KubeVirt nodes)."""
    results = tuple(_evaluate_tree(facts, TREE, 0, None, None, require_libvirt))
    return Report(facts, results, verdicts(results))
