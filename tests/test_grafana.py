"""deploy/grafana: the fleet dashboard, in Grafana's classic dashboard JSON model
(grafana.com/docs/grafana/latest/dashboards/build-dashboards/view-dashboard-json-model).

One Prometheus data source variable and no hard-coded data source or instance; every query
parses as PromQL (promtool), asks only for series and labels nfd-snp writes, and over the
textfile of every real and sample host the readiness and root-cause panels say what the
hosts' reports say. docs/operations.md explains every panel.
"""

from __future__ import annotations

import collections
import json
import re

import pytest

from nfd_snp.checks import Guest, Readiness
from tests.conftest import REPO
from tests.textfiles import (
    TARGET_LABELS,
    corpus,
    every_series,
    input_series,
    promql_unit_test,
    promtool,
    unknown_selectors,
)

DASHBOARD = REPO / "deploy" / "grafana" / "nfd-snp-fleet.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Grafana's core panel plugins this dashboard may use.
PANEL_TYPES = {"row", "stat", "timeseries", "bargauge", "table"}
KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS |= {"bool", "offset"}


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _panels(dash: dict) -> list:
    out = []
    for panel in dash["panels"]:
        out.append(panel)
        out += panel.get("panels", [])  # a collapsed row keeps its panels inside
    return out


def _queries(dash: dict) -> list:
    return [(p, t) for p in _panels(dash) for t in p.get("targets", [])]


def _by_title(title: str) -> str:
    (expr,) = [t["expr"] for p, t in _queries(_dashboard()) if p["title"] == title]
    return expr


