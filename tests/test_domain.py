"""The rewrite engine: fixtures, options, policy, firmware, iommu, idempotence, schema validity,
hostile input, and a property test over random domains and options."""

from __future__ import annotations

import base64
import copy

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from nfd_snp import xmlio
from nfd_snp.domain import engine, schema
from nfd_snp.domain.options import SnpOptions
from nfd_snp.errors import DomainError, InputError, UnsafeXmlError
from tests.conftest import REPO, SHARED, domain_inputs
from tests.facts import node

OWN = REPO / "tests" / "data" / "domains"
GENOA = node()
B64 = {
    name: base64.b64encode(bytes(i % 251 for i in range(size))).decode()
    for name, size in (
        ("hostData", 32),
        ("idBlock", 96),
        ("idAuth", 4096),
        ("guestVisibleWorkarounds", 16),
    )
}
BACKENDS = ["lxml", "stdlib"]


@pytest.fixture(scope="session")
def schemas(trixie_root):
    path = trixie_root / "usr" / "share" / "libvirt" / "schemas"
    assert schema.knows_sev_snp(str(path))
    return str(path)


def _fixture_paths():
    paths = domain_inputs()
    if (SHARED / "fixtures" / "domains").is_dir():
        paths += sorted((SHARED / "fixtures" / "domains").glob("*.xml"))
    return paths


# libvirt's own test domains (../shared/fixtures): None when it converts, else a substring of
# the refusal. Our domains' outcomes are their golden files (tests/test_golden.py).
SHARED_OUTCOMES = {
    "libvirt-launch-security-sev-snp.xml": None,
    "libvirt-launch-security-sev.xml": "SEV attestation data (dhCert, session)",
    "libvirt-launch-security-sev-direct.xml": "SEV attestation data (dhCert, session)",
}


def expected_refusal(path, node):
    """None when the domain converts, else its refusal."""
    if path.parent != OWN:
        return SHARED_OUTCOMES[path.name]
    refusal = OWN / f"{path.stem}.{'no-facts' if node is None else 'genoa'}.err"
    return refusal.read_text().strip()[len("refused: ") :] if refusal.exists() else None


def convert(data, node=GENOA, backend="lxml", **options):
    root = xmlio.parse(data, backend=backend)
    marker = engine.find_marker(root)
    strings = dict(marker.attrib) if marker is not None else {}
    strings.update(options)
    engine.set_request(root, SnpOptions.from_strings(strings))
    return engine.rewrite(root, node)


@pytest.mark.parametrize("path", _fixture_paths(), ids=lambda p: p.name)
@pytest.mark.parametrize("node", [GENOA, None], ids=["node-facts", "no-facts"])
def test_fixture(path, node, schemas):
    expected = expected_refusal(path, node)
    data = path.read_bytes()
    if expected is not None:
        for backend in BACKENDS:
            with pytest.raises(DomainError) as exc:
                convert(data, node, backend)
            assert expected in str(exc.value)
        return
    root = convert(data, node)
    schema.validate(root, schemas)
    out = xmlio.serialize(root)
    # idempotent, byte for byte
    assert xmlio.serialize(engine.rewrite(xmlio.parse(out), node)) == out
    ls = root.find("launchSecurity")
    assert ls.get("type") == "sev-snp" and ls.find("policy").text.startswith("0x")
    assert root.find("os/nvram") is None
    assert root.find("os/loader").get("stateless") == "yes"
    if node is GENOA:
        assert ls.find("cbitpos").text == "51"
        assert root.find("os/loader").text == "/usr/share/edk2/ovmf/OVMF.amdsev.fd"
        assert root.find("os").get("firmware") is None
    else:
        assert root.find("os").get("firmware") == "efi"
    # the standard-library engine gives the same document
    std = convert(data, node, "stdlib")
    assert canonical(std) == canonical(root)


def canonical(root) -> str:
    import xml.etree.ElementTree as ET

    # C14N 2.0 with prefixes rewritten: xml.etree renames other namespaces' prefixes (ns0)
    return ET.canonicalize(xmlio.serialize(root), strip_text=True, rewrite_prefixes=True)


