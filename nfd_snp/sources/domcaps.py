"""libvirt's domain capabilities: SEV block and launchSecurity sectypes (REFERENCE §6).

`<sev supported='yes'>` carries cbitpos, reducedPhysBits and, since libvirt 8.0, maxGuests
and maxESGuests; `<launchSecurity>` lists `sev-snp` since libvirt 10.5.
"""

from __future__ import annotations

from typing import Optional

from nfd_snp import xmlio
from nfd_snp.errors import LibvirtError, NotCaptured, UnsafeXmlError
from nfd_snp.host import Host
from nfd_snp.model import DomainCapsFacts, Unreadable
from nfd_snp.reasons import Reason

DOMCAPS_LIMIT = 4 * 1024 * 1024


def _text(root, path: str) -> Optional[str]:
    node = root.find(path)
    return node.text.strip() if node is not None and node.text else None


def _int(root, path: str) -> Optional[int]:
    text = _text(root, path)
    if text is None:
        return None
    if not (text.isascii() and text.isdigit()) or len(text) > 12:
        raise UnsafeXmlError(f"domain capabilities: <{path}> is not a count: {text[:20]!r}")
    return int(text)


def _supported(node) -> Optional[bool]:
    if node is None:
        return None
    return node.get("supported") == "yes"


def parse(xml) -> DomainCapsFacts:
    """Parse `virsh domcapabilities` output; UnsafeXmlError for anything malformed."""
    root = xmlio.parse(xml, what="domain capabilities", limit=DOMCAPS_LIMIT, backend="stdlib")
    if root.tag != "domainCapabilities":
        raise UnsafeXmlError(f"domain capabilities: root element is <{root.tag}>")
    sev = root.find("features/sev")
    sev_supported = _supported(sev)
    launch = root.find("features/launchSecurity")
    sectypes = ()
    if launch is not None:
        sectypes = tuple(
            v.text.strip()
            for v in launch.findall("enum[@name='sectype']/value")
            if v.text and v.text.strip()
        )
    has_sev = sev is not None and sev_supported
    return DomainCapsFacts(
        libvirt_present=True,
        emulator=_text(root, "path"),
        virt_type=_text(root, "domain"),
        machine=_text(root, "machine"),
        sev_supported=bool(sev_supported),
        cbitpos=_int(sev, "cbitpos") if has_sev else None,
        reducedPhysBits=_int(sev, "reducedPhysBits") if has_sev else None,
        maxGuests=_int(sev, "maxGuests") if has_sev else None,
        maxESGuests=_int(sev, "maxESGuests") if has_sev else None,
        launch_security_supported=_supported(launch),
        sectypes=sectypes,
    )


def read(host: Host) -> DomainCapsFacts:
    try:
        xml = host.domain_capabilities()
    except NotCaptured:
        return DomainCapsFacts(None, Unreadable(Reason.NOT_IN_SNAPSHOT, "domcaps: not captured"))
    except LibvirtError as exc:
        return DomainCapsFacts(True, Unreadable(exc.reason, f"libvirt: {exc}"))
    if xml is None:
        return DomainCapsFacts(libvirt_present=False)
    try:
        return parse(xml)
    except UnsafeXmlError as exc:
        return DomainCapsFacts(True, Unreadable(Reason.FILE_GARBLED, str(exc)))
