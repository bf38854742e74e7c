"""The SEV-SNP options as a CEL domain hook of KubeVirt's Plugins API (KubeVirt 1.9+).

A Plugin's `domainHooks[].cel.expression` is evaluated by virt-launcher
(pkg/virt-launcher/virtwrap/plugins/cel/evaluator.go) with two variables, `vmi`
(v1.VirtualMachineInstance) and `domainSpec` (libvirtxml.Domain), both Go native types
named by their Go fields (`vmi.Annotations`, `domainSpec.LaunchSecurity.SEVSNP`), in the
container `libvirtxml`. Its result is a sparse `Domain{...}` deep-merged into the domain:
only the fields it names are written, a nested struct is merged, a list replaced. The
environment registers no extension library: no string functions beyond CEL's standard
ones (`matches` (RE2), `startsWith`, `size`, ...), no base64, no hex, no optional fields.

So the expression does what the engine does for an SEV-SNP domain with the options of the
`sev-snp.kubevirt.io/*` annotations, by these means:

- base64 options (hostData, idBlock, idAuth, guestVisibleWorkarounds) are written as given,
  after a size-and-alphabet check equal to the engine's for text without whitespace;
- yes/no options (kernelHashes, authorKey, vcek) become "yes"/"no" by regular expressions;
- the policy, `0x...` or decimal, becomes a uint: decimal by `uint()`, hex bit by bit (bit
  k is set when the digit k/4 places from the end is one of the digits with bit k%4), for
  bits 0-25, the only ones an SNP policy may set; absent, the domain's policy stays;
- the firmware becomes a stateless ROM loader with that path.

A value the expression cannot read makes it fail with an error, never write something
else. What it cannot read but the engine could (whitespace inside a value, `1_000`, a
non-ASCII digit) is what `inexpressible()` names: the node hook refuses such a VMI before
its domain exists, with that reason, and validates everything else with the engine's own
option model, so a VM owner reads one clear line instead of a CEL evaluation error.
"""

from __future__ import annotations

import re
from typing import Optional

from nfd_snp.domain.options import ANNOTATIONS, Base64, Policy, YesNo
from nfd_snp.kubevirt.sidecar import ANNOTATION_PREFIX

POLICY_BITS = 26  # SNP policy bits 63:26 are reserved and must be 0
_B64 = "[A-Za-z0-9+/]"
# An option value KubeVirt's CEL environment can take as it is: printable ASCII, no spaces.
_PLAIN = re.compile(r"[\x21-\x7e]+")
_POLICY = re.compile(r"0[xX][0-9a-fA-F]{1,16}|[0-9]{1,20}")


def inexpressible(annotations: dict) -> Optional[str]:
    """Why the CEL domain hook cannot write these (already validated) option annotations
    exactly as the engine would, or None when it can."""
    for key in sorted(annotations):
        if (
            not key.startswith(ANNOTATION_PREFIX)
            or key[len(ANNOTATION_PREFIX) :] not in ANNOTATIONS
        ):
            continue
        value = annotations[key]
        if not isinstance(value, str) or not _PLAIN.fullmatch(value):
            return (
                f"annotation {key}: write the value without spaces or non-ASCII characters "
                "(KubeVirt's CEL domain hook takes it as it is)"
            )
        if isinstance(ANNOTATIONS[key[len(ANNOTATION_PREFIX) :]].kind, Policy):
            if not _POLICY.fullmatch(value):
                return (
                    f"annotation {key}: write the policy as 0x followed by hex digits, or decimal"
                )
    return None


# -- the expression ----------------------------------------------------------------------


def _annotation(name: str) -> str:
    return f'vmi.Annotations["{ANNOTATION_PREFIX}{name}"]'


def _given(name: str) -> str:
    return f'"{ANNOTATION_PREFIX}{name}" in vmi.Annotations'


def _fail(what: str) -> str:
    """A string expression whose evaluation fails (CEL has no `error()`): uint() of a text
    that is no number, which KubeVirt reports as the hook's evaluation error."""
    return f'string(uint("nfd-snp: {what}"))'


def _base64(name: str, size: int) -> str:
    # The engine's Base64: length a multiple of 4, at most two '=', the alphabet, and the
    # decoded size exact; for text without whitespace that is one length and one pattern.
    pads = (3 - size % 3) % 3
    length = (size + pads) // 3 * 4
    pattern = f"^{_B64}*{'=' * pads}$"
    value = _annotation(name)
    return (
        f'!({_given(name)}) ? "" : size({value}) == {length} && {value}.matches("{pattern}") '
        f"? {value} : {_fail(f'{ANNOTATION_PREFIX}{name} is not base64 of {size} bytes')}"
    )


