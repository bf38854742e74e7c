"""The alert rules and the textfile on real Prometheus parts.

promtool (Debian's `prometheus` package) checks the rules, runs their unit tests in
deploy/prometheus/tests/ with Prometheus's own rule engine, evaluates them over the textfile
of every real and sample host, and lints each textfile. Debian's `prometheus-node-exporter`
serves what a real `nfd-snp run` writes through its textfile collector, scraped over
loopback (tests/test_node_exporter.py).
"""

from __future__ import annotations

import shutil

import pytest

from nfd_snp.checks import Guest, Status, asids_in_use
from tests.conftest import REPO
from tests.textfiles import (
    corpus,
    input_series,
    promql_unit_test,
    promtool,
    unknown_selectors,
)

yaml = pytest.importorskip("yaml")

PROMETHEUS = REPO / "deploy" / "prometheus"
RULES = PROMETHEUS / "nfd-snp-rules.yaml"
UNIT_TESTS = sorted((PROMETHEUS / "tests").glob("*.yaml"))
STEADY_MINUTES = 90  # longer than the longest `for:` (1h)
FIRING = 'count by (alertname, instance, guest) (ALERTS{alertstate="firing"})'


def _alerts():
    return [r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def test_promtool_checks_the_rules():
    proc = promtool("check", "rules", str(RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(_alerts())} rules found" in proc.stdout


@pytest.mark.parametrize("unit", UNIT_TESTS, ids=lambda p: p.name)
def test_rule_unit_tests_pass_in_prometheus(unit):
    proc = promtool("test", "rules", str(unit))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_promtool_would_catch_a_wrong_expectation(tmp_path):
    """The unit tests compare what fires, with its labels and annotations, exactly."""
    (unit,) = [u for u in UNIT_TESTS if u.name == "nfd-snp-rules.test.yaml"]
    text = unit.read_text()
    assert "Blocked by: bios.rmp, kvm.sev_snp." in text
    broken = tmp_path / "tests" / unit.name
    broken.parent.mkdir()
    broken.write_text(text.replace("Blocked by: bios.rmp, kvm.sev_snp.", "Blocked by: bios.rmp."))
    shutil.copy(RULES, tmp_path / RULES.name)
    proc = promtool("test", "rules", str(broken))
    assert proc.returncode != 0 and "NfdSnpLostSevSnp" in proc.stdout + proc.stderr


def test_unit_tests_make_every_alert_fire_and_stay_quiet():
    tests = [t for unit in UNIT_TESTS for t in yaml.safe_load(unit.read_text())["tests"]]
    fired, quiet = set(), set()
    for test in tests:
        for case in test.get("alert_rule_test", []):
            (fired if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert fired == set(_alerts()) and quiet == set(_alerts())


def test_unit_test_series_are_what_nfd_snp_writes():
    for unit in UNIT_TESTS:
        for test in yaml.safe_load(unit.read_text())["tests"]:
            for series in test["input_series"]:
                assert unknown_selectors(series["series"]) == [], (unit.name, series)


def test_the_series_check_would_catch_a_misnamed_series():
    assert unknown_selectors('nfd_snp_readyness{guest="sev-snp"}') == [("nfd_snp_readyness",)]
    assert unknown_selectors('nfd_snp_readiness{guest="snp"}') != []
    assert unknown_selectors('nfd_snp_blocked_by{check="bios.rmp",state="x"}') != []
    assert unknown_selectors('nfd_snp_blocked_by{check="bios.rmp",instance="n:9100"}') == []


# -- the rules over the textfile of every real and sample host ---------------------------------


def _expected(report) -> set:
    """(alertname, guest) that a node steadily in this state fires, from its report."""
    status = {r.check.name: r.outcome.status for r in report.results}
    out = set()
    if status["psp.tcb"] is Status.WARN:
        out.add(("NfdSnpTcbNotCommitted", ""))
    if status["libvirt.hook"] is Status.WARN:
        out.add(("NfdSnpHookNotLoaded", ""))
    for guest in Guest:
        capacity = report.facts.guest_asids(guest.value)
        used = asids_in_use(report.facts, guest)
        if capacity and capacity.count and used is not None and used > 0.9 * capacity.count:
            out.add(("NfdSnpAsidsNearlyFull", guest.value))
    return out


def test_rules_over_every_real_host_and_a_node_losing_snp(tmp_path):
    """Each host, steady for 90 minutes, fires exactly what its report says; a node going from
    genoa-snp-ready to milan-snp-off also fires NfdSnpLostSevSnp, and the reverse does not."""
    by_name = {root.name: (report, text) for root, report, text in corpus()}
    series, expected = [], set()
    for name, (report, text) in by_name.items():
        series += input_series(name, [text], STEADY_MINUTES)
        expected |= {(alert, name, guest) for alert, guest in _expected(report)}
    for first, then in (("genoa-snp-ready", "milan-snp-off"), ("milan-snp-off", "genoa-snp-ready")):
        instance = f"{first}-then-{then}"
        series += input_series(instance, [by_name[first][1], by_name[then][1]], STEADY_MINUTES)
        expected |= {(alert, instance, guest) for alert, guest in _expected(by_name[then][0])}
    expected.add(("NfdSnpLostSevSnp", "genoa-snp-ready-then-milan-snp-off", "sev-snp"))
    assert {a for a, _i, _g in expected} >= {
        "NfdSnpTcbNotCommitted",
        "NfdSnpAsidsNearlyFull",
        "NfdSnpLostSevSnp",
    }  # the corpus exercises them
    firing = [
        ({"alertname": a, "instance": i, **({"guest": g} if g else {})}, 1)
        for a, i, g in sorted(expected)
    ]
    proc = promql_unit_test(
        tmp_path, series, [(FIRING, STEADY_MINUTES - 1, firing)], rule_files=[RULES]
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]


@pytest.mark.parametrize("entry", corpus(), ids=lambda e: e[0].name)
def test_promtool_finds_nothing_to_lint_in_the_textfile(entry):
    _root, _report, text = entry
    proc = promtool("check", "metrics", stdin=text)
    assert proc.returncode == 0 and not (proc.stdout + proc.stderr).strip(), proc.stdout
