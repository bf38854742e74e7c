"""deploy/nfd NodeFeatureRules and NodeFeatureGroups: valid for NFD's CRDs, and what they give
real nodes.

The objects are validated against the openAPIV3Schema of NFD's own CRDs
(../shared/fixtures/nfd) and evaluated with tests/nfdrules.py over the feature files of the
bundled samples and the real-host snapshots, read back as nfd-worker reads them
(tests/nfdlocal.py).
"""

from __future__ import annotations

import datetime

import pytest

from nfd_snp import nfd
from nfd_snp.checks import Guest, Readiness, evaluate
from nfd_snp.errors import NotCaptured
from tests import nfdlocal, nfdrules
from tests.conftest import REPO, SAMPLES, probe_root

yaml = pytest.importorskip("yaml")
jsonschema = pytest.importorskip("jsonschema")

HOSTS = REPO / "tests" / "data" / "hosts"
NODES = sorted(SAMPLES.iterdir()) + sorted(HOSTS.iterdir())
RULES = ("nodefeaturerule.yaml", "nfd-snp-tee-keys.yaml")
NOW = datetime.datetime(2026, 11, 26, 12, 0, tzinfo=datetime.timezone.utc)
# kata-deploy's Helm chart names its rule kata-tee-keys (templates/node-feature-rules.yaml,
# kata-containers 7c6ba40c); the rule it matches on, quoted for the comparison below.
KATA_RULE = {
    "metadata": {"name": "kata-tee-keys"},
    "spec": {
        "rules": [
            {
                "name": "amd.sev-snp",
                "labels": {"amd.feature.node.kubernetes.io/snp": "true"},
                "extendedResources": {
                    "sev-snp.amd.com/esids": "@cpu.security.sev.encrypted_state_ids"
                },
                "matchFeatures": [
                    {
                        "feature": "cpu.security",
                        "matchExpressions": {"sev.snp.enabled": {"op": "Exists"}},
                    }
                ],
            }
        ]
    },
}


def _rule(name):
    return yaml.safe_load((REPO / "deploy" / "nfd" / name).read_text())


def _crd_schema(shared_dir, name):
    docs = yaml.safe_load_all((shared_dir / "fixtures" / "nfd" / "nfd-api-crds.yaml").read_text())
    crd = next(d for d in docs if d and d["metadata"]["name"] == name)
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")
    return version["schema"]["openAPIV3Schema"]


@pytest.fixture(scope="module")
def rule_schema(shared_dir):
    return _crd_schema(shared_dir, "nodefeaturerules.nfd.k8s-sigs.io")


@pytest.fixture(scope="module")
def group_schema(shared_dir):
    return _crd_schema(shared_dir, "nodefeaturegroups.nfd.k8s-sigs.io")


@pytest.mark.parametrize("name", RULES)
def test_rules_validate_against_nfds_crd(name, rule_schema):
    jsonschema.validate(_rule(name), rule_schema)


def test_schema_check_would_catch_a_misspelt_field(rule_schema):
    broken = _rule("nfd-snp-tee-keys.yaml")
    broken["spec"]["rules"][0]["matchFeature"] = broken["spec"]["rules"][0].pop("matchFeatures")
    with pytest.raises(jsonschema.ValidationError):
        # NFD's schema requires matchFeatures or matchAny; strict validation as kubectl's
        jsonschema.validate(broken, _strict(rule_schema))


