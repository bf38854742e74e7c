"""The rewrite engine and the option declarations where a mistake would start an SEV-SNP guest
other than the one asked for: every launchSecurity value compared, whatever the domain
lacks; what carries over from an SEV domain and what the node overrides; each kind of
value at the edges of what libvirt and the firmware accept; the devices and firmware an
SNP guest cannot use."""

from __future__ import annotations

import base64
import re

import pytest

from nfd_snp import xmlio
from nfd_snp.domain import engine, options
from nfd_snp.domain.options import OPTIONS, SnpOptions
from nfd_snp.errors import DomainError
from tests.conftest import REPO
from tests.facts import node

OWN = REPO / "tests" / "data" / "domains"
GENOA = node()
AUTH = base64.b64encode(b"a" * 4096).decode()


def converted(data: bytes, facts=GENOA, **request) -> object:
    root = xmlio.parse(data, backend="stdlib")
    engine.set_request(root, SnpOptions.from_strings(request))
    return engine.rewrite(root, facts)


def refusal(root, facts=GENOA) -> str:
    with pytest.raises(DomainError) as exc:
        engine.verify(root, facts)
    return str(exc.value)


MISMATCH = "the domain's launchSecurity does not match its SEV-SNP request and this node ({})"

# A second valid value of each launchSecurity option, differing from the first.
SECOND = {
    "policy": "0x00030001",
    "guestVisibleWorkarounds": base64.b64encode(b"w" * 16).decode(),
    "idBlock": base64.b64encode(b"i" * 96).decode(),
    "idAuth": base64.b64encode(b"b" * 4096).decode(),
    "hostData": base64.b64encode(b"h" * 32).decode(),
    "kernelHashes": "no",
    "authorKey": "no",
    "vcek": "no",
}
FIRST = {
    "policy": "0x00030000",
    "guestVisibleWorkarounds": base64.b64encode(b"W" * 16).decode(),
    "idBlock": base64.b64encode(b"I" * 96).decode(),
    "idAuth": AUTH,
    "hostData": base64.b64encode(b"H" * 32).decode(),
    "kernelHashes": "yes",
    "authorKey": "yes",
    "vcek": "yes",
}


# -- verify compares everything, also where libvirt fills the host's values -------------------


@pytest.mark.parametrize("name", sorted(SECOND))
def test_each_value_is_compared_when_the_host_values_are_left_to_libvirt(name):
    """Converted without node facts (no cbitpos, no reducedPhysBits: libvirt fills them):
    a launchSecurity value that differs from the request is still refused, by name."""
    root = converted((OWN / "direct-kernel.xml").read_bytes(), None, **FIRST)
    assert root.find("launchSecurity/cbitpos") is None
    engine.verify(root, GENOA)
    engine.find_marker(root).set(name, SECOND[name])
    if name == "authorKey":
        engine.find_marker(root).set("idAuth", AUTH)
    assert refusal(root) == MISMATCH.format(name)


def test_a_debug_policy_nobody_asked_for_is_refused_at_start():
    """The request says 0x30000; launchSecurity was edited to allow debugging (bit 19)."""
    root = converted((OWN / "plain-virtio.xml").read_bytes(), None, policy="0x30000")
    root.find("launchSecurity/policy").text = "0x000b0000"
    assert refusal(root) == MISMATCH.format("policy")


def test_every_difference_is_named_at_once():
    root = converted((OWN / "plain-virtio.xml").read_bytes(), policy="0x30000", vcek="yes")
    root.find("launchSecurity/policy").text = "0x000b0000"
    root.find("launchSecurity/cbitpos").text = "47"
    del root.find("launchSecurity").attrib["vcek"]
    assert refusal(root) == MISMATCH.format("cbitpos, policy, vcek")


# -- what carries over, what the node decides ------------------------------------------------

SEV_HASHES = (OWN / "sev-kernel-hashes.xml").read_bytes()


@pytest.mark.parametrize("facts", [GENOA, None], ids=["node-facts", "no-facts"])
def test_an_sev_domain_keeps_its_kernel_measurement(facts):
    """kernelHashes means the same for SEV and SEV-SNP: converting must not drop the
    measured direct boot."""
    root = converted(SEV_HASHES, facts)
    assert root.find("launchSecurity").get("kernelHashes") == "yes"
    engine.verify(root, facts)
    asked_off = converted(SEV_HASHES, facts, kernelHashes="no")
    assert asked_off.find("launchSecurity").get("kernelHashes") == "no"


