"""KubeVirt's onDefineDomain sidecar as the shim runs it: which VMIs ask for SEV-SNP, what
their domain becomes, and what is refused. The generated one-file script is tested in
test_sidecar_bundle.py, the manifests in test_manifests.py."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from nfd_snp import xmlio
from nfd_snp.kubevirt import sidecar as kubevirt
from nfd_snp.errors import DomainError, InputError
from tests.conftest import REPO

OWN = REPO / "tests" / "data" / "domains"
KV_DOMAIN = (OWN / "kubevirt-sev.xml").read_text()
# The domain KubeVirt 1.7+ defines for launchSecurity.snp: a stateless ROM firmware and
# <launchSecurity type='sev-snp'><policy>0x30000</policy> (converter/compute/*.go).
KV_SNP_DOMAIN = (REPO / "tests" / "data" / "kubevirt" / "kubevirt-snp.xml").read_text()
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
    for given in ({}, {"sev-snp.kubevirt.io/secure-nested-paging": "no"}, {"other": "x"}):
        out = kubevirt.on_define_domain(vmi(given), KV_DOMAIN)
        assert out == KV_DOMAIN
    # even a domain that does not parse passes untouched when SNP was not asked for
    assert kubevirt.on_define_domain(vmi(), "<not xml") == "<not xml"


@pytest.mark.parametrize("spelling", ["true", "True", " yes", "1", "on"])
def test_every_yes_spelling_of_the_request_asks(spelling):
    given = {"sev-snp.kubevirt.io/secure-nested-paging": spelling}
    out = kubevirt.on_define_domain(vmi(given), KV_DOMAIN)
    assert "<launchSecurity type='sev-snp'>" in out.replace('"', "'")


@pytest.mark.parametrize(
    "given, spec_sev, message",
    [
        # an attempt to ask that cannot be read is refused, never taken for "did not ask"
        ({"sev-snp.kubevirt.io/secure-nested-paging": "ture"}, {}, "'ture' is not yes or no"),
        ({"sev-snp.kubevirt.io/host-data": "whatever"}, {}, "options are given"),
        ({}, {"secureNestedPaging": "true"}, "secureNestedPaging is 'true', not true or false"),
    ],
)
def test_an_unreadable_request_is_refused_not_ignored(given, spec_sev, message):
    doc = json.loads(vmi(given))
    doc["spec"]["domain"]["launchSecurity"]["sev"].update(spec_sev)
    with pytest.raises(DomainError, match=re.escape(message)):
        kubevirt.on_define_domain(json.dumps(doc), KV_DOMAIN)


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
        domain = KV_SNP_DOMAIN
    root = xmlio.parse(kubevirt.on_define_domain(request, domain))
    ls = root.find("launchSecurity")
    assert ls.get("type") == "sev-snp" and ls.find("hostData").text == HOST_DATA
    assert root.find("os/nvram") is None


@pytest.mark.parametrize(
    "annotation, value, where, expected",
    [
        ("policy", "0x30133", "launchSecurity/policy", "0x00030133"),
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


# -- upstream launchSecurity.snp keeps KubeVirt's firmware ----------------------------------


def test_upstream_snp_keeps_the_firmware_kubevirt_chose():
    out = kubevirt.on_define_domain(
        vmi({"sev-snp.kubevirt.io/host-data": HOST_DATA}, {"snp": {}}), KV_SNP_DOMAIN
    )
    root = xmlio.parse(out)
    loader = root.find("os/loader")
    assert (loader.get("type"), loader.text) == ("rom", "/usr/share/OVMF/OVMF.amdsev.fd")
    assert root.find("os").get("firmware") is None and root.find("os/nvram") is None
    ls = root.find("launchSecurity")
    assert int(ls.find("policy").text, 16) == 0x30000 and ls.find("hostData").text == HOST_DATA


def test_upstream_snp_firmware_annotation_wins():
    annotations = {"sev-snp.kubevirt.io/firmware": "/opt/ovmf/OVMF.snp.fd"}
    root = xmlio.parse(kubevirt.on_define_domain(vmi(annotations, {"snp": {}}), KV_SNP_DOMAIN))
    assert root.find("os/loader").text == "/opt/ovmf/OVMF.snp.fd"


def test_sev_path_does_not_keep_the_pflash_firmware():
    # KubeVirt's SEV firmware is a pflash image with NVRAM, which an SNP guest cannot boot
    # (no read-only memory for protected guests): libvirt's SNP autoselection replaces it.
    root = xmlio.parse(kubevirt.on_define_domain(vmi(ASK), KV_DOMAIN))
    assert root.find("os").get("firmware") == "efi"
    assert root.find("os/loader").text is None and root.find("os/nvram") is None


def test_upstream_snp_second_pass_changes_nothing():
    request = vmi({"sev-snp.kubevirt.io/vcek": "no"}, {"snp": {}})
    once = kubevirt.on_define_domain(request, KV_SNP_DOMAIN)
    assert kubevirt.on_define_domain(request, once) == once


@pytest.mark.parametrize("doc", [{"spec": {"domain": {}}}, {}], ids=["no-launch", "no-spec"])
def test_a_request_without_launch_security_names_what_is_missing(doc):
    doc["metadata"] = {"annotations": ASK}
    with pytest.raises(DomainError, match="has no spec.domain.launchSecurity.sev"):
        kubevirt.snp_request(doc)
