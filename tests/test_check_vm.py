"""`nfd-snp kubevirt check-vm`: the mistakes that would otherwise surface only in the cluster
(a refused VM, "exit status 1" on a VMI, or an SEV VM silently started without SNP) are
named before `kubectl apply`, with the same code the sidecar runs."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from nfd_snp.kubevirt import check_vm as kubevirt_check
from nfd_snp.cli import cli
from nfd_snp.errors import InputError
from tests.conftest import REPO

yaml = pytest.importorskip("yaml")
DEPLOY = REPO / "deploy" / "kubevirt"
HOST_DATA = "aGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGg="
SIDECARS = json.dumps(
    [
        {
            "args": ["--version", "v1alpha2"],
            "configMap": {
                "name": "nfd-snp-sidecar",
                "key": "onDefineDomain",
                "hookPath": "/usr/bin/onDefineDomain",
            },
        }
    ]
)


def check_vm(*args, stdin=None):
    result = CliRunner().invoke(cli, ["kubevirt", "check-vm", *args], input=stdin)
    return result.exit_code, result.output


def vm(annotations=None, domain=None, by_name=True, name="vm", **spec):
    """A VirtualMachine; by default it names snp.medium and the snp preference."""
    body = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": {
            "template": {
                "metadata": {"annotations": annotations or {}},
                "spec": {"domain": {"devices": {}, **(domain or {})}, **spec},
            }
        },
    }
    if by_name:
        body["spec"]["instancetype"] = {"name": "snp.medium"}
        body["spec"]["preference"] = {"name": "snp"}
    return body


def dump(*objects) -> str:
    return yaml.safe_dump_all(objects)


EFI = {"firmware": {"bootloader": {"efi": {"secureBoot": False}}}}
SELECTOR = {"nodeSelector": {"sev-snp.node.kubevirt.io/enabled": "true"}}


@pytest.mark.parametrize("name", sorted(p.name for p in DEPLOY.glob("vm-*.yaml")))
def test_shipped_examples_pass(name):
    status, out = check_vm(str(DEPLOY / name))
    assert status == 0, out
    assert ": SEV-SNP (" in out and "error" not in out


def test_a_vm_spelled_out_without_instancetypes_passes():
    spelled = vm(
        annotations={"hooks.kubevirt.io/hookSidecars": SIDECARS},
        domain={"launchSecurity": {"snp": {}}, **EFI},
        by_name=False,
        **SELECTOR,
    )
    status, out = check_vm("-", stdin=dump(spelled))
    assert (status, out) == (
        0,
        "VirtualMachine vm: SEV-SNP (launchSecurity.snp); default options\n"
        "  path: hook sidecar (Sidecar feature gate)\n",
    )


@pytest.mark.parametrize(
    "obj, message",
    [
        # what KubeVirt's instancetype code refuses
        (vm(nodeSelector={"zone": "a"}), "nodeSelector conflicts with instancetype snp.medium"),
        (vm(domain={"memory": {"guest": "1Gi"}}), "memory.guest conflicts with instancetype"),
        (
            vm(annotations={"hooks.kubevirt.io/hookSidecars": "[]"}),
            "annotation hooks.kubevirt.io/hookSidecars conflicts with instancetype",
        ),
        # what KubeVirt's admission webhook refuses
        (
            vm(domain={"launchSecurity": {"snp": {}}}, by_name=False, **SELECTOR),
            "SNP requires UEFI",
        ),
        (
            vm(domain={"firmware": {"bootloader": {"efi": {}}}}),
            "does not work along with Secure Boot",
        ),
        (
            vm(
                domain={
                    "firmware": {"bootloader": {"efi": {"secureBoot": False, "persistent": True}}}
                }
            ),
            "persistent EFI variables",
        ),
        (vm(domain={"features": {"smm": {}}}), "cannot use SMM"),
        # what the sidecar refuses at define time (only "exit status 1" on the VMI)
        (
            vm({"sev-snp.kubevirt.io/host-data": "c2hvcnQ="}),
            "annotation sev-snp.kubevirt.io/host-data: decodes to 5 bytes",
        ),
        (vm({"sev-snp.kubevirt.io/policy": "0x1"}), "bit 17 is reserved"),
        (
            vm({"sev-snp.kubevirt.io/hostdata": "x"}),
            "unknown annotation sev-snp.kubevirt.io/hostdata",
        ),
        (
            vm({"sev-snp.kubevirt.io/kernel-hashes": "yes"}),
            "the sidecar would refuse it: kernelHashes='yes' measures a directly booted kernel",
        ),
        # what would go wrong silently
        (
            vm(
                {"sev-snp.kubevirt.io/host-data": HOST_DATA},
                {"launchSecurity": {"snp": {}}, **EFI},
                by_name=False,
            ),
            "the annotations sev-snp.kubevirt.io/host-data would be ignored",
        ),
        (
            vm(
                {"sev-snp.kubevirt.io/secure-nested-paging": "true"},
                {"launchSecurity": {"sev": {}}, **EFI},
                by_name=False,
                **SELECTOR,
            ),
            "KubeVirt would start it as a plain SEV guest",
        ),
        (
            vm(
                {
                    "sev-snp.kubevirt.io/secure-nested-paging": "true",
                    "hooks.kubevirt.io/hookSidecars": SIDECARS,
                },
                {"launchSecurity": {"sev": {}}, **EFI},
                by_name=False,
            ),
            "may be scheduled on a node where SEV-SNP guests cannot run",
        ),
        (
            vm(
                {"hooks.kubevirt.io/hookSidecars": SIDECARS.replace("v1alpha2", "v9")},
                {"launchSecurity": {"snp": {}}, **EFI},
                by_name=False,
            ),
            "needs args [--version, v1alpha2]",
        ),
        # not asking at all
        (vm(by_name=False), "does not ask for SEV-SNP"),
        (vm(domain={"launchSecurity": {"sev": {}}, **EFI}, by_name=False), "asks for SEV, not"),
    ],
)
def test_each_mistake_is_named(obj, message):
    status, out = check_vm("-", stdin=dump(obj))
    assert status == 1, out
    assert message in out and "Traceback" not in out


def test_the_vep_field_is_refused_unless_the_cluster_carries_it():
    obj = vm(
        {"hooks.kubevirt.io/hookSidecars": SIDECARS},
        {"launchSecurity": {"sev": {"secureNestedPaging": True}}, **EFI},
        by_name=False,
        **SELECTOR,
    )
    status, out = check_vm("-", stdin=dump(obj))
    assert status == 1 and "KubeVirt's API has no launchSecurity.sev.secureNestedPaging" in out
    status, out = check_vm("--vep-field", "-", stdin=dump(obj))
    assert status == 0, out
    assert "SEV-SNP (launchSecurity.sev.secureNestedPaging)" in out


def test_a_vmi_and_a_list_in_json():
    vmi = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {
            "name": "vmi",
            "namespace": "team-a",
            "annotations": {
                "hooks.kubevirt.io/hookSidecars": SIDECARS,
                "sev-snp.kubevirt.io/host-data": HOST_DATA,
                "sev-snp.kubevirt.io/policy": "0x30000",
            },
        },
        "spec": {"domain": {"devices": {}, "launchSecurity": {"snp": {}}, **EFI}, **SELECTOR},
    }
    listed = {"apiVersion": "v1", "kind": "List", "items": [vmi, vm(name="plain", by_name=False)]}
    status, out = check_vm("-", stdin=json.dumps(listed))
    assert status == 1
    assert out.splitlines()[0] == (
        "VirtualMachineInstance team-a/vmi: SEV-SNP (launchSecurity.snp); options: hostData, "
        "policy=0x00030000"
    )
    assert out.splitlines()[1] == "  path: hook sidecar (Sidecar feature gate)"
    assert out.splitlines()[2] == "VirtualMachine plain: not an SEV-SNP VM"


def test_other_instancetypes_come_from_the_input(tmp_path):
    mine = {
        "apiVersion": "instancetype.kubevirt.io/v1beta1",
        "kind": "VirtualMachineClusterInstancetype",
        "metadata": {"name": "big"},
        "spec": {"cpu": {"guest": 16}, "memory": {"guest": "64Gi"}},
    }
    obj = vm()
    obj["spec"]["instancetype"] = {"name": "big"}
    status, out = check_vm("-", stdin=dump(obj))
    assert status == 2
    assert "cannot check: instancetype VirtualMachineClusterInstancetype/big is not one of" in out
    definitions = tmp_path / "big.yaml"
    definitions.write_text(dump(mine))
    status, out = check_vm(str(definitions), "-", stdin=dump(obj))
    assert status == 1 and "does not ask for SEV-SNP" in out


def test_a_renamed_sidecar_configmap():
    obj = vm(
        {"hooks.kubevirt.io/hookSidecars": SIDECARS.replace("nfd-snp-sidecar", "snp-hook")},
        {"launchSecurity": {"snp": {}}, **EFI},
        by_name=False,
        **SELECTOR,
    )
    status, _out = check_vm("--sidecar-configmap", "snp-hook", "-", stdin=dump(obj))
    assert status == 0


@pytest.mark.parametrize(
    "stdin, message",
    [
        ("a: [b\n", "stdin: not valid YAML at line 2"),
        ("{not json", "stdin: not valid JSON"),
        ("kind: ConfigMap\n", "no VirtualMachine or VirtualMachineInstance in the input"),
        ("- 1\n- 2\n", "a document is not a Kubernetes object"),
        ("\udcff", "not UTF-8"),
    ],
)
def test_unreadable_input_exits_2(stdin, message):
    data = stdin.encode("utf-8", "surrogateescape")
    proc = subprocess.run(
        [sys.executable, "-m", "nfd_snp", "kubevirt", "check-vm", "-"],
        input=data,
        capture_output=True,
    )
    assert proc.returncode == 2
    assert message in proc.stderr.decode() and len(proc.stderr.splitlines()) == 1


def test_a_missing_file_is_a_usage_error():
    status, out = check_vm("/nonexistent/vm.yaml")
    assert status == 2 and "does not exist" in out


def test_the_documented_vms_pass():
    from tests.test_manifests import docs_documents

    vms = [doc for _where, doc in docs_documents() if doc["kind"] == "VirtualMachine"]
    assert len(vms) >= 2
    status, out = check_vm("-", stdin=dump(*vms))
    assert status == 0, out


def test_the_documented_console_output_is_what_check_vm_prints(monkeypatch):
    monkeypatch.chdir(REPO)
    text = (REPO / "docs" / "kubevirt.md").read_text()
    runs = re.findall(r"^\$ (nfd-snp kubevirt check-vm .*)\n((?:[^$`].*\n)+)", text, re.M)
    assert runs
    for command, shown in runs:
        status, out = check_vm(*shlex.split(command)[3:])
        assert (status, out) == (0, shown), command


# -- hostile input: anything anywhere is a verdict or an input error, never a crash ---------

_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
_PLACES = [
    ("metadata",),
    ("spec",),
    ("spec", "instancetype"),
    ("spec", "preference"),
    ("spec", "template"),
    ("spec", "template", "metadata", "annotations"),
    ("spec", "template", "metadata", "annotations", "hooks.kubevirt.io/hookSidecars"),
    ("spec", "template", "metadata", "annotations", "sev-snp.kubevirt.io/policy"),
    ("spec", "template", "spec"),
    ("spec", "template", "spec", "nodeSelector"),
    ("spec", "template", "spec", "domain"),
    ("spec", "template", "spec", "domain", "launchSecurity"),
    ("spec", "template", "spec", "domain", "launchSecurity", "sev"),
    ("spec", "template", "spec", "domain", "firmware"),
    ("spec", "template", "spec", "domain", "firmware", "bootloader", "efi"),
    ("spec", "template", "spec", "domain", "features", "smm"),
    ("spec", "template", "spec", "domain", "devices", "interfaces"),
]


def _put(obj, path, value):
    for key in path[:-1]:
        if not isinstance(obj.get(key), dict):
            obj[key] = {}
        obj = obj[key]
    obj[path[-1]] = value


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_PLACES), _json), min_size=1, max_size=4))
def test_hostile_manifests_never_crash(edits):
    obj = vm({"hooks.kubevirt.io/hookSidecars": SIDECARS})
    for path, value in edits:
        _put(obj, path, value)
    try:
        results = kubevirt_check.check_documents([obj])
    except InputError:
        return
    kubevirt_check.render(results)
    assert kubevirt_check.exit_status(results) in (0, 1, 2)


@pytest.mark.parametrize(
    "node, policy, status, message",
    [
        # no KVM before Linux 6.19 accepts bits above 20 (here: 24, ciphertext hiding)
        ("nfd_snp/samples/genoa-snp-ready", "0x1030000", 1, "bit 24 (ciphertext hiding) not"),
        ("nfd_snp/samples/genoa-snp-ready", "0x30000", 0, "SEV-SNP (launchSecurity.snp"),
        ("nfd_snp/samples/genoa-snp-ready", "0x30138", 1, "requires SNP firmware ABI 1.56"),
        ("tests/data/hosts/milan-rome2d16-fw-1.49", "0x30000", 1, "blocked by: psp.snp_init"),
    ],
)
def test_a_vm_judged_against_a_node(node, policy, status, message):
    obj = vm({"sev-snp.kubevirt.io/policy": policy})
    got, out = check_vm("-", "--node", str(REPO / node), stdin=dump(obj))
    assert got == status and message in out, out
    # without the node, only what every KVM refuses counts
    assert check_vm("-", stdin=dump(obj))[0] == 0


# -- KubeVirt 1.9+ with nfd-snp's Plugin ---------------------------------------------------


def test_with_the_plugin_options_need_no_sidecar_and_the_path_is_named():
    obj = vm({"sev-snp.kubevirt.io/host-data": HOST_DATA})
    status, out = check_vm("-", stdin=dump(obj))  # the 1.7 instancetype brings the sidecar
    assert status == 0 and "path: hook sidecar (Sidecar feature gate)" in out, out
    status, out = check_vm("--plugins", "-", stdin=dump(obj))  # the 1.9 one does not
    assert status == 0, out
    assert "path: Plugins: nfd-snp's node hook and CEL domain hook (KubeVirt 1.9+)" in out
    spelled = vm({"sev-snp.kubevirt.io/host-data": HOST_DATA}, domain={**EFI}, by_name=False)
    spelled["spec"]["template"]["spec"]["domain"]["launchSecurity"] = {"snp": {}}
    status, out = check_vm("-", stdin=dump(spelled))
    assert status == 1 and "would be ignored" in out
    assert "path: KubeVirt's own SEV-SNP, without nfd-snp's options" in out
    # the SEV path has no place there: the node hook refuses it without a sidecar
    sev = vm({"sev-snp.kubevirt.io/secure-nested-paging": "true"}, by_name=False)
    sev["spec"]["template"]["spec"]["domain"].update(EFI, launchSecurity={"sev": {}})
    status, out = check_vm("--plugins", "-", stdin=dump(sev))
    assert status == 1 and "the nfd-snp node hook would refuse it" in out


@pytest.mark.parametrize(
    "node, annotations, answer",
    [
        ("nfd_snp/samples/genoa-snp-ready", {}, "node hook: admits it"),
        (
            "nfd_snp/samples/milan-snp-off",
            {},
            "node hook: refuses it (FAILED_PRECONDITION): SEV-SNP VM cannot start: node "
            f"{REPO}/nfd_snp/samples/milan-snp-off is not SEV-SNP ready (blocked by: bios.rmp",
        ),
        (
            "tests/data/hosts/milan-enarx-es-asids-full",
            {},
            "node hook: refuses it (RESOURCE_EXHAUSTED): SEV-SNP VM cannot start: no free",
        ),
        (
            "nfd_snp/samples/genoa-snp-ready",
            {"sev-snp.kubevirt.io/host-data": HOST_DATA[:20] + "\n" + HOST_DATA[20:]},
            "node hook: refuses it (INVALID_ARGUMENT): refusing SEV-SNP for this VMI: annotation "
            "sev-snp.kubevirt.io/host-data: write the value without spaces",
        ),
    ],
)
def test_what_the_node_hook_would_answer_on_a_node_snapshot(node, annotations, answer):
    status, out = check_vm(
        "--plugins", "-", "--host-root", str(REPO / node), stdin=dump(vm(annotations))
    )
    assert answer in out, out
    assert status == (0 if "admits" in answer else 1)


@pytest.mark.parametrize(
    "node", ["nfd_snp/samples/genoa-snp-ready", "nfd_snp/samples/milan-snp-off"]
)
def test_with_the_plugins_and_a_node_each_refusal_is_said_once(node):
    """The node hook's answer is the verdict there: its reason is not repeated as errors."""
    obj = vm({"sev-snp.kubevirt.io/policy": "0x70000"})
    status, out = check_vm("--plugins", "-", "--host-root", str(REPO / node), stdin=dump(obj))
    assert status == 1
    assert "node hook: refuses it (INVALID_ARGUMENT)" in out, out
    assert out.count("bit 18 (migration agent)") == 1, out
    # without the Plugins, the node's own verdict and the policy's are the errors
    status, out = check_vm("-", "--host-root", str(REPO / node), stdin=dump(obj))
    assert status == 1 and "node hook:" not in out
    assert out.count("bit 18 (migration agent)") == 1, out


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_PLACES), _json), min_size=1, max_size=4))
def test_hostile_manifests_never_crash_the_plugins_view(edits):
    from nfd_snp.kubevirt.node_hook import NodeView
    from tests.conftest import SAMPLES, report_of

    global _READY_VIEW
    if _READY_VIEW is None:
        _READY_VIEW = NodeView.from_report(report_of(SAMPLES / "genoa-snp-ready"), 600, 0)
    obj = vm({"sev-snp.kubevirt.io/host-data": HOST_DATA})
    for path, value in edits:
        _put(obj, path, value)
    try:
        results = kubevirt_check.check_documents([obj], plugins=True, node_view=_READY_VIEW)
    except InputError:
        return
    kubevirt_check.render(results)


_READY_VIEW = None
