"""`nfd-snp fleet` over a cluster of mixed nodes.

The cluster is built from the real `nfd-snp features` of every bundled sample and real-host
snapshot: each feature file is read as nfd-worker reads it (tests/nfdlocal.py), its labels
become a Node's labels and its lines a NodeFeature as nfd-worker writes it (validated against
NFD's CRD schema), beside nodes that run no nfd-snp. What `fleet` says of each node must be
that node's own `nfd-snp check` verdicts.
"""

from __future__ import annotations

import collections
import datetime
import json
import subprocess

import pytest

from nfd_snp import fleet, nfd
from nfd_snp.checks import Guest, Readiness
from nfd_snp.cli import cli
from tests import nfdlocal
from tests.conftest import NFD_SNP, REPO, SAMPLES, cli_runner, report_of
from tests.test_nfd_rules import _crd_schema, _strict

yaml = pytest.importorskip("yaml")
jsonschema = pytest.importorskip("jsonschema")

HOSTS = sorted(SAMPLES.iterdir()) + sorted((REPO / "tests" / "data" / "hosts").iterdir())
NOW = datetime.datetime.now(datetime.timezone.utc)
NOT_ROOT = {"sev_platform_status": {"errno": 13}, "snp_platform_status": {"errno": 13}}
GPU_NODE = "genoa-h100-vfio-kubevirt"  # the one snapshot whose GPU an SNP guest can take
NO_NFD_SNP = ("worker-no-nfd-snp", "control-plane-0")  # the second has no NodeFeature at all


def _features_of(root):
    """(labels, features) of the real `nfd-snp features` for a snapshot, as NFD reads them."""
    result = cli_runner().invoke(cli, ["features", "--host-root", str(root), "--output", "-"])
    assert result.exit_code == 0, result.output
    return nfdlocal.parse_file(result.stdout, NOW)


def _node(name, labels):
    base = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {**base, **labels}},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }


def _nodefeature(name, labels, features):
    """The NodeFeature nfd-worker writes for a node (local source: local.label, local.feature)."""
    attributes = {"system.name": {"elements": {"nodename": name}}}
    if labels or features:
        attributes["local.label"] = {"elements": labels}
        attributes["local.feature"] = {"elements": features}
    return {
        "apiVersion": "nfd.k8s-sigs.io/v1alpha1",
        "kind": "NodeFeature",
        "metadata": {
            "name": name,
            "namespace": "node-feature-discovery",
            "labels": {fleet.NODE_NAME_LABEL: name},
        },
        "spec": {"features": {"attributes": attributes}, "labels": labels},
    }


def _list(items):
    return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items}


def build_cluster(roots, extra_labels=None):
    """(nodes JSON, nodefeatures JSON, {name: report}) of a cluster of these snapshots."""
    nodes, nodefeatures, reports = [], [], {}
    for root in roots:
        labels, features = _features_of(root)
        labels = {**labels, **(extra_labels or {}).get(root.name, {})}
        nodes.append(_node(root.name, labels))
        nodefeatures.append(_nodefeature(root.name, labels, features))
        reports[root.name] = report_of(root)
    nodes += [_node(name, {}) for name in NO_NFD_SNP]
    nodefeatures.append(_nodefeature(NO_NFD_SNP[0], {}, {}))
    return json.dumps(_list(nodes)), json.dumps(_list(nodefeatures)), reports


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    nodes, features, reports = build_cluster(HOSTS)
    directory = tmp_path_factory.mktemp("cluster")
    (directory / "nodes.json").write_text(nodes)
    (directory / "nodefeatures.json").write_text(features)
    return directory / "nodes.json", directory / "nodefeatures.json", reports


def _run(*args, stdin=None):
    return cli_runner().invoke(cli, ["fleet", *map(str, args)], input=stdin)


