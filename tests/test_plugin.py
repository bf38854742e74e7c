"""nfd-snp's Plugin (KubeVirt 1.9+): valid for KubeVirt's Plugin CRD as the API server
validates it (unknown fields rejected), hooks that apply to SEV-SNP VMIs only, conditions
that compile and decide in a model of each of KubeVirt's two CEL environments, and the
node hook's socket where the DaemonSet serves it."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import pytest

from nfd_snp.kubevirt import domain_hook_cel, plugin
from tests.conftest import REPO, SHARED

yaml = pytest.importorskip("yaml")
DATA = REPO / "tests" / "data" / "kubevirt"
PLUGIN_YAML = REPO / "deploy" / "kubevirt" / "plugin.yaml"
SCHEMA = SHARED / "fixtures" / "kubevirt" / "plugin-crd-schema.yaml"


def closed(schema):
    """The CRD schema as the API server applies it: unknown fields are errors."""
    schema = copy.deepcopy(schema)

    def close(node):
        if isinstance(node, dict):
            if "properties" in node and "additionalProperties" not in node:
                node["additionalProperties"] = False
            for value in node.values():
                close(value)
        elif isinstance(node, list):
            for value in node:
                close(value)

    close(schema)
    return schema


@pytest.fixture(scope="module")
def validate(shared_dir):
    import jsonschema

    schema = closed(yaml.safe_load(SCHEMA.read_text())["openAPIV3Schema"])
    validator = jsonschema.Draft7Validator(schema)
    return lambda doc: [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)
    ]


def test_the_committed_plugin_is_the_generated_one():
    assert PLUGIN_YAML.read_text() == plugin.render(), "stale deploy/kubevirt/plugin.yaml"


def test_the_plugin_validates_strictly_against_kubevirts_crd(validate):
    doc = yaml.safe_load(PLUGIN_YAML.read_text())
    assert validate(doc) == []
    bad = copy.deepcopy(doc)
    bad["spec"]["nodeHooks"][0]["sockett"] = "/x"  # a typo is refused, not dropped
    assert any("sockett" in e for e in validate(bad))
    bad = copy.deepcopy(doc)
    bad["spec"]["nodeHooks"][0]["permittedHooks"] = []
    assert validate(bad)


def test_each_hook_is_fail_and_carries_its_own_condition():
    spec = plugin.plugin()["spec"]
    assert "condition" not in spec  # evaluated in both environments: see nfd_snp/kubevirt/plugin.py
    (node,) = spec["nodeHooks"]
    (domain,) = spec["domainHooks"]
    assert node["permittedHooks"] == ["PreVMStart"] and node["failureStrategy"] == "Fail"
    assert domain["failureStrategy"] == "Fail" and list(domain) == [
        "cel",
        "condition",
        "failureStrategy",
    ]
    assert domain["cel"]["expression"] == domain_hook_cel.expression()
    assert domain["condition"] == domain_hook_cel.CONDITION


def test_the_socket_is_the_one_the_daemonset_serves_under_virt_handlers_mount():
    ds = yaml.safe_load((REPO / "deploy" / "node" / "daemonset.yaml").read_text())
    args = ds["spec"]["template"]["spec"]["containers"][0]["args"]
    sock = args[args.index("--node-hook-socket") + 1]
    assert plugin.plugin()["spec"]["nodeHooks"][0]["socket"] == sock
    # virt-handler mounts the host's /var/run/kubevirt (virt-share-dir) at the same path
    assert sock.startswith("/var/run/kubevirt/")


# -- the node hook's condition in virt-handler's CEL environment ---------------------------


@pytest.fixture(scope="module")
def node_env():
    cel = pytest.importorskip("cel_expr_python.cel", reason="cel-expr-python (the test extra)")
    pytest.importorskip("grpc_tools")
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    from grpc_tools import protoc

    out = Path(tempfile.mkdtemp(prefix="nfd-snp-node-model-")) / "model.pb"
    proto = DATA / "cel-node-vmi-model.proto"
    assert protoc.main(["protoc", f"-I{DATA}", f"--descriptor_set_out={out}", str(proto)]) == 0
    files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    vmi_class = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("v1.VirtualMachineInstance")
    )
    env = cel.NewEnv(descriptor_pool=pool, variables={"vmi": cel.Type("v1.VirtualMachineInstance")})
    condition = env.compile(plugin.NODE_CONDITION)
    assert condition.return_type() == cel.Type.BOOL
    return vmi_class, condition


@pytest.mark.parametrize(
    "launch, annotations, sent",
    [
        ("snp", {}, True),
        ("snp", {"sev-snp.kubevirt.io/host-data": "x"}, True),
        ("sev", {"sev-snp.kubevirt.io/secure-nested-paging": "true"}, True),
        (None, {"sev-snp.kubevirt.io/vcek": "yes"}, True),  # refused there: options, no SNP
        ("sev", {}, False),
        (None, {}, False),
        (None, {"other.example.com/sev-snp.kubevirt.io": "x"}, False),
        # a VMI that only says no is not sent: a node without the service would refuse it
        (None, {"sev-snp.kubevirt.io/secure-nested-paging": "false"}, False),
        ("sev", {"sev-snp.kubevirt.io/secure-nested-paging": "No"}, False),
        (None, {"sev-snp.kubevirt.io/secure-nested-paging": "OFF"}, False),
        (None, {"sev-snp.kubevirt.io/secure-nested-paging": "0"}, False),
        # any other spelling is the node hook's to read; options with a no are refused there
        (None, {"sev-snp.kubevirt.io/secure-nested-paging": " yes "}, True),
        (
            None,
            {
                "sev-snp.kubevirt.io/secure-nested-paging": "false",
                "sev-snp.kubevirt.io/vcek": "yes",
            },
            True,
        ),
    ],
)
def test_the_node_hook_is_sent_snp_vmis_only(node_env, launch, annotations, sent):
    vmi_class, condition = node_env
    vmi = vmi_class()
    vmi.metadata.name = "vm"
    vmi.metadata.annotations.update(annotations)
    vmi.spec.domain.SetInParent()
    if launch:
        getattr(vmi.spec.domain.launchSecurity, launch).SetInParent()
    assert condition.eval(data={"vmi": vmi}).value() is sent
