"""`capture OUT` writes nothing outside OUT and nothing partial.

It runs as root and OUT may belong to someone who watches it (inotify tells them the moment
OUT was checked): what they plant then, in OUT or in place of OUT, is never written through.
A full file system leaves nothing behind, not a 0-byte nfd-snp-capture.json.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from nfd_snp import capture as capture_mod
from nfd_snp import paths, probe
from nfd_snp.cli import cli
from tests.conftest import cli_runner, need


def _live_root(tmp_path, cpuinfo_size=2000):
    """A small live host root: a cpuinfo of about `cpuinfo_size` bytes, nothing else."""
    root = tmp_path / "host"
    (root / "proc").mkdir(parents=True)
    block = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sme sev\n"
    (root / paths.PROC_CPUINFO).write_text(block + "x" * max(0, cpuinfo_size - len(block)))
    return root


def _capture(out, root):
    return cli_runner().invoke(
        cli, ["capture", str(out), "--host-root", str(root), "--libvirt", "off"]
    )


def _leftovers(directory) -> list:
    return sorted(n for n in os.listdir(directory) if n.startswith(capture_mod.TEMP_PREFIX))


@pytest.fixture
def after_the_check(monkeypatch):
    """plant(action): run `action` between OUT's check and the writing, as an attacker
    watching OUT with inotify would."""

    def plant(action):
        real = probe.probe_report

        def probe_then_attack(*args, **kwargs):
            result = real(*args, **kwargs)
            action()
            return result

        monkeypatch.setattr(probe, "probe_report", probe_then_attack)

    return plant


def test_a_link_planted_in_out_is_never_written_through(tmp_path, after_the_check):
    """Finding: root wrote nfd-snp-capture.json through a symlink planted right after the
    check (`OUT/nfd-snp-capture.json -> /etc/shadow`)."""
    victim = tmp_path / "shadow"
    victim.write_text("root:$6$precious\n")
    out = tmp_path / "out"
    out.mkdir()
    after_the_check(lambda: (out / paths.CAPTURE_FILE).symlink_to(victim))
    result = _capture(out, _live_root(tmp_path))
    assert result.exit_code == 1
    assert result.stderr.startswith(f"nfd-snp: error: {out}: cannot write the snapshot")
    assert victim.read_text() == "root:$6$precious\n"
    assert os.listdir(out) == [paths.CAPTURE_FILE]  # the attacker's link, untouched
    assert _leftovers(tmp_path) == []


def test_out_swapped_for_a_link_is_never_written_through(tmp_path, after_the_check):
    """Whoever owns OUT's parent can swap OUT itself: the snapshot lands nowhere else."""
    elsewhere = tmp_path / "etc"
    elsewhere.mkdir()
    out = tmp_path / "out"

    def swap():
        if out.exists():
            out.rmdir()
        out.symlink_to(elsewhere)

    after_the_check(swap)
    result = _capture(out, _live_root(tmp_path))
    assert result.exit_code == 1
    assert os.listdir(elsewhere) == [] and out.is_symlink()
    assert _leftovers(tmp_path) == []


def test_the_snapshot_appears_whole_in_an_empty_directory(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    result = _capture(out, _live_root(tmp_path))
    assert result.exit_code == 0, result.output
    assert json.loads((out / paths.CAPTURE_FILE).read_text())["cpuid"] == {}
    assert (out / paths.PROC_CPUINFO).read_text().startswith("processor")
    assert oct(os.stat(out / paths.PROC_CPUINFO).st_mode & 0o777) == "0o644"
    assert oct(os.stat(out).st_mode & 0o777) == "0o755"
    assert _leftovers(tmp_path) == []
    replay = cli_runner().invoke(cli, ["check", "--json", "--host-root", str(out)])
    assert json.loads(replay.stdout)["snapshot"] is True


def test_out_must_not_be_a_link_even_to_an_empty_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    out.symlink_to(tmp_path / "empty")
    result = _capture(out, _live_root(tmp_path))
    assert result.exit_code == 1
    assert result.stderr == f"nfd-snp: error: {out}: exists and is not an empty directory\n"
    assert os.listdir(tmp_path / "empty") == []


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 16 KiB tmpfs (root only): a file system that fills up during a capture."""
    need(os.geteuid() == 0, "mounting a tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16k,mode=0755", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    need(done.returncode == 0, f"cannot mount a tmpfs: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_file_system_leaves_nothing_behind(tmp_path, small_tmpfs):
    """Finding: a capture on a full file system left a 0-byte nfd-snp-capture.json."""
    out = small_tmpfs / "out"
    result = _capture(out, _live_root(tmp_path, cpuinfo_size=60_000))
    assert result.exit_code == 1
    assert "No space left on device" in result.stderr
    assert os.listdir(small_tmpfs) == []  # neither OUT nor the temporary directory
    # and once there is room, the same capture works
    assert _capture(out, _live_root(tmp_path / "again")).exit_code == 0
    assert sorted(os.listdir(out)) == [paths.CAPTURE_FILE, "proc"]