def _json(*args):
    result = _run(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


STATE = {Readiness.YES: "ready", Readiness.NO: "not_ready", Readiness.UNKNOWN: "unknown"}


def test_the_test_nodefeatures_are_what_the_api_server_accepts(cluster, shared_dir):
    schema = _strict(_crd_schema(shared_dir, "nodefeatures.nfd.k8s-sigs.io"))
    for item in json.loads(cluster[1].read_text())["items"]:
        jsonschema.validate(item, schema)


def test_each_row_is_the_nodes_own_verdicts(cluster):
    nodes, features, reports = cluster
    out = _json("--nodes", nodes, "--nodefeatures", features)
    assert out["schema"] == fleet.JSON_SCHEMA and out["nodefeatures"] is True
    rows = {n["name"]: n for n in out["nodes"]}
    assert list(rows) == [*reports, *NO_NFD_SNP]  # the input's order
    for name, report in reports.items():
        labels = dict(nfd.publication(report).labels)
        for verdict in report.verdicts:
            row = rows[name][verdict.guest.value]
            assert row["state"] == STATE[verdict.ready], (name, verdict)
            assert row["blocked_by"] == sorted(verdict.blocking), (name, verdict)
        firmware = {k[len(nfd.SNP_NS) :]: v for k, v in labels.items() if "tcb-" in k}
        for key in ("api-version", "build-id"):
            if nfd.SNP_NS + key in labels:
                firmware[key] = labels[nfd.SNP_NS + key]
        assert rows[name]["firmware"] == firmware
        assert rows[name]["gpu_passthrough"] == ("true" if name == GPU_NODE else None)
    for name in NO_NFD_SNP:
        assert {rows[name][g.value]["state"] for g in Guest} == {"no_data"}


def test_counts_and_root_causes_ranked(cluster):
    nodes, features, reports = cluster
    out = _json("--nodes", nodes, "--nodefeatures", features)
    for guest in Guest:
        states = collections.Counter(STATE[r.verdict(guest).ready] for r in reports.values())
        states["no_data"] = len(NO_NFD_SNP)
        assert out["counts"][guest.value] == {s: states[s] for s in out["counts"][guest.value]}
    blocking = {g: collections.Counter() for g in Guest}
    for report in reports.values():
        for verdict in report.verdicts:
            blocking[verdict.guest].update(verdict.blocking)
    causes = out["causes"]
    assert {c["check"] for c in causes} == set().union(*blocking.values())
    for cause in causes:
        for guest in Guest:
            assert cause["nodes"][guest.value] == blocking[guest][cause["check"]]
    snp = [c["nodes"]["sev-snp"] for c in causes]
    assert snp == sorted(snp, reverse=True) and snp[0] == max(blocking[Guest.SEV_SNP].values())


def test_text_from_stdin_as_an_admin_runs_it(cluster):
    """`kubectl get nodes -o json | nfd-snp fleet --nodes - --nodefeatures FILE`, the real
    command."""
    nodes, features, reports = cluster
    proc = subprocess.run(
        [*NFD_SNP, "fleet", "--nodes", "-", "--nodefeatures", str(features)],
        input=nodes.read_bytes(),
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 0 and proc.stderr == b"", proc.stderr
    text = proc.stdout.decode()
    head, counts, causes = text.split("\n\n")
    header, *rows = head.splitlines()
    assert header.split()[:4] == ["NODE", "SEV", "SEV-ES", "SEV-SNP"]
    assert len(rows) == len(reports) + len(NO_NFD_SNP)
    row = next(r for r in rows if r.startswith("milan-snp-off "))
    assert row.split()[1:5] == ["ready", "ready", "not", "ready"]
    assert row.endswith("sev-snp: bios.rmp, firmware.snp, kvm.sev_snp")
    row = next(r for r in rows if r.startswith("genoa-snp-ready "))
    assert "1.55" in row and "bl=9 tee=0 snp=23 ucode=84" in row
    assert next(r for r in rows if r.startswith("intel ")).endswith(
        "sev, sev-es, sev-snp: cpu.vendor"
    )
    assert next(r for r in rows if r.startswith(NO_NFD_SNP[1])).split()[1:4] == ["no", "data", "no"]
    assert counts.startswith(f"{len(rows)} nodes\n")
    ready = sum(r.verdict(Guest.SEV_SNP).ready is Readiness.YES for r in reports.values())
    assert f"SEV-SNP  {ready} " in counts
    title, header, first, *_ = causes.splitlines()
    assert title.startswith("Root causes, by nodes blocked")
    top = _json("--nodes", nodes, "--nodefeatures", features)["causes"][0]
    assert first.split()[0] == top["check"] and "WHAT" in header


def test_nodes_only_cannot_tell_not_ready_from_no_nfd_snp(cluster):
    nodes, _features, reports = cluster
    out = _json("--nodes", nodes)
    assert out["nodefeatures"] is False and out["causes"] == []
    for row in out["nodes"]:
        report = reports.get(row["name"])
        for guest in Guest:
            ready = report is not None and report.verdict(guest).ready is Readiness.YES
            assert row[guest.value] == {"state": "ready" if ready else "no_label", "blocked_by": []}
    text = _run("--nodes", nodes).stdout
    assert "no label: not ready, or no nfd-snp on the node; with --nodefeatures" in text
    assert "Root causes" not in text


def test_undecided_checks_of_a_node_that_is_not_root(snapshot, tmp_path):
    root = snapshot(base="genoa-snp-ready", capture=NOT_ROOT)
    nodes, features, reports = build_cluster([root])
    (tmp_path / "n.json").write_text(nodes)
    (tmp_path / "f.json").write_text(features)
    out = _json("--nodes", tmp_path / "n.json", "--nodefeatures", tmp_path / "f.json")
    verdict = reports[root.name].verdict(Guest.SEV_SNP)
    assert out["nodes"][0]["sev-snp"] == {
        "state": "unknown",
        "blocked_by": sorted(verdict.blocking),
    }
    text = _run("--nodes", tmp_path / "n.json", "--nodefeatures", tmp_path / "f.json").stdout
    assert "sev-snp undecided: psp.rmp_init, psp.sev_es_init" in text
    assert "unknown" in text.splitlines()[1]


def test_nodefeatures_are_merged_per_node_and_unlabelled_ones_skipped(tmp_path):
    ns = nfd.namespace(Guest.SEV_SNP) + nfd.BLOCKED_BY
    first = _nodefeature("n1", {}, {ns + "bios.rmp": "fail"})
    second = _nodefeature("n1-extra", {}, {ns + "kvm.sev_snp": "fail"})
    second["metadata"]["labels"][fleet.NODE_NAME_LABEL] = "n1"
    stray = _nodefeature("n2", {}, {ns + "cpu.snp": "fail"})
    del stray["metadata"]["labels"]  # nfd-master ignores it: no node-name label
    (tmp_path / "n.json").write_text(json.dumps(_list([_node("n1", {}), _node("n2", {})])))
    (tmp_path / "f.json").write_text(json.dumps(_list([first, second, stray])))
    out = _json("--nodes", tmp_path / "n.json", "--nodefeatures", tmp_path / "f.json")
    assert out["nodes"][0]["sev-snp"] == {
        "state": "not_ready",
        "blocked_by": ["bios.rmp", "kvm.sev_snp"],
    }
    assert out["nodes"][1]["sev-snp"]["state"] == "no_data"


def test_a_single_node_object_and_an_empty_cluster(tmp_path):
    (tmp_path / "one.json").write_text(json.dumps(_node("solo", {nfd.ENABLED[Guest.SEV]: "true"})))
    out = _json("--nodes", tmp_path / "one.json")
    assert [n["name"] for n in out["nodes"]] == ["solo"] and out["nodes"][0]["sev"][
        "state"
    ] == "ready"
    result = _run("--nodes", "-", stdin=json.dumps(_list([])))
    assert result.exit_code == 0 and result.stdout == "no nodes\n"


def test_names_reach_the_terminal_escaped(tmp_path):
    evil = "node\x1b[2J\u202e-1"
    ns = nfd.namespace(Guest.SEV_SNP) + nfd.BLOCKED_BY
    (tmp_path / "n.json").write_text(json.dumps(_list([_node(evil, {})])))
    (tmp_path / "f.json").write_text(
        json.dumps(_list([_nodefeature(evil, {}, {ns + "bios\x07.rmp": "fail"})]))
    )
    result = _run("--nodes", tmp_path / "n.json", "--nodefeatures", tmp_path / "f.json")
    assert result.exit_code == 0
    assert "\x1b" not in result.stdout and "\u202e" not in result.stdout
    assert "\x07" not in result.stdout
    assert "node\\x1b[2J\\u202e-1" in result.stdout and "bios\\x07.rmp" in result.stdout


NODE = _node("n1", {})


@pytest.mark.parametrize(
    "nodes, nodefeatures, message",
    [
        (b"{", None, "nodes.json: not valid JSON (Expecting property name"),
        (b"\xff\xfe", None, "nodes.json: not UTF-8 text"),
        (b"[" * 100000 + b"]" * 100000, None, "nodes.json: not valid JSON"),
        (b"[]", None, "nodes.json: not a list of Nodes (kubectl get nodes -o json)"),
        (json.dumps({"kind": "Pod"}), None, "nodes.json: not a list of Nodes"),
        (
            json.dumps(_list([{"kind": "Pod", "metadata": {"name": "p"}}])),
            None,
            "items[0] is a Pod",
        ),
        (json.dumps(_list([1])), None, "nodes.json: items[0] is not an object"),
        (json.dumps(_list([{"metadata": {}}])), None, "items[0].metadata.name is missing"),
        (
            json.dumps(_list([{"metadata": {"name": "n", "labels": {"a": 1}}}])),
            None,
            "nodes.json: items[0].metadata.labels is not a map of strings",
        ),
        (json.dumps(_list([NODE, NODE])), None, "nodes.json: node n1 appears twice"),
        (
            json.dumps(_list([NODE])),
            json.dumps(_list([{**_nodefeature("n1", {}, {}), "spec": {"features": []}}])),
            "features.json: items[0].spec.features is not an object",
        ),
        (
            json.dumps(_list([NODE])),
            json.dumps(
                _list(
                    [
                        {
                            **_nodefeature("n1", {}, {}),
                            "spec": {
                                "features": {"attributes": {"local.feature": {"elements": 5}}}
                            },
                        }
                    ]
                )
            ),
            'items[0].spec.features.attributes["local.feature"].elements is not a map of strings',
        ),
        (
            json.dumps(_list([NODE])),
            json.dumps(_list([NODE])),
            "items[0] is a Node, not a NodeFeature",
        ),
    ],
    # short ids: a test's id goes into the environment of the commands it runs
    ids=[
        "not-json",
        "not-utf8",
        "deeply-nested",
        "a-bare-list",
        "a-pod",
        "a-list-with-a-pod",
        "an-item-not-an-object",
        "no-name",
        "labels-not-strings",
        "a-node-twice",
        "features-not-an-object",
        "elements-not-strings",
        "nodes-as-nodefeatures",
    ],
)
def test_malformed_input_is_one_line_and_exit_2(tmp_path, nodes, nodefeatures, message):
    (tmp_path / "nodes.json").write_bytes(nodes if isinstance(nodes, bytes) else nodes.encode())
    args = [*NFD_SNP, "fleet", "--nodes", "nodes.json"]
    if nodefeatures is not None:
        (tmp_path / "features.json").write_text(nodefeatures)
        args += ["--nodefeatures", "features.json"]
    proc = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == "" and proc.stderr.count("\n") == 1, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_huge_input_is_refused_before_it_is_parsed(monkeypatch, tmp_path):
    monkeypatch.setattr(fleet, "MAX_INPUT_BYTES", 1000)
    result = _run("--nodes", "-", stdin=json.dumps(_list([_node(f"n{i}", {}) for i in range(50)])))
    assert result.exit_code == 2
    assert "stdin: more than 0 MiB; keep only names and labels first: jq" in result.stderr


def test_both_inputs_from_stdin_is_a_usage_error():
    result = _run("--nodes", "-", "--nodefeatures", "-", stdin="{}")
    assert result.exit_code == 2 and "cannot both read stdin" in result.stderr


def test_nodes_slimmed_as_the_size_error_says_read_alike(cluster, tmp_path):
    """fleet.SLIM_NODES keeps only names and labels; the result is the same."""
    nodes, features, _reports = cluster
    assert "{metadata: {name: .metadata.name, labels: .metadata.labels}}" in fleet.SLIM_NODES
    full = json.loads(nodes.read_text())
    slim = {
        "items": [
            {"metadata": {k: i["metadata"][k] for k in ("name", "labels")}} for i in full["items"]
        ]
    }
    (tmp_path / "slim.json").write_text(json.dumps(slim))
    assert _json("--nodes", tmp_path / "slim.json", "--nodefeatures", features) == _json(
        "--nodes", nodes, "--nodefeatures", features
    )
