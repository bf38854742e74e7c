"""Style gate: ruff lint and format at line length 100 (pyproject.toml)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, need

PATHS = ["nfd_snp", "tests", "bench", "tools"]


def _ruff():
    exe = Path(sys.executable).with_name("ruff")
    found = str(exe) if exe.exists() else shutil.which("ruff")
    need(found is not None, "ruff is not installed (pip install -e '.[test]')")
    return found


def test_ruff_check():
    proc = subprocess.run([_ruff(), "check", *PATHS], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_format():
    proc = subprocess.run(
        [_ruff(), "format", "--check", *PATHS], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
