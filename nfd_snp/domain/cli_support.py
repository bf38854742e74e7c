"""Library side of `nfd-snp domain rewrite` and `nfd-snp domain convert`."""

from __future__ import annotations

import difflib
import os
from typing import Optional

from nfd_snp import xmlio
from nfd_snp.domain import engine, node as node_facts, schema
from nfd_snp.domain.options import OptionError, SnpOptions
from nfd_snp.errors import DomainError, InputError, NfdSnpError

# The first libvirt that knows <launchSecurity type='sev-snp'> (libvirt NEWS, v10.5.0).
SEV_SNP_LIBVIRT = (10, 5, 0)


def parse_option_flags(flags) -> dict:
    """`--option name=value` flags into a dict; InputError for a flag without '='."""
    values = {}
    for flag in flags:
        name, sep, value = flag.partition("=")
        if not sep or not name:
            raise InputError(f"--option {flag!r}: expected NAME=VALUE (e.g. policy=0x30000)")
        values[name.strip()] = value
    return values


def load_node(facts: Optional[str]):
    """(node facts or None, warning or None) for --facts.

    'none' disables them; an explicit path must be usable (DomainError otherwise), but a
    cache of another nfd-snp's schema holds no facts for this one; the default cache is used
    when present and usable. Without node facts the rewrite leaves cbitpos and firmware to
    libvirt, and says why.
    """
    if facts == "none":
        return None, None
    if facts is not None:
        try:
            return node_facts.load(facts), None
        except node_facts.OtherSchema as exc:
            return None, f"ignoring node facts ({exc})"
    path = node_facts.DEFAULT_FACTS_CACHE
    if not os.path.exists(path):
        return None, None
    try:
        return node_facts.load(path), None
    except DomainError as exc:
        return None, f"ignoring node facts ({exc})"


def request_options(marker, flags, name: Optional[str] = None) -> SnpOptions:
    """The request to write: the domain's marker attributes, each overridden by an --option.

    An error names where the bad option is: the --option flag, or the domain's own metadata
    (with how to correct it there); a marker attribute an --option replaces is not read.
    """
    given = parse_option_flags(flags)
    from_flags = SnpOptions.from_strings(given, "--option")
    kept = {
        k: v for k, v in (marker.attrib if marker is not None else {}).items() if k not in given
    }
    where = f"the <snp:sev-snp> metadata of domain '{name}'" if name else "the domain's"
    try:
        from_marker = SnpOptions.from_strings(kept, where if name else f"{where} <snp:sev-snp>")
    except OptionError as exc:
        fix = f"; correct it with `virsh edit {name}`" if name else "; correct it in the XML"
        if not exc.unknown:
            fix += f", or replace it: --option {exc.option}=VALUE"
        raise DomainError(f"{exc}{fix}") from None
    return SnpOptions(**{**vars(from_marker), **vars(from_flags)})


def rewrite_text(
    xml, flags=(), node=None, schema_dir: Optional[str] = None, name: Optional[str] = None
) -> str:
    """Mark the domain as asking for SEV-SNP (merging --option flags) and rewrite it.
    `name`: the libvirt domain it comes from, for errors that point into its definition."""
    # lxml: RelaxNG validation needs it, and it keeps namespace declarations where they were.
    root = xmlio.parse(xml, backend="lxml")
    options = request_options(engine.find_marker(root), flags, name)
    engine.set_request(root, options)
    engine.rewrite(root, node)
    if schema_dir is not None:
        schema.validate(root, schema_dir)
    return xmlio.serialize(root) + "\n"


def _libvirt_error(exc) -> str:
    return " ".join(str(exc.get_error_message() or exc).split())


def _version(number: int) -> tuple:
    """libvirt's version number (major * 1,000,000 + minor * 1,000 + micro) as a tuple."""
    return number // 1_000_000, number // 1_000 % 1_000, number % 1_000


def _without_snp(conn, uri: str) -> Optional[str]:
    """Why the libvirt behind `conn` cannot define SEV-SNP guests, or None when it can."""
    import libvirt

    try:
        version = _version(conn.getLibVersion())
    except libvirt.libvirtError:
        return None  # unknown: libvirt's own answer to the definition decides
    if version >= SEV_SNP_LIBVIRT:
        return None
    have = ".".join(map(str, version))
    need = ".".join(map(str, SEV_SNP_LIBVIRT[:2]))
    return f"libvirt {have} on {uri} predates SEV-SNP guests: libvirt {need} or later is needed"


def dry_run_diff(name: str, before: str, after: str) -> str:
    """A unified diff of the conversion alone.

    libvirt writes attributes with single quotes and lxml with double ones, so `before` is
    written the same way as `after` (parsed and serialized unchanged) before comparing:
    only lines the conversion changes differ.
    """
    normalized = xmlio.serialize(xmlio.parse(before, backend="lxml")) + "\n"
    diff = difflib.unified_diff(
        normalized.splitlines(True),
        after.splitlines(True),
        f"{name} (defined)",
        f"{name} (SEV-SNP)",
    )
    return "".join(diff)


def convert(
    name: str,
    uri: str,
    flags=(),
    node=None,
    dry_run: bool = False,
    schema_dir: Optional[str] = None,
) -> tuple:
    """Rewrite a persistent domain's inactive XML and define it.

    Returns (diff, failure): the diff (with dry_run; "" otherwise) and, with dry_run, why
    defining it would fail, or None. NfdSnpError when libvirt predates SEV-SNP or refuses
    the result.
    """
    import libvirt

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise NfdSnpError(f"cannot connect to {uri}: {_libvirt_error(exc)}") from None
    try:
        try:
            domain = conn.lookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                raise InputError(f"no domain named '{name}' on {uri}") from None
            raise NfdSnpError(f"cannot look up '{name}': {_libvirt_error(exc)}") from None
        if not domain.isPersistent():
            raise InputError(f"domain '{name}' is transient; only defined domains are converted")
        if domain.isActive():
            raise NfdSnpError(
                f"domain '{name}' is running: shut it down first (virsh shutdown {name}), "
                "then convert it"
            )
        before = domain.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        after = rewrite_text(before, flags, node, schema_dir, name)
        too_old = _without_snp(conn, uri)
        if dry_run:
            warning = f"{too_old}; defining this would fail" if too_old else None
            return dry_run_diff(name, before, after), warning
        if too_old:
            raise NfdSnpError(f"cannot convert '{name}': {too_old}; the domain is unchanged")
        try:
            conn.defineXML(after)
        except libvirt.libvirtError as exc:
            raise NfdSnpError(
                f"libvirt refused the SEV-SNP domain '{name}': {_libvirt_error(exc)}"
            ) from None
        return "", None
    finally:
        conn.close()