def test_the_nodes_cbit_and_reduced_phys_bits_replace_another_hosts():
    root = converted(SEV_HASHES, GENOA)
    ls = root.find("launchSecurity")
    assert (ls.find("cbitpos").text, ls.find("reducedPhysBits").text) == ("51", "1")
    kept = converted(SEV_HASHES, None)  # no node facts: the domain's own values stay
    ls = kept.find("launchSecurity")
    assert (ls.find("cbitpos").text, ls.find("reducedPhysBits").text) == ("47", "5")
    assert refusal(kept, GENOA) == MISMATCH.format("cbitpos, reducedPhysBits")


@pytest.mark.parametrize("field", ["cbitpos", "reducedPhysBits"])
def test_another_hosts_value_is_refused_at_start(field):
    root = converted((OWN / "plain-virtio.xml").read_bytes())
    root.find(f"launchSecurity/{field}").text = "5" if field == "reducedPhysBits" else "47"
    assert refusal(root) == MISMATCH.format(field)
    unknown = node(**{field: None})  # the node does not know its own: the domain's stands
    engine.verify(root, unknown)
    assert (
        converted(xmlio.serialize(root).encode(), unknown).find(f"launchSecurity/{field}").text
        == root.find(f"launchSecurity/{field}").text
    )


def test_the_node_firmware_is_the_default_and_the_option_wins():
    plain = (OWN / "plain-virtio.xml").read_bytes()
    two = node(snp_firmware=("/usr/share/first.fd", "/usr/share/second.fd"))
    assert converted(plain, two).find("os/loader").text == "/usr/share/first.fd"
    asked = converted(plain, two, firmware="/opt/own.fd")
    assert asked.find("os/loader").text == "/opt/own.fd"
    none = converted(plain, node(snp_firmware=()))
    assert none.find("os").get("firmware") == "efi" and none.find("os/loader").text is None


def test_a_domain_without_os_is_refused():
    data = b"<domain type='kvm'><name>x</name><memory>1</memory><devices/></domain>"
    with pytest.raises(DomainError, match="^the domain has no <os> element$"):
        converted(data)


@pytest.mark.parametrize(
    "launch, message",
    [
        (
            "<launchSecurity type='sev'><policy>0x1</policy><session>AAAA</session>"
            "</launchSecurity>",
            "launchSecurity type='sev' carries SEV attestation data (session) that SEV-SNP "
            "cannot use",
        ),
        (
            "<launchSecurity type='sev'><dhCert>AAAA</dhCert></launchSecurity>",
            "carries SEV attestation data (dhCert)",
        ),
        (
            "<launchSecurity type='tdx'/>",
            "launchSecurity type='tdx' cannot be combined with SEV-SNP",
        ),
    ],
)
def test_launch_security_that_cannot_become_snp_is_refused(launch, message):
    data = (
        (OWN / "plain-virtio.xml")
        .read_bytes()
        .replace(b"</devices>", b"</devices>" + launch.encode())
    )
    with pytest.raises(DomainError) as exc:
        converted(data)
    assert message in str(exc.value)


# -- values at the edges of what libvirt and the firmware accept ------------------------------


def _with_element(tag: str, text: str) -> object:
    data = (OWN / "converted-snp.xml").read_text()
    if f"<{tag}>" in data:
        start, end = data.index(f"<{tag}>"), data.index(f"</{tag}>") + len(tag) + 3
        data = data[:start] + f"<{tag}>{text}</{tag}>" + data[end:]
    return xmlio.parse(data.replace(' policy="0x00030000"', ""), backend="stdlib")


@pytest.mark.parametrize(
    "text", ["0000000000030000", "0x0000000000030000", "30000", " 0x30000 ", "0x00030137"]
)
def test_policy_spellings_libvirt_reads_are_read(text):
    engine.verify(_with_element("policy", text), GENOA)


@pytest.mark.parametrize(
    "text", ["00000000000030000", "0x3_0000", "0X30000", "0x", "", "0x3000G", "-0x30000"]
)
def test_policy_spellings_libvirt_refuses_are_refused_by_name(text):
    with pytest.raises(DomainError, match="^launchSecurity <policy>: .* is not a lower-case hex"):
        engine.verify(_with_element("policy", text), GENOA)


