"""The Prometheus textfile: well-formed, named one way, the same numbers as the NFD labels
and features on every real and sample host, and the example alert rules in deploy/ ask only
for series the textfile really has."""

from __future__ import annotations

import re

import pytest

from nfd_snp import metrics, nfd
from nfd_snp.checks import Guest, Readiness, Status, evaluate
from tests.conftest import REPO, SAMPLES, probe_root
from tests.textfiles import EXPIRY, HOSTS, NOW, samples_of, unknown_selectors, value

pytest.importorskip("prometheus_client.parser")
yaml = pytest.importorskip("yaml")

RULES = REPO / "deploy" / "prometheus" / "nfd-snp-rules.yaml"


@pytest.fixture(scope="module", params=HOSTS, ids=[p.name for p in HOSTS])
def host(request):
    report = evaluate(probe_root(request.param))
    text = metrics.render(report, NOW, EXPIRY)
    return report, text, samples_of(text)


def test_every_family_is_a_documented_gauge_named_by_practice(host):
    _, text, samples = host
    names = {name for name, _ in samples}
    for name in names:
        assert re.fullmatch(r"nfd_snp_[a-z_]+", name)
        assert f"# HELP {name} " in text and f"# TYPE {name} gauge" in text
        assert not name.endswith("_total")  # counters only
    timestamps = [n for n in names if "timestamp" in n]
    assert all(n.endswith("_timestamp_seconds") for n in timestamps)
    for (_name, labels), _v in samples.items():
        keys = dict(labels)
        assert "kind" not in keys  # one name for the guest type: guest
        if "guest" in keys:
            assert keys["guest"] in {g.value for g in Guest}
    assert value(samples, "nfd_snp_last_probe_timestamp_seconds") == NOW
    assert value(samples, "nfd_snp_labels_expiry_timestamp_seconds") == EXPIRY


def test_readiness_is_the_enabled_label(host):
    report, _, samples = host
    labels = dict(nfd.publication(report).labels)
    for guest in Guest:
        states = {
            state: value(samples, "nfd_snp_readiness", guest=guest.value, state=state)
            for state in metrics.READINESS_STATES.values()
        }
        assert sorted(states.values()) == [0, 0, 1]  # a state set: exactly one is current
        ready = states["ready"] == 1
        assert ready == (labels.get(nfd.ENABLED[guest]) == "true")
        assert ready == (report.verdict(guest).ready is Readiness.YES)


def test_check_status_is_the_report(host):
    report, _, samples = host
    for result in report.results:
        current = [
            status
            for status in Status
            if value(
                samples,
                "nfd_snp_check_status",
                check=result.check.name,
                status=status.value.lower(),
            )
            == 1
        ]
        assert current == [result.outcome.status], result.check.name


def test_blocked_by_is_the_verdicts_causes_and_the_features(host):
    """One series per guest type and check that gates it, 1 exactly for the checks the
    verdict names, which are also the node's blocked-by features."""
    report, _, samples = host
    features = dict(nfd.publication(report).features)
    for verdict in report.verdicts:
        gating = [r.check.name for r in report.results if verdict.guest in r.check.gates]
        series = {
            check: value(samples, "nfd_snp_blocked_by", guest=verdict.guest.value, check=check)
            for check in gating
        }
        assert None not in series.values()
        assert {c for c, v in series.items() if v == 1} == set(verdict.blocking)
        prefix = f"{verdict.guest.value}.node.kubevirt.io/blocked-by."
        assert {k[len(prefix) :] for k in features if k.startswith(prefix)} == set(verdict.blocking)
    names = [n for n, _labels in samples if n == "nfd_snp_blocked_by"]
    assert len(names) < 3 * len(report.results)  # bounded by the fixed set of checks


def test_asids_are_the_features_and_the_checks(host):
    report, _, samples = host
    features = dict(nfd.publication(report).features)
    for guest in Guest:
        capacity = value(samples, "nfd_snp_asids_capacity", guest=guest.value)
        feature = features.get(f"{guest.value}.node.kubevirt.io/asids")
        assert capacity == (None if feature is None else int(feature))
    by_name = {r.check.name: r.outcome.detail for r in report.results}
    for check, guest in (("asid.sev_es", "sev-es"), ("asid.snp", "sev-snp")):
        used = value(samples, "nfd_snp_asids_used", guest=guest)
        if used is not None and f"{int(used)} in use" not in by_name[check]:
            # the check names use only when it could read the capacity too
            assert "in use" not in by_name[check], (check, by_name[check])


def test_firmware_info_is_the_snp_labels(host):
    report, _, samples = host
    labels = dict(nfd.publication(report).labels)
    info = [dict(lbls) for (name, lbls), _v in samples.items() if name == "nfd_snp_firmware_info"]
    if report.facts.psp.snp is None and report.facts.psp.sev is None:
        assert info == []
        return
    (firmware,) = info
    if nfd.ENABLED[Guest.SEV_SNP] in labels:
        for key in ("api-version", "build-id", "tcb-bootloader", "tcb-tee", "tcb-snp"):
            assert firmware[key.replace("-", "_")] == labels[nfd.SNP_NS + key]


def test_ciphertext_hiding_splits_use_by_the_running_guests():
    report = evaluate(probe_root(REPO / "tests/data/hosts/genoa-ciphertext-hiding-split-6.19"))
    samples = samples_of(metrics.render(report, NOW))
    snp = value(samples, "nfd_snp_asids_used", guest="sev-snp")
    es = value(samples, "nfd_snp_asids_used", guest="sev-es")
    assert snp == len(report.facts.guests.snp_pids) and snp > 0
    assert snp + es == report.facts.asids.sev_es_current
    assert value(samples, "nfd_snp_labels_expiry_timestamp_seconds") is None  # not given


# -- the example alert rules ----------------------------------------------------------------


@pytest.fixture(scope="module")
def rules():
    data = yaml.safe_load(RULES.read_text())
    assert list(data) == ["groups"]
    return [rule for group in data["groups"] for rule in group["rules"]]


def test_rules_are_complete_alerts(rules):
    names = {rule["alert"] for rule in rules}
    assert {
        "NfdSnpNotRefreshing",
        "NfdSnpLabelsExpiring",
        "NfdSnpLostSevSnp",
        "NfdSnpAsidsNearlyFull",
        "NfdSnpHookNotLoaded",
        "NfdSnpMetricsMissing",
        "NfdSnpTcbNotCommitted",
    } <= names
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert re.fullmatch(r"\d+[smhd]", rule.get("for", "0s"))
        assert rule["expr"].count("(") == rule["expr"].count(")")


def test_rules_name_series_the_textfile_has(rules):
    for rule in rules:
        for text in (rule["expr"], *rule["annotations"].values()):
            assert unknown_selectors(text) == [], rule["alert"]
        assert "nfd_snp_" in rule["expr"], rule["alert"]


def test_the_lost_snp_rule_tells_ready_from_not_ready(rules):
    """The rule's selector is 1 on an SNP-ready sample and 0 on one without SNP."""
    (rule,) = [r for r in rules if r["alert"] == "NfdSnpLostSevSnp"]
    assert 'nfd_snp_readiness{guest="sev-snp",state="ready"} == 0' in rule["expr"]
    for sample, expected in (("genoa-snp-ready", 1), ("milan-snp-off", 0)):
        samples = samples_of(metrics.render(evaluate(probe_root(SAMPLES / sample)), NOW))
        assert value(samples, "nfd_snp_readiness", guest="sev-snp", state="ready") == expected
