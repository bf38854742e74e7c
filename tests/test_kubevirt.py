"""KubeVirt: the onDefineDomain sidecar (as the shim runs it), the generated self-contained
script in a venv without lxml, and the deploy/kubevirt manifests."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from nfd_snp import kubevirt, sidecar_bundle
from nfd_snp import xmlio
from nfd_snp.errors import InputError
from tests.conftest import REPO, SHARED

OWN = REPO / "tests" / "data" / "domains"
KV_DOMAIN = (OWN / "kubevirt-sev.xml").read_text()
HOST_DATA = base64.b64encode(b"h" * 32).decode()


def vmi(annotations=None, launch=None, **spec_extra):
    launch = {"sev": {}} if launch is None else launch
    return json.dumps(
        {
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachineInstance",
            "metadata": {
                "name": "vmi-sev",
                "namespace": "default",
                "annotations": annotations or {},
            },
            "spec": {"domain": {"launchSecurity": launch, "devices": {}}, **spec_extra},
        }
    )


ASK = {"sev-snp.kubevirt.io/secure-nested-paging": "true"}


def canonical(xml: str) -> str:
    return ET.canonicalize(xml, strip_text=True, rewrite_prefixes=True)


def run_entry(args, python=None, script=None):
    """The repository hook entry (or a generated script) run as the shim runs it."""
    cmd = [python or sys.executable, "-I", str(script or REPO / "hooks" / "onDefineDomain"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


# -- the request ----------------------------------------------------------------------------


def test_unasked_vmi_gets_its_domain_back_byte_for_byte():
    for given in ({}, {"sev-snp.kubevirt.io/host-data": "whatever"}):
        out = kubevirt.on_define_domain(vmi(given), KV_DOMAIN)
        assert out == KV_DOMAIN
    # even a domain that does not parse passes untouched when SNP was not asked for
    assert kubevirt.on_define_domain(vmi(), "<not xml") == "<not xml"


@pytest.mark.parametrize(
    "how",
    ["annotation", "vep-field", "upstream-snp"],
)
def test_three_ways_to_ask(how):
    annotations = {"sev-snp.kubevirt.io/host-data": HOST_DATA}
    domain = KV_DOMAIN
    if how == "annotation":
        request = vmi({**ASK, **annotations})
    elif how == "vep-field":
        request = vmi(annotations, {"sev": {"secureNestedPaging": True}})
    else:  # upstream KubeVirt already made it sev-snp; the sidecar adds the options
        request = vmi(annotations, {"snp": {}})
        domain = KV_DOMAIN.replace(
            '<launchSecurity type="sev">', '<launchSecurity type="sev-snp">'
        ).replace("0x0007", "0x30000")
    root = xmlio.parse(kubevirt.on_define_domain(request, domain))
    ls = root.find("launchSecurity")
    assert ls.get("type") == "sev-snp" and ls.find("hostData").text == HOST_DATA
    assert root.find("os/nvram") is None


@pytest.mark.parametrize(
    "annotation, value, where, expected",
    [
        ("policy", "0x70000", "launchSecurity/policy", "0x00070000"),
        ("host-data", HOST_DATA, "launchSecurity/hostData", HOST_DATA),
        ("id-block", base64.b64encode(b"i" * 96).decode(), "launchSecurity/idBlock", None),
        (
            "guest-visible-workarounds",
            base64.b64encode(b"g" * 16).decode(),
            "launchSecurity/guestVisibleWorkarounds",
            None,
        ),
        ("vcek", "yes", "launchSecurity@vcek", "yes"),
        (
            "firmware",
            "/usr/share/OVMF/OVMF.amdsev.fd",
            "os/loader",
            "/usr/share/OVMF/OVMF.amdsev.fd",
        ),
    ],
)
def test_each_option_annotation(annotation, value, where, expected):
    out = kubevirt.on_define_domain(
        vmi({**ASK, f"sev-snp.kubevirt.io/{annotation}": value}), KV_DOMAIN
    )
    root = xmlio.parse(out)
    path, _, attr = where.partition("@")
    element = root.find(path)
    got = element.get(attr) if attr else element.text
    assert got == (value if expected is None else expected)


def test_id_auth_with_author_key():
    annotations = {
        **ASK,
        "sev-snp.kubevirt.io/id-auth": base64.b64encode(b"a" * 4096).decode(),
        "sev-snp.kubevirt.io/author-key": "yes",
        "sev-snp.kubevirt.io/id-block": base64.b64encode(b"i" * 96).decode(),
    }
    ls = xmlio.parse(kubevirt.on_define_domain(vmi(annotations), KV_DOMAIN)).find("launchSecurity")
    assert ls.get("authorKey") == "yes" and len(ls.find("idAuth").text) == 5464


@pytest.mark.parametrize(
    "annotations, launch, message",
    [
        ({"sev-snp.kubevirt.io/host-data": "c2hvcnQ="}, None, "must be exactly 32"),
        (
            {"sev-snp.kubevirt.io/hostdata": "x"},
            None,
            "unknown annotation sev-snp.kubevirt.io/hostdata",
        ),
        ({"sev-snp.kubevirt.io/policy": "0x1"}, None, "bit 17 is reserved"),
        ({"sev-snp.kubevirt.io/kernel-hashes": "yes"}, None, "no <os><kernel>"),
        ({}, {"sev": {"attestation": {}}}, "SEV attestation, which cannot carry over"),
        ({}, {}, "has no spec.domain.launchSecurity.sev"),
    ],
)
def test_asked_but_cannot_be_served_fails_the_define(annotations, launch, message):
    proc = run_entry(["--vmi", vmi({**ASK, **annotations}, launch), "--domain", KV_DOMAIN])
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith("nfd-snp: refusing SEV-SNP for this VMI: ")
    assert message in proc.stderr and len(proc.stderr.splitlines()) == 1


# -- the shim's argument shapes and bad input ----------------------------------------------


@pytest.mark.parametrize(
    "shape",
    [
        lambda v, d: ["--vmi", v, "--domain", d],
        lambda v, d: ["--domain", d, "--vmi", v],
        lambda v, d: [f"--vmi={v}", f"--domain={d}"],
        lambda v, d: ["--version", "v1alpha3", "--vmi", v, "--domain", d],
    ],
    ids=["vmi-first", "domain-first", "equals", "with-version"],
)
def test_shim_argument_shapes(shape):
    proc = run_entry(shape(vmi(ASK), KV_DOMAIN))
    assert proc.returncode == 0, proc.stderr
    assert xmlio.parse(proc.stdout).find("launchSecurity").get("type") == "sev-snp"


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "missing --vmi and --domain"),
        (["--vmi", "{}"], "missing --domain"),
        (["--vmi"], "--vmi needs a value"),
        (["--vmi", "{}", "--domain", "<d/>", "--extra"], "unexpected argument '--extra'"),
        (["--vmi", "{not json", "--domain", "<d/>"], "VMI: not valid JSON"),
        (["--vmi", "[1, 2]", "--domain", "<d/>"], "VMI: the document is not an object"),
        (["--vmi", json.dumps({"metadata": []}), "--domain", "<d/>"], "metadata is not an object"),
        (["--vmi", vmi(ASK), "--domain", "<domain><os>"], "not well-formed"),
        (["--vmi", vmi(ASK), "--domain", '<!DOCTYPE d [<!ENTITY a "b">]><domain/>'], "DOCTYPE"),
    ],
)
def test_usage_and_input_errors_exit_2(args, message):
    proc = run_entry(args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_large_vmi_json():
    # The shim passes the VMI as one argument; Linux caps one argv string at 128 KiB
    # (MAX_ARG_STRLEN), so ~120 KB is the largest VMI that can reach the hook this way.
    big = {**ASK, **{f"example.com/a{i}": "x" * 900 for i in range(130)}}
    text = vmi(big)
    assert 110_000 < len(text) < 131_072
    proc = run_entry(["--vmi", text, "--domain", KV_DOMAIN])
    assert proc.returncode == 0, proc.stderr[:200]
    too_big = {f"example.com/a{i}": "x" * 900 for i in range(5000)}
    with pytest.raises(InputError, match="more than the 4194304 allowed"):
        kubevirt.parse_vmi(vmi(too_big))


# -- the self-contained script in a venv without lxml ----------------------------------------


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory):
    """A venv with nothing but the standard library (like the sidecar-shim image)."""
    env = tmp_path_factory.mktemp("bare")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    for module in ("lxml", "libvirt", "click", "nfd_snp"):
        probe = subprocess.run([str(python), "-I", "-c", f"import {module}"], capture_output=True)
        assert probe.returncode != 0, f"{module} must not be importable in the bare venv"
    return str(python)


@pytest.fixture(scope="module")
def script(tmp_path_factory):
    path = tmp_path_factory.mktemp("sidecar") / "onDefineDomain"
    path.write_text(sidecar_bundle.build_script())
    path.chmod(0o755)
    return path


def test_script_embeds_the_package_modules_verbatim():
    namespace: dict = {}
    exec(sidecar_bundle.build_script().split("PACKAGES =")[0], namespace)
    for name, rel in sidecar_bundle.MODULES:
        assert namespace["SOURCES"][name] == (REPO / "nfd_snp" / rel).read_text(), name


def _domains():
    paths = sorted(OWN.glob("*.xml"))
    if (SHARED / "fixtures" / "domains").is_dir():
        paths += sorted((SHARED / "fixtures" / "domains").glob("*.xml"))
    return paths


@pytest.mark.parametrize("path", _domains(), ids=lambda p: p.name)
def test_script_under_stdlib_matches_lxml_engine(bare_python, script, path):
    request = vmi({**ASK, "sev-snp.kubevirt.io/vcek": "yes"})
    domain = path.read_text()
    bare = run_entry(["--vmi", request, "--domain", domain], python=bare_python, script=script)
    lxml_run = run_entry(["--vmi", request, "--domain", domain])
    assert (bare.returncode, bare.stderr) == (lxml_run.returncode, lxml_run.stderr)
    if bare.returncode == 0:
        assert canonical(bare.stdout) == canonical(lxml_run.stdout)
        assert xmlio.parse(bare.stdout).find("launchSecurity").get("type") == "sev-snp"


def test_script_passes_unasked_vmis_and_rejects_bad_input(bare_python, script):
    proc = run_entry(["--vmi", vmi(), "--domain", KV_DOMAIN], python=bare_python, script=script)
    assert (proc.returncode, proc.stdout) == (0, KV_DOMAIN)
    proc = run_entry(
        ["--vmi", vmi(ASK), "--domain", "<domain>" + "<a>" * 300 + "</domain>"],
        python=bare_python,
        script=script,
    )
    assert proc.returncode == 2 and "deeper than 256 levels" in proc.stderr


# -- manifests ----------------------------------------------------------------------------

DEPLOY = REPO / "deploy" / "kubevirt"


def test_committed_configmap_is_the_generated_one():
    assert (DEPLOY / "sidecar-configmap.yaml").read_text() == sidecar_bundle.configmap(
        "nfd-snp-sidecar"
    ), "stale: nfd-snp kubevirt sidecar-configmap > deploy/kubevirt/sidecar-configmap.yaml"


def _manifests():
    yaml = pytest.importorskip("yaml")
    docs = {}
    for path in sorted(DEPLOY.glob("*.yaml")):
        docs[path.name] = yaml.safe_load(path.read_text())  # a YAML error fails the test
    return docs


def test_configmap_validates_against_kubernetes_schema(tmp_path):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    doc = _manifests()["sidecar-configmap.yaml"]
    kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
    script = tmp_path / "onDefineDomain"
    script.write_text(doc["data"]["onDefineDomain"])
    proc = run_entry(["--vmi", vmi(ASK), "--domain", KV_DOMAIN], script=script)
    assert proc.returncode == 0 and "sev-snp" in proc.stdout


@pytest.mark.parametrize("name", ["vm-snp.yaml", "vm-snp-hostdata.yaml"])
def test_virtual_machines(name):
    vm = _manifests()[name]
    assert (vm["apiVersion"], vm["kind"]) == ("kubevirt.io/v1", "VirtualMachine")
    template = vm["spec"]["template"]
    spec = template["spec"]
    assert spec["nodeSelector"] == {"sev-snp.node.kubevirt.io/enabled": "true"}
    efi = spec["domain"]["firmware"]["bootloader"]["efi"]
    assert efi == {"secureBoot": False, "persistent": False}
    assert spec["domain"]["launchSecurity"] == {"sev": {}}
    sidecars = json.loads(template["metadata"]["annotations"]["hooks.kubevirt.io/hookSidecars"])
    configmap = _manifests()["sidecar-configmap.yaml"]
    assert sidecars[0]["configMap"] == {
        "name": configmap["metadata"]["name"],
        "key": "onDefineDomain",
        "hookPath": "/usr/bin/onDefineDomain",
    }
    # the VMI KubeVirt makes from this template asks for SNP with valid options
    request = json.dumps({"metadata": template["metadata"], "spec": spec})
    options = kubevirt.snp_request(json.loads(request))
    assert options is not None
    out = kubevirt.on_define_domain(request, KV_DOMAIN)
    assert xmlio.parse(out).find("launchSecurity").get("type") == "sev-snp"


def test_feature_gates_patch():
    cr = _manifests()["kubevirt-feature-gates.yaml"]
    gates = cr["spec"]["configuration"]["developerConfiguration"]["featureGates"]
    assert {"Sidecar", "WorkloadEncryptionSEV"} <= set(gates)