def _yes_no(name: str) -> str:
    def spelled(words):
        return "|".join(
            "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in w) for w in words
        )

    value = _annotation(name)
    return (
        f'!({_given(name)}) ? "" : {value}.matches("^({spelled(("yes", "true", "on", "1"))})$") '
        f'? "yes" : {value}.matches("^({spelled(("no", "false", "off", "0"))})$") ? "no" : '
        + _fail(f"{ANNOTATION_PREFIX}{name} is not yes or no")
    )


_NIBBLE_BIT = {
    bit: "".join(c for c in "0123456789abcdefABCDEF" if int(c, 16) >> bit & 1) for bit in range(4)
}


def _balanced_sum(terms: list) -> str:
    """`a + b + ...` as a balanced tree: CEL parsers bound their recursion depth (cel-go 250,
    cel-cpp 32), and a chain of 26 additions nests 26 deep."""
    if len(terms) == 1:
        return terms[0]
    half = len(terms) // 2
    return f"({_balanced_sum(terms[:half])} + {_balanced_sum(terms[half:])})"


def _policy() -> str:
    value = _annotation("policy")
    # Hex: at most 26 significant bits (7 digits, the first 0-3), then one term per bit.
    fits = f'{value}.matches("^0[xX]0*([0-3][0-9a-fA-F]{{6}}|[0-9a-fA-F]{{1,6}})$")'
    terms = [
        f'({value}.matches("[{_NIBBLE_BIT[k % 4]}][0-9a-fA-F]{{{k // 4}}}$") ? {1 << k}u : 0u)'
        for k in range(POLICY_BITS)
    ]
    bits = _balanced_sum(terms)
    failed = f'uint("nfd-snp: {ANNOTATION_PREFIX}policy is not an SNP policy of bits 0-25")'
    decimal = f'{value}.matches("^[0-9]{{1,20}}$")'
    return (
        f"!({_given('policy')}) ? domainSpec.LaunchSecurity.SEVSNP.Policy : "
        f"{decimal} && uint({value}) < {1 << POLICY_BITS}u ? uint({value}) : "
        f"{fits} ? {bits} : {failed}"
    )


# libvirtxml's DomainLaunchSecuritySEVSNP field of each option (libvirt.org/go/libvirtxml
# domain.go; Policy is *uint64, the others strings, the yes/no ones attributes).
GO_FIELDS = {
    "policy": "Policy",
    "guestVisibleWorkarounds": "GuestVisibleWorkarounds",
    "idBlock": "IDBlock",
    "idAuth": "IDAuth",
    "hostData": "HostData",
    "kernelHashes": "KernelHashes",
    "authorKey": "AuthorKey",
    "vcek": "VCEK",
}


def _launch_security() -> str:
    fields = [f"Policy: {_policy()}"]
    for annotation, field in ANNOTATIONS.items():
        go = GO_FIELDS.get(field.name)
        if go is None or go == "Policy":
            continue
        if isinstance(field.kind, Base64):
            fields.append(f"{go}: {_base64(annotation, field.kind.size)}")
        elif isinstance(field.kind, YesNo):
            fields.append(f"{go}: {_yes_no(annotation)}")
    inner = ",\n      ".join(fields)
    return f"DomainLaunchSecurity{{SEVSNP: DomainLaunchSecuritySEVSNP{{\n      {inner}\n    }}}}"


def expression() -> str:
    """The mutation: a sparse Domain with the SNP launchSecurity of the annotations, and
    the firmware when one is named."""
    launch = _launch_security()
    firmware = _annotation("firmware")
    loader = (
        f'DomainOS{{Firmware: "", Loader: DomainLoader{{Path: {firmware}.startsWith("/") ? '
        f"{firmware} : {_fail(f'{ANNOTATION_PREFIX}firmware is not an absolute path')}, "
        'Type: "rom", Stateless: "yes", Readonly: "", Secure: ""}}'
    )
    return (
        f"{_given('firmware')}\n"
        f"  ? Domain{{LaunchSecurity: {launch}, OS: {loader}}}\n"
        f"  : Domain{{LaunchSecurity: {launch}}}\n"
    )


# The hook applies to a domain that is SEV-SNP already (KubeVirt's for launchSecurity.snp,
# or an SEV one a hook sidecar converted) and whose VMI gives an option.
CONDITION = (
    "has(domainSpec.LaunchSecurity.SEVSNP) && "
    f'vmi.Annotations.exists(k, k.startsWith("{ANNOTATION_PREFIX}") && '
    f'k != "{ANNOTATION_PREFIX}secure-nested-paging")'
)
