"""KubeVirt's onDefineDomain hook: a VMI that asks for SEV-SNP gets an SNP domain.

KubeVirt runs libvirt inside each VM's pod, so the host hook never sees KubeVirt VMs; the
hook sidecar does. The sidecar-shim runs `onDefineDomain --vmi <VMI JSON> --domain <XML>`
and uses stdout as the new domain (stderr is logged).

Asking (DESIGN.md): `spec.domain.launchSecurity.sev.secureNestedPaging: true` (KubeVirt VEP
#58, where the cluster keeps the field), or the annotation
`sev-snp.kubevirt.io/secure-nested-paging: "true"`; a VMI with upstream
`launchSecurity.snp` keeps SNP and gains the options. Options come from annotations
`sev-snp.kubevirt.io/<policy|host-data|id-block|...>`. A VMI that did not ask gets its domain
back byte for byte; one that asked but cannot be served fails the define (fail-closed).

Standard library only (plus nfd_snp.errors, nfd_snp.xmlio and nfd_snp.domain): this module
is bundled into the single script of `nfd-snp kubevirt sidecar-configmap`, which runs in the
stock sidecar-shim image without lxml.
"""

from __future__ import annotations

import json
import sys

from nfd_snp import xmlio
from nfd_snp.domain import engine
from nfd_snp.domain.options import ANNOTATIONS, YES_NO, SnpOptions
from nfd_snp.errors import DomainError, InputError, NfdSnpError

ANNOTATION_PREFIX = "sev-snp.kubevirt.io/"
REQUEST_ANNOTATION = ANNOTATION_PREFIX + "secure-nested-paging"
MAX_VMI_BYTES = 4 * 1024 * 1024
USAGE = "usage: onDefineDomain --vmi <VMI JSON> --domain <domain XML>"


