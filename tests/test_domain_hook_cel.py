"""The CEL domain hook, evaluated by a real CEL implementation (cel-expr-python, CEL's C++
runtime) over a model of KubeVirt's environment (tests/data/kubevirt/cel-*-model.proto:
libvirtxml's and the VMI's Go structs as CEL sees them), merged into KubeVirt's SNP domain
as KubeVirt's deepMerge does, and compared with what the engine (the sidecar's code)
makes of the same VMI: for every combination of options the sidecar accepts, in several
spellings. What the expression cannot read it refuses with an error, and what it cannot
write as the engine would, the node hook refuses first (inexpressible)."""

from __future__ import annotations

import base64
import importlib
import itertools
import json
import random
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nfd_snp.domain.options import ANNOTATIONS, Base64, DomainError, Policy, YesNo
from nfd_snp.kubevirt import domain_hook_cel, sidecar
from tests.conftest import REPO

cel = pytest.importorskip("cel_expr_python.cel", reason="cel-expr-python (the test extra)")
pytest.importorskip("grpc_tools", reason="grpcio-tools (the test extra) compiles the model")

DATA = REPO / "tests" / "data" / "kubevirt"
KV_SNP_DOMAIN = (DATA / "kubevirt-snp.xml").read_text()
KERNEL = "<kernel>/var/run/kubevirt-ephemeral-disks/kernel-boot/vmlinuz</kernel>"
KV_KERNEL_DOMAIN = KV_SNP_DOMAIN.replace("</loader>", "</loader>\n    " + KERNEL)
PREFIX = sidecar.ANNOTATION_PREFIX


@pytest.fixture(scope="module")
def model():
    from google.protobuf import descriptor_pool
    from grpc_tools import protoc

    out = Path(tempfile.mkdtemp(prefix="nfd-snp-cel-model-"))
    protos = [str(DATA / "cel-env-model.proto"), str(DATA / "cel-vmi-model.proto")]
    assert protoc.main(["protoc", f"-I{DATA}", f"--python_out={out}", *protos]) == 0
    sys.path.insert(0, str(out))
    try:
        env_pb2 = importlib.import_module("cel_env_model_pb2")
        vmi_pb2 = importlib.import_module("cel_vmi_model_pb2")
    finally:
        sys.path.remove(str(out))
    # KubeVirt's NewEvaluator: the two variables, container libvirtxml, no extensions.
    env = cel.NewEnv(
        descriptor_pool=descriptor_pool.Default(),
        variables={
            "vmi": cel.Type("v1.VirtualMachineInstance"),
            "domainSpec": cel.Type("libvirtxml.Domain"),
        },
        container="libvirtxml",
    )
    mutation = env.compile(domain_hook_cel.expression())
    condition = env.compile(domain_hook_cel.CONDITION)
    # KubeVirt's CompileMutation / CompileCondition accept only these result types.
    assert mutation.return_type().name() == "libvirtxml.Domain"
    assert condition.return_type() == cel.Type.BOOL
    return env_pb2, vmi_pb2, mutation, condition


# -- KubeVirt's side: libvirtxml in and out, and deepMerge -------------------------------

_SNP_ATTRS = (("KernelHashes", "kernelHashes"), ("AuthorKey", "authorKey"), ("VCEK", "vcek"))
_SNP_ELEMENTS = (
    ("CBitPos", "cbitpos"),
    ("ReducedPhysBits", "reducedPhysBits"),
    ("Policy", "policy"),
    ("GuestVisibleWorkarounds", "guestVisibleWorkarounds"),
    ("IDBlock", "idBlock"),
    ("IDAuth", "idAuth"),
    ("HostData", "hostData"),
)
_LOADER_ATTRS = (
    ("Readonly", "readonly"),
    ("Secure", "secure"),
    ("Stateless", "stateless"),
    ("Type", "type"),
    ("Format", "format"),
)


def to_libvirtxml(env_pb2, root):
    """translate.ToLibvirtDomain, for the parts in the model (libvirtxml's UnmarshalXML)."""
    domain = env_pb2.Domain()
    ls = root.find("launchSecurity")
    if ls is not None and ls.get("type") == "sev-snp":
        snp = domain.LaunchSecurity.SEVSNP
        snp.SetInParent()
        for go, attr in _SNP_ATTRS:
            if ls.get(attr) is not None:
                setattr(snp, go, ls.get(attr))
        for go, tag in _SNP_ELEMENTS:
            child = ls.find(tag)
            if child is not None:
                text = (child.text or "").strip()
                base = 16 if tag == "policy" else 10
                value = int(text, base) if tag in ("policy", "cbitpos", "reducedPhysBits") else text
                setattr(snp, go, value)
    loader = root.find("os/loader")
    if loader is not None:
        domain.OS.Loader.Path = (loader.text or "").strip()
        for go, attr in _LOADER_ATTRS:
            if loader.get(attr) is not None:
                setattr(domain.OS.Loader, go, loader.get(attr))
    return domain


