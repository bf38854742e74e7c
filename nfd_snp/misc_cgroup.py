"""The misc cgroup's flat-keyed files (misc.capacity, misc.current): one parser for the probe
(nfd_snp.sources.cgroup) and the libvirt hook, which reads them at a start without the probe.

Documentation/admin-guide/cgroup-v2.rst, "Misc": `name value` lines, capacity at the cgroup
root; `sev` = max_sev_asid - min_sev_asid + 1, `sev_es` = min_sev_asid - 1, and SNP guests
are charged to `sev_es`. Keys are matched exactly: `sev` is a prefix of `sev_es` (NFD's own
parser once read `sev_es` lines as `sev`). Standard library only: the hook imports it.
"""

from __future__ import annotations

from nfd_snp.paths import MISC_CGROUP_DIRS

FILE_LIMIT = 4096


def parse_flat_keyed(text: str, where: str) -> dict:
    """`name value` lines into {name: int}; ValueError on garbage."""
    values = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{where} line {number}: expected 'name value'")
        name, value = parts
        if value == "max":
            continue  # misc.max style; capacity and current are integers
        if not (value.isascii() and value.isdigit()) or len(value) > 20:
            raise ValueError(f"{where} line {number}: {value[:20]!r} is not a count")
        values[name] = int(value)
    return values


def live_value(name: str, key: str):
    """`key` in this host's misc file `name` (first misc hierarchy found), None when the
    file, the hierarchy or the key is missing or garbled."""
    for directory in MISC_CGROUP_DIRS:
        path = f"/{directory}/{name}"
        try:
            with open(path, encoding="ascii", errors="replace") as handle:
                text = handle.read(FILE_LIMIT)
        except OSError:
            continue
        try:
            return parse_flat_keyed(text, path).get(key)
        except ValueError:
            return None
    return None