def test_everything_else_is_preserved():
    data = (OWN / "plain-virtio.xml").read_bytes()
    before = xmlio.parse(data)
    after = convert(data)
    assert "a comment the rewrite must not lose" in xmlio.serialize(after)
    assert (
        after.find("metadata/{http://libosinfo.org/xmlns/libvirt/domain/1.0}libosinfo") is not None
    )
    assert [c.tag for c in after.find("devices")] == [c.tag for c in before.find("devices")]
    assert after.find("cpu").attrib == before.find("cpu").attrib
    assert after.find("os/boot").get("dev") == "hd"


def test_virtio_devices_get_iommu_and_others_do_not():
    root = convert((OWN / "plain-virtio.xml").read_bytes())
    devices = root.find("devices")

    def iommu(element):
        driver = element.find("driver")
        return driver is not None and driver.get("iommu") == "on"

    disks = devices.findall("disk")
    assert iommu(disks[0]) and not iommu(disks[1])  # virtio disk vs SATA cdrom
    assert disks[0].find("driver").get("type") == "qcow2"  # existing driver attributes kept
    controllers = {c.get("model") or c.get("type"): iommu(c) for c in devices.findall("controller")}
    assert controllers == {"qemu-xhci": False, "virtio-scsi": True, "virtio-serial": True}
    nics = devices.findall("interface")
    assert iommu(nics[0]) and not iommu(nics[1])
    inputs = devices.findall("input")
    assert iommu(inputs[0]) and not iommu(inputs[1])
    for tag in ("video", "memballoon", "rng", "vsock"):
        assert iommu(devices.find(tag)), tag


def test_kubevirt_sev_domain_becomes_snp():
    root = convert((OWN / "kubevirt-sev.xml").read_bytes())
    ls = root.find("launchSecurity")
    # the SEV policy (0x0007: NODBG, NOKS, ES) is never carried over: SNP bits differ
    assert ls.find("policy").text == "0x00030000"
    assert root.find("os/nvram") is None
    loader = root.find("os/loader")
    assert dict(loader.attrib) == {"type": "rom", "stateless": "yes"}
    assert root.find("metadata/{http://kubevirt.io}kubevirt/{http://kubevirt.io}uid") is not None


# -- options ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(B64))
def test_base64_options(name, schemas):
    options = {name: B64[name]}
    if name == "idAuth":
        options["authorKey"] = "yes"
    root = convert((OWN / "direct-kernel.xml").read_bytes(), **options)
    schema.validate(root, schemas)
    assert root.find(f"launchSecurity/{name}").text == B64[name]


@pytest.mark.parametrize(
    "options, message",
    [
        (
            {"hostData": base64.b64encode(b"x" * 31).decode()},
            "decodes to 31 bytes, must be exactly 32",
        ),
        ({"idBlock": "not base64!"}, "idBlock: not valid base64"),
        ({"idAuth": base64.b64encode(b"x" * 4095).decode()}, "must be exactly 4096"),
        ({"guestVisibleWorkarounds": base64.b64encode(b"x" * 17).decode()}, "exactly 16"),
        ({"authorKey": "yes"}, "authorKey='yes' needs idAuth"),
        ({"vcek": "maybe"}, "vcek: 'maybe' is not yes or no"),
        ({"kernelHashes": "yes"}, "no <os><kernel>"),
        ({"firmware": "relative/OVMF.fd"}, "absolute path"),
        ({"colour": "blue"}, "unknown option 'colour'"),
        ({"policy": "zero"}, "is not a number"),
        ({"policy": "0x10000"}, "bit 17 is reserved and must be 1"),
        ({"policy": "0x4030000"}, "bits 63:26 are reserved"),
        ({"policy": "0x70000"}, "bit 18 (migration agent) is refused by KVM"),
        ({"policy": "0x10000000000030000"}, "does not fit in 64 bits"),
        ({"policy": "0x33800"}, "requires SNP firmware ABI 56.0, but this node runs 1.55"),
    ],
)
def test_invalid_options_refused(options, message):
    for backend in BACKENDS:
        with pytest.raises(DomainError) as exc:
            convert((OWN / "plain-virtio.xml").read_bytes(), GENOA, backend, **options)
        assert message in str(exc.value)


def test_kernel_hashes_with_direct_boot(schemas):
    root = convert((OWN / "direct-kernel.xml").read_bytes(), kernelHashes="yes", vcek="no")
    schema.validate(root, schemas)
    ls = root.find("launchSecurity")
    assert (ls.get("kernelHashes"), ls.get("vcek")) == ("yes", "no")