@pytest.mark.parametrize("text", ["51", "0051", " 51\n"])
def test_cbitpos_spellings_that_say_51(text):
    engine.verify(_with_element("cbitpos", text), GENOA)


@pytest.mark.parametrize("text", ["x51", "00051", "5 1", "٥١", "-51", ""])
def test_a_malformed_cbitpos_is_refused_by_name(text):
    with pytest.raises(DomainError) as exc:
        engine.verify(_with_element("cbitpos", text), GENOA)
    assert str(exc.value).startswith("launchSecurity <cbitpos>: ")
    assert str(exc.value).endswith("is not a small unsigned number")


@pytest.mark.parametrize(
    "policy, message",
    [
        ("0x00030137", None),  # ABI 1.55: this node's
        ("0x00030101", None),
        ("0x00030000", None),
        ("0x000300ff", None),  # 0.255 is below 1.55 (minor first would refuse it)
        ("0x00030138", "requires SNP firmware ABI 1.56, but this node runs 1.55"),
        ("0x00030200", "requires SNP firmware ABI 2.0, but this node runs 1.55"),
    ],
)
def test_the_minimum_abi_is_judged_as_major_then_minor(policy, message):
    """Bits 15:8 are the major, 7:0 the minor: 1.55 is 0x0137, not 1.37 or 0.55."""
    if message is None:
        options.check_policy(options.parse_policy(policy), GENOA)
        return
    with pytest.raises(options.PolicyRefused, match=f"^policy {policy} {message}$"):
        options.check_policy(options.parse_policy(policy), GENOA)


def test_no_abi_is_judged_where_the_node_does_not_know_its_firmware():
    options.check_policy(0x3FF00 | options.snp_policy.DEFAULT, node(snp_api=None))


@pytest.mark.parametrize(
    "value, message",
    [
        (1 << 26 | 0x30000, "bits 63:26 are reserved and must be 0"),
        (0x10000, "bit 17 is reserved and must be 1"),
        (0x70000, "bit 18 (migration agent) is refused by KVM"),
    ],
)
def test_what_every_kvm_refuses(value, message):
    with pytest.raises(options.PolicyRefused, match=re.escape(message)):
        options.check_policy(value)
    options.check_policy((1 << 25) | 0x30000)  # bit 25 is valid: this KVM or that may take it


@pytest.mark.parametrize(
    "text, value",
    [("0x30000", 0x30000), ("196608", 0x30000), (" 0x30000\n", 0x30000), ("0", 0)],
)
def test_option_policy_spellings(text, value):
    assert options.parse_policy(text) == value


@pytest.mark.parametrize(
    "text, message",
    [
        ("18446744073709551616", "does not fit in 64 bits"),
        ("-1", "does not fit in 64 bits"),
        ("0x1" + "0" * 16, "does not fit in 64 bits"),
        ("0x", "is not a number"),
        ("3e5", "is not a number"),
    ],
)
def test_option_policy_refusals(text, message):
    with pytest.raises(DomainError, match=message):
        options.parse_policy(text, "policy")
    assert options.parse_policy("18446744073709551615") == (1 << 64) - 1


@pytest.mark.parametrize("text", ["yes", "true", "on", "1", "YES", " True "])
def test_yes_spellings(text):
    assert SnpOptions.from_strings({"vcek": text}).vcek is True


@pytest.mark.parametrize("text", ["no", "false", "off", "0", "No", "OFF"])
def test_no_spellings(text):
    assert SnpOptions.from_strings({"vcek": text}).vcek is False


@pytest.mark.parametrize("text", ["maybe", "", "y", "2"])
def test_other_spellings_are_refused(text):
    with pytest.raises(options.OptionError, match=r"vcek: '.*' is not yes or no") as exc:
        SnpOptions.from_strings({"vcek": text})
    assert (exc.value.option, exc.value.unknown) == ("vcek", False)


def test_an_unknown_option_is_named_with_the_known_ones():
    with pytest.raises(options.OptionError) as exc:
        SnpOptions.from_strings({"colour": "blue"}, "--option")
    assert (exc.value.option, exc.value.unknown) == ("colour", True)
    assert str(exc.value) == f"--option: unknown option 'colour' (known: {', '.join(OPTIONS)})"
    with pytest.raises(DomainError, match="unknown SEV-SNP option 'colour'"):
        SnpOptions(colour="blue")


