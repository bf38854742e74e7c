"""The readiness engine: a check's declaration, the tree, evaluation and root causes.

A check is one `Check(...)` keyword literal: name, title, the guest types it gates, its
parent, a pure function of the already-read `HostFacts`, a one-line description, the
failures that can explain its own (root-cause edges) and the guest types its WARN concerns.
The declarations live in the modules beside this one; this module knows none of them.

Evaluation walks the tree: a failed parent skips its children; an unknown parent does not,
so the report still says what else is known. A failure carries a typed `Reason`; the fix
shown comes from it. A failure that merely follows from another failure (KVM turns SNP off
because the firmware failed) names that root cause and is not itself counted as a blocker,
so the admin is sent to the cause, not its echo.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import Callable, Dict, Iterator, Optional, Tuple, Union

from nfd_snp.errors import ProgrammingError
from nfd_snp.model import HostFacts, Unreadable
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


# -- outcomes ----------------------------------------------------------------------------


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


def unknown(reason: Optional[Reason], detail: str) -> Outcome:
    return Outcome(Status.UNKNOWN, detail, reason)


def from_unreadable(unreadable: Optional[Unreadable], what: str = "not read") -> Outcome:
    """UNKNOWN when the source could not be read, FAIL when the failure is the answer."""
    if unreadable is None:
        return Outcome(Status.UNKNOWN, what)
    if unreadable.reason.unknown:
        return Outcome(Status.UNKNOWN, unreadable.detail, unreadable.reason)
    return Outcome(Status.FAIL, unreadable.detail, unreadable.reason)


# -- declarations ------------------------------------------------------------------------


@dataclass(frozen=True)
class Cause:
    """A failed check that explains another failure: for any reason, or only for `reasons`,
    (`if_root`) only while it is not itself explained by something else, and (`when`) only
    on hosts where the dependency holds (a kernel version that orders two steps)."""

    check: str
    reasons: Tuple[Reason, ...] = ()
    if_root: bool = False
    when: Optional[Callable[[HostFacts], bool]] = None


@dataclass(frozen=True, init=False)
class Check:
    """One readiness check, declared in one keyword literal (snphost's `Test`).

    - `name`: the anchor in docs/troubleshooting.md and the key in `check --json`;
    - `title`: the report's short label; `description`: one line on what it looks at,
      shown by `nfd-snp check -v`;
    - `gates`: the guest types that cannot run while it fails (`INFO`: none);
    - `parent`: the check it sits under (a failed parent skips it), declared before it;
    - `evaluate`: a pure function of the `HostFacts`, returning an `Outcome`;
    - `caused_by` and `reasons_echoing`: a failure with one of `reasons_echoing` may merely
      follow from these failed checks (names or `Cause`s): the report names them as its
      root causes, and the verdicts count them instead;
    - `concerns`: the guest types whose verdict shows its WARN (default: its gates; given
      for informational checks).

    Children are filled in by `build_tree`, in declaration order.
    """

    name: str
    title: str
    gates: Tuple[Guest, ...]
    evaluate: Callable[[HostFacts], Outcome]
    description: str
    parent: Optional[str]
    caused_by: Tuple[Cause, ...]
    reasons_echoing: Tuple[Reason, ...]
    concerns: Tuple[Guest, ...]
    children: Tuple["Check", ...]

    def __init__(
        self,
        *,
        name: str,
        title: str,
        gates: Tuple[Guest, ...],
        evaluate: Callable[[HostFacts], Outcome],
        description: str,
        parent: Optional[str] = None,
        caused_by: Tuple[Union[str, Cause], ...] = (),
        reasons_echoing: Tuple[Reason, ...] = (),
        concerns: Optional[Tuple[Guest, ...]] = None,
        children: Tuple["Check", ...] = (),
    ) -> None:
        causes = tuple(Cause(c) if isinstance(c, str) else c for c in caused_by)
        if bool(causes) != bool(reasons_echoing):
            raise ProgrammingError(f"check {name}: caused_by and reasons_echoing go together")
        if gates and concerns not in (None, tuple(gates)):
            raise ProgrammingError(f"check {name}: concerns is for informational checks")
        if "\n" in description or not description:
            raise ProgrammingError(f"check {name}: the description is one line")
        values = dict(
            name=name,
            title=title,
            gates=tuple(gates),
            evaluate=evaluate,
            description=description,
            parent=parent,
            caused_by=causes,
            reasons_echoing=tuple(reasons_echoing),
            concerns=tuple(gates if concerns is None else concerns),
            children=tuple(children),
        )
        for field, value in values.items():
            object.__setattr__(self, field, value)

    @property
    def guest(self) -> Optional[Guest]:
        """The lowest guest type gated (the `gates` field of `check --json`)."""
        return self.gates[0] if self.gates else None

    @property
    def scope(self) -> str:
        """What it gates, as its section in docs/troubleshooting.md begins."""
        if self.gates == ALL:
            return "gates all"
        if self.gates:
            return "gates " + ", ".join(g.label for g in self.gates)
        if self.concerns:
            return "informational; a WARN concerns " + ", ".join(g.label for g in self.concerns)
        return "informational"

    def walk(self) -> Iterator["Check"]:
        yield self
        for child in self.children:
            yield from child.walk()


def build_tree(declared: Tuple[Check, ...]) -> Tuple[Check, ...]:
    """The roots of the tree of `declared` checks, children in declaration order.

    Report order is the tree's depth-first order. A parent must be declared before its
    children; names are unique; root-cause edges name declared checks.
    """
    names: Dict[Optional[str], list] = {None: []}
    for check in declared:
        if check.name in names:
            raise ProgrammingError(f"check {check.name} is declared twice")
        if check.parent not in names:
            raise ProgrammingError(
                f"check {check.name}: parent {check.parent} is not declared before it"
            )
        names[check.parent].append(check.name)
        names[check.name] = []
    for check in declared:
        for cause in check.caused_by:
            if cause.check not in names:
                raise ProgrammingError(
                    f"check {check.name}: caused_by names undeclared {cause.check}"
                )
    by_name = {check.name: check for check in declared}

    def make(name: str) -> Check:
        return replace(by_name[name], children=tuple(make(child) for child in names[name]))

    return tuple(make(name) for name in names[None])


# -- results -----------------------------------------------------------------------------


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


# -- evaluation --------------------------------------------------------------------------


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


def _attribute_root_causes(results: Tuple[Result, ...], facts: HostFacts) -> Tuple[Result, ...]:
    """Mark failures that other failures explain with their root causes (`caused_by`)."""
    by_name = {r.check.name: r for r in results}

    def roots_of(name: str, seen: frozenset) -> Tuple[str, ...]:
        """The root causes of the failure of `name` (first the one to show); () when it is
        a cause of its own."""
        result = by_name[name]
        outcome = result.outcome
        if outcome.status is not Status.FAIL or outcome.reason not in result.check.reasons_echoing:
            return ()
        roots: list = []
        for cause in result.check.caused_by:
            failure = by_name[cause.check].outcome
            if cause.check in seen or failure.status is not Status.FAIL:
                continue
            if cause.reasons and failure.reason not in cause.reasons:
                continue
            if cause.when is not None and not cause.when(facts):
                continue
            deeper = roots_of(cause.check, seen | {cause.check})
            if deeper and cause.if_root:
                continue
            roots += [c for c in deeper or (cause.check,) if c not in roots]
        return tuple(roots)

    out = []
    for r in results:
        roots = roots_of(r.check.name, frozenset({r.check.name}))
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
        unknown_ = tuple(r.check.name for r in gating if r.outcome.status is Status.UNKNOWN)
        warnings = tuple(
            r.check.name
            for r in results
            if r.outcome.status is Status.WARN and guest in r.check.concerns
        )
        if failed_:
            out.append(Verdict(guest, Readiness.NO, failed_, warnings))
        elif unknown_:
            out.append(Verdict(guest, Readiness.UNKNOWN, unknown_, warnings))
        else:
            out.append(Verdict(guest, Readiness.YES, (), warnings))
    return tuple(out)


def evaluate_tree(
    facts: HostFacts, tree: Tuple[Check, ...], *, require_libvirt: bool = False
) -> Report:
    """The report of the checks of `tree` for `facts`."""
    results = _attribute_root_causes(
        tuple(_evaluate_tree(facts, tree, 0, None, None, require_libvirt)), facts
    )
    return Report(facts, results, verdicts(results))
