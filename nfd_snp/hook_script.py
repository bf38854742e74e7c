"""The libvirt hook's shell front (`nfd_snp/data/qemu-hook`): its text for one Python, and
which Python an installed hook runs.

The front names its interpreter once, in the line `PYTHON=...` near its top; `nfd-snp
install` writes its own interpreter there and the RPM `%{__python3}`. `libvirt.hook` reads
the line back from the installed file to check that this Python loads nfd_snp. Hooks
installed before the front was a shell script were Python scripts started as
`#!<python> -I`; their interpreter is the shebang's.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Optional

TEMPLATE = Path(__file__).resolve().parent / "data" / "qemu-hook"
# The line the template carries and an installed hook rewrites.
DEFAULT_LINE = "PYTHON=/usr/bin/python3\n"
# What install accepts as an interpreter path: the unit's ExecStart and the hook's line
# carry it unquoted, and a path with spaces or shell characters in it is asking for trouble.
SAFE_PATH = re.compile(r"^/[A-Za-z0-9/._+@-]*$")
_SHEBANG = re.compile(r"^#!\s*(/\S*python\S*)(\s.*)?$")


def render(python: str) -> str:
    """The hook script, running `python` for the domains that ask for SEV-SNP."""
    if not SAFE_PATH.match(python):
        raise ValueError(f"not a plain absolute path: {python!r}")
    text = TEMPLATE.read_text()
    if text.count(DEFAULT_LINE) != 1:
        raise ValueError(f"{TEMPLATE} does not hold exactly one {DEFAULT_LINE.strip()!r} line")
    return text.replace(DEFAULT_LINE, f"PYTHON={python}\n")


def interpreter(text: str) -> Optional[str]:
    """The Python an installed hook runs: its `PYTHON=` line, or the shebang of a hook that
    is a Python script itself. None when the file says neither (not nfd-snp's hook)."""
    lines = text.splitlines()
    for line in lines:
        if line.startswith("PYTHON="):
            try:
                words = shlex.split(line[len("PYTHON=") :], comments=True)
            except ValueError:
                return None
            return words[0] if len(words) == 1 and words[0].startswith("/") else None
    match = _SHEBANG.match(lines[0]) if lines else None
    return match.group(1) if match else None
