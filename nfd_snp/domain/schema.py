"""Validate a rewritten domain against libvirt's own RelaxNG schema (lxml only).

Only schemas that know `sev-snp` (libvirt 10.5 and later) are useful; older ones reject
every SNP domain. The host's schemas are used at run time when they know it; the tests use
libvirt 11.3's from Debian trixie.
"""

from __future__ import annotations

import os
from typing import Optional

from nfd_snp.errors import DomainError

HOST_SCHEMAS = "/usr/share/libvirt/schemas"
_cache: dict = {}


def knows_sev_snp(schema_dir: str) -> bool:
    try:
        with open(os.path.join(schema_dir, "domaincommon.rng"), encoding="utf-8") as handle:
            return "<value>sev-snp</value>" in handle.read()
    except OSError:
        return False


def host_schema_dir() -> Optional[str]:
    """The host's schema directory when it knows sev-snp, else None."""
    return HOST_SCHEMAS if knows_sev_snp(HOST_SCHEMAS) else None


def _relaxng(schema_dir: str):
    from lxml import etree

    schema = _cache.get(schema_dir)
    if schema is None:
        schema = etree.RelaxNG(etree.parse(os.path.join(schema_dir, "domain.rng")))
        _cache[schema_dir] = schema
    return schema


def validate(root, schema_dir: str) -> None:
    """DomainError naming the first schema violation (root: an lxml element)."""
    schema = _relaxng(schema_dir)
    if not schema.validate(root.getroottree()):
        error = schema.error_log.last_error
        raise DomainError(
            f"libvirt's domain schema rejects the result: line {error.line}: {error.message}"
        )
