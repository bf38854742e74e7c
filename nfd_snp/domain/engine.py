"""Turn a domain that asks for SEV-SNP into a valid `<launchSecurity type='sev-snp'>` guest.

The request is a metadata element in the project's namespace,
`<metadata><snp:sev-snp xmlns:snp="urn:nfd-snp:1" policy=... hostData=.../></metadata>`;
a domain without it is never changed. The rewrite (libvirt formatdomain.html, "Launch
Security" and "Operating system booting"):

- `<launchSecurity type='sev-snp'>` with an explicit `<policy>` (libvirt's schema requires
  it), `cbitpos`/`reducedPhysBits` from the node when known, and the requested options;
- a stateless firmware: a ROM loader with an SNP-capable image, or libvirt's autoselection
  (`<os firmware='efi'>` + `<loader stateless='yes'/>`), and no NVRAM;
- `<driver iommu='on'/>` on virtio devices (SNP guests need the IOMMU platform for DMA).

Everything else is kept as it was (order, comments, other metadata), and a second pass
over the output changes nothing. What cannot become a valid SNP guest is refused with the
reason (DomainError) instead of being dropped silently: SEV attestation data, Secure Boot,
SMM, invalid options.
"""

from __future__ import annotations

import copy

from nfd_snp.domain.options import (
    BASE64_SIZES,
    BOOLEANS,
    DEFAULT_POLICY,
    SnpOptions,
    check_base64,
    check_policy,
    format_policy,
    parse_bool,
    parse_policy,
)
from nfd_snp.xmlio import NFD_SNP_NS, is_element, new_child
from nfd_snp.errors import DomainError

MARKER = "{%s}sev-snp" % NFD_SNP_NS
# The order libvirt formats these in (the schema interleaves them, so any order is valid).
LAUNCH_SECURITY_ORDER = ("cbitpos", "reducedPhysBits", "policy", *BASE64_SIZES)
LAUNCH_SECURITY_ATTRS = ("kernelHashes", "authorKey", "vcek")
# Elements that precede <metadata> in libvirt's own formatting of a domain.
BEFORE_METADATA = ("name", "uuid", "hwuuid", "genid", "title", "description")


def find_marker(root):
    metadata = root.find("metadata")
    return None if metadata is None else metadata.find(MARKER)


def requested_options(root):
    """The SnpOptions a domain asked for, or None when it did not ask for SEV-SNP."""
    marker = find_marker(root)
    if marker is None:
        return None
    return SnpOptions.from_strings(dict(marker.attrib), "SEV-SNP request <snp:sev-snp>")


class _Layout:
    """Insert and remove elements while keeping the document's indentation.

    Callers pass the parent's depth (the domain root is 0): the elements touched sit at
    fixed places in libvirt's structure, so no parent map of the whole document is built.
    """

    def __init__(self, root) -> None:
        text = root.text or ""
        self.unit = text[text.rfind("\n") + 1 :] if "\n" in text and not text.strip() else None

    def insert(self, parent, depth: int, index: int, tag: str, attrib=None, nsmap=None):
        kids = list(parent)
        element = new_child(parent, tag, attrib or {}, nsmap=nsmap)
        if index < len(kids):
            parent.remove(element)
            parent.insert(index, element)
        if self.unit is not None:
            inner = "\n" + self.unit * (depth + 1)
            if not kids:
                parent.text = inner
                element.tail = "\n" + self.unit * depth
            elif index >= len(kids):
                element.tail = kids[-1].tail
                kids[-1].tail = inner
            else:
                element.tail = inner
        return element

    def remove(self, parent, child) -> None:
        kids = list(parent)
        index = kids.index(child)
        if index == len(kids) - 1:
            if index > 0:
                kids[index - 1].tail = child.tail
            else:
                parent.text = None
        parent.remove(child)


