"""Every Kubernetes object nfd-snp ships or documents is one the API server takes as written.

KubeVirt objects under deploy/ and in the docs' YAML validate against KubeVirt's own OpenAPI
document with unknown fields rejected (tests/kubevirt_api.py); core objects validate with
kubernetes-validate in strict mode. Generated manifests are current, the feature-gate patch
appends, and a VM that names an SEV-SNP instancetype expands to a valid SNP VMI.
"""

from __future__ import annotations

import copy
import json
import re
import shlex

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nfd_snp import yamlout
from nfd_snp.kubevirt import check_vm as kubevirt_check
from nfd_snp.kubevirt import manifests as kubevirt_manifests
from nfd_snp.kubevirt import sidecar as kubevirt
from nfd_snp.kubevirt import sidecar_bundle
from tests.conftest import REPO, SHARED
from tests.kubevirt_api import GROUPS, KubeVirtAPI

yaml = pytest.importorskip("yaml")
DEPLOY = REPO / "deploy"
DOCS = sorted((REPO / "docs").glob("*.md")) + [REPO / "README.md"]
OPENAPI = SHARED / "fixtures" / "kubevirt" / "openapi-swagger.json"
CORE_GROUPS = ("v1", "apps/v1", "rbac.authorization.k8s.io/v1", "policy/v1")
# NFD's API (deploy/nfd, tested there) and KubeVirt's Plugin CRD (tests/test_plugin.py)
OTHER_CRD_GROUPS = ("nfd.k8s-sigs.io/v1alpha1", "plugin.kubevirt.io/v1alpha1")


@pytest.fixture(scope="module")
def api(shared_dir):
    return KubeVirtAPI(OPENAPI)


def deploy_documents():
    """(where, document) for every YAML document under deploy/."""
    found = []
    for path in sorted(DEPLOY.rglob("*.yaml")):
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc is not None:
                found.append((f"{path.relative_to(REPO)}#{i}", doc))
    return found


def docs_documents():
    """(where, document) for every YAML code block in the docs that is a whole object."""
    found = []
    for path in DOCS:
        text = path.read_text()
        for match in re.finditer(r"^```ya?ml\n(.*?)^```", text, re.M | re.S):
            line = text[: match.start()].count("\n") + 1
            for doc in yaml.safe_load_all(match.group(1)):
                if isinstance(doc, dict) and "apiVersion" in doc and "kind" in doc:
                    found.append((f"{path.relative_to(REPO)}:{line}", doc))
    return found


ALL = deploy_documents() + docs_documents()


def _ids(items):
    return [where for where, _doc in items]


@pytest.mark.parametrize("where, doc", ALL, ids=_ids(ALL))
def test_every_object_validates_strictly(api, where, doc):
    if isinstance(doc, list):  # a JSON patch (kubectl patch --type json)
        assert where.startswith("deploy/kubevirt/kubevirt-feature-gates.yaml")
        return
    if "apiVersion" not in doc and "scheduling" in doc:
        # a merge patch (kubectl patch --type merge) of kata-deploy's SNP GPU RuntimeClass:
        # the patched object must still be a valid RuntimeClass
        assert where.startswith("deploy/nfd/kata-nvidia-gpu-snp-runtimeclass-patch.yaml")
        kubernetes_validate = pytest.importorskip("kubernetes_validate")
        runtimeclass = {
            "apiVersion": "node.k8s.io/v1",
            "kind": "RuntimeClass",
            "metadata": {"name": "kata-qemu-nvidia-gpu-snp"},
            "handler": "kata-qemu-nvidia-gpu-snp",
            **doc,
        }
        kubernetes_validate.validate(
            runtimeclass, kubernetes_validate.latest_version(), strict=True
        )
        return
    if "apiVersion" not in doc and ("groups" in doc or "tests" in doc):
        # Prometheus rules and their promtool unit tests (tests/test_prometheus.py)
        assert where.startswith("deploy/prometheus/")
        return
    version = doc.get("apiVersion")
    if version in GROUPS:
        assert api.errors(doc) == []
    elif version in CORE_GROUPS:
        kubernetes_validate = pytest.importorskip("kubernetes_validate")
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
    else:
        assert version in OTHER_CRD_GROUPS, f"{where}: no schema for {version} {doc.get('kind')}"