def test_firmware_option_wins_over_node():
    root = convert((OWN / "plain-virtio.xml").read_bytes(), firmware="/opt/ovmf/SNP.fd")
    assert root.find("os/loader").text == "/opt/ovmf/SNP.fd"


def test_debug_only_when_asked():
    default = convert((OWN / "kubevirt-sev.xml").read_bytes())
    assert not int(default.find("launchSecurity/policy").text, 16) & (1 << 19)
    asked = convert((OWN / "kubevirt-sev.xml").read_bytes(), policy="0x000b0000")
    assert int(asked.find("launchSecurity/policy").text, 16) & (1 << 19)


def test_min_abi_within_node_firmware_accepted():
    root = convert((OWN / "plain-virtio.xml").read_bytes(), policy="0x00030137")
    assert root.find("launchSecurity/policy").text == "0x00030137"


def test_existing_equivalent_text_left_alone():
    root = convert((OWN / "converted-snp.xml").read_bytes())
    assert root.find("launchSecurity/policy").text == "0x30000"  # same value, not reformatted


def test_smm_refused():
    data = (OWN / "plain-virtio.xml").read_bytes().replace(b"<apic/>", b"<apic/><smm/>")
    with pytest.raises(DomainError, match="cannot use SMM"):
        convert(data)


def test_unmarked_domain_is_not_rewritten():
    root = xmlio.parse((OWN / "plain-virtio.xml").read_bytes())
    with pytest.raises(DomainError, match="does not ask for SEV-SNP"):
        engine.rewrite(root, GENOA)
    assert engine.requested_options(root) is None


# -- verify (the hook's prepare check) ---------------------------------------------------------


def test_verify_converted_domain():
    root = xmlio.parse((OWN / "converted-snp.xml").read_bytes())
    engine.verify(root, GENOA)


def test_verify_refuses_unconverted_and_mismatched():
    unconverted = xmlio.parse((OWN / "kubevirt-sev.xml").read_bytes())
    engine.set_request(unconverted, SnpOptions())
    with pytest.raises(DomainError, match="not converted .launchSecurity type='sev'"):
        engine.verify(unconverted, GENOA)
    converted = xmlio.parse((OWN / "converted-snp.xml").read_bytes())
    turin_like = node(cbitpos=52, snp_firmware=())
    with pytest.raises(DomainError, match=r"does not match .*\(cbitpos\)"):
        engine.verify(converted, turin_like)
    marker = engine.find_marker(converted)
    marker.set("hostData", B64["hostData"])
    with pytest.raises(DomainError, match=r"\(hostData\)"):
        engine.verify(converted, GENOA)


def test_verify_accepts_cbit_left_for_libvirt_to_fill():
    """Converted without node facts (no <cbitpos>): libvirt fills it at start, so it runs."""
    root = xmlio.parse((OWN / "direct-kernel.xml").read_bytes())
    engine.set_request(root, SnpOptions())
    engine.rewrite(root, None)
    assert root.find("launchSecurity/cbitpos") is None
    engine.verify(root, GENOA)


# -- hostile input ---------------------------------------------------------------------------

LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaaaaaaaa">'
    b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;">]>'
    b"<domain><name>&c;</name></domain>"
)
EXTERNAL = (
    b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/shadow">]>'
    b"<domain><name>&x;</name></domain>"
)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "data, message",
    [
        # libxml2 2.9 (Debian 12, EL9) stops at the entity loop before lxml sees the DOCTYPE
        (LAUGHS, "DOCTYPE|entity reference loop"),
        (EXTERNAL, "DOCTYPE"),
        (b"<domain>" + b" " * (50 * 1024 * 1024) + b"</domain>", "bytes is more than"),
        (b"<domain>" + b"<a>" * 300 + b"</a>" * 300 + b"</domain>", "deeper than|not well-formed"),
        (b"<domain><name>x</domain>", "not well-formed"),
        (b"", "empty input"),
    ],
    ids=["entity-expansion", "external-entity", "50MB", "deep-nesting", "malformed", "empty"],
)
def test_hostile_xml(backend, data, message):
    import re

    with pytest.raises(UnsafeXmlError) as exc:
        xmlio.parse(data, backend=backend)
    assert re.search(message, str(exc.value)) and "\n" not in str(exc.value)