def _strict(schema):
    """additionalProperties: false wherever an object schema lists its properties."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@pytest.mark.parametrize("name", RULES)
def test_rules_validate_strictly(name, rule_schema):
    jsonschema.validate(_rule(name), _strict(rule_schema))


def _node(root):
    """(report, the features NFD holds for the node: local.* and the cpu source's SEV set)."""
    report = evaluate(probe_root(root))
    text = nfd.render(nfd.publication(report), NOW + datetime.timedelta(seconds=600))
    labels, features = nfdlocal.parse_file(text, NOW)
    kvm = report.facts.kvm
    # NFD's cpu source (source/cpu/security_amd64.go): sev.snp.enabled when the kvm_amd
    # parameter says Y, sev.encrypted_state_ids from misc.capacity's sev_es line.
    cpu = {}
    if kvm.sev_snp.enabled:
        cpu["sev.snp.enabled"] = "true"
    if report.facts.asids.sev_es_capacity:
        cpu["sev.encrypted_state_ids"] = str(report.facts.asids.sev_es_capacity)
    return report, {"local.label": labels, "local.feature": features, "cpu.security": cpu}


@pytest.mark.parametrize("root", NODES, ids=lambda p: p.name)
def test_kata_names_follow_nfd_snp_verdict(root):
    try:
        report, features = _node(root)
    except NotCaptured:  # pragma: no cover - every snapshot here is complete
        pytest.fail("incomplete snapshot")
    labels, resources = nfdrules.evaluate(_rule("nfd-snp-tee-keys.yaml"), features)
    ready = report.verdict(Guest.SEV_SNP).ready is Readiness.YES
    snp_asids = report.facts.guest_asids("sev-snp")
    slots = snp_asids.count if snp_asids else 0
    expect_label = ready and slots > 0
    assert ("amd.feature.node.kubernetes.io/snp" in labels) is expect_label
    assert resources.get("sev-snp.amd.com/esids") == (str(slots) if expect_label else None)
    assert "intel.feature.node.kubernetes.io/tdx" not in labels


def test_kata_rule_labels_nodes_where_snp_cannot_run():
    """Why the replacement matters: the kvm_amd parameter alone says yes on a node whose
    SEV firmware is gone; nfd-snp's verdict says no."""
    report, features = _node(HOSTS / "siena-8024p-psp-dead")
    kata_labels, _ = nfdrules.evaluate(KATA_RULE, features)
    ours, _ = nfdrules.evaluate(_rule("nfd-snp-tee-keys.yaml"), features)
    assert kata_labels == {"amd.feature.node.kubernetes.io/snp": "true"}
    assert ours == {}


def test_replacement_publishes_kata_deploys_names_under_its_own_object_name():
    """Same label and extended resource as kata-deploy's rule, under another object name:
    Helm refuses to install over an object it did not create, and from kata-deploy 4.1
    `nodeFeatureRules.create` must stay on for the RuntimeClasses' esids request."""
    ours = _rule("nfd-snp-tee-keys.yaml")
    assert ours["kind"] == "NodeFeatureRule" and "namespace" not in ours["metadata"]
    assert ours["metadata"]["name"] not in ("kata-tee-keys", "amd64-tee-keys")
    ours_snp = next(r for r in ours["spec"]["rules"] if r["name"] == "amd.sev-snp")
    kata_snp = KATA_RULE["spec"]["rules"][0]
    assert ours_snp["labels"] == kata_snp["labels"]
    assert set(ours_snp["extendedResources"]) == set(kata_snp["extendedResources"])


RENDERED = """---
# Source: kata-deploy/templates/node-feature-rules.yaml
apiVersion: nfd.k8s-sigs.io/v1alpha1
kind: NodeFeatureRule
metadata:
  name: {kata}
  labels:
    app.kubernetes.io/managed-by: kata-deploy
spec:
  rules: []
---
# Source: kata-deploy/templates/runtimeclasses.yaml
apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata:
  name: kata-qemu-snp
handler: kata-qemu-snp
overhead:
  podFixed:
    sev-snp.amd.com/esids: "1"
---
# Source: kata-deploy/templates/node-feature-rules-nvidia-gpu.yaml
apiVersion: nfd.k8s-sigs.io/v1alpha1
kind: NodeFeatureRule
metadata:
  name: kata-nvidia-gpu
spec:
  rules: []
"""


@pytest.mark.parametrize("kata", ["kata-tee-keys", "kata-tee-keys-blue", '"kata-tee-keys"'])
@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_post_renderer_leaves_out_only_kata_deploys_tee_rule(kata, shell):
    """The Helm post-renderer drops the chart's TEE rule and keeps the rest, the
    RuntimeClass's esids request above all, byte for byte."""
    import shutil
    import subprocess

    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed")
    stream = (
        RENDERED.format(kata=kata)
        + "---\n"
        + (REPO / "deploy/nfd/nfd-snp-tee-keys.yaml").read_text()
    )
    proc = subprocess.run(
        [shell, str(REPO / "deploy/nfd/drop-kata-tee-keys")],
        input=stream,
        capture_output=True,
        text=True,
        check=True,
    )
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    names = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert names == [
        ("RuntimeClass", "kata-qemu-snp"),
        ("NodeFeatureRule", "kata-nvidia-gpu"),
        ("NodeFeatureRule", "nfd-snp-tee-keys"),
    ]
    assert docs[0]["overhead"]["podFixed"] == {"sev-snp.amd.com/esids": "1"}
    kept = stream.split("# Source: kata-deploy/templates/runtimeclasses.yaml", 1)[1]
    assert kept in proc.stdout


@pytest.mark.parametrize("root", NODES, ids=lambda p: p.name)
def test_asid_resources_per_guest_type(root):
    report, features = _node(root)
    _, resources = nfdrules.evaluate(_rule("nodefeaturerule.yaml"), features)
    for guest in Guest:
        name = f"{guest.value}.node.kubevirt.io/asids"
        known = report.facts.guest_asids(guest.value)
        ready = report.verdict(guest).ready is Readiness.YES
        want = str(known.count) if ready and known and known.count > 0 else None
        assert resources.get(name) == want, name


# -- NodeFeatureGroups: an inventory without Prometheus ----------------------------------------

GROUPS_FILE = REPO / "deploy" / "nfd" / "nodefeaturegroup.yaml"


def _groups():
    return {d["metadata"]["name"]: d for d in yaml.safe_load_all(GROUPS_FILE.read_text()) if d}


def test_groups_validate_strictly_against_nfds_crd(group_schema):
    groups = _groups()
    assert set(groups) == {"sev-snp-ready", "sev-snp-blocked"}
    for group in groups.values():
        assert group["apiVersion"] == "nfd.k8s-sigs.io/v1alpha1"
        assert group["kind"] == "NodeFeatureGroup"
        # nfd-master evaluates the groups of its own namespace only
        assert group["metadata"]["namespace"] == "node-feature-discovery"
        assert "status" not in group  # nfd-master writes it
        jsonschema.validate(group, _strict(group_schema))


def test_group_schema_check_would_catch_a_misspelt_field(group_schema):
    broken = _groups()["sev-snp-blocked"]
    term = broken["spec"]["featureGroupRules"][0]["matchFeatures"][0]
    term["matchNames"] = term.pop("matchName")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, _strict(group_schema))
    broken = _groups()["sev-snp-ready"]
    broken["spec"]["featureGroupRules"][0]["matchFeatures"][0]["matchExpressions"][
        "sev-snp.node.kubevirt.io/enabled"
    ] = {"op": "IsYes"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, _strict(group_schema))


