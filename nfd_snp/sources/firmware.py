"""QEMU firmware descriptors: which images advertise amd-sev / -es / -snp (REFERENCE §6).

docs/interop/firmware.json: descriptors in /etc/qemu/firmware override those of the same
name in /usr/share/qemu/firmware, and an empty file there masks one.
"""

from __future__ import annotations

import json

from nfd_snp import paths
from nfd_snp.host import Host
from nfd_snp.model import FirmwareFacts, FirmwareImage

DESCRIPTOR_LIMIT = 1024 * 1024
MAX_DESCRIPTORS = 256


def _strings(value) -> tuple:
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()


def parse_descriptor(rel: str, data: bytes) -> FirmwareImage:
    """One descriptor; ValueError with a short reason when it is not usable."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"not valid JSON ({str(exc)[:80]})") from None
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    mapping = doc.get("mapping") if isinstance(doc.get("mapping"), dict) else {}
    device = mapping.get("device") if isinstance(mapping.get("device"), str) else None
    executable = None
    if device == "flash" and isinstance(mapping.get("executable"), dict):
        executable = mapping["executable"].get("filename")
    elif device == "memory":
        executable = mapping.get("filename")
    mode = mapping.get("mode") if isinstance(mapping.get("mode"), str) else None
    if device == "flash" and mode is None:
        mode = "split"  # firmware.json: flash mode defaults to split
    targets = doc.get("targets") if isinstance(doc.get("targets"), list) else []
    architectures = tuple(
        t["architecture"]
        for t in targets
        if isinstance(t, dict) and isinstance(t.get("architecture"), str)
    )
    return FirmwareImage(
        descriptor="/" + rel,
        device=device,
        executable=executable if isinstance(executable, str) else None,
        mode=mode,
        interface_types=_strings(doc.get("interface-types")),
        features=_strings(doc.get("features")),
        architectures=architectures,
    )


def read(host: Host) -> FirmwareFacts:
    by_name = {}
    for directory in paths.FIRMWARE_DESCRIPTOR_DIRS:  # later directories override
        try:
            names = host.listdir(directory)
        except OSError:
            continue
        for name in names:
            if name.endswith(".json"):
                by_name[name] = f"{directory}/{name}"
    images, problems = [], []
    for name in sorted(by_name)[:MAX_DESCRIPTORS]:
        rel = by_name[name]
        try:
            data = host.read(rel, DESCRIPTOR_LIMIT)
            if not data.strip():
                continue  # an empty file masks a descriptor of the same name
            images.append(parse_descriptor(rel, data))
        except (OSError, ValueError) as exc:
            problems.append(f"/{rel}: {getattr(exc, 'strerror', None) or exc}")
    return FirmwareFacts(tuple(images), tuple(problems))
