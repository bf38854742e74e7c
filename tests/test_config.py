"""Settings: one declaration each, one validation whatever the source (file, CLI, env)."""

from __future__ import annotations

import math
import os
import subprocess

import pytest
from click.testing import CliRunner

from nfd_snp import config as config_mod
from nfd_snp.cli import cli
from nfd_snp.errors import InputError
from tests.conftest import NFD_SNP, SAMPLES

GENOA = str(SAMPLES / "genoa-snp-ready")

# Values no source may give, per setting: out of bounds, non-finite, not numbers, empty.
BAD = [
    ("ttl", "nan", "must be 2..604800 seconds, not nan"),
    ("ttl", "inf", "must be 2..604800 seconds, not inf"),
    ("ttl", "-inf", "must be 2..604800 seconds, not -inf"),
    ("ttl", "1e12", "must be 2..604800 seconds, not 1e+12"),
    ("ttl", "1e400", "must be 2..604800 seconds, not inf"),
    ("ttl", "1", "must be 2..604800 seconds, not 1"),
    ("ttl", "soon", "'soon' is not a number of seconds"),
    ("ttl", "", "'' is not a number of seconds"),
    ("interval", "nan", "must be 1..86400 seconds, not nan"),
    ("interval", "0", "must be 1..86400 seconds, not 0"),
    ("interval", "1e9", "must be 1..86400 seconds, not 1e+09"),
    ("libvirt-timeout", "inf", "must be 0.1..300 seconds, not inf"),
    ("libvirt-timeout", "0", "must be 0.1..300 seconds, not 0"),
    ("libvirt", "maybe", "must be one of auto, required, off, not 'maybe'"),
    ("output", "", "is empty (a path is needed)"),
    ("facts-cache", "", "is empty (a path is needed)"),
    ("facts-cache", "/tmp/", "/tmp/ is a directory (a file path is needed)"),
    ("host-root", "", "is empty (a path is needed)"),
    ("host-root", "/nonexistent/x", "/nonexistent/x is not a directory"),
]


FEATURES_SETTINGS = ("host-root", "libvirt", "libvirt-timeout", "ttl", "output")


@pytest.mark.parametrize("key, value, message", BAD)
def test_file_values_are_validated(tmp_path, key, value, message):
    path = tmp_path / "nfd-snp.conf"
    path.write_text(f"[nfd-snp]\n{key} = {value}\n")
    with pytest.raises(InputError) as exc:
        config_mod.load(str(path))
    assert str(exc.value) == f"{path}: {key}: {message}"


@pytest.mark.parametrize("key, value, message", [b for b in BAD if b[0] in FEATURES_SETTINGS])
def test_command_line_values_are_validated_the_same_way(key, value, message):
    """`features` (no configuration file) takes its settings from the same table."""
    args = ["features", "--host-root", GENOA, "--libvirt", "off", "-o", "-"]
    result = CliRunner().invoke(cli, [*args, f"--{key}", value])
    assert result.exit_code == 2, result.output
    assert result.output == f"nfd-snp: error: --{key}: {message}\n"


def test_environment_value_is_validated(monkeypatch):
    monkeypatch.setenv("NFD_SNP_HOST_ROOT", "/nonexistent/x")
    result = CliRunner().invoke(cli, ["check"])
    assert result.exit_code == 2
    assert result.output == "nfd-snp: error: NFD_SNP_HOST_ROOT: /nonexistent/x is not a directory\n"
    monkeypatch.setenv("NFD_SNP_HOST_ROOT", GENOA)
    assert CliRunner().invoke(cli, ["check", "--libvirt", "off"]).exit_code == 0


@pytest.mark.parametrize(
    "text, message",
    [
        ("[nfd-snp]\nbogus = 1\n", "unknown setting 'bogus'"),
        ("[nfd-snp]\nfacts_cache = /x\n", "unknown setting 'facts_cache'"),
        ("[other]\nx = 1\n", "unknown section [other]"),
        ("[nfd-snp]\ninterval = 60\nttl = 90\n", "ttl (90 s) must be at least twice the interval"),
        ("no section\n", "File contains no section headers"),
        ("[nfd-snp]\noutput = /a\0b\n", "contains a NUL character"),
    ],
)
def test_config_errors_name_the_file(tmp_path, text, message):
    path = tmp_path / "nfd-snp.conf"
    path.write_text(text)
    with pytest.raises(InputError) as exc:
        config_mod.load(str(path))
    assert message in str(exc.value) and str(path) in str(exc.value)
    assert "\n" not in str(exc.value)


def test_file_values_with_overrides(tmp_path):
    path = tmp_path / "nfd-snp.conf"
    path.write_text(
        f"[nfd-snp]\ninterval = 30 ; seconds\nttl = 300\nmetrics-textfile =\nhost-root = {GENOA}\n"
    )
    loaded = config_mod.load(str(path))
    assert (loaded.interval, loaded.ttl, loaded.metrics_textfile) == (30.0, 300.0, None)
    assert loaded.host_root == GENOA and loaded.output == config_mod.DEFAULT_OUTPUT
    overridden = config_mod.load(str(path), overrides={"interval": ("10", "--interval")})
    assert overridden.interval == 10.0 and overridden.ttl == 300.0
    # the rule between two settings names where the offending value came from
    with pytest.raises(InputError, match=r"^--ttl: ttl \(30 s\) must be at least twice"):
        config_mod.load(str(path), overrides={"ttl": ("30", "--ttl")})
    assert config_mod.load(str(tmp_path / "absent.conf")) == config_mod.Config()
    with pytest.raises(InputError, match="no such file"):
        config_mod.load(str(tmp_path / "absent.conf"), required=True)


def test_every_setting_is_declared_once_with_its_default():
    """The Config defaults are the table's; every table entry is a Config field."""
    fields = {f: config_mod.Config._field_defaults.get(f) for f in config_mod.Config._fields}
    assert fields == {s.field: s.default for s in config_mod.SETTINGS}
    for setting in config_mod.SETTINGS:  # every default passes its own validation
        value = setting.default if setting.default is not None else ""
        assert setting.parse(value, "default") == setting.default
    assert config_mod.build({}) == config_mod.Config()


def test_ttl_bounds_are_the_facts_cache_validity_bounds():
    from nfd_snp import facts_cache

    ttl = config_mod.SETTING["ttl"]
    assert (ttl.low, ttl.high) == (facts_cache.TTL_MIN, facts_cache.TTL_MAX)
    assert ttl.low >= 2 * config_mod.SETTING["interval"].low
    assert not math.isinf(ttl.high)


@pytest.mark.parametrize("command", ["check", "features", "capture", "run"])
def test_shared_options_are_one_definition(command):
    """--host-root, --libvirt and --libvirt-timeout read the same in every command's help."""
    # `run` installs its signal handlers as it parses: its help runs in a child process.
    proc = subprocess.run(
        [*NFD_SNP, command, "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=60,
    )
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    for setting in ("host_root", "libvirt", "libvirt_timeout"):
        s = config_mod.SETTING[setting]
        assert f"{s.option} {s.metavar}" in text
        assert " ".join(s.help.split()) in text