def deep_merge(base, partial) -> None:
    """KubeVirt's deepMerge: the fields the result names overwrite, structs merge."""
    for field, value in partial.ListFields():
        if field.message_type is not None:
            target = getattr(base, field.name)
            target.SetInParent()
            deep_merge(target, value)
        else:
            setattr(base, field.name, value)


def marshal_into(root, domain) -> None:
    """libvirtxml's MarshalXML of launchSecurity and the loader, back into the document."""
    ls = root.find("launchSecurity")
    snp = domain.LaunchSecurity.SEVSNP
    new = ET.Element("launchSecurity", {"type": "sev-snp"})
    for go, attr in _SNP_ATTRS:
        if getattr(snp, go):
            new.set(attr, getattr(snp, go))
    for go, tag in _SNP_ELEMENTS:
        if go in ("CBitPos", "ReducedPhysBits", "Policy"):
            if snp.HasField(go):
                value = getattr(snp, go)
                ET.SubElement(new, tag).text = f"0x{value:08x}" if go == "Policy" else str(value)
        elif getattr(snp, go):
            ET.SubElement(new, tag).text = getattr(snp, go)
    root.remove(ls)
    root.append(new)
    os_element = root.find("os")
    loader = os_element.find("loader")
    if domain.OS.Firmware:
        os_element.set("firmware", domain.OS.Firmware)
    elif "firmware" in os_element.attrib:
        del os_element.attrib["firmware"]
    loader.attrib.clear()
    for go, attr in _LOADER_ATTRS:
        if getattr(domain.OS.Loader, go):
            loader.set(attr, getattr(domain.OS.Loader, go))
    loader.text = domain.OS.Loader.Path


def vmi_json(annotations) -> str:
    return json.dumps(
        {
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachineInstance",
            "metadata": {"name": "vm", "namespace": "default", "annotations": annotations},
            "spec": {"domain": {"launchSecurity": {"snp": {}}, "devices": {}}},
        }
    )


def through_cel(model, annotations, domain_xml):
    """The domain KubeVirt defines with the Plugin's CEL hook: (applied?, root)."""
    env_pb2, vmi_pb2, mutation, condition = model
    root = ET.fromstring(domain_xml)
    domain = to_libvirtxml(env_pb2, root)
    vmi = vmi_pb2.VirtualMachineInstance(Name="vm", Namespace="default")
    vmi.Annotations.update(annotations)
    data = {"vmi": vmi, "domainSpec": domain}
    if not condition.eval(data=data).value():
        return False, root
    result = mutation.eval(data=data).value()
    if not isinstance(result, env_pb2.Domain):  # an evaluation error: the hook fails
        raise RuntimeError(f"CEL evaluation failed: {result}")
    deep_merge(domain, result)
    marshal_into(root, domain)
    return True, root


def through_engine(annotations, domain_xml):
    return ET.fromstring(sidecar.on_define_domain(vmi_json(annotations), domain_xml))


def canonical(element) -> str:
    return ET.canonicalize(ET.tostring(element, encoding="unicode"), strip_text=True)


def launch_security(root) -> str:
    """launchSecurity as libvirt reads it: the policy is a number (KubeVirt writes 0x30000,
    libvirtxml 0x00030000, the engine keeps a text that already says the value)."""
    ls = root.find("launchSecurity")
    policy = ls.find("policy")
    if policy is not None:
        policy.text = hex(int(policy.text.strip(), 16))
    return canonical(ls)


def assert_same_guest(annotations, cel_root, engine_root):
    assert launch_security(cel_root) == launch_security(engine_root), annotations
    ours, theirs = cel_root.find("os/loader"), engine_root.find("os/loader")
    assert (ours.get("type"), ours.text) == (theirs.get("type"), (theirs.text or "").strip())
    if PREFIX + "firmware" in annotations:
        assert ours.attrib == theirs.attrib
        assert cel_root.find("os").get("firmware") is None
    assert cel_root.find("os/nvram") is None and engine_root.find("os/nvram") is None
    # Nothing else changes but the engine's own request marker.
    for root in (cel_root, engine_root):
        for tag in ("launchSecurity", "os", "metadata"):
            root.remove(root.find(tag))
    assert canonical(cel_root) == canonical(engine_root)


# -- every combination -------------------------------------------------------------------

SPELLINGS = {
    "policy": ["0x30000", "0X00031F01", "196608", "0x0000000001030133", "0x30101"],
    "yes-no": ["yes", "No", "TRUE", "off", "1", "0", "On", "fAlSe"],
}