def set_request(root, options: SnpOptions):
    """Write (or replace) the marker with these options; the domain then asks for SNP."""
    layout = _Layout(root)
    metadata = root.find("metadata")
    if metadata is None:
        kids = list(root)
        index = 0
        for i, child in enumerate(kids):
            if is_element(child) and child.tag in BEFORE_METADATA:
                index = i + 1
        metadata = layout.insert(root, 0, index, "metadata")
    marker = metadata.find(MARKER)
    if marker is None:
        marker = layout.insert(metadata, 1, len(metadata), MARKER, nsmap={"snp": NFD_SNP_NS})
    marker.attrib.clear()
    for name, value in options.as_strings().items():
        marker.set(name, value)
    return marker


# -- launchSecurity ---------------------------------------------------------------------


def _child_text(element, tag):
    child = element.find(tag)
    return (child.text or "").strip() if child is not None else None


def _current_launch_security(ls) -> dict:
    """Values already in the domain that carry over to sev-snp (as strings)."""
    kind = ls.get("type")
    if kind == "sev":
        carried = [t for t in ("dhCert", "session") if ls.find(t) is not None]
        if carried:
            raise DomainError(
                "launchSecurity type='sev' carries SEV attestation data ("
                + ", ".join(carried)
                + ") that SEV-SNP cannot use: remove it and attest the SNP guest through its "
                "attestation report instead"
            )
        # cbitpos/reducedPhysBits describe the host; an SEV policy has other bit meanings
        # (bit 0 is NODBG) and is never carried over.
        keep = ("cbitpos", "reducedPhysBits")
        values = {t: _child_text(ls, t) for t in keep if ls.find(t) is not None}
        if ls.get("kernelHashes") is not None:
            values["kernelHashes"] = ls.get("kernelHashes")
        return values
    if kind == "sev-snp":
        values = {t: _child_text(ls, t) for t in LAUNCH_SECURITY_ORDER if ls.find(t) is not None}
        values.update({a: ls.get(a) for a in LAUNCH_SECURITY_ATTRS if ls.get(a) is not None})
        return values
    raise DomainError(f"launchSecurity type='{kind}' cannot be combined with SEV-SNP")


def _unsigned(text: str, name: str) -> int:
    if not text.isdigit() or len(text) > 4:
        raise DomainError(f"launchSecurity <{name}> is not a small unsigned number: {text[:20]!r}")
    return int(text)


def _desired_launch_security(root, options: SnpOptions, current: dict, node):
    """(attributes, [(tag, value, equal)]) for the sev-snp element, validated."""
    policy = options.policy
    if policy is None:
        policy = parse_policy(current["policy"]) if "policy" in current else DEFAULT_POLICY
    check_policy(policy, node.snp_api if node is not None else None)
    values = {"policy": policy}
    for name in ("cbitpos", "reducedPhysBits"):
        known = getattr(node, name, None) if node is not None else None
        if known is None and current.get(name) is not None:
            known = _unsigned(current[name], name)
        if known is not None:
            values[name] = known
    for name in BASE64_SIZES:
        value = getattr(options, name)
        if value is None and current.get(name) is not None:
            value = check_base64(name, current[name])
        if value is not None:
            values[name] = value
    attrs = {"type": "sev-snp"}
    for name in LAUNCH_SECURITY_ATTRS:
        value = getattr(options, name)
        if value is None and current.get(name) is not None:
            value = parse_bool(name, current[name])
        if value is not None:
            attrs[name] = "yes" if value else "no"
    if attrs.get("kernelHashes") == "yes" and root.find("os/kernel") is None:
        raise DomainError(
            "kernelHashes='yes' measures a directly booted kernel, but the domain has no "
            "<os><kernel>"
        )
    if attrs.get("authorKey") == "yes" and "idAuth" not in values:
        raise DomainError("authorKey='yes' needs idAuth (the ID authentication block)")
    return attrs, values


def _same(tag: str, text, value) -> bool:
    """Whether existing text already says `value` (so it is left byte-for-byte alone)."""
    if text is None:
        return False
    try:
        if tag == "policy":
            return parse_policy(text) == value
        if tag in ("cbitpos", "reducedPhysBits"):
            return text.strip().isdigit() and int(text) == value
    except DomainError:
        return False
    return "".join(text.split()) == value