def test_the_validation_rejects_what_the_api_server_rejects(api):
    vm = yaml.safe_load((DEPLOY / "kubevirt" / "vm-snp.yaml").read_text())
    assert api.errors(vm) == []
    cases = {
        # VEP #58's field is not in KubeVirt's API
        ("sev", "secureNestedPaging"): {"sev": {"secureNestedPaging": True}},
        # upstream snp is an empty struct: no policy there
        ("snp", "policy"): {"snp": {"policy": "0x30000"}},
    }
    for (parent, field), launch in cases.items():
        bad = copy.deepcopy(vm)
        bad["spec"]["template"]["spec"]["domain"]["launchSecurity"] = launch
        errors = api.errors(bad)
        assert len(errors) == 1 and f"launchSecurity.{parent}" in errors[0], errors
        assert repr(field) in errors[0]
    bad = copy.deepcopy(vm)
    bad["spec"]["instancetype"]["nmae"] = "typo"
    assert "'nmae' was unexpected" in api.errors(bad)[0]
    bad = copy.deepcopy(vm)
    bad["spec"]["template"]["spec"]["domain"]["devices"] = []
    assert api.errors(bad)


def test_every_kubevirt_object_in_deploy_was_checked():
    kinds = {doc.get("kind") for _w, doc in deploy_documents() if isinstance(doc, dict)}
    assert {
        "VirtualMachine",
        "VirtualMachineClusterInstancetype",
        "VirtualMachineClusterPreference",
        "ConfigMap",
        "DaemonSet",
        "Plugin",
    } <= kinds


def test_the_kubevirt_1_9_set_uses_no_deprecated_field():
    """1.9 warns about launchSecurity in instancetypes ("deprecated ... Use preference
    instead"); its set asks through the preference and needs no hook sidecar."""
    docs = list(yaml.safe_load_all((DEPLOY / "kubevirt" / "instancetypes-1.9.yaml").read_text()))
    *instancetypes, preference = docs
    for doc in instancetypes:
        assert "launchSecurity" not in doc["spec"] and "annotations" not in doc["spec"]
        assert doc["spec"]["nodeSelector"]["sev-snp.node.kubevirt.io/enabled"] == "true"
    assert preference["spec"]["preferredLaunchSecurity"] == {"snp": {}}
    assert preference["spec"]["firmware"]["preferredEfi"] == {
        "secureBoot": False,
        "persistent": False,
    }
    names = {d["metadata"]["name"] for d in docs}
    older = yaml.safe_load_all((DEPLOY / "kubevirt" / "instancetypes-1.7.yaml").read_text())
    assert names == {d["metadata"]["name"] for d in older}  # a VM's names survive the upgrade


# -- generated manifests --------------------------------------------------------------------


# Freshness, not behaviour: the ConfigMap carries engine.py and options.py verbatim, so any
# edit of them fails these two (tools/mutate.py deselects them: they would "kill" every
# mutant there without testing what the code does).
@pytest.mark.freshness
@pytest.mark.parametrize(
    "path, generate",
    [
        ("kubevirt/sidecar-configmap.yaml", lambda: sidecar_bundle.configmap("nfd-snp-sidecar")),
        ("kubevirt/instancetypes-1.7.yaml", lambda: kubevirt_manifests.render("snp")),
        ("kubevirt/instancetypes-1.9.yaml", lambda: kubevirt_manifests.render("plugins")),
        (
            "kubevirt/instancetypes-snp-on-sev.yaml",
            lambda: kubevirt_manifests.render("snp-on-sev"),
        ),
    ],
)
def test_committed_manifest_is_the_generated_one(path, generate):
    assert (DEPLOY / path).read_text() == generate(), (
        f"stale deploy/{path}: regenerate it (README.md, Development)"
    )


