"""The SEV-SNP option declarations drive everything: each option is accepted from the marker,
--option flags and KubeVirt annotations, lands where its declaration says, is compared as a
typed value, and is documented in `nfd-snp domain --help` and the docs' tables."""

from __future__ import annotations

import base64
import json
import re

import pytest
from click.testing import CliRunner

from nfd_snp import xmlio
from nfd_snp.kubevirt import sidecar as kubevirt
from nfd_snp.cli import cli
from nfd_snp.domain import engine
from nfd_snp.domain.cli_support import rewrite_text
from nfd_snp.domain.options import (
    ANNOTATIONS,
    FIELDS,
    OPTIONS,
    AbsolutePath,
    Base64,
    Policy,
    SnpOptions,
    YesNo,
)
from nfd_snp.errors import DomainError
from tests.conftest import REPO
from tests.facts import node

OWN = REPO / "tests" / "data" / "domains"
GENOA = node()


def sample(field, variant: int = 0) -> str:
    """A valid option string for a field, by its kind (variant 1 differs from variant 0)."""
    kind = field.kind
    if isinstance(kind, Policy):
        return ("0x30133", "0x30000")[variant]
    if isinstance(kind, Base64):
        return base64.b64encode(bytes([65 + variant]) * kind.size).decode()
    if isinstance(kind, YesNo):
        return ("no", "yes")[variant]  # "no" first: yes needs other settings for some
    if isinstance(kind, AbsolutePath):
        return ("/opt/ovmf/SNP.fd", "/opt/ovmf/OTHER.fd")[variant]
    raise AssertionError(f"no sample value for {field.name}: add one for its kind")


def landed(root, field):
    """What the rewritten domain holds at the field's declared place."""
    if field.attribute is not None:
        return root.find("launchSecurity").get(field.attribute)
    if field.tag is not None:
        return root.find(f"launchSecurity/{field.tag}").text
    return root.find(field.path).text


def test_declarations_are_complete():
    assert list(OPTIONS) == [
        "policy",
        "guestVisibleWorkarounds",
        "idBlock",
        "idAuth",
        "hostData",
        "kernelHashes",
        "authorKey",
        "vcek",
        "firmware",
    ]
    for field in FIELDS:
        assert field.name and field.kind.describe
        assert field.in_launch_security or field.is_option  # a node property lands in it
    # every annotation is the kebab-case spelling of its option
    for annotation, field in ANNOTATIONS.items():
        assert annotation == re.sub(r"([A-Z])", r"-\1", field.name).lower()


@pytest.mark.parametrize("name", list(OPTIONS))
@pytest.mark.parametrize("source", ["marker", "flag", "annotation"])
def test_each_option_from_each_source_lands_where_declared(name, source):
    field = OPTIONS[name]
    value = sample(field)
    expected = field.kind.to_xml(field.parse(value, "test"))
    data = (OWN / "direct-kernel.xml").read_text()
    if source == "marker":
        marked = data.replace(
            "</name>",
            f'</name><metadata><snp:sev-snp xmlns:snp="urn:nfd-snp:1" {name}="{value}"/>'
            "</metadata>",
        )
        out = rewrite_text(marked, (), GENOA)
    elif source == "flag":
        out = rewrite_text(data, [f"{name}={value}"], GENOA)
    else:
        vmi = {
            "metadata": {
                "annotations": {
                    "sev-snp.kubevirt.io/secure-nested-paging": "true",
                    f"sev-snp.kubevirt.io/{field.annotation}": value,
                }
            },
            "spec": {"domain": {"launchSecurity": {"sev": {}}}},
        }
        out = kubevirt.on_define_domain(json.dumps(vmi), data)
    root = xmlio.parse(out)
    assert landed(root, field) == expected
    if source != "annotation":  # the request is kept in the marker, typed the same
        assert getattr(engine.requested_options(root), name) == field.parse(value, "test")


@pytest.mark.parametrize("name", list(OPTIONS))
def test_marker_strings_round_trip(name):
    field = OPTIONS[name]
    options = SnpOptions.from_strings({name: sample(field)})
    again = SnpOptions.from_strings(options.as_strings())
    assert getattr(again, name) == getattr(options, name) is not None


@pytest.mark.parametrize(
    "name",
    [n for n, f in OPTIONS.items() if f.in_launch_security],
)
def test_verify_compares_each_option_typed(name):
    """A converted domain whose launchSecurity holds another value than its request is
    refused, naming the option."""
    field = OPTIONS[name]
    root = xmlio.parse((OWN / "direct-kernel.xml").read_bytes(), backend="stdlib")
    request = {"idAuth": sample(OPTIONS["idAuth"]), name: sample(field)}  # authorKey=yes needs it
    engine.set_request(root, SnpOptions.from_strings(request))
    engine.rewrite(root, GENOA)
    engine.verify(root, GENOA)
    engine.find_marker(root).set(name, sample(field, 1))
    with pytest.raises(DomainError, match=rf"does not match .*\({name}\)"):
        engine.verify(root, GENOA)


def test_equivalent_spellings_are_the_same_value():
    root = xmlio.parse((OWN / "converted-snp.xml").read_bytes(), backend="stdlib")
    marker = engine.find_marker(root)
    marker.set("policy", "196608")  # decimal in the marker, 0x30000 in <policy>
    marker.set("vcek", "true")
    engine.verify(root, GENOA)


