"""The metrics textfile of every real and sample host: the one corpus that the metrics, alert
rule, promtool and dashboard tests compare with, so no query can name a series nfd-snp does
not write; and promtool, the real Prometheus's checker.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from typing import Dict, List, Tuple

from tests.conftest import REPO, SAMPLES, need, report_of

HOSTS = sorted((REPO / "tests" / "data" / "hosts").iterdir()) + sorted(
    p for p in SAMPLES.iterdir() if p.is_dir()
)
NOW, EXPIRY = 1.8e9, 1.8e9 + 600
# Labels Prometheus adds at scrape time, not the textfile.
TARGET_LABELS = ("instance", "job")

SELECTOR = re.compile(r"\b(nfd_snp_[a-z_]+)\b(?:\{([^}]*)\})?")
MATCHER = re.compile(r"""(\w+)\s*(=~|!~|!=|=)\s*(?:"([^"]*)"|'([^']*)')""")


def samples_of(text: str) -> dict:
    """{(name, ((label, value), ...)): value} through prometheus_client's own parser."""
    from prometheus_client import parser

    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in parser.text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels):
    return samples.get((name, tuple(sorted(labels.items()))))


@functools.lru_cache(maxsize=None)
def corpus() -> Tuple[tuple, ...]:
    """(host directory, report, textfile) of every host, rendered at NOW."""
    from nfd_snp import metrics

    out = []
    for root in HOSTS:
        report = report_of(root)
        out.append((root, report, metrics.render(report, NOW, EXPIRY)))
    return tuple(out)


@functools.lru_cache(maxsize=None)
def every_series() -> Dict[str, List[dict]]:
    """Every series the textfile has on some host: {name: [labels, ...]}."""
    found: Dict[str, List[dict]] = {}
    for _root, _report, text in corpus():
        for name, labels in samples_of(text):
            found.setdefault(name, []).append(dict(labels))
    return found


def unknown_selectors(text: str) -> List[tuple]:
    """The nfd_snp_* selectors in a PromQL text (or a template) that match no series the
    textfile has on any host: an unknown name, a label it never carries, or a value it never
    takes. [] when every selector could match."""
    series = every_series()
    problems = []
    for match in SELECTOR.finditer(text):
        name, matchers = match.group(1), match.group(2) or ""
        if name not in series:
            problems.append((name,))
            continue
        for label, op, dq, sq in MATCHER.findall(matchers):
            wanted = dq or sq
            if label in TARGET_LABELS:
                continue
            values = {s.get(label) for s in series[name]} - {None}
            if not values:
                problems.append((name, label))
            elif op == "=" and wanted not in values:
                problems.append((name, label, wanted))
            elif op == "=~" and not all(
                any(re.fullmatch(part, v) for v in values) for part in wanted.split("|")
            ):
                problems.append((name, label, wanted))
    return problems


def promtool(*args, stdin=None) -> subprocess.CompletedProcess:
    """Debian's promtool (package prometheus, installed by scripts/setup.sh --test)."""
    exe = shutil.which("promtool")
    need(exe is not None, "promtool is not installed (Debian: prometheus; scripts/setup.sh --test)")
    return subprocess.run([exe, *args], input=stdin, capture_output=True, text=True, timeout=300)


# -- promtool unit tests over the corpus ------------------------------------------------------


def selector(name: str, labels: dict) -> str:
    return name + "{" + ",".join(f"{k}={json.dumps(v)}" for k, v in sorted(labels.items())) + "}"


def _values(name: str, values: list) -> str:
    """promtool's expanding notation for one sample per minute of `values` (None: missing);
    the service's timestamps advance with the clock, as a running service's do."""
    if name == "nfd_snp_last_probe_timestamp_seconds":
        return f"0+60x{len(values) - 1}"
    if name == "nfd_snp_labels_expiry_timestamp_seconds":
        return f"600+60x{len(values) - 1}"
    runs, out = [], []
    for v in values:
        if runs and runs[-1][0] == v:
            runs[-1][1] += 1
        else:
            runs.append([v, 1])
    for v, n in runs:
        shown = "_" if v is None else repr(v)
        out.append(f"{shown}x{n - 1}" if n > 1 else shown)
    return " ".join(out)


def input_series(instance: str, timeline: list, minutes: int) -> list:
    """promtool input series of a node whose textfile is timeline[0] for a while, then
    timeline[1], ...: `minutes` samples in all, one a minute."""
    phases = [samples_of(text) for text in timeline]
    keys = sorted(set().union(*phases))
    per_phase = minutes // len(phases)
    out = []
    for name, labels in keys:
        values = [p.get((name, labels)) for p in phases for _ in range(per_phase)]
        out.append(
            {
                "series": selector(name, {**dict(labels), "instance": instance, "job": "node"}),
                "values": _values(name, values),
            }
        )
    return out


def promql_unit_test(tmp_path, series: list, cases: list, rule_files=()):
    """promtool's verdict on PromQL over `series`: each case (expr, minute, [(labels, value)])
    must give exactly those samples at that minute, with the alert rules of `rule_files`
    evaluated (their ALERTS series)."""
    unit = {
        "rule_files": [str(f) for f in rule_files],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "promql_expr_test": [
                    {
                        "expr": expr,
                        "eval_time": f"{minute}m",
                        "exp_samples": [
                            {"labels": selector("", labels), "value": value}
                            for labels, value in samples
                        ],
                    }
                    for expr, minute, samples in cases
                ],
            }
        ],
    }
    path = tmp_path / "promql.test.yaml"
    path.write_text(json.dumps(unit))  # JSON is YAML
    return promtool("test", "rules", str(path))