def _mapping(value, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(f"VMI: {where} is not an object")
    return value


def parse_vmi(text) -> dict:
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes of an argument (surrogateescape)
        raise InputError("VMI: not UTF-8") from None
    if len(text) > MAX_VMI_BYTES:
        raise InputError(f"VMI: {len(text)} bytes is more than the {MAX_VMI_BYTES} allowed")
    try:
        vmi = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InputError(f"VMI: not valid JSON ({str(exc)[:100]})") from None
    return _mapping(vmi, "the document")


# How a VMI asks for SEV-SNP (request_form): upstream launchSecurity.snp (KubeVirt 1.7+),
# the VEP's sev.secureNestedPaging where a cluster's KubeVirt carries it, or the annotation.
UPSTREAM = "launchSecurity.snp"
VEP_FIELD = "launchSecurity.sev.secureNestedPaging"
ANNOTATION = f"launchSecurity.sev + {REQUEST_ANNOTATION}"


def _request_parts(vmi: dict):
    """(annotations, spec.domain.launchSecurity) of a VMI, {} for what is absent."""
    metadata = _mapping(vmi.get("metadata"), "metadata")
    annotations = _mapping(metadata.get("annotations"), "metadata.annotations")
    spec = _mapping(vmi.get("spec"), "spec")
    domain = _mapping(spec.get("domain"), "spec.domain")
    return annotations, _mapping(domain.get("launchSecurity"), "spec.domain.launchSecurity")


def request_form(vmi: dict):
    """How the VMI asks for SEV-SNP (UPSTREAM, VEP_FIELD, ANNOTATION), or None.

    Fail-closed on spelling: the request annotation is read as yes/no like every option
    (`yes`, `1`, `on` ask), the VEP field must be a bool, and anything else that tries to
    say something about SEV-SNP - an unreadable request, or option annotations without one -
    is refused (DomainError) rather than taken for "did not ask", which would start the VM
    as a plain SEV guest.
    """
    annotations, launch = _request_parts(vmi)
    sev = launch.get("sev")
    nested = sev.get("secureNestedPaging") if isinstance(sev, dict) else None
    if nested is not None and not isinstance(nested, bool):
        raise DomainError(
            f"spec.domain.launchSecurity.sev.secureNestedPaging is {nested!r}, not true or false"
        )
    asked_by_annotation = False
    if REQUEST_ANNOTATION in annotations:
        value = annotations[REQUEST_ANNOTATION]
        if not isinstance(value, str):
            raise DomainError(f"annotation {REQUEST_ANNOTATION} must be a string")
        asked_by_annotation = YES_NO.parse(value, f"annotation {REQUEST_ANNOTATION}")
    if launch.get("snp") is not None:
        return UPSTREAM
    if nested:
        return VEP_FIELD
    if asked_by_annotation:
        return ANNOTATION
    given = sorted(k for k in annotations if k.startswith(ANNOTATION_PREFIX))
    given = [k for k in given if k != REQUEST_ANNOTATION]
    if given:
        raise DomainError(
            f"SEV-SNP options are given ({', '.join(given)}) but SEV-SNP is not asked for: add "
            f'launchSecurity.snp, or the annotation {REQUEST_ANNOTATION}: "true"'
        )
    return None


def snp_request(vmi: dict):
    """SnpOptions when the VMI asks for SEV-SNP, else None; DomainError if it cannot be served.

    A VMI that does not ask (and gives no SEV-SNP option) is not inspected further, so
    nothing in it can block its start.
    """
    if request_form(vmi) is None:
        return None
    annotations, launch = _request_parts(vmi)
    sev = launch.get("sev")
    snp = launch.get("snp")
    sev_fields = sev if isinstance(sev, dict) else {}
    if sev is None and snp is None:
        raise DomainError(
            "the VMI asks for SEV-SNP but has no spec.domain.launchSecurity.sev (or .snp): "
            "KubeVirt gives the VM's pod /dev/sev only for those; add `launchSecurity: "
            "{sev: {}}`"
        )
    if sev_fields.get("attestation") is not None:
        raise DomainError(
            "spec.domain.launchSecurity.sev.attestation requests SEV attestation, which "
            "cannot carry over to SEV-SNP; remove it (SNP guests attest through their "
            "attestation report)"
        )
    options = {}
    for key, value in annotations.items():
        if not key.startswith(ANNOTATION_PREFIX) or key == REQUEST_ANNOTATION:
            continue
        field = ANNOTATIONS.get(key[len(ANNOTATION_PREFIX) :])
        if field is None:
            known = ", ".join(ANNOTATION_PREFIX + n for n in ANNOTATIONS)
            raise DomainError(f"unknown annotation {key} (known: {known})")
        if not isinstance(value, str):
            raise DomainError(f"annotation {key} must be a string")
        options[field.name] = field.kind.parse(value, f"annotation {key}")
    return SnpOptions(**options)


def kubevirt_snp_firmware(vmi: dict, root):
    """The firmware KubeVirt chose for a VMI with upstream launchSecurity.snp, else None.

    KubeVirt 1.7+ boots such a VMI from a stateless ROM (OVMF.amdsev.fd in the launcher
    image: converter/compute/os.go, `BootLoader.Type = "rom"`); the sidecar keeps it unless
    the VMI names another one. The SEV path's pflash image cannot boot an SNP guest (KVM
    gives protected guests no read-only memory for pflash), so it is not kept.
    """
    spec = vmi.get("spec") or {}
    launch = (spec.get("domain") or {}).get("launchSecurity") or {}
    loader = root.find("os/loader")
    if launch.get("snp") is None or loader is None or loader.get("type") != "rom":
        return None
    return (loader.text or "").strip() or None


def on_define_domain(vmi_text, domain_xml) -> str:
    """The domain XML to hand back to KubeVirt for this VMI."""
    vmi = parse_vmi(vmi_text)
    options = snp_request(vmi)
    if options is None:
        return domain_xml if isinstance(domain_xml, str) else domain_xml.decode("utf-8")
    root = xmlio.parse(domain_xml, what="domain XML from KubeVirt")
    if options.firmware is None:
        options.firmware = kubevirt_snp_firmware(vmi, root)
    engine.set_request(root, options)
    # No node facts inside the VM's pod: cbitpos/reducedPhysBits come from KubeVirt's own
    # conversion or libvirt, and the firmware from the sev-snp.kubevirt.io/firmware
    # annotation, KubeVirt's SNP choice, or libvirt's autoselection.
    engine.rewrite(root, None)
    return xmlio.serialize(root)


def parse_args(argv):
    """(vmi, domain) from the shim's arguments, in any order; InputError when missing."""
    values = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, sep, inline = arg.partition("=")
        if name in ("--vmi", "--domain", "--version"):
            if sep:
                values[name] = inline
            elif i + 1 < len(argv):
                values[name] = argv[i + 1]
                i += 1
            else:
                raise InputError(f"{name} needs a value; {USAGE}")
        else:
            raise InputError(f"unexpected argument {arg[:40]!r}; {USAGE}")
        i += 1
    missing = [n for n in ("--vmi", "--domain") if not values.get(n)]
    if missing:
        raise InputError(f"missing {' and '.join(missing)}; {USAGE}")
    return values["--vmi"], values["--domain"]


def main(argv=None) -> int:
    """Sidecar entry point: 0 with the domain on stdout, 1 refused, 2 usage/input error."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        vmi, domain = parse_args(argv)
        sys.stdout.write(on_define_domain(vmi, domain))
        sys.stdout.flush()
        return 0
    except DomainError as exc:
        sys.stderr.write(f"nfd-snp: refusing SEV-SNP for this VMI: {exc}\n")
        return 1
    except NfdSnpError as exc:
        sys.stderr.write(f"nfd-snp: {exc}\n")
        return exc.exit_code
    except Exception as exc:  # a bug: never hand back a half-made domain
        sys.stderr.write(f"nfd-snp: internal error ({type(exc).__name__}: {exc})\n")
        return 1