@pytest.mark.freshness
def test_configmap_holds_the_script_as_readable_source():
    text = (DEPLOY / "kubevirt" / "sidecar-configmap.yaml").read_text()
    doc = yaml.safe_load(text)
    assert doc["data"]["onDefineDomain"] == sidecar_bundle.build_script()
    # a literal block: each line of the script is a line of the file
    assert "  onDefineDomain: |\n    #!/usr/bin/env python3\n" in text
    assert "    def on_define_domain(vmi_text, domain_xml) -> str:\n" in text


def test_cli_prints_the_same_manifests():
    from click.testing import CliRunner

    from nfd_snp.cli import cli

    runner = CliRunner()
    result = runner.invoke(cli, ["kubevirt", "instancetypes", "--snp-on-sev"])
    assert result.exit_code == 0
    assert result.output == (DEPLOY / "kubevirt" / "instancetypes-snp-on-sev.yaml").read_text()
    result = runner.invoke(cli, ["kubevirt", "instancetypes", "--sidecar-configmap", "Bad_Name"])
    assert result.exit_code == 2 and "DNS-1123" in result.output


def test_instancetypes_follow_the_configmap_name():
    docs = list(yaml.safe_load_all(kubevirt_manifests.render("snp", "my-sidecar")))
    for doc in docs[:-1]:
        entries = json.loads(doc["spec"]["annotations"]["hooks.kubevirt.io/hookSidecars"])
        assert entries[0]["configMap"]["name"] == "my-sidecar"


# -- a VM that asks by name ------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, form",
    [
        ("vm-snp.yaml", kubevirt_check.UPSTREAM),
        ("vm-snp-hostdata.yaml", kubevirt_check.UPSTREAM),
        ("vm-snp-on-sev.yaml", kubevirt.ANNOTATION),
    ],
)
@pytest.mark.parametrize("plugins", [False, True], ids=["sidecar", "plugins"])
def test_a_vm_by_name_expands_to_a_valid_snp_vmi(api, name, form, plugins):
    if plugins and form != kubevirt_check.UPSTREAM:
        pytest.skip("KubeVirt 1.9 has launchSecurity.snp: the SEV path is for older ones")
    vm = yaml.safe_load((DEPLOY / "kubevirt" / name).read_text())
    template = vm["spec"]["template"]
    # The developer wrote names only: nothing about AMD in the VM.
    assert "launchSecurity" not in template["spec"]["domain"]
    assert "nodeSelector" not in template["spec"] and "firmware" not in template["spec"]["domain"]
    assert not any("hooks.kubevirt.io" in k for k in template["metadata"].get("annotations", {}))
    result = kubevirt_check.Result(kind="VirtualMachine", name=name)
    definitions = kubevirt_manifests.builtin_definitions(plugins)
    vmi = kubevirt_check.expand(vm, definitions, result)
    assert result.errors == [] and result.unchecked is None
    assert api.errors(vmi) == []
    domain = vmi["spec"]["domain"]
    assert domain["firmware"]["bootloader"]["efi"] == {"secureBoot": False, "persistent": False}
    assert domain["features"]["smm"] == {"enabled": False}
    assert vmi["spec"]["nodeSelector"]["sev-snp.node.kubevirt.io/enabled"] == "true"
    assert domain["launchSecurity"] == (
        {"snp": {}} if form == kubevirt_check.UPSTREAM else {"sev": {}}
    )
    if plugins:
        return  # check-vm's view of the Plugins path: tests/test_check_vm.py
    checked = kubevirt_check.check(vm, definitions, "nfd-snp-sidecar", False)
    assert checked.served and checked.request == form, kubevirt_check.render([checked])


# -- the feature-gate patch ------------------------------------------------------------------


