"""The facts cache: one format module, and a reader that trusts only what root wrote."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time

import pytest

from nfd_snp import facts_cache
from nfd_snp.checks import evaluate
from nfd_snp.errors import DomainError, WriteError
from nfd_snp.snp_policy import SnpPolicyRule
from tests.conftest import REPO, SAMPLES, probe_root

NOBODY = 65534


@pytest.fixture
def cache(tmp_path):
    """A fresh cache of an SNP-ready node, written as the service writes it."""
    directory = tmp_path / "run"
    path = directory / "facts.json"
    facts_cache.write_if_changed(str(path), _encoded())
    return path


def _encoded(valid_for=600.0, **changes) -> bytes:
    data = facts_cache.summary(evaluate(probe_root(SAMPLES / "genoa-snp-ready")), valid_for)
    data.update(changes)
    return json.dumps(data).encode()


def _refusal(path) -> str:
    with pytest.raises(DomainError) as exc:
        facts_cache.load(str(path))
    text = str(exc.value)
    assert text.startswith("node SEV-SNP readiness is unknown: ") or text.startswith("facts cache")
    return text


def test_written_cache_is_trusted_and_holds_only_what_readers_use(cache):
    facts = facts_cache.load(str(cache))
    assert (facts.snp_ready, facts.cbitpos, facts.reducedPhysBits) == ("yes", 51, 1)
    assert facts.snp_api == (1, 55) and facts.valid_for == 600.0
    # genoa-snp-ready runs Linux 6.12: what every KVM of that version accepts
    assert facts.snp_policy == SnpPolicyRule(0x1BFFFF, 0x20000, "the rule of Linux 6.12")
    assert facts.asids_shared is True
    data = json.loads(cache.read_text())
    assert set(data) == {
        "schema",
        "valid_for",
        "verdicts",
        "blocked_by",
        "cbitpos",
        "reducedPhysBits",
        "snp_api",
        "snp_firmware",
        "snp_policy",
        "asids_shared",
    }
    assert set(data["verdicts"]) == {"sev-snp"} and data["schema"] == facts_cache.SCHEMA
    assert oct(os.stat(cache).st_mode & 0o777) == "0o644"
    assert oct(os.stat(cache.parent).st_mode & 0o777) == "0o755"


def test_the_domain_package_reads_the_same_module():
    from nfd_snp.domain import node

    assert node.load is facts_cache.load and node.NodeFacts is facts_cache.NodeFacts
    assert node.DEFAULT_FACTS_CACHE == facts_cache.DEFAULT_FACTS_CACHE


@pytest.mark.parametrize(
    "text, message",
    [
        ('"valid_for": Infinity', "is not valid JSON"),
        ('"valid_for": NaN', "is not valid JSON"),
        ('"valid_for": 1e400', "valid_for is not 2..604800 seconds"),
        ('"valid_for": 1e12', "valid_for is not 2..604800 seconds"),
        ('"valid_for": 1', "valid_for is not 2..604800 seconds"),
        ('"valid_for": true', "valid_for is not 2..604800 seconds"),
    ],
)
def test_validity_outside_the_ttl_range_is_refused(cache, text, message):
    data = cache.read_text()
    cache.write_text(data.replace('"valid_for": 600.0', text))
    assert message in _refusal(cache)


def test_symlink_is_refused_even_to_a_good_cache(cache, tmp_path):
    link = cache.parent / "link.json"
    link.symlink_to(cache)
    assert _refusal(link).endswith(f"{link} is a symbolic link, not trusted")


def test_fifo_never_blocks(cache):
    """A FIFO in place of the cache: refused at once, with no writer ever opening it."""
    cache.unlink()
    os.mkfifo(cache)
    result = []
    reader = threading.Thread(target=lambda: result.append(_refusal(cache)), daemon=True)
    reader.start()
    reader.join(5)
    assert not reader.is_alive(), "the reader blocked on a FIFO"
    assert result[0].endswith(f"{cache} is not a regular file")


@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666])
def test_file_writable_by_group_or_others_is_refused(cache, mode):
    os.chmod(cache, mode)
    assert f"{cache} is not trusted: it is writable by group or others" in _refusal(cache)


def test_file_owned_by_another_user_is_refused(cache):
    if os.geteuid() != 0:
        pytest.skip("chown to another user needs root")
    os.chown(cache, NOBODY, NOBODY)
    assert f"is not trusted: it is owned by uid {NOBODY}, not root" in _refusal(cache)


@pytest.mark.parametrize("mode", [0o775, 0o757, 0o1777])
def test_directory_writable_by_group_or_others_is_refused(cache, mode):
    os.chmod(cache.parent, mode)
    assert f"its directory {cache.parent} is writable by group or others" in _refusal(cache)


def test_directory_owned_by_another_user_is_refused(cache):
    if os.geteuid() != 0:
        pytest.skip("chown to another user needs root")
    os.chown(cache.parent, NOBODY, NOBODY)
    assert f"its directory {cache.parent} is owned by uid {NOBODY}" in _refusal(cache)


def test_future_stamp_beyond_clock_skew_is_stale(cache):
    now = time.time()
    os.utime(cache, (now + 30, now + 30))  # within the allowed skew
    assert facts_cache.load(str(cache), now=now).snp_ready == "yes"
    year = now + 365 * 86400
    os.utime(cache, (year, year))
    assert "s in the future, more than the 60 s of clock skew allowed" in _refusal(cache)


def test_writer_refuses_a_planted_symlink_instead_of_writing_through(cache, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    cache.unlink()
    cache.symlink_to(victim)
    with pytest.raises(WriteError, match="it is a symbolic link"):
        facts_cache.write_if_changed(str(cache), _encoded())
    assert victim.read_text() == "precious" and cache.is_symlink()


def test_writer_refuses_a_fifo_without_blocking(cache):
    cache.unlink()
    os.mkfifo(cache)
    with pytest.raises(WriteError, match="it is a FIFO"):
        facts_cache.write_if_changed(str(cache), _encoded())
    assert stat.S_ISFIFO(os.lstat(cache).st_mode)


def test_writer_mends_a_cache_with_loose_permissions(cache):
    os.chmod(cache, 0o666)
    assert facts_cache.write_if_changed(str(cache), cache.read_bytes())  # rewritten
    assert oct(os.stat(cache).st_mode & 0o777) == "0o644"


def test_reader_stays_light():
    """The hook imports the reader on its hot path: no click, lxml, dataclasses or config."""
    code = (
        "import sys; from nfd_snp.domain import node; "
        "print(' '.join(m for m in ('click', 'lxml', 'dataclasses', 'nfd_snp.config', "
        "'nfd_snp.checks', 'nfd_snp.atomic', 'tempfile') if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, cwd=REPO
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "", proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "change, message",
    [
        ({"snp_policy": {"accepted": -1, "required": 0, "source": "x"}}, "snp_policy is not"),
        ({"snp_policy": {"accepted": 1, "required": True, "source": "x"}}, "snp_policy is not"),
        ({"snp_policy": [1, 2]}, "snp_policy is not"),
        ({"asids_shared": "yes"}, "asids_shared is not"),
    ],
)
def test_policy_and_asid_fields_are_checked(tmp_path, change, message):
    path = tmp_path / "facts.json"
    path.write_bytes(_encoded(**change))
    assert message in _refusal(path)


def test_a_cache_without_the_newer_fields_reads_them_as_unknown(tmp_path):
    data = json.loads(_encoded())
    del data["snp_policy"], data["asids_shared"]
    path = tmp_path / "facts.json"
    path.write_text(json.dumps(data))
    facts = facts_cache.load(str(path))
    assert facts.snp_policy is None and facts.asids_shared is None


def test_every_fact_round_trips_through_the_cache():
    """The class, the document and the reader follow from one declaration per fact."""
    report = evaluate(probe_root(SAMPLES / "genoa-snp-ready"))
    written = facts_cache.NodeFacts.of_report(report)
    document = json.loads(json.dumps(written.summary()))
    assert set(document) == {"schema"} | {fact.path[0] for fact in facts_cache.FACTS}
    read = facts_cache.from_summary(document)
    for fact in facts_cache.FACTS:
        assert getattr(read, fact.name) == getattr(written, fact.name), fact.name
    with pytest.raises(TypeError, match="NodeFacts has no snp_readiness"):
        facts_cache.NodeFacts(snp_readiness="yes")


def test_a_cache_of_another_schema_gives_no_facts(tmp_path):
    """During an upgrade the hook may meet a cache of the other version's format: no facts,
    with that reason (the hook refuses SNP domains; `domain rewrite` goes on without)."""
    from nfd_snp.cli import cli
    from tests.conftest import DOMAINS, cli_runner

    data = json.loads(_encoded())
    data["schema"] = "nfd-snp.facts/v2"
    path = tmp_path / "facts.json"
    path.write_text(json.dumps(data))
    with pytest.raises(facts_cache.OtherSchema) as exc:
        facts_cache.load(str(path))
    assert "written by another version of nfd-snp ('nfd-snp.facts/v2'" in str(exc.value)
    result = cli_runner().invoke(
        cli,
        ["domain", "rewrite", "--facts", str(path)],
        input=(DOMAINS / "plain-virtio.xml").read_bytes(),
    )
    assert result.exit_code == 0
    assert "warning: ignoring node facts (facts cache: written by another version" in (
        result.stderr
    )
    assert "<cbitpos>" not in result.stdout  # no node facts: libvirt fills the C-bit


def test_blocking_checks_carry_their_title_and_fix_for_the_hook():
    data = facts_cache.summary(evaluate(probe_root(SAMPLES / "milan-snp-off")))
    blocking = data["verdicts"]["sev-snp"]["blocking"]
    assert [b["check"] for b in data["blocked_by"]] == blocking and blocking
    first = data["blocked_by"][0]
    assert first["title"] and first["fix"]
    facts = facts_cache.from_summary(data)
    assert facts.blocked_by[0] == (first["check"], first["title"], first["fix"])


@pytest.mark.parametrize(
    "blocked_by", [{"check": "x"}, [{"check": "x", "title": 3, "fix": None}], ["cpu.sme"]]
)
def test_a_malformed_blocked_by_is_refused(cache, blocked_by):
    cache.write_bytes(_encoded(blocked_by=blocked_by))
    assert "blocked_by is not a list of {check, title, fix}" in _refusal(cache)


def test_a_cpu_hiding_its_memory_encryption_leaf_has_no_cbit(snapshot):
    """In a VM the hypervisor may show CPUID 0x8000001F as zeros: without libvirt's answer
    the C-bit is unknown (null), never 0, and a cache that says 0 is read as unknown."""
    hidden = snapshot(base="genoa-snp-ready", capture={"cpuid": _cpuid_without_leaf()})
    assert facts_cache.summary(evaluate(probe_root(hidden)))["cbitpos"] == 51  # libvirt's
    capture = {"cpuid": _cpuid_without_leaf(), "domcaps": None}
    data = facts_cache.summary(
        evaluate(probe_root(snapshot(base="genoa-snp-ready", capture=capture)))
    )
    assert data["cbitpos"] is None
    data["cbitpos"] = 0
    assert facts_cache.from_summary(data).cbitpos is None


def _cpuid_without_leaf() -> dict:
    capture = json.loads((SAMPLES / "genoa-snp-ready" / "nfd-snp-capture.json").read_text())
    return {**capture["cpuid"], "0x8000001f": [0, 0, 0, 0]}
