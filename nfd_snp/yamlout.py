"""Block-style YAML for the Kubernetes manifests nfd-snp generates (no YAML library needed).

Only what the generated objects use: mappings (in insertion order), lists, strings,
integers, booleans and empty mappings. A string is written plain when every YAML reader
takes it back as that string, single-quoted otherwise, and as a literal block (`|`) when it
spans lines, so a script carried in a ConfigMap reads as the source it is. The tests read
every generated file back with PyYAML and compare.
"""

from __future__ import annotations

import json
import re

INDENT = "  "
# Plain scalars: no spaces, no YAML indicators, starting with a letter or '/', plus
# Kubernetes quantities such as 4Gi. Everything else is quoted.
_PLAIN = re.compile(r"^(?:[A-Za-z/][A-Za-z0-9._/-]*|[0-9]+(?:Ki|Mi|Gi|Ti))$")
# Words YAML 1.1 (PyYAML, and kubectl's sigs.k8s.io/yaml) reads as booleans or null.
_KEYWORDS = {"y", "n", "yes", "no", "true", "false", "on", "off", "null"}
_PRINTABLE = re.compile(r"^[\n\x20-\x7e\u00a0-\ud7ff\ue000-\ufffd]*$")


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
    return json.dumps(value)  # a JSON string is a valid double-quoted YAML scalar


def _block(text: str, indent: str) -> list:
    """A literal block scalar: the header and the text's lines, verbatim."""
    if not _PRINTABLE.match(text):
        raise ValueError("a literal block can hold printable text only")
    stripped = text.rstrip("\n")
    trailing = len(text) - len(stripped)
    chomp = {0: "-", 1: ""}.get(trailing, "+")
    lines = stripped.split("\n") + [""] * max(0, trailing - 1)
    # An indentation indicator is needed when the first line starts with a space.
    header = "|" + (str(len(INDENT)) if lines[0].startswith(" ") else "") + chomp
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
    if isinstance(value, str) and "\n" in value:
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