def _kubevirt_cr(configuration):
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "KubeVirt",
        "metadata": {"name": "kubevirt", "namespace": "kubevirt"},
        "spec": {"configuration": configuration},
    }


def _merge_patch(target, patch):
    """RFC 7386, as `kubectl patch --type merge` applies it."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge_patch(out.get(key), value)
    return out


def _documented_commands():
    """The `kubectl patch kubevirt` commands of docs/kubevirt.md, as argument lists."""
    text = (REPO / "docs" / "kubevirt.md").read_text()
    return [shlex.split(m) for m in re.findall(r"^kubectl patch kubevirt .*$", text, re.M)]


def test_feature_gate_patch_appends_to_the_existing_gates(api):
    jsonpatch = pytest.importorskip("jsonpatch")
    ops = yaml.safe_load((DEPLOY / "kubevirt" / "kubevirt-feature-gates.yaml").read_text())
    assert all(op["op"] == "add" and op["path"].endswith("/featureGates/-") for op in ops)
    cr = _kubevirt_cr({"developerConfiguration": {"featureGates": ["LiveMigration", "Snapshot"]}})
    patched = jsonpatch.apply_patch(cr, ops)
    gates = patched["spec"]["configuration"]["developerConfiguration"]["featureGates"]
    assert gates == ["LiveMigration", "Snapshot", "Sidecar", "WorkloadEncryptionSEV"]
    assert api.errors(patched) == []


def test_documented_first_step_makes_the_patch_apply_to_a_cr_without_gates(api):
    jsonpatch = pytest.importorskip("jsonpatch")
    ops = yaml.safe_load((DEPLOY / "kubevirt" / "kubevirt-feature-gates.yaml").read_text())
    cr = _kubevirt_cr({"developerConfiguration": {"logVerbosity": {"virtLauncher": 4}}})
    with pytest.raises((jsonpatch.JsonPatchConflict, jsonpatch.JsonPointerException)):
        jsonpatch.apply_patch(cr, ops)
    merges = [c for c in _documented_commands() if c[c.index("--type") + 1] == "merge"]
    assert len(merges) == 1, merges
    patch = json.loads(merges[0][merges[0].index("-p") + 1])
    created = _merge_patch(cr, patch)
    developer = created["spec"]["configuration"]["developerConfiguration"]
    assert developer["logVerbosity"] == {"virtLauncher": 4}  # kept
    patched = jsonpatch.apply_patch(created, ops)
    gates = patched["spec"]["configuration"]["developerConfiguration"]["featureGates"]
    assert gates == ["Sidecar", "WorkloadEncryptionSEV"]
    assert api.errors(patched) == []
    json_patch = ["--type", "json", "--patch-file", "deploy/kubevirt/kubevirt-feature-gates.yaml"]
    assert any(" ".join(json_patch) in " ".join(c) for c in _documented_commands())


# -- the YAML writer ------------------------------------------------------------------------

_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=30)
_keys = st.from_regex(r"\A[a-z][a-z0-9.-]{0,20}(/[a-zA-Z0-9-]{1,10})?\Z")
_values = st.recursive(
    st.one_of(_text, st.integers(-(2**40), 2**40), st.booleans(), st.text("ab\n '#:", max_size=12)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_keys, inner, max_size=3)),
    max_leaves=12,
)


@given(st.dictionaries(_keys, _values, min_size=1, max_size=4))
def test_yaml_writer_round_trips(obj):
    assert yaml.safe_load(yamlout.document(obj)) == obj


@pytest.mark.parametrize(
    "value",
    ["true", "no", "on", "null", "1", "0x30000", "1.5", "2026-01-01", "a: b", "#x", "'", ""],
)
def test_yaml_writer_quotes_what_yaml_would_read_otherwise(value):
    assert yaml.safe_load(yamlout.document({"k": value})) == {"k": value}
    assert yamlout.scalar(value) != value
