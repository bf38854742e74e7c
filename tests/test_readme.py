"""README.md's first commands are the real ones: CI runs the same test command."""

from __future__ import annotations

import re

from tests.conftest import REPO


def _first_block():
    text = (REPO / "README.md").read_text()
    block = re.search(r"```(?:sh|bash)?\n(.*?)```", text, re.S)
    assert block, "README.md has no command block"
    head = text[: block.start()]
    assert head.count("\n") < 12, "the set-up commands must come first"
    return [line for line in block.group(1).splitlines() if line and not line.startswith("#")]


def test_readme_starts_with_two_commands():
    commands = _first_block()
    assert len(commands) == 2
    assert "nfd-snp check" in commands[0] and "--sample" in commands[0]
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert _first_block()[1] in ci


def test_readme_troubleshooting_table_covers_every_check():
    from nfd_snp.checks import all_checks

    text = (REPO / "README.md").read_text()
    table = text[text.index("## Troubleshooting") :]
    for check in all_checks():
        assert f"| `{check.name}` |" in table, check.name