@pytest.mark.parametrize("root", NODES, ids=lambda p: p.name)
def test_groups_list_ready_and_blocked_nodes(root):
    """sev-snp-ready lists exactly the nodes that run SEV-SNP guests, sev-snp-blocked exactly
    the others that run nfd-snp; a node without nfd-snp is in neither."""
    report, features = _node(root)
    groups = _groups()
    ready = report.verdict(Guest.SEV_SNP).ready is Readiness.YES
    assert nfdrules.in_group(groups["sev-snp-ready"], features) is ready
    assert nfdrules.in_group(groups["sev-snp-blocked"], features) is not ready
    without = {"local.label": {}, "local.feature": {}, "cpu.security": features["cpu.security"]}
    assert not any(nfdrules.in_group(g, without) for g in groups.values())


def test_the_gpu_runtimeclass_patch_selects_nfd_snps_gpu_label():
    """The merge patch adds nfd-snp's GPU label (published only beside enabled=true) and the
    GPU operator's CC state to a RuntimeClass's selector, keeping the selector it had."""
    patch = yaml.safe_load(
        (REPO / "deploy/nfd/kata-nvidia-gpu-snp-runtimeclass-patch.yaml").read_text()
    )
    selector = patch["scheduling"]["nodeSelector"]
    assert selector[nfd.SNP_NS + "gpu-passthrough"] == "true"
    runtimeclass = {"scheduling": {"nodeSelector": {"katacontainers.io/kata-runtime": "true"}}}

    def merge(target, change):  # RFC 7386
        if not isinstance(change, dict):
            return change
        out = dict(target) if isinstance(target, dict) else {}
        for key, value in change.items():
            out[key] = merge(out.get(key), value)
        return out

    merged = merge(runtimeclass, patch)["scheduling"]["nodeSelector"]
    assert merged == {"katacontainers.io/kata-runtime": "true", **selector}
    report, features = _node(REPO / "tests/data/hosts/genoa-h100-vfio-kubevirt")
    assert features["local.label"].get(nfd.SNP_NS + "gpu-passthrough") == "true"
