"""Block-style YAML for the Kubernetes manifests nfd-snp generates (no YAML library needed).

Only what the generated objects use: mappings (in insertion order), lists, strings,
integers, booleans and empty mappings. A string is written plain when every YAML reader
takes it back as that string, single-quoted otherwise, and as a literal block (`|`) when it
spans lines, so a script carried in a ConfigMap reads as the source it is. The tests read
every generated file back with PyYAML and compare.
"""

from __future__ import annotations

import re

INDENT = "  "
# Plain scalars: no spaces, no YAML indicators, starting with a letter or '/', plus
# Kubernetes quantities such as 4Gi. Everything else is quoted.
_PLAIN = re.compile(r"^(?:[A-Za-z/][A-Za-z0-9._/-]*|[0-9]+(?:Ki|Mi|Gi|Ti))$")
# Words YAML 1.1 (PyYAML, and kubectl's sigs.k8s.io/yaml) reads as booleans or null.
_KEYWORDS = {"y", "n", "yes", "no", "true", "false", "on", "off", "null"}
# YAML's printable set (spec 1.2, 5.1) without tabs and without the characters YAML 1.1 reads
# as line breaks (U+0085, U+2028, U+2029); anything else is written escaped.
_PRINTABLE = re.compile(
    "^[\n\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]*$"
)
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def scalar(value) -> str:
    """One-line YAML for a string, integer or boolean."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, str):
        raise TypeError(f"cannot write {type(value).__name__} as YAML")
    if _PLAIN.match(value) and value.lower() not in _KEYWORDS:
        return value
    if "\n" not in value and _PRINTABLE.match(value):
        return "'" + value.replace("'", "''") + "'"
    return _double_quoted(value)


def _double_quoted(value: str) -> str:
    out = []
    for char in value:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif char != "\n" and _PRINTABLE.match(char):
            out.append(char)
        elif ord(char) <= 0xFF:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) <= 0xFFFF:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    return '"' + "".join(out) + '"'


def _as_block(value) -> bool:
    """Whether a string is written as a literal block: several lines of printable text."""
    return (
        isinstance(value, str)
        and "\n" in value
        and bool(value.strip(" \n"))
        and bool(_PRINTABLE.match(value))
    )


def _needs_indicator(lines) -> bool:
    """YAML guesses a block's indentation from its first line with content; it cannot when
    that line, or an all-space line before it, starts with a space."""
    for line in lines:
        if line.strip(" "):
            return line.startswith(" ")
        if line:
            return True
    return False


def _block(text: str, indent: str) -> list:
    """A literal block scalar: the header and the text's lines, verbatim."""
    stripped = text.rstrip("\n")
    trailing = len(text) - len(stripped)
    chomp = {0: "-", 1: ""}.get(trailing, "+")
    lines = stripped.split("\n") + [""] * max(0, trailing - 1)
    header = "|" + (str(len(INDENT)) if _needs_indicator(lines) else "") + chomp
    body = [f"{indent}{line}" if line else "" for line in lines]
    return [header] + body


def _lines(value, indent: str) -> list:
    """Lines for a mapping or list value nested at `indent`."""
    out = []
    if isinstance(value, dict):
        for key, item in value.items():
            out += _member(f"{indent}{scalar(key)}:", item, indent)
    else:
        for item in value:
            nested = _lines(item, indent + INDENT) if _is_nested(item) else None
            if nested:
                first = nested[0][len(indent) + len(INDENT) :]
                out.append(f"{indent}- {first}")
                out += nested[1:]
            else:
                out += _member(f"{indent}-", item, indent)
    return out


def _is_nested(value) -> bool:
    return isinstance(value, (dict, list)) and bool(value)


def _member(prefix: str, value, indent: str) -> list:
    if _is_nested(value):
        return [prefix] + _lines(value, indent + INDENT)
    if isinstance(value, dict):
        return [f"{prefix} {{}}"]
    if isinstance(value, list):
        return [f"{prefix} []"]
    if _as_block(value):
        header, *body = _block(value, indent + INDENT)
        return [f"{prefix} {header}"] + body
    return [f"{prefix} {scalar(value)}"]


def comment(text: str) -> str:
    return "".join(f"# {line}".rstrip() + "\n" for line in text.splitlines())


def document(obj: dict, header: str = "") -> str:
    """One YAML document, with `header` as comment lines above it."""
    return (comment(header) if header else "") + "\n".join(_lines(obj, "")) + "\n"


def documents(parts) -> str:
    """Several documents, separated by `---`; `parts` holds (header, object) pairs."""
    return "---\n".join(document(obj, header) for header, obj in parts)
