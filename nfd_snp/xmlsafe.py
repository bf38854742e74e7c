"""Parse untrusted XML: bounded size, no DTD, no entity expansion, no network.

Domain capabilities from a snapshot, domain XML from users and VMI payloads are all
hostile until parsed. libxml2 also caps nesting depth (256) unless huge_tree is set.
"""

from __future__ import annotations

from typing import Union

from nfd_snp.errors import UnsafeXmlError

MAX_XML_BYTES = 16 * 1024 * 1024


def parse(data: Union[bytes, str], *, what: str = "XML", limit: int = MAX_XML_BYTES):
    """Parse one XML document into an lxml element; raise UnsafeXmlError with one line."""
    from lxml import etree

    if isinstance(data, str):
        data = data.encode("utf-8")
    if len(data) > limit:
        raise UnsafeXmlError(f"{what}: {len(data)} bytes is more than the {limit} allowed")
    parser = etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
    )
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise UnsafeXmlError(f"{what}: not well-formed XML ({exc})") from None
    if root is None:
        raise UnsafeXmlError(f"{what}: empty document")
    docinfo = root.getroottree().docinfo
    if docinfo.internalDTD is not None or docinfo.doctype:
        raise UnsafeXmlError(f"{what}: a DOCTYPE (DTD or entity declarations) is not accepted")
    return root