def _render(tag: str, value) -> str:
    return format_policy(value) if tag == "policy" else str(value)


def _write_launch_security(root, layout: _Layout, ls, attrs: dict, values: dict):
    if ls is None:
        ls = layout.insert(root, 0, len(root), "launchSecurity")
    elif ls.get("type") != "sev-snp":
        index = list(root).index(ls)
        layout.remove(root, ls)
        ls = layout.insert(root, 0, index, "launchSecurity")
    if dict(ls.attrib) != attrs:
        ls.attrib.clear()
        for name in ("type", *LAUNCH_SECURITY_ATTRS):
            if name in attrs:
                ls.set(name, attrs[name])
    for child in list(ls):
        if is_element(child) and child.tag not in values:
            layout.remove(ls, child)
    for position, tag in enumerate(LAUNCH_SECURITY_ORDER):
        if tag not in values:
            continue
        child = ls.find(tag)
        if child is None:
            after = [ls.find(t) for t in LAUNCH_SECURITY_ORDER[:position]]
            present = [c for c in after if c is not None]
            index = list(ls).index(present[-1]) + 1 if present else 0
            child = layout.insert(ls, 1, index, tag)
        if not _same(tag, child.text, values[tag]):
            child.text = _render(tag, values[tag])
    return ls


# -- firmware ------------------------------------------------------------------------------


def _check_no_smm(root) -> None:
    loader = root.find("os/loader")
    if loader is not None and loader.get("secure") == "yes":
        raise DomainError(
            "Secure Boot (<loader secure='yes'>) needs SMM, which SEV-SNP guests cannot use: "
            "remove secure='yes' (SNP firmware such as OVMF.amdsev boots without it)"
        )
    for feature in root.findall("os/firmware/feature"):
        if feature.get("name") == "secure-boot" and feature.get("enabled") == "yes":
            raise DomainError(
                "firmware feature secure-boot needs SMM, which SEV-SNP guests cannot use"
            )
    smm = root.find("features/smm")
    if smm is not None and smm.get("state", "on") == "on":
        raise DomainError(
            "SEV-SNP guests cannot use SMM: remove <smm/> from <features> or set state='off'"
        )


def _write_firmware(root, layout: _Layout, options: SnpOptions, node) -> None:
    os_element = root.find("os")
    if os_element is None:
        raise DomainError("the domain has no <os> element")
    _check_no_smm(root)
    path = options.firmware
    if path is None and node is not None and node.snp_firmware:
        path = node.snp_firmware[0]
    loader = os_element.find("loader")
    if loader is None:
        kind = os_element.find("type")
        index = list(os_element).index(kind) + 1 if kind is not None else 0
        loader = layout.insert(os_element, 1, index, "loader")
    if path is not None:
        # Manual selection: a stateless ROM image with SNP support.
        if "firmware" in os_element.attrib:
            del os_element.attrib["firmware"]
        selection = os_element.find("firmware")
        if selection is not None:
            layout.remove(os_element, selection)
        wanted, text = {"type": "rom", "stateless": "yes"}, path
    else:
        # Autoselection: libvirt picks a descriptor listing amd-sev-snp.
        os_element.set("firmware", "efi")
        wanted, text = {"stateless": "yes"}, None
    if dict(loader.attrib) != wanted:
        loader.attrib.clear()
        for name, value in wanted.items():
            loader.set(name, value)
    if (loader.text or "").strip() != (text or ""):
        loader.text = text
    nvram = os_element.find("nvram")
    if nvram is not None:
        layout.remove(os_element, nvram)


# -- virtio devices ------------------------------------------------------------------------


