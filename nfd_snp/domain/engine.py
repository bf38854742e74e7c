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

from nfd_snp.domain.options import FIELDS, SnpOptions, check_needs, with_defaults
from nfd_snp.errors import DomainError
from nfd_snp.xmlio import NFD_SNP_NS, is_element, new_child

MARKER = "{%s}sev-snp" % NFD_SNP_NS
# The launchSecurity properties, in libvirt's formatting order (the schema interleaves the
# elements, so any order is valid; this one matches what libvirt writes back).
LAUNCH_SECURITY = tuple(f for f in FIELDS if f.in_launch_security)
ATTRIBUTES = tuple(f for f in LAUNCH_SECURITY if f.attribute is not None)
ELEMENTS = tuple(f for f in LAUNCH_SECURITY if f.tag is not None)


class NotConverted(DomainError):
    """A domain that asks for SEV-SNP but is not (or no longer) the SNP guest its request
    and this node say: `nfd-snp domain convert` makes it one."""


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
    """Write (or replace) the marker with these options; the domain then asks for SNP.

    A marker that already says exactly this is left as it is (attribute order included).
    """
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
    wanted = options.as_strings()
    if dict(marker.attrib) != wanted:
        marker.attrib.clear()
        for name, value in wanted.items():
            marker.set(name, value)
    return marker


# -- launchSecurity ---------------------------------------------------------------------


class _Held:
    """What a domain's launchSecurity already holds, each value parsed when it is used.

    A value the request replaces is never parsed, so a malformed one can be replaced.
    """

    def __init__(self, texts: dict) -> None:
        self.texts = texts

    def get(self, field):
        text = self.texts.get(field.name)
        return None if text is None else field.from_xml(text)


def _held(ls) -> _Held:
    """The values of an existing launchSecurity that carry over to sev-snp."""
    if ls is None:
        return _Held({})
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
        # An SEV policy has other bit meanings (bit 0 is NODBG) and is never carried over.
        fields = [f for f in LAUNCH_SECURITY if f.sev]
    elif kind == "sev-snp":
        fields = LAUNCH_SECURITY
    else:
        raise DomainError(f"launchSecurity type='{kind}' cannot be combined with SEV-SNP")
    texts = {}
    for field in fields:
        if field.attribute is not None:
            text = ls.get(field.attribute)
        else:
            child = ls.find(field.tag)
            text = None if child is None else (child.text or "").strip()
        if text is not None:
            texts[field.name] = text
    return _Held(texts)


def settings(root, options: SnpOptions, node) -> SnpOptions:
    """The validated SEV-SNP settings for this domain, request and node; the document is
    not changed. DomainError when the domain cannot become a valid SNP guest."""
    held = _held(root.find("launchSecurity"))
    wanted = with_defaults(options, held, node)
    if wanted.kernelHashes and root.find("os/kernel") is None:
        raise DomainError(
            "kernelHashes='yes' measures a directly booted kernel, but the domain has no "
            "<os><kernel>"
        )
    check_needs(wanted)
    if root.find("os") is None:
        raise DomainError("the domain has no <os> element")
    _check_no_smm(root)
    return wanted


def _write_launch_security(root, layout: _Layout, ls, wanted: SnpOptions):
    if ls is None:
        ls = layout.insert(root, 0, len(root), "launchSecurity")
    elif ls.get("type") != "sev-snp":
        index = list(root).index(ls)
        layout.remove(root, ls)
        ls = layout.insert(root, 0, index, "launchSecurity")
    attrs = {"type": "sev-snp"}
    for field in ATTRIBUTES:
        value = getattr(wanted, field.name)
        if value is not None:
            attrs[field.attribute] = field.kind.to_xml(value)
    if dict(ls.attrib) != attrs:
        ls.attrib.clear()
        for name, value in attrs.items():
            ls.set(name, value)
    present = [f for f in ELEMENTS if getattr(wanted, f.name) is not None]
    tags = {f.tag for f in present}
    for child in list(ls):
        if is_element(child) and child.tag not in tags:
            layout.remove(ls, child)
    previous = None
    for field in present:
        value = getattr(wanted, field.name)
        child = ls.find(field.tag)
        if child is None:
            index = list(ls).index(previous) + 1 if previous is not None else 0
            child = layout.insert(ls, 1, index, field.tag)
        if not field.kind.says(child.text, value):
            child.text = field.kind.to_xml(value)
        previous = child
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


def _write_firmware(root, layout: _Layout, path) -> None:
    os_element = root.find("os")
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


def _request(root, options):
    if root.tag != "domain":
        raise DomainError(f"expected a <domain> document, got <{root.tag}>")
    if options is None:
        options = requested_options(root)
        if options is None:
            raise DomainError("the domain does not ask for SEV-SNP (no <snp:sev-snp> metadata)")
    return options


def rewrite(root, node=None, options=None):
    """Rewrite `root` (a <domain> element) in place into a sev-snp guest; return it.

    `options` defaults to the domain's own request; DomainError when the domain did not
    ask for SEV-SNP or cannot become a valid SNP guest.
    """
    wanted = settings(root, _request(root, options), node)
    layout = _Layout(root)
    _write_firmware(root, layout, wanted.firmware)
    _write_launch_security(root, layout, root.find("launchSecurity"), wanted)
    _write_iommu(root, layout)
    return root


def _check_no_flash(root) -> None:
    """SNP guests get no read-only memory from KVM, so flash firmware cannot boot: QEMU stops
    with "pflash with kvm requires KVM readonly memory support" or "KVM_SET_USER_MEMORY_REGION2
    failed ... Invalid argument" (AMDESE/AMDSEV#223)."""
    loader = root.find("os/loader")
    if loader is not None and loader.get("type") == "pflash":
        raise NotConverted(
            "<loader type='pflash'>: SEV-SNP guests cannot boot flash firmware (KVM gives "
            "them no read-only memory); they need a stateless ROM firmware such as "
            "OVMF.amdsev.fd"
        )
    if root.find("os/nvram") is not None:
        raise NotConverted("<nvram>: SEV-SNP firmware is stateless and keeps no NVRAM")


def verify(root, node=None) -> None:
    """Raise DomainError unless a domain that asked for SEV-SNP is ready to start as one.

    Checks what the guest's confidentiality depends on: it has been converted, its options
    are valid for this node, and its launchSecurity holds what the request and node say,
    compared as typed values. (Firmware and device details are left to libvirt, which
    normalises them at define time.)
    """
    ls = root.find("launchSecurity")
    if ls is None or ls.get("type") != "sev-snp":
        found = "no launchSecurity" if ls is None else f"launchSecurity type='{ls.get('type')}'"
        raise NotConverted(f"the domain asks for SEV-SNP but is not converted ({found})")
    _check_no_flash(root)
    wanted = settings(root, _request(root, None), node)
    held = _held(ls)
    differs = []
    for field in LAUNCH_SECURITY:
        have = held.get(field)
        # A host property left out is filled by libvirt from its own capabilities of this
        # host at start; only a value that is present and differs (another host's) is wrong.
        if have is None and field.host:
            continue
        if getattr(wanted, field.name) != have:
            differs.append(field.name)
    if differs:
        raise NotConverted(
            "the domain's launchSecurity does not match its SEV-SNP request and this node ("
            + ", ".join(sorted(differs))
            + ")"
        )
