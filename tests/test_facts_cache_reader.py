"""The facts cache at its edges: each fact read back through `load()` as the hook reads it,
each malformed value refused by name, the limits (ttl, clock skew, size, integer ranges)
exactly at their bounds, the owner rule as a user other than root, and the writer's care
with file descriptors, symlinks and a file it did not write."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from nfd_snp import facts_cache
from nfd_snp.checks import evaluate
from nfd_snp.errors import DomainError, WriteError
from nfd_snp.snp_policy import SnpPolicyRule
from tests.conftest import REPO, SAMPLES, probe_root

NOBODY = 65534


@pytest.fixture(scope="module")
def document() -> dict:
    """The cache document of the SNP-ready sample node."""
    return facts_cache.summary(evaluate(probe_root(SAMPLES / "genoa-snp-ready")))


@pytest.fixture
def write(tmp_path, document):
    """write(**changes) -> the path of a fresh cache holding the document with `changes`
    (a value None removes the key; "a/b" reaches into nested objects)."""
    path = tmp_path / "run" / "facts.json"

    def build(**changes) -> Path:
        data = json.loads(json.dumps(document))
        for key, value in changes.items():
            *parents, leaf = key.split("__")
            target = data
            for part in parents:
                target = target[part]
            if value is None:
                target.pop(leaf, None)
            else:
                target[leaf] = value
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(data))
        return path

    return build


def refusal(path, now=None) -> str:
    with pytest.raises(DomainError) as exc:
        facts_cache.load(str(path), now)
    return str(exc.value)


# -- what the hook reads back ----------------------------------------------------------------


def test_every_fact_reads_back_through_load(write):
    facts = facts_cache.load(str(write()))
    assert facts.snp_ready == "yes" and facts.blocking == () and facts.blocked_by == ()
    assert (facts.cbitpos, facts.reducedPhysBits, facts.snp_api) == (51, 1, (1, 55))
    assert facts.snp_firmware == ("/usr/share/edk2/ovmf/OVMF.amdsev.fd",)
    assert facts.snp_policy == SnpPolicyRule(0x1BFFFF, 0x20000, "the rule of Linux 6.12")
    assert facts.asids_shared is True and facts.valid_for == 600.0


def test_a_blocked_node_reads_back_its_blocking_checks(write):
    blocked_by = [{"check": "bios.rmp", "title": "RMP", "fix": None}]
    path = write(blocked_by=blocked_by)
    data = json.loads(path.read_text())
    data["verdicts"]["sev-snp"] = {"ready": "no", "blocking": ["bios.rmp"]}
    path.write_text(json.dumps(data))
    facts = facts_cache.load(str(path))
    assert (facts.snp_ready, facts.blocking) == ("no", ("bios.rmp",))
    assert facts.blocked_by == (("bios.rmp", "RMP", None),)


def test_unknown_facts_read_as_none(write):
    facts = facts_cache.load(
        str(write(cbitpos=None, reducedPhysBits=None, snp_api=None, snp_firmware=None))
    )
    assert (facts.cbitpos, facts.reducedPhysBits, facts.snp_api) == (None, None, None)
    assert facts.snp_firmware == ()
    nulls = write(cbitpos=0)
    data = json.loads(nulls.read_text())
    data.update(snp_policy=None, asids_shared=None, reducedPhysBits=None)
    nulls.write_text(json.dumps(data))
    facts = facts_cache.load(str(nulls))
    assert (facts.cbitpos, facts.snp_policy, facts.asids_shared) == (None, None, None)


@pytest.mark.parametrize(
    "changes, accepted",
    [
        ({"cbitpos": 65535}, {"cbitpos": 65535}),
        ({"reducedPhysBits": 0}, {"reducedPhysBits": 0}),
        ({"snp_api": [2, 0]}, {"snp_api": (2, 0)}),  # a newer firmware ABI is no reason to doubt
        ({"snp_api": [0, 65535]}, {"snp_api": (0, 65535)}),
        ({"valid_for": 2}, {"valid_for": 2.0}),
        ({"valid_for": 604800}, {"valid_for": 604800.0}),
        ({"asids_shared": False}, {"asids_shared": False}),
        (
            {"snp_policy": {"accepted": (1 << 64) - 1, "required": 0, "source": "s"}},
            {"snp_policy": SnpPolicyRule((1 << 64) - 1, 0, "s")},
        ),
    ],
)
def test_values_at_the_edge_of_their_range_are_trusted(write, changes, accepted):
    facts = facts_cache.load(str(write(**changes)))
    for name, value in accepted.items():
        assert getattr(facts, name) == value


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"cbitpos": 65536}, "cbitpos is not a small integer"),
        ({"cbitpos": -1}, "cbitpos is not a small integer"),
        ({"cbitpos": "51"}, "cbitpos is not a small integer"),
        ({"cbitpos": True}, "cbitpos is not a small integer"),
        ({"cbitpos": 51.0}, "cbitpos is not a small integer"),
        ({"reducedPhysBits": 1 << 16}, "reducedPhysBits is not a small integer"),
        ({"reducedPhysBits": -1}, "reducedPhysBits is not a small integer"),
        ({"snp_api": [1]}, "snp_api is not [major, minor]"),
        ({"snp_api": [1, 55, 0]}, "snp_api is not [major, minor]"),
        ({"snp_api": [1, -55]}, "snp_api is not [major, minor]"),
        ({"snp_api": ["1", "55"]}, "snp_api is not [major, minor]"),
        ({"snp_api": "1.55"}, "snp_api is not [major, minor]"),
        ({"snp_firmware": "/usr/share/OVMF.fd"}, "snp_firmware is not a list of paths"),
        ({"snp_firmware": [1]}, "snp_firmware is not a list of paths"),
        ({"verdicts__sev-snp__blocking": [7]}, "blocking is not a list of check names"),
        ({"verdicts__sev-snp__ready": "maybe"}, "no sev-snp verdict"),
        ({"verdicts__sev-snp__ready": None}, "no sev-snp verdict"),
        ({"verdicts": None}, "no sev-snp verdict"),
        ({"valid_for": None}, "valid_for is not 2..604800 seconds"),
        ({"valid_for": 1.999}, "valid_for is not 2..604800 seconds"),
        ({"valid_for": 604800.001}, "valid_for is not 2..604800 seconds"),
        ({"valid_for": "600"}, "valid_for is not 2..604800 seconds"),
        ({"asids_shared": 1}, "asids_shared is not true, false or null"),
        ({"snp_policy": {"accepted": 1 << 64, "required": 0, "source": "s"}}, "snp_policy"),
        ({"snp_policy": {"accepted": 1, "required": -1, "source": "s"}}, "snp_policy"),
        ({"snp_policy": {"accepted": 1, "source": "s"}}, "snp_policy"),
        ({"snp_policy": {"accepted": 1, "required": 0}}, "snp_policy"),
        ({"snp_policy": {"accepted": 1, "required": 0, "source": 3}}, "snp_policy"),
        ({"blocked_by": {}}, "blocked_by is not a list"),
        ({"blocked_by": ""}, "blocked_by is not a list"),
        ({"snp_firmware": {}}, "snp_firmware is not a list of paths"),
        ({"snp_api": {}}, "snp_api is not [major, minor]"),
        ({"blocked_by": [{"title": "t", "fix": None}]}, "blocked_by is not a list"),
        ({"blocked_by": [{"check": "c", "title": "t", "fix": 3}]}, "blocked_by is not a list"),
        ({"blocked_by": [{"check": "c", "fix": "f"}]}, "blocked_by is not a list"),
    ],
)
def test_a_malformed_fact_is_refused_by_name(write, changes, message):
    text = refusal(write(**changes))
    assert text.startswith("facts cache: ") and message in text, text


@pytest.mark.parametrize(
    "document, message",
    [
        ({"schema": "nfd-snp.facts/v1-beta"}, "facts cache: written by another version"),
        ({"schema": "other.facts/v1"}, "facts cache: not an nfd-snp.facts/v1 document"),
        ({"schema": None}, "facts cache: not an nfd-snp.facts/v1 document"),
        ({"schema": 1}, "facts cache: not an nfd-snp.facts/v1 document"),
    ],
)
def test_only_this_schema_is_read(write, document, message):
    path = write(**document)
    assert refusal(path).startswith(message)


@pytest.mark.parametrize("text", ["[]", '"nfd-snp.facts/v1"', "null", "1"])
def test_a_document_that_is_not_an_object_is_refused(write, text):
    path = write()
    path.write_text(text)
    assert refusal(path) == "facts cache: not an nfd-snp.facts/v1 document"


# -- time and size ---------------------------------------------------------------------------


def test_facts_are_fresh_for_exactly_their_validity(write):
    path = write(valid_for=600)
    stamped = os.stat(path).st_mtime
    assert facts_cache.load(str(path), now=stamped + 600).snp_ready == "yes"
    assert "longer than its 600 s validity" in refusal(path, now=stamped + 600.5)


def test_a_stamp_ahead_by_the_allowed_skew_is_fresh(write):
    path = write()
    stamped = os.stat(path).st_mtime
    assert facts_cache.load(str(path), now=stamped - 60).snp_ready == "yes"
    assert "stamped 61 s in the future" in refusal(path, now=stamped - 61)


def test_a_cache_up_to_the_size_limit_is_read(write):
    path = write()
    text = path.read_text()
    path.write_text(text + " " * (facts_cache.FACTS_LIMIT - len(text)))
    assert os.path.getsize(path) == facts_cache.FACTS_LIMIT
    assert facts_cache.load(str(path)).snp_ready == "yes"
    path.write_text(text + " " * (facts_cache.FACTS_LIMIT + 1 - len(text)))
    assert refusal(path).endswith(f"{path} is too large")


# -- where the cache is ----------------------------------------------------------------------


def test_a_cache_in_a_missing_directory_is_missing(tmp_path):
    path = tmp_path / "gone" / "facts.json"
    assert refusal(path) == (
        f"node SEV-SNP readiness is unknown: {path} is missing (is nfd-snp.service running?)"
    )


def test_a_relative_path_is_read_from_the_working_directory(write, monkeypatch):
    path = write()
    monkeypatch.chdir(path.parent)
    assert facts_cache.load("facts.json").cbitpos == 51
    os.chmod(path.parent, 0o777)
    assert "its directory . is writable by group or others" in refusal("facts.json")


def test_a_directory_in_place_of_the_cache_is_not_read(write):
    path = write()
    path.unlink()
    path.mkdir()
    text = refusal(path)
    assert text.startswith(f"node SEV-SNP readiness is unknown: {path}")
    assert "not a regular file" in text or "Is a directory" in text


def test_the_service_is_told_when_the_cache_directory_is_not_trusted(tmp_path):
    directory = tmp_path / "run"
    assert facts_cache.directory_untrusted_because(str(directory / "facts.json")) is None
    directory.mkdir(mode=0o755)
    os.chmod(directory, 0o755)
    assert facts_cache.directory_untrusted_because(str(directory / "facts.json")) is None
    os.chmod(directory, 0o775)
    assert facts_cache.directory_untrusted_because(str(directory / "facts.json")) == (
        f"its directory {directory} is writable by group or others (mode 0775)"
    )


def _as_nobody(code: str, cwd: Path) -> subprocess.CompletedProcess:
    """`code` run by a Python that imported nfd_snp as root, then became uid 65534 (the
    Python itself may live where that user cannot reach)."""
    become = f"os.setgroups([]); os.setegid({NOBODY}); os.seteuid({NOBODY})"
    prelude = (
        f"import os, sys; sys.path.insert(0, {str(REPO)!r})\n"
        "import nfd_snp.facts_cache, nfd_snp.snp_policy\n"
    )
    return subprocess.run(
        [sys.executable, "-I", "-c", f"{prelude}{become}\n{code}"],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="reading as another user needs root")
def test_a_user_trusts_roots_cache_and_its_own_but_no_one_elses(document):
    """`nfd-snp domain rewrite` as a user: root's cache and the user's own are trusted, a
    third user's is not, whatever its permissions; the same for the directory."""
    base = Path(tempfile.mkdtemp(prefix="nfd-snp-owner-"))
    code = (
        "from nfd_snp import facts_cache\n"
        "try:\n    print(facts_cache.load('facts.json').cbitpos)\n"
        "except Exception as exc:\n    print(exc)\n"
    )
    try:
        os.chmod(base, 0o755)
        seen = {}
        for owner in (0, NOBODY, 4321):
            directory = base / str(owner)
            directory.mkdir()
            os.chmod(directory, 0o755)
            (directory / "facts.json").write_text(json.dumps(document))
            os.chown(directory / "facts.json", owner, owner)
            seen[owner] = _as_nobody(code, directory).stdout.strip()
        assert seen == {
            0: "51",
            NOBODY: "51",
            4321: "node SEV-SNP readiness is unknown: facts.json is not trusted: it is owned by "
            "uid 4321, not root",
        }
        seen = {}
        for owner in (NOBODY, 4321):
            os.chown(base / "0", owner, owner)
            seen[owner] = _as_nobody(code, base / "0").stdout.strip()
        assert seen == {
            NOBODY: "51",
            4321: "node SEV-SNP readiness is unknown: facts.json is not trusted: its directory . "
            "is owned by uid 4321, not root",
        }
    finally:
        shutil.rmtree(base)


