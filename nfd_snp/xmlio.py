"""Untrusted XML (domains, domain capabilities) parsed hardened, by lxml or the standard library.

Both paths are hardened the same way: bounded size, no DTD or entity declarations, no
network, nesting depth capped (libxml2's default limit is 256 levels; the standard-library
path enforces the same with an expat pre-scan). Comments and processing instructions are
kept, so a rewrite preserves everything it does not change.

lxml is imported only when asked for: it costs about twice the interpreter's own start, so
`nfd-snp check` and the libvirt hook (for domains of usual size) parse with the standard
library, and lxml serves where its features are needed (RelaxNG validation in
`nfd-snp domain rewrite` and `convert`).
This module imports nothing from nfd_snp but `nfd_snp.errors`: the probe and the rewrite
engine both use it, and the KubeVirt sidecar script embeds it.
"""

from __future__ import annotations

from nfd_snp.errors import UnsafeXmlError

MAX_DOMAIN_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 256
NFD_SNP_NS = "urn:nfd-snp:1"
# Prefixes xml.etree should write for namespaces common in domain XML (it would write ns0,
# ns1...): ours, libvirt's QEMU passthrough namespace and KubeVirt's metadata.
STDLIB_PREFIXES = {
    "snp": NFD_SNP_NS,
    "qemu": "http://libvirt.org/schemas/domain/qemu/1.0",
    "kubevirt": "http://kubevirt.io",
}


def _lxml_etree():
    """lxml.etree, or None where it is not installed (KubeVirt's sidecar-shim image)."""
    try:
        from lxml import etree
    except ImportError:  # pragma: no cover - exercised by the sidecar tests in a bare venv
        return None
    return etree


def _check_size(data: bytes, what: str, limit: int) -> None:
    if len(data) > limit:
        raise UnsafeXmlError(f"{what}: {len(data)} bytes is more than the {limit} allowed")


def _parse_lxml(etree, data: bytes, what: str):
    parser = etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        remove_blank_text=False,
        remove_comments=False,
    )
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise UnsafeXmlError(f"{what}: not well-formed XML ({exc})") from None
    docinfo = root.getroottree().docinfo
    if docinfo.internalDTD is not None or docinfo.doctype:
        raise UnsafeXmlError(f"{what}: a DOCTYPE (DTD or entity declarations) is not accepted")
    return root


def _prescan(data: bytes, what: str) -> None:
    """Reject DOCTYPEs and deep nesting before ElementTree builds anything."""
    from xml.parsers import expat

    depth = 0

    def start(_name, _attrs):
        nonlocal depth
        depth += 1
        if depth > MAX_DEPTH:
            raise UnsafeXmlError(f"{what}: nested deeper than {MAX_DEPTH} levels")

    def end(_name):
        nonlocal depth
        depth -= 1

    def doctype(*_args):
        raise UnsafeXmlError(f"{what}: a DOCTYPE (DTD or entity declarations) is not accepted")

    scanner = expat.ParserCreate()
    scanner.StartElementHandler = start
    scanner.EndElementHandler = end
    scanner.StartDoctypeDeclHandler = doctype
    scanner.EntityDeclHandler = doctype
    try:
        scanner.Parse(data, True)
    except expat.ExpatError as exc:
        raise UnsafeXmlError(f"{what}: not well-formed XML ({exc})") from None


def _parse_stdlib(data: bytes, what: str):
    import xml.etree.ElementTree as ET

    _prescan(data, what)
    builder = ET.TreeBuilder(insert_comments=True, insert_pis=True)
    parser = ET.XMLParser(target=builder)
    try:
        parser.feed(data)
        return parser.close()
    except ET.ParseError as exc:
        raise UnsafeXmlError(f"{what}: not well-formed XML ({exc})") from None


def parse(data, *, what: str = "domain XML", limit: int = MAX_DOMAIN_BYTES, backend=None):
    """Parse untrusted XML into an element.

    `backend`: "stdlib" (xml.etree), "lxml", or None for lxml when it is installed and the
    standard library otherwise.
    """
    if isinstance(data, str):
        try:
            data = data.encode("utf-8")
        except UnicodeEncodeError:  # undecodable bytes of an argument (surrogateescape)
            raise UnsafeXmlError(f"{what}: not UTF-8") from None
    _check_size(data, what, limit)
    if not data.strip():
        raise UnsafeXmlError(f"{what}: empty input")
    if backend == "lxml":
        from lxml import etree
    else:
        etree = _lxml_etree() if backend is None else None
    if etree is not None:
        return _parse_lxml(etree, data, what)
    return _parse_stdlib(data, what)


def is_lxml(element) -> bool:
    # By type name: an lxml element exists only once lxml is imported; never import it here.
    return type(element).__module__ == "lxml.etree"


def serialize(root) -> str:
    if is_lxml(root):
        from lxml import etree

        return etree.tostring(root, encoding="unicode")
    import xml.etree.ElementTree as ET

    for prefix, uri in STDLIB_PREFIXES.items():
        ET.register_namespace(prefix, uri)
    return ET.tostring(root, encoding="unicode")


def new_child(parent, tag: str, attrib=None, nsmap=None):
    """A child element of the parent's own kind (lxml or xml.etree)."""
    if is_lxml(parent):
        from lxml import etree

        return etree.SubElement(parent, tag, attrib or {}, nsmap=nsmap)
    import xml.etree.ElementTree as ET

    if nsmap:
        for prefix, uri in nsmap.items():
            ET.register_namespace(prefix, uri)
    return ET.SubElement(parent, tag, attrib or {})


def is_element(node) -> bool:
    """True for elements, False for comments and processing instructions."""
    return isinstance(node.tag, str)