# Devices whose model attribute names virtio, and devices recognised by one child's attribute.
_MODEL_ATTRIBUTE = ("memballoon", "rng", "vsock")
_BY_CHILD = {
    "disk": ("target", "bus"),  # <target bus='virtio'>
    "interface": ("model", "type"),  # <model type='virtio'> (or virtio-non-transitional...)
    "video": ("model", "type"),
    "filesystem": ("driver", "type"),  # <driver type='virtiofs'>
}


def _virtio_driver(device):
    """(is a virtio device, its <driver> child or None), looking at each child once."""
    tag = device.tag
    driver = None
    virtio = False
    test = _BY_CHILD.get(tag)
    for child in device:
        child_tag = child.tag
        if child_tag == "driver":
            driver = child
        if test is not None and child_tag == test[0]:
            virtio = (child.get(test[1]) or "").startswith("virtio")
    if tag in _MODEL_ATTRIBUTE:
        virtio = (device.get("model") or "").startswith("virtio")
    elif tag == "controller":
        virtio = device.get("type") == "virtio-serial" or (device.get("model") or "").startswith(
            "virtio"
        )
    elif tag == "input":
        virtio = device.get("bus") == "virtio"
    return virtio, driver


def _write_iommu(root, layout: _Layout) -> None:
    devices = root.find("devices")
    if devices is None:
        return
    for device in devices:
        if not is_element(device):
            continue
        virtio, driver = _virtio_driver(device)
        if not virtio:
            continue
        if driver is None:
            driver = layout.insert(device, 2, len(device), "driver")
        if driver.get("iommu") != "on":
            driver.set("iommu", "on")


# -- entry points --------------------------------------------------------------------------


def rewrite(root, node=None, options=None):
    """Rewrite `root` (a <domain> element) in place into a sev-snp guest; return it.

    `options` defaults to the domain's own request; DomainError when the domain did not
    ask for SEV-SNP or cannot become a valid SNP guest.
    """
    if root.tag != "domain":
        raise DomainError(f"expected a <domain> document, got <{root.tag}>")
    if options is None:
        options = requested_options(root)
        if options is None:
            raise DomainError("the domain does not ask for SEV-SNP (no <snp:sev-snp> metadata)")
    layout = _Layout(root)
    ls = root.find("launchSecurity")
    current = _current_launch_security(ls) if ls is not None else {}
    attrs, values = _desired_launch_security(root, options, current, node)
    _write_firmware(root, layout, options, node)
    _write_launch_security(root, layout, ls, attrs, values)
    _write_iommu(root, layout)
    return root


def _launch_security_summary(ls) -> dict:
    values = _current_launch_security(ls)
    summary = {}
    for name, text in values.items():
        if name == "policy":
            summary[name] = parse_policy(text)
        elif name in BOOLEANS:
            summary[name] = parse_bool(name, text)
        else:
            summary[name] = "".join(text.split())
    return summary


def verify(root, node=None) -> None:
    """Raise DomainError unless a domain that asked for SEV-SNP is ready to start as one.

    Checks what the guest's confidentiality depends on: it has been converted, its options
    are valid for this node, and its launchSecurity says what the request and node say.
    (Firmware and device details are left to libvirt, which normalises them at define time.)
    """
    ls = root.find("launchSecurity")
    if ls is None or ls.get("type") != "sev-snp":
        found = "no launchSecurity" if ls is None else f"launchSecurity type='{ls.get('type')}'"
        raise DomainError(f"the domain asks for SEV-SNP but is not converted ({found})")
    expected = rewrite(copy.deepcopy(root), node)
    want = _launch_security_summary(expected.find("launchSecurity"))
    have = _launch_security_summary(ls)
    for host_value in ("cbitpos", "reducedPhysBits"):
        # Left out, libvirt fills them from its own capabilities of this host at start;
        # only a value that is present and differs (another host's) is wrong.
        if host_value not in have:
            want.pop(host_value, None)
    if want != have:
        differs = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
        raise DomainError(
            "the domain's launchSecurity does not match its SEV-SNP request and this node ("
            + ", ".join(differs)
            + ")"
        )