# -- the writer ------------------------------------------------------------------------------


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_no_cycle_leaks_a_file_descriptor(write, tmp_path):
    """The service refreshes the cache every cycle for weeks: each path through the writer
    and the reader closes what it opened."""
    path = write()
    data = path.read_bytes()
    facts_cache.write_if_changed(str(path), data)
    untrusted = tmp_path / "loose" / "facts.json"
    untrusted.parent.mkdir()
    untrusted.write_bytes(data)
    os.chmod(untrusted, 0o666)
    before = _open_fds()
    for _ in range(20):
        assert facts_cache.write_if_changed(str(path), data) is False
        facts_cache.load(str(path))
        refusal(untrusted)
        refusal(tmp_path / "loose" / "missing.json")
    assert _open_fds() == before


def test_an_unchanged_cache_is_stamped_not_rewritten(write):
    path = write()
    data = path.read_bytes()
    facts_cache.write_if_changed(str(path), data)
    inode = os.stat(path).st_ino
    os.utime(path, (1, 1))
    assert facts_cache.write_if_changed(str(path), data) is False
    after = os.stat(path)
    assert after.st_ino == inode and abs(after.st_mtime - time.time()) < 60


@pytest.mark.parametrize("damage", ["trailing junk", "truncated", "other content"])
def test_a_cache_that_differs_is_rewritten_whole(write, damage):
    path = write()
    data = path.read_bytes()
    changed = {
        "trailing junk": data + b"\n{}",
        "truncated": data[:-1],
        "other content": data.replace(b"51", b"47"),
    }[damage]
    path.write_bytes(changed)
    assert facts_cache.write_if_changed(str(path), data) is True
    assert path.read_bytes() == data
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644