def _value(annotation: str, field, rng) -> str:
    if isinstance(field.kind, Policy):
        return rng.choice(SPELLINGS["policy"])
    if isinstance(field.kind, YesNo):
        return rng.choice(SPELLINGS["yes-no"])
    if isinstance(field.kind, Base64):
        return base64.b64encode(rng.randbytes(field.kind.size)).decode()
    return "/usr/share/OVMF/OVMF.amdsev.fd" if rng.random() < 0.5 else "/opt/snp/fw.fd"


def combinations():
    rng = random.Random(58)
    names = sorted(ANNOTATIONS)
    for count in range(len(names) + 1):
        for chosen in itertools.combinations(names, count):
            yield {PREFIX + n: _value(n, ANNOTATIONS[n], rng) for n in chosen}


def test_every_option_combination_the_sidecar_accepts_gives_the_engines_guest(model):
    served = 0
    for asked in combinations():
        domain = KV_KERNEL_DOMAIN if PREFIX + "kernel-hashes" in asked else KV_SNP_DOMAIN
        try:
            engine_root = through_engine(asked, domain)
        except DomainError:
            continue  # refused by the sidecar, and by the node hook (authorKey without idAuth)
        assert domain_hook_cel.inexpressible(asked) is None, asked
        applied, cel_root = through_cel(model, asked, domain)
        assert applied == bool(asked), asked
        assert_same_guest(asked, cel_root, engine_root)
        served += 1
    assert served > 350  # 512 subsets, less those with authorKey and no idAuth


def test_without_options_or_without_snp_the_hook_does_not_apply(model):
    assert through_cel(model, {}, KV_SNP_DOMAIN)[0] is False
    ask_only = {PREFIX + "secure-nested-paging": "true"}
    assert through_cel(model, ask_only, KV_SNP_DOMAIN)[0] is False
    sev = (REPO / "tests" / "data" / "domains" / "kubevirt-sev.xml").read_text()
    assert through_cel(model, {PREFIX + "vcek": "yes"}, sev)[0] is False


@pytest.mark.parametrize(
    "name, value",
    [
        ("host-data", "aGVsbG8="),  # 5 bytes
        ("host-data", base64.b64encode(b"h" * 33).decode()),
        ("id-block", "!" * 128),
        ("guest-visible-workarounds", base64.b64encode(b"w" * 16).decode().rstrip("=")),
        ("vcek", "ture"),
        ("kernel-hashes", "2"),
        ("policy", "0x4000000"),  # bit 26
        ("policy", "67108864"),
        ("policy", "0x" + "1" * 20),
        ("policy", "-1"),
        ("policy", "0x"),
        ("firmware", "OVMF.fd"),
    ],
)
def test_a_value_it_cannot_read_fails_the_hook_instead_of_writing_another(model, name, value):
    with pytest.raises(RuntimeError):
        through_cel(model, {PREFIX + name: value}, KV_SNP_DOMAIN)


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="0123456789abcdefxX_ +-\t\u0663", max_size=12))
def test_any_policy_spelling_is_written_as_the_engine_reads_it_or_refused_first(text):
    annotations = {PREFIX + "policy": text}
    try:
        engine_root = through_engine(annotations, KV_SNP_DOMAIN)
    except DomainError:
        return  # the node hook refuses it with the engine's words
    if domain_hook_cel.inexpressible(annotations) is not None:
        return  # the node hook refuses it: CEL could not write it as the engine reads it
    applied, cel_root = through_cel(_MODEL, annotations, KV_SNP_DOMAIN)
    assert applied
    assert_same_guest(annotations, cel_root, engine_root)


@pytest.fixture(scope="module", autouse=True)
def _share_model(model):
    # hypothesis tests cannot take function-scoped fixtures; the model is built once anyway
    global _MODEL
    _MODEL = model


_MODEL = None


@pytest.mark.parametrize(
    "name, value",
    [
        ("host-data", " " + base64.b64encode(b"h" * 32).decode()),
        ("id-auth", "\t" + base64.b64encode(b"a" * 4096).decode()),
        ("vcek", "yes "),
        ("policy", "196_608"),
        ("policy", "\u0661\u0669\u0666\u0666\u0660\u0668"),  # Arabic-Indic digits, int() reads
        ("firmware", "/opt/fw dir/x.fd"),
    ],
)
def test_spellings_the_engine_reads_and_cel_cannot_are_named(name, value):
    annotations = {PREFIX + name: value}
    sidecar.snp_request(json.loads(vmi_json(annotations)))  # the engine takes them
    assert domain_hook_cel.inexpressible(annotations)