@pytest.mark.parametrize(
    "path, good", [("/opt/my ovmf.fd", True), (" /opt/ovmf.fd ", True), ("/opt/\x01ovmf.fd", False)]
)
def test_firmware_paths(path, good):
    if good:
        assert SnpOptions.from_strings({"firmware": path}).firmware == path.strip()
    else:
        with pytest.raises(DomainError, match="contains a control character"):
            SnpOptions.from_strings({"firmware": path})
    with pytest.raises(DomainError, match="contains a control character"):
        SnpOptions.from_strings({"firmware": "/opt/\x7fovmf.fd"})


@pytest.mark.parametrize(
    "text, good",
    [
        (base64.b64encode(b"x" * 16).decode(), True),  # ends in ==
        (base64.b64encode(b"x" * 16).decode().rstrip("=") + "===", False),
        (base64.b64encode(b"x" * 15).decode(), False),
    ],
)
def test_base64_padding(text, good):
    if good:
        assert SnpOptions.from_strings({"guestVisibleWorkarounds": text})
    else:
        with pytest.raises(DomainError, match="guestVisibleWorkarounds: "):
            SnpOptions.from_strings({"guestVisibleWorkarounds": text})


def test_author_key_no_needs_nothing():
    options.check_needs(SnpOptions.from_strings({"authorKey": "no"}))
    with pytest.raises(DomainError, match="^authorKey='yes' needs idAuth"):
        options.check_needs(SnpOptions.from_strings({"authorKey": "yes"}))


# -- firmware and devices an SNP guest cannot use -------------------------------------------


@pytest.mark.parametrize(
    "os_xml, features, message",
    [
        ("<loader secure='yes'/>", "", "Secure Boot (<loader secure='yes'>) needs SMM"),
        (
            "<firmware><feature enabled='yes' name='secure-boot'/></firmware>",
            "",
            "firmware feature secure-boot needs SMM",
        ),
        ("", "<smm/>", "SEV-SNP guests cannot use SMM"),
        ("", "<smm state='on'/>", "SEV-SNP guests cannot use SMM"),
    ],
)
def test_what_needs_smm_is_refused(os_xml, features, message):
    data = (
        f"<domain type='kvm'><name>s</name><memory>1</memory><os><type>hvm</type>{os_xml}</os>"
        f"<features>{features}</features><devices/></domain>"
    ).encode()
    with pytest.raises(DomainError, match=re.escape(message)):
        converted(data)


@pytest.mark.parametrize(
    "os_xml, features",
    [
        ("<loader secure='no'/>", ""),
        ("<firmware><feature enabled='no' name='secure-boot'/></firmware>", ""),
        ("<firmware><feature enabled='yes' name='enrolled-keys'/></firmware>", ""),
        ("", "<smm state='off'/>"),
    ],
)
def test_what_does_not_need_smm_converts(os_xml, features):
    data = (
        f"<domain type='kvm'><name>s</name><memory>1</memory><os><type>hvm</type>{os_xml}</os>"
        f"<features>{features}</features><devices/></domain>"
    ).encode()
    converted(data)


@pytest.mark.parametrize(
    "device, iommu",
    [
        ("<filesystem type='mount'><driver type='virtiofs'/><target dir='t'/></filesystem>", True),
        ("<filesystem type='mount'><driver type='path'/><target dir='t'/></filesystem>", False),
        ("<interface type='user'><model type='virtio-non-transitional'/></interface>", True),
        ("<interface type='user'><model type='e1000e'/></interface>", False),
        ("<disk type='file'><target dev='sda' bus='sata'/></disk>", False),
        ("<disk type='file'><driver name='qemu'/><target dev='vda' bus='virtio'/></disk>", True),
        ("<video><model type='virtio'/></video>", True),
        ("<video><model type='vga'/></video>", False),
        ("<controller type='scsi' model='virtio-scsi'/>", True),
        ("<controller type='virtio-serial'/>", True),
        ("<controller type='usb' model='qemu-xhci'/>", False),
        ("<input type='keyboard' bus='virtio'/>", True),
        ("<input type='keyboard' bus='ps2'/>", False),
        ("<memballoon model='virtio'><driver iommu='off'/></memballoon>", True),
        ("<memballoon model='none'/>", False),
        ("<rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>", True),
        ("<vsock model='virtio'><cid auto='yes'/></vsock>", True),
        ("<serial type='pty'><target type='isa-serial'/></serial>", False),
    ],
)
def test_virtio_devices_and_only_they_get_the_iommu(device, iommu):
    data = (
        "<domain type='kvm'><name>d</name><memory>1</memory><os><type>hvm</type></os>"
        f"<devices><!-- c -->{device}</devices></domain>"
    ).encode()
    root = converted(data)
    element = next(iter(e for e in root.find("devices") if xmlio.is_element(e)))
    driver = element.find("driver")
    assert (driver is not None and driver.get("iommu") == "on") is iommu
    if driver is not None and element.tag == "disk":
        assert driver.get("name") == "qemu"  # an existing driver keeps its attributes