def test_policy_in_domain_xml_is_hex_as_libvirt_reads_it():
    """libvirt reads <policy> in base 16: `196608` there is 0x196608 (bit 17 clear), not the
    default policy written in decimal; and `30000` is 0x30000."""
    data = (OWN / "converted-snp.xml").read_text()
    marker_without_policy = data.replace(' policy="0x00030000"', "")
    decimal = marker_without_policy.replace("<policy>0x30000</policy>", "<policy>196608</policy>")
    with pytest.raises(DomainError, match="policy 0x00196608: bit 17 is reserved"):
        engine.verify(xmlio.parse(decimal), GENOA)
    bare_hex = marker_without_policy.replace("<policy>0x30000</policy>", "<policy>30000</policy>")
    root = xmlio.parse(bare_hex)
    engine.verify(root, GENOA)
    engine.rewrite(root, GENOA)
    assert root.find("launchSecurity/policy").text == "30000"  # equal, left as it was
    upper = xmlio.parse(data.replace("<policy>0x30000</policy>", "<policy>0x3000A</policy>"))
    engine.rewrite(upper, GENOA)
    assert upper.find("launchSecurity/policy").text == "0x00030000"


def test_a_malformed_value_the_request_replaces_is_never_read():
    data = (OWN / "converted-snp.xml").read_text()
    bad = data.replace("<policy>0x30000</policy>", "<policy>0x30000</policy><hostData>!</hostData>")
    with pytest.raises(DomainError, match=r"launchSecurity <hostData>: not valid base64"):
        engine.rewrite(xmlio.parse(bad), GENOA)
    good = sample(OPTIONS["hostData"])
    root = engine.rewrite(xmlio.parse(bad.replace('vcek="yes"', f'vcek="yes" hostData="{good}"')))
    assert root.find("launchSecurity/hostData").text == good


def test_an_unchanged_marker_is_left_as_written():
    data = (
        (OWN / "converted-snp.xml")
        .read_text()
        .replace('policy="0x00030000" vcek="yes"', 'vcek="yes" policy="0x00030000"')
    )
    root = xmlio.parse(data)
    engine.set_request(root, engine.requested_options(root))
    assert 'vcek="yes" policy="0x00030000"' in xmlio.serialize(root)


@pytest.mark.parametrize(
    "text, message",
    [
        ("QUFB", "decodes to 3 bytes, must be exactly 32"),
        ("QUF", "not valid base64"),
        ("QU=B", "not valid base64"),
        ("Q===", "not valid base64"),
        ("QUFB!", "not valid base64"),
        ("QUFBé===", "not valid base64"),
    ],
)
def test_base64_checks(text, message):
    with pytest.raises(DomainError, match=f"--option: hostData: {message}"):
        SnpOptions.from_strings({"hostData": text}, "--option")


def test_base64_may_be_wrapped():
    value = sample(OPTIONS["idAuth"])
    wrapped = "\n".join(value[i : i + 76] for i in range(0, len(value), 76))
    assert SnpOptions.from_strings({"idAuth": wrapped}).idAuth == value


def test_constraints_between_options_are_declared_with_them():
    """`needs` names a declared option; check_needs refuses what lacks it, before any domain
    is read, and the help says it."""
    from nfd_snp.domain.options import FIELDS_BY_NAME, check_needs

    needing = [f for f in FIELDS if f.needs]
    assert needing and all(f.needs[0] in FIELDS_BY_NAME for f in needing)
    for field in needing:
        assert f"yes needs {field.needs[0]}" in field.help_line
        with pytest.raises(DomainError, match=rf"^{field.name}='yes' needs {field.needs[0]} "):
            check_needs(SnpOptions(**{field.name: True}))
        other = sample(FIELDS_BY_NAME[field.needs[0]])
        check_needs(SnpOptions.from_strings({field.name: "yes", field.needs[0]: other}))


def test_node_properties_are_not_options():
    with pytest.raises(DomainError, match="unknown option 'cbitpos'"):
        SnpOptions.from_strings({"cbitpos": "51"})


# -- documentation generated from the declarations --------------------------------------------


def _md(text: str) -> str:
    return re.sub(r"((?:<[^>]+>)+)", r"`\1`", text)


def _becomes(field) -> str:
    if field.attribute is not None:
        return f"`{field.attribute}=`"
    if field.tag is not None:
        return f"`<{field.tag}>`"
    return "`" + "".join(f"<{part}>" for part in field.path.split("/")) + "`"


def _table(path, header: str) -> str:
    text = (REPO / path).read_text()
    start = text.index(header)
    return text[start : text.index("\n\n", start) + 1]


def test_libvirt_doc_table_is_generated_from_the_declarations():
    rows = [f"| `{n}` | {_md(f.help_line)} | {_becomes(f)} |" for n, f in OPTIONS.items()]
    expected = "\n".join(["| option | value | becomes |", "|---|---|---|", *rows]) + "\n"
    assert _table("docs/libvirt.md", "| option | value |") == expected, expected


def test_kubevirt_doc_table_is_generated_from_the_declarations():
    rows = [
        f"| `sev-snp.kubevirt.io/{f.annotation}` | `{n}` | {_md(f.help_line)} |"
        for n, f in OPTIONS.items()
    ]
    expected = "\n".join(["| annotation | option | value |", "|---|---|---|", *rows]) + "\n"
    assert _table("docs/kubevirt.md", "| annotation | option |") == expected, expected


def test_domain_help_lists_every_option():
    result = CliRunner().invoke(cli, ["domain", "--help"], terminal_width=200)
    assert result.exit_code == 0
    listed = result.output[result.output.index("SEV-SNP options") :]
    for name, field in OPTIONS.items():
        assert re.search(rf"^  {name} +{re.escape(field.help_line)}$", listed, re.M), name