def test_a_symlink_to_identical_content_is_neither_followed_nor_stamped(write, tmp_path):
    path = write()
    data = path.read_bytes()
    target = tmp_path / "elsewhere.json"
    target.write_bytes(data)
    os.utime(target, (1, 1))
    path.unlink()
    path.symlink_to(target)
    with pytest.raises(WriteError, match="it is a symbolic link"):
        facts_cache.write_if_changed(str(path), data)
    assert os.stat(target).st_mtime == 1 and path.is_symlink()


def test_each_fact_is_declared_once_and_reachable_by_name():
    """NodeFacts.<name> is the declaration (its place in the cache), an instance holds the
    value, and the facts print as they were read."""
    for fact in facts_cache.FACTS:
        assert getattr(facts_cache.NodeFacts, fact.name) is fact
        assert fact.key.split("/")[-1] in (fact.name, "ready", "blocking")
    facts = facts_cache.NodeFacts(cbitpos=51)
    assert facts.cbitpos == 51 and facts.snp_firmware == () and facts.snp_ready is None
    shown = repr(facts)
    assert shown.startswith("NodeFacts(snp_ready=None, ") and "cbitpos=51" in shown


def test_a_planted_huge_file_is_refused_without_reading_it(write):
    """A cache bigger than any the service writes is refused after reading one byte past
    the limit: a 64 MiB file costs the hook no more memory than a small one."""
    import tracemalloc

    path = write()
    os.truncate(path, 64 << 20)  # sparse
    tracemalloc.start()
    try:
        assert refusal(path).endswith(f"{path} is too large")
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * facts_cache.FACTS_LIMIT, peak


def test_a_directory_path_through_a_file_is_refused(tmp_path):
    blocker = tmp_path / "run"
    blocker.write_text("not a directory")
    assert refusal(blocker / "facts.json") == (
        f"node SEV-SNP readiness is unknown: {blocker}: Not a directory"
    )


def test_a_socket_in_place_of_the_cache_is_refused(write):
    import socket

    path = write()
    path.unlink()
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        assert refusal(path) == (
            f"node SEV-SNP readiness is unknown: {path}: No such device or address"
        )


def test_a_cache_that_cannot_be_stamped_is_reported(write):
    """An immutable cache (chattr +i) cannot be renewed: the service is told so, rather than
    trying to replace it."""
    path = write()
    data = path.read_bytes()
    facts_cache.write_if_changed(str(path), data)
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(path)]).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        with pytest.raises(WriteError, match=f"^cannot refresh {path}: Operation not permitted$"):
            facts_cache.write_if_changed(str(path), data)
    finally:
        subprocess.run([chattr, "-i", str(path)], check=True)