def test_flash_firmware_becomes_a_stateless_rom():
    data = (
        b"<domain type='kvm'><name>f</name><memory>1</memory><os firmware='efi'>"
        b"<type>hvm</type><firmware><feature enabled='no' name='secure-boot'/></firmware>"
        b"<loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE.fd</loader>"
        b"<nvram>/var/lib/libvirt/qemu/nvram/f_VARS.fd</nvram></os><devices/></domain>"
    )
    root = converted(data)
    os_element = root.find("os")
    assert os_element.get("firmware") is None and os_element.find("firmware") is None
    assert os_element.find("nvram") is None
    loader = os_element.find("loader")
    assert dict(loader.attrib) == {"type": "rom", "stateless": "yes"}
    assert loader.text == "/usr/share/edk2/ovmf/OVMF.amdsev.fd"
    engine.verify(root, GENOA)


# -- what already says the value is left as written -------------------------------------------


def test_equal_values_in_other_spellings_are_left_byte_for_byte():
    """A rewrite changes what differs, not how the domain's author wrote an equal value."""
    host_data = base64.b64encode(b"h" * 32).decode()
    wrapped = host_data[:20] + "\n      " + host_data[20:]
    data = (
        (OWN / "converted-snp.xml")
        .read_text()
        .replace("<cbitpos>51</cbitpos>", "<cbitpos>0051</cbitpos>")
        .replace(
            "<policy>0x30000</policy>", f"<policy>30000</policy><hostData>{wrapped}</hostData>"
        )
        .replace('vcek="yes"', f'vcek="yes" hostData="{host_data}"')
    )
    root = engine.rewrite(xmlio.parse(data, backend="stdlib"), GENOA)
    ls = root.find("launchSecurity")
    assert ls.find("cbitpos").text == "0051" and ls.find("policy").text == "30000"
    assert ls.find("hostData").text == wrapped
    engine.verify(root, GENOA)


def test_a_malformed_attribute_is_refused_by_its_name():
    data = (OWN / "converted-snp.xml").read_text().replace(' vcek="yes"', "")
    root = xmlio.parse(data.replace("vcek='yes'", "vcek='maybe'"), backend="stdlib")
    with pytest.raises(DomainError, match="^launchSecurity vcek=: 'maybe' is not yes or no$"):
        engine.verify(root, GENOA)


def test_each_option_is_declared_once_and_reachable_by_name():
    """SnpOptions.<name> is the declaration; an instance holds only what was given."""
    for field in options.FIELDS:
        assert getattr(SnpOptions, field.name) is field
        assert repr(field) == f"<Field {field.name} at {field.path}>"
    given = SnpOptions(vcek=True)
    assert given.vcek is True and given.policy is None and given.cbitpos is None
    assert repr(given) == "SnpOptions(vcek=True)"


# -- the shape of the converted domain -------------------------------------------------------


def _rewritten(text: str, facts=GENOA) -> str:
    root = xmlio.parse(text.encode(), backend="stdlib")
    engine.set_request(root, SnpOptions())
    return xmlio.serialize(engine.rewrite(root, facts))


def test_a_domain_on_one_line_stays_on_one_line():
    text = (
        "<domain type='kvm'> <name>one</name> <memory>1</memory> <os> <type>hvm</type> </os> "
        "<devices> <rng model='virtio'/> </devices> </domain>"
    )
    assert "\n" not in _rewritten(text)


def test_missing_launch_security_values_are_inserted_in_libvirts_order():
    text = (OWN / "converted-snp.xml").read_text()
    text = text.replace("<cbitpos>51</cbitpos>", "").replace(
        "<reducedPhysBits>1</reducedPhysBits>", ""
    )
    root = xmlio.parse(_rewritten(text).encode())
    assert [c.tag for c in root.find("launchSecurity")] == ["cbitpos", "reducedPhysBits", "policy"]


