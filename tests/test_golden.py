"""Golden outputs a reviewer reads without running anything (virt-manager's compare files,
black's test cases): what a user sees of every snapshot and every domain in tests/data.

- every snapshot (the bundled samples and tests/data/hosts/*): `nfd-snp check --json`, the
  table, the NFD feature file and the libvirt hook's facts cache, in tests/data/reports/NAME/;
- every domain tests/data/domains/NAME.xml: `nfd-snp domain rewrite` of it with the facts of
  the genoa-snp-ready sample (NAME.genoa.xml) and without node facts (NAME.no-facts.xml), or
  the refusal (NAME.genoa.err, NAME.no-facts.err).

A new behaviour is a new input file; `pytest --regenerate-golden tests/test_golden.py`
rewrites the expected files, and their diff shows what changed for users. Host paths and
the version are replaced by placeholders, so the files do not depend on the checkout.
"""

from __future__ import annotations

import json
import re

import click
import pytest

from nfd_snp import __version__, facts_cache, nfd
from nfd_snp.checks import evaluate
from nfd_snp.errors import DomainError
from nfd_snp.report import as_json, render_table
from tests.conftest import DOMAINS, REPO, SAMPLES, domain_inputs, probe_root

HOSTS = REPO / "tests" / "data" / "hosts"
REPORTS = REPO / "tests" / "data" / "reports"
SNAPSHOTS = {p.name: p for p in sorted(SAMPLES.iterdir()) + sorted(HOSTS.iterdir()) if p.is_dir()}
ROOT = "<snapshot>"
VERSION = "<version>"


def compare(path, text: str, regenerate: bool) -> None:
    """Assert `path` holds `text`; with --regenerate-golden, write it instead."""
    if regenerate:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        return
    assert path.exists(), f"{path} is missing: run pytest --regenerate-golden"
    expected = path.read_text()
    assert text == expected, f"{path} differs (pytest --regenerate-golden rewrites it)"


@pytest.fixture
def regenerate(request) -> bool:
    return request.config.getoption("--regenerate-golden")


def _placeholders(text: str, root) -> str:
    return text.replace(str(root), ROOT)


@pytest.mark.parametrize("name", sorted(SNAPSHOTS))
def test_snapshot_reports(name, regenerate):
    root = SNAPSHOTS[name]
    report = evaluate(probe_root(root))
    out = REPORTS / name
    document = as_json(report)
    assert document["version"] == __version__
    document["version"] = VERSION
    text = json.dumps(document, indent=2) + "\n"
    compare(out / "check.json", _placeholders(text, root), regenerate)
    table = click.unstyle(render_table(report, width=120))
    compare(out / "check.txt", _placeholders(table, root), regenerate)
    compare(out / "features", nfd.render_body(nfd.publication(report)), regenerate)
    compare(out / "facts.json", facts_cache.encode(report).decode(), regenerate)


# -- domains ------------------------------------------------------------------------------


def _genoa_node():
    report = evaluate(probe_root(SAMPLES / "genoa-snp-ready"))
    return facts_cache.from_summary(json.loads(facts_cache.encode(report)))  # as the hook


NODES = {"genoa": _genoa_node, "no-facts": lambda: None}


def test_domain_outputs_have_inputs():
    """No expected file outlives its input (a renamed input leaves none behind)."""
    inputs = {p.stem for p in domain_inputs()}
    for path in DOMAINS.iterdir():
        stem, variant, _suffix = (path.name.split(".") + ["", ""])[:3]
        if path.name.count(".") > 1:
            assert stem in inputs and variant in NODES, path.name


@pytest.mark.parametrize("variant", sorted(NODES))
@pytest.mark.parametrize("path", domain_inputs(), ids=lambda p: p.stem)
def test_domain_rewrite(path, variant, regenerate):
    from nfd_snp.domain.cli_support import rewrite_text

    try:
        text, kind = rewrite_text(path.read_bytes(), (), NODES[variant]()), "xml"
    except DomainError as exc:
        text, kind = f"refused: {exc}\n", "err"
    expected = DOMAINS / f"{path.stem}.{variant}.{kind}"
    other = DOMAINS / f"{path.stem}.{variant}.{'err' if kind == 'xml' else 'xml'}"
    if regenerate and other.exists():
        other.unlink()
    assert not other.exists(), f"{other.name} expects the other outcome"
    compare(expected, text, regenerate)


def test_every_snapshot_has_its_reports():
    """Runs after the reports: no directory outlives its snapshot."""
    assert sorted(p.name for p in REPORTS.iterdir()) == sorted(SNAPSHOTS)


def test_outputs_name_no_checkout_path():
    for path in list(REPORTS.rglob("*")) + list(DOMAINS.iterdir()):
        if path.is_file():
            assert not re.search(re.escape(str(REPO)), path.read_text()), path