def metric_names(expr: str) -> set:
    """The metric names a PromQL expression selects: identifiers that are not functions,
    keywords, label names, durations or parts of numbers."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"' + r"|'(?:[^'\\]|\\.)*'", '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        before = text[match.start() - 1] if match.start() else " "
        if text[match.end() :].lstrip().startswith("(") or match.group() in KEYWORDS:
            continue
        if before.isdigit() or before == ".":  # 1e3, 5m
            continue
        names.add(match.group())
    return names


def grouping_labels(expr: str) -> set:
    found = re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", expr)
    return {label.strip() for group in found for label in group.split(",") if label.strip()}


def test_the_dashboard_is_a_grafana_dashboard():
    dash = _dashboard()
    assert dash["uid"] == "nfd-snp-fleet" and 8 <= len(dash["uid"]) <= 40
    assert dash["title"] and isinstance(dash["schemaVersion"], int)
    assert dash["time"] == {"from": "now-24h", "to": "now"}
    panels = _panels(dash)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    assert {p["type"] for p in panels} <= PANEL_TYPES
    boxes = []
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        for other in boxes:  # no two panels overlap
            assert not (
                pos["x"] < other["x"] + other["w"]
                and other["x"] < pos["x"] + pos["w"]
                and pos["y"] < other["y"] + other["h"]
                and other["y"] < pos["y"] + pos["h"]
            ), panel["title"]
        boxes.append(pos)
        if panel["type"] != "row":
            assert panel["title"] and panel["description"] and panel["targets"], panel["id"]
            refs = [t["refId"] for t in panel["targets"]]
            assert len(refs) == len(set(refs))


def test_one_datasource_variable_and_nothing_hard_coded():
    dash = _dashboard()
    (variable,) = dash["templating"]["list"]
    assert variable["type"] == "datasource" and variable["query"] == "prometheus"
    assert variable["name"] == "datasource"
    for panel in _panels(dash):
        if panel["type"] != "row":
            assert panel["datasource"] == DATASOURCE, panel["title"]
    for panel, target in _queries(dash):
        assert target.get("datasource", DATASOURCE) == DATASOURCE, panel["title"]
        assert "instance" not in re.sub(r"\b(by|without)\s*\([^)]*\)", "", target["expr"]), panel[
            "title"
        ]
        assert "$" not in target["expr"]  # no other variable
    uids = re.findall(r'"uid":\s*"([^"]*)"', DASHBOARD.read_text())
    assert set(uids) == {"nfd-snp-fleet", "${datasource}"}


def test_every_query_parses_as_promql(tmp_path):
    """promtool has no expression checker: each query becomes a recording rule, which
    `promtool check rules` parses."""
    queries = _queries(_dashboard())
    assert len(queries) >= 15
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"nfd_snp_dashboard:query_{i}", "expr": t["expr"]}
                    for i, (_p, t) in enumerate(queries)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(json.dumps(rules))
    proc = promtool("check", "rules", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(queries)} rules found" in proc.stdout
    rules["groups"][0]["rules"][0]["expr"] = "sum by (check (nfd_snp_blocked_by)"
    path.write_text(json.dumps(rules))
    assert promtool("check", "rules", str(path)).returncode != 0  # the check can fail


def test_every_query_asks_only_for_what_nfd_snp_writes():
    series = every_series()
    for panel, target in _queries(_dashboard()):
        expr = target["expr"]
        names = metric_names(expr)
        assert names and names <= set(series), (panel["title"], names - set(series))
        assert unknown_selectors(expr) == [], panel["title"]
        labels = set(TARGET_LABELS)
        for name in names:
            labels |= {label for s in series[name] for label in s}
        assert grouping_labels(expr) <= labels, (panel["title"], grouping_labels(expr) - labels)


def test_the_name_check_would_catch_a_misspelt_metric_or_label():
    assert metric_names("sum by (guest) (nfd_snp_redyness[5m]) > 1e3") == {"nfd_snp_redyness"}
    assert grouping_labels("count by (api_version, tcb_snpp) (x)") == {"api_version", "tcb_snpp"}
    assert metric_names('time() - nfd_snp_last_probe_timestamp_seconds{a="b c"} offset 5m') == {
        "nfd_snp_last_probe_timestamp_seconds"
    }


def test_every_panel_is_explained_in_the_operations_guide():
    guide = (REPO / "docs" / "operations.md").read_text()
    for panel in _panels(_dashboard()):
        assert f"**{panel['title']}**" in guide, panel["title"]


def test_readiness_and_root_cause_panels_over_the_real_hosts(tmp_path):
    """The fleet of every real and sample host: nodes ready per guest type, and SEV-SNP root
    causes ranked by nodes blocked, are the counts of the hosts' own verdicts."""
    hosts = corpus()
    series = []
    ready, causes, per_guest = collections.Counter(), collections.Counter(), collections.Counter()
    for root, report, text in hosts:
        series += input_series(root.name, [text], 10)
        for verdict in report.verdicts:
            ready[verdict.guest.value] += verdict.ready is Readiness.YES
            per_guest.update((verdict.guest.value, c) for c in verdict.blocking)
        causes.update(report.verdict(Guest.SEV_SNP).blocking)
    assert causes and len(ready) == 3
    cases = [
        (
            _by_title("Nodes ready per guest type"),
            9,
            [({"guest": g}, n) for g, n in sorted(ready.items())],
        ),
        (
            _by_title("SEV-SNP root causes, by nodes blocked"),
            9,
            [({"check": c}, n) for c, n in sorted(causes.items())],
        ),
        (
            _by_title("Root causes per guest type"),
            9,
            [({"guest": g, "check": c}, n) for (g, c), n in sorted(per_guest.items())],
        ),
        (_by_title("Nodes reporting"), 9, [({}, len(hosts))]),
    ]
    proc = promql_unit_test(tmp_path, series, cases)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]


@pytest.mark.parametrize("title", ["Nodes whose facts are stale", "Nodes whose metrics vanished"])
def test_freshness_panels_are_empty_for_a_fleet_that_refreshes(tmp_path, title):
    series = []
    for root, _report, text in corpus()[:3]:
        series += input_series(root.name, [text], 30)
    proc = promql_unit_test(tmp_path, series, [(_by_title(title), 29, [])])
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
