"""Views of a readiness `Report`: an aligned table, failures only, and JSON.

The JSON layout is documented in docs/check-json.md and versioned by `schema`.
"""

from __future__ import annotations

import json
from typing import List

import click

from nfd_snp import __version__
from nfd_snp.checks import Readiness, Report, Status
from nfd_snp.errors import printable
from nfd_snp.model import to_jsonable

JSON_SCHEMA = "nfd-snp.check/v2"
TROUBLESHOOTING = "docs/troubleshooting.md"

STATUS_COLOURS = {
    Status.PASS: "green",
    Status.WARN: "magenta",
    Status.FAIL: "red",
    Status.SKIP: "bright_black",
    Status.UNKNOWN: "yellow",
}
READY_TEXT = {
    Readiness.YES: ("ready", "green"),
    Readiness.NO: ("not ready", "red"),
    Readiness.UNKNOWN: ("unknown", "yellow"),
}


def as_json(report: Report) -> dict:
    facts = report.facts
    return {
        "schema": JSON_SCHEMA,
        "version": __version__,
        "host_root": facts.root,
        "snapshot": facts.snapshot,
        "checks": [
            {
                "name": r.check.name,
                "title": r.check.title,
                "parent": r.parent,
                "depth": r.depth,
                "gates": r.check.guest.value if r.check.guest else None,
                "gated": [g.value for g in r.check.gates],
                "status": r.outcome.status.value,
                "detail": r.outcome.detail,
                "inferred_from": r.outcome.inferred_from,
                "root_cause": r.outcome.root_cause,
                "root_causes": list(r.outcome.root_causes),
                "reason": r.outcome.reason.code if r.outcome.reason else None,
                "fix": r.fix,
            }
            for r in report.results
        ],
        "verdicts": {
            v.guest.value: {
                "ready": v.ready.value,
                "blocking": list(v.blocking),
                "warnings": list(v.warnings),
            }
            for v in report.verdicts
        },
        "facts": to_jsonable(facts),
    }


def _blocker(name: str, roots: dict) -> str:
    """A check blocking a verdict, with the root cause it follows from when it stays in the
    verdict because that cause does not gate the guest type (SEV blocked by a failed SEV
    INIT that follows from SNP_INIT): so the line and the check's own detail agree."""
    causes = roots.get(name) or ()
    return f"{name}, which follows from {', '.join(causes)}" if causes else name


def render_json(report: Report) -> str:
    return json.dumps(as_json(report), indent=2, sort_keys=False) + "\n"


def _header(report: Report) -> List[str]:
    f = report.facts
    where = f"snapshot {f.root}" if f.snapshot else f"host {f.root}"
    cpu = f.kernel.model_name or f.cpu.vendor or "unknown CPU"
    kernel = f.kernel.release or "unknown"
    # Host strings (a snapshot's CPU model name, ...) reach the terminal escaped.
    return [printable(f"nfd-snp check: {where}"), printable(f"CPU: {cpu}; kernel {kernel}"), ""]


def _collapse_skips(results):
    """Rows for the table: a run of checks skipped under one failed check becomes one row."""
    rows = []
    for r in results:
        prev = rows[-1] if rows else None
        if (
            r.outcome.status is Status.SKIP
            and prev is not None
            and prev[0].outcome.status is Status.SKIP
            and prev[0].outcome.detail == r.outcome.detail
            and r.depth >= prev[0].depth
        ):
            prev[1].append(r)
        else:
            rows.append((r, [r]))
    return rows


SAMPLE_HINT = (
    "To see the full report of an SEV-SNP-ready node: nfd-snp check --sample genoa-snp-ready"
)


def render_table(
    report: Report, *, failures_only: bool = False, width: int = 0, describe: bool = False
) -> str:
    """Human report. Styled with ANSI; click.echo strips the styles when not on a TTY.
    `describe` (`check -v`) adds each check's one-line description under its detail."""
    import shutil  # table-only imports stay off the --json path
    import textwrap

    width = width or min(shutil.get_terminal_size((120, 24)).columns, 160)
    results = [
        r
        for r in report.results
        if not failures_only or r.outcome.status in (Status.FAIL, Status.WARN, Status.UNKNOWN)
    ]
    title_width = max((len(r.check.title) + 2 * r.depth for r in results), default=10)
    title_width = min(title_width, 60)
    # Side by side when the detail column gets 40 characters; stacked (detail and fix under
    # the title) on narrower terminals, so nothing wraps into the next column.
    stacked = width - (8 + title_width + 2) < 40
    lines = _header(report)
    for r, group in _collapse_skips(results):
        status = r.outcome.status
        indent = "" if failures_only else "  " * r.depth
        text = r.check.title
        detail_text = printable(r.text)
        if len(group) > 1:
            text = f"{len(group)} dependent checks"
            detail_text = f"{detail_text}: " + ", ".join(g.check.name for g in group)
        pad = " " * (8 + len(indent) + 2 if stacked else 8 + title_width + 2)
        text_width = max(width - len(pad) - 1, 30)
        detail = textwrap.wrap(detail_text, text_width) or [""]
        tag = click.style(
            status.value.ljust(7), fg=STATUS_COLOURS[status], bold=status is Status.FAIL
        )
        if stacked:
            lines.append(f"{tag} {indent}{text}")
            lines.extend(pad + part for part in detail)
        else:
            lines.append(f"{tag} {(indent + text).ljust(title_width)}  {detail[0]}")
            lines.extend(pad + more for more in detail[1:])
        if describe and len(group) == 1:
            about = textwrap.wrap(r.check.description, text_width, break_on_hyphens=False)
            lines.extend(pad + click.style(part, fg="bright_black") for part in about)
        if r.fix:
            fix_text = printable(f"fix: {r.fix} [{TROUBLESHOOTING}#{r.check.name}]")
            fix = textwrap.wrap(fix_text, text_width)
            lines.extend(pad + click.style(part, fg="cyan") for part in fix)
    if failures_only and not results:
        lines.append("no failed, warning or unknown checks")
    lines.append("")
    roots = {r.check.name: r.outcome.root_causes for r in report.results}
    for v in report.verdicts:
        text, colour = READY_TEXT[v.ready]
        line = f"{v.guest.label.ljust(8)} {text}"
        if v.blocking:
            kind = "blocked by" if v.ready is Readiness.NO else "unknown because of"
            line += f" ({kind}: {', '.join(_blocker(name, roots) for name in v.blocking)})"
        if v.warnings:
            line += f" (warnings: {', '.join(v.warnings)})"
        wrapped = textwrap.wrap(line, max(width - 1, 40), subsequent_indent=" " * 9)
        wrapped[0] = wrapped[0].replace(text, click.style(text, fg=colour, bold=True), 1)
        lines.extend(wrapped)
    # A live host whose CPU (or hypervisor) offers no SEV at all: show what ready looks like.
    if not report.facts.snapshot and any(b.startswith("cpu.") for b in report.verdicts[0].blocking):
        lines += ["", SAMPLE_HINT]
    return "\n".join(lines) + "\n"
