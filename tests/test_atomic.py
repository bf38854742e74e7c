"""Atomic writes as root into directories someone else may have prepared."""

from __future__ import annotations

import os
import stat

import pytest

from nfd_snp.atomic import TEMP_PREFIX, write_atomic
from nfd_snp.config import Config
from nfd_snp.errors import WriteError
from nfd_snp.service import Service
from tests.conftest import SAMPLES, need


def test_planted_symlinks_are_never_written_through(tmp_path):
    """The old temp names were predictable: a symlink planted there made root write its
    target and then renamed the symlink into place as the output."""
    out = tmp_path / "features.d" / "nfd-snp"
    out.parent.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("precious")
    for pid in range(os.getpid() - 50, os.getpid() + 50):
        (out.parent / f"{TEMP_PREFIX}{out.name}.{pid}").symlink_to(victim)
    write_atomic(out, b"labels\n")
    assert victim.read_text() == "precious"
    assert stat.S_ISREG(os.lstat(out).st_mode) and out.read_bytes() == b"labels\n"


@pytest.mark.parametrize("planted", ["symlink", "fifo", "directory", "device"])
def test_only_a_regular_file_is_ever_replaced(tmp_path, planted):
    """A link, FIFO, directory or device at the target is refused, never written through nor
    replaced: `-o /dev/null` replaced the machine's /dev/null with a regular file."""
    victim = tmp_path / "victim"
    victim.write_text("precious")
    out = tmp_path / "nfd-snp"
    if planted == "symlink":
        out.symlink_to(victim)
    elif planted == "fifo":
        os.mkfifo(out)
    elif planted == "directory":
        out.mkdir()
    else:
        need(os.geteuid() == 0, "device nodes are made by root")
        os.mknod(out, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    before = os.lstat(out)
    with pytest.raises(WriteError, match="not a regular file"):
        write_atomic(out, b"labels\n")
    after = os.lstat(out)
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)
    assert victim.read_text() == "precious"
    assert not [n for n in os.listdir(tmp_path) if n.startswith(TEMP_PREFIX)]


def test_a_long_name_still_fits_its_temporary_name(tmp_path):
    out = tmp_path / ("n" * 240)
    write_atomic(out, b"x")
    assert out.read_bytes() == b"x"


def test_a_directory_at_the_old_temp_name_does_not_block_writing(tmp_path):
    out = tmp_path / "nfd-snp"
    (tmp_path / f"{TEMP_PREFIX}{out.name}.{os.getpid()}").mkdir()
    write_atomic(out, b"x")
    assert out.read_bytes() == b"x"


@pytest.mark.parametrize("umask", [0o000, 0o077, 0o027])
def test_modes_do_not_follow_the_umask(tmp_path, umask):
    """Directories 0755, feature file, facts cache and metrics 0644, whatever the umask."""
    config = Config(
        host_root=str(SAMPLES / "rome-sev-only"),
        libvirt="off",
        output=str(tmp_path / "a" / "features.d" / "nfd-snp"),
        facts_cache=str(tmp_path / "b" / "run" / "facts.json"),
        metrics_textfile=str(tmp_path / "c" / "textfile" / "nfd_snp.prom"),
    )
    old = os.umask(umask)
    try:
        assert Service(config, log=lambda _priority, line: None).cycle().written
    finally:
        os.umask(old)
    for path in (config.output, config.facts_cache, config.metrics_textfile):
        assert oct(os.stat(path).st_mode & 0o7777) == "0o644", path
        directory = os.path.dirname(path)
        while directory != str(tmp_path):
            assert oct(os.stat(directory).st_mode & 0o7777) == "0o755", directory
            directory = os.path.dirname(directory)
    assert not [n for n in os.listdir(os.path.dirname(config.output)) if n.startswith(".")]