# -- property test --------------------------------------------------------------------------

# Mostly valid values, so most examples reach the schema check; invalid ones stay possible.
_b64 = {n: st.sampled_from([B64[n]] * 6 + [base64.b64encode(b"short").decode(), "!!"]) for n in B64}
_options = st.fixed_dictionaries(
    {},
    optional={
        "policy": st.sampled_from(
            [
                "0x30000",
                "0x70000",
                "0x30137",
                "196608",
                "0x000b0000",
                "0x1f0000",
                "0x10000",
                "0x33800",
                "nope",
            ]
        ),
        **_b64,
        "authorKey": st.sampled_from(["no", "no", "perhaps"]),
        "vcek": st.sampled_from(["yes", "no"]),
        "kernelHashes": st.sampled_from(["yes", "no"]),
        "firmware": st.sampled_from(["/usr/share/OVMF/OVMF.amdsev.fd"] * 3 + ["OVMF.fd"]),
    },
)
_launch = st.sampled_from(
    [
        "",
        "",
        "<launchSecurity type='sev'><policy>0x0001</policy></launchSecurity>",
        "<launchSecurity type='sev'><cbitpos>47</cbitpos><reducedPhysBits>1</reducedPhysBits>"
        "<policy>0x0005</policy><dhCert>AAAA</dhCert></launchSecurity>",
        "<launchSecurity type='sev-snp'><policy>0x30000</policy></launchSecurity>",
        "<launchSecurity type='sev-snp' authorKey='yes'><policy>0x30000</policy></launchSecurity>",
        "<launchSecurity type='s390-pv'/>",
    ]
)
_os = st.sampled_from(
    [
        "<os><type arch='x86_64' machine='q35'>hvm</type></os>",
        "<os firmware='efi'><type arch='x86_64' machine='q35'>hvm</type>"
        "<loader secure='yes'/></os>",
        "<os><type arch='x86_64' machine='q35'>hvm</type><loader readonly='yes' type='pflash'>"
        "/usr/share/OVMF/OVMF_CODE.fd</loader><nvram>/var/lib/nv.fd</nvram></os>",
        "<os><type arch='x86_64'>hvm</type><kernel>/boot/vmlinuz</kernel></os>",
        "<os><type arch='x86_64'>hvm</type><kernel>/boot/vmlinuz</kernel></os>",
        "",
    ]
)
_device = st.sampled_from(
    [
        "<disk type='file' device='disk'><source file='/x.img'/>"
        "<target dev='vda' bus='virtio'/></disk>",
        "<interface type='user'><model type='virtio'/></interface>",
        "<interface type='user'><model type='rtl8139'/></interface>",
        "<memballoon model='virtio'><driver iommu='off'/></memballoon>",
        "<rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>",
        "<controller type='virtio-serial' index='0'/>",
        "<input type='tablet' bus='usb'/>",
        "<!-- a comment -->",
    ]
)
_node = st.sampled_from([None, GENOA, node(cbitpos=47, snp_api=(1, 51), snp_firmware=())])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    options=_options,
    launch=_launch,
    os_xml=_os,
    devices=st.lists(_device, max_size=6, unique=True),  # libvirt allows one memballoon
    node=_node,
    indent=st.booleans(),
    backend=st.sampled_from(BACKENDS),
)
def test_property_schema_valid_or_input_error(
    schemas, options, launch, os_xml, devices, node, indent, backend
):
    sep = "\n  " if indent else ""
    xml = (
        f"<domain type='kvm'>{sep}<name>p</name>{sep}<memory>1048576</memory>{sep}{os_xml}"
        f"{sep}<devices>{''.join(devices)}</devices>{sep}{launch}\n</domain>"
    )
    try:
        root = convert(xml.encode(), node, backend, **options)
    except InputError:
        event("refused")
        return
    event("converted")
    out = xmlio.serialize(root)
    lxml_root = xmlio.parse(out, backend="lxml")
    schema.validate(lxml_root, schemas)
    again = xmlio.serialize(engine.rewrite(xmlio.parse(out, backend=backend), node))
    assert again == out
    engine.verify(copy.deepcopy(root), node)
