"""tools/mutate.py stays usable as the code changes: every module it knows yields its
mutants (the sh front's hand-written ones name text that is still there), and every mutant
tools/equivalent-mutants.txt calls equivalent still exists, so that no listed reason covers
a line that has changed since."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from tests.conftest import REPO


@pytest.fixture(scope="module")
def mutate():
    spec = importlib.util.spec_from_file_location("mutate", REPO / "tools" / "mutate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def test_every_module_yields_its_mutants(mutate):
    for path, tests in mutate.MODULES.items():
        assert mutate.mutants_of(path), path
        assert all((REPO / t).is_file() for t in tests), path


def test_the_hook_fronts_mutants_all_apply(mutate):
    mutants = mutate.mutants_of(mutate.HOOK_FRONT)
    assert len(mutants) == len(mutate.SHELL_MUTANTS)
    original = (REPO / mutate.HOOK_FRONT).read_text()
    assert all(m.text != original for m in mutants)


def test_every_listed_equivalent_mutant_still_exists(mutate):
    listed = mutate.equivalents()
    assert listed
    current = {m.key for path in mutate.MODULES for m in mutate.mutants_of(path)}
    assert sorted(set(listed) - current) == []
