"""What the rewrite needs to know about this node: the service's facts cache.

The format, its reader and its writer live in `nfd_snp.facts_cache`; this module is the
name the rewrite engine, the hook and `nfd-snp domain` use for the reading side. A missing,
stale or untrusted cache means "unknown", and a domain that asked for SEV-SNP is then
refused, never started on a guess.
"""

from nfd_snp.facts_cache import DEFAULT_FACTS_CACHE, NodeFacts, OtherSchema, load

__all__ = ["DEFAULT_FACTS_CACHE", "NodeFacts", "OtherSchema", "load"]