def test_what_libvirt_does_not_know_in_launch_security_is_dropped():
    text = (
        (OWN / "converted-snp.xml")
        .read_text()
        .replace(
            "<launchSecurity type='sev-snp' vcek='yes'>",
            "<launchSecurity type='sev-snp' vcek='yes' colour='blue'><dhCert>AAAA</dhCert>",
        )
    )
    ls = xmlio.parse(_rewritten(text).encode()).find("launchSecurity")
    assert dict(ls.attrib) == {"type": "sev-snp", "vcek": "yes"}
    assert [c.tag for c in ls] == ["cbitpos", "reducedPhysBits", "policy"]


def test_the_request_is_replaced_not_merged():
    root = xmlio.parse((OWN / "converted-snp.xml").read_bytes(), backend="stdlib")
    engine.set_request(root, SnpOptions.from_strings({"vcek": "no"}))
    assert dict(engine.find_marker(root).attrib) == {"vcek": "no"}


def test_metadata_goes_first_in_a_domain_without_a_name():
    text = "<domain type='kvm'><memory>1</memory><os><type>hvm</type></os><devices/></domain>"
    root = xmlio.parse(_rewritten(text).encode())
    assert [c.tag for c in root][:2] == ["metadata", "memory"]


def test_a_domain_without_devices_converts():
    text = "<domain type='kvm'><name>n</name><memory>1</memory><os><type>hvm</type></os></domain>"
    root = xmlio.parse(_rewritten(text).encode())
    assert root.find("launchSecurity").get("type") == "sev-snp" and root.find("devices") is None


def test_an_os_without_type_gets_its_loader_first_and_keeps_its_indentation():
    text = (
        "<domain type='kvm'>\n  <name>n</name>\n  <memory>1</memory>\n  <os firmware='efi'>\n"
        "    <boot dev='hd'/>\n"
        "    <firmware>\n      <feature enabled='no' name='secure-boot'/>\n    </firmware>\n"
        "  </os>\n  <devices/>\n</domain>"
    )
    out = _rewritten(text)
    assert (
        '  <os>\n    <loader type="rom" stateless="yes">/usr/share/edk2/ovmf/OVMF.amdsev.fd'
        '</loader>\n    <boot dev="hd" />\n  </os>\n'
    ) in out


def test_only_a_domain_is_rewritten():
    root = xmlio.parse(b"<vm><metadata/></vm>", backend="stdlib")
    with pytest.raises(DomainError, match="^expected a <domain> document, got <vm>$"):
        engine.rewrite(root, GENOA, SnpOptions())


def test_an_sev_launch_security_is_replaced_by_a_new_one_in_libvirts_order():
    text = (
        "<domain type='kvm'><name>n</name><memory>1</memory><os><type>hvm</type></os>"
        "<launchSecurity type='sev'><policy>0x0001</policy><reducedPhysBits>1</reducedPhysBits>"
        "<cbitpos>0051</cbitpos></launchSecurity><devices/></domain>"
    )
    root = xmlio.parse(_rewritten(text).encode())
    ls = root.find("launchSecurity")
    assert [(c.tag, c.text) for c in ls] == [
        ("cbitpos", "51"),
        ("reducedPhysBits", "1"),
        ("policy", "0x00030000"),
    ]
    assert [c.tag for c in root][-2:] == ["launchSecurity", "devices"]  # where it was


@pytest.mark.parametrize("where", ["first", "last"])
def test_dropping_an_element_keeps_the_indentation(where):
    """An element libvirt does not know, first or last in launchSecurity, goes without a
    trace: the output is that of the domain without it."""
    text = (OWN / "converted-snp.xml").read_text()
    # converted without node facts: policy alone, so the element is first or second
    text = text.replace("<cbitpos>51</cbitpos>\n    <reducedPhysBits>1</reducedPhysBits>\n    ", "")
    if where == "first":
        marked = text.replace("<policy>", "<dhCert>AAAA</dhCert>\n    <policy>")
    else:
        marked = text.replace("</policy>", "</policy>\n    <dhCert>AAAA</dhCert>")
    assert marked != text and "<cbitpos>" not in text
    assert _rewritten(marked, None) == _rewritten(text, None)
