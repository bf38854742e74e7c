"""Every setting of nfd-snp, declared once, and the one validation all of them go through.

A setting comes from the configuration file (/etc/nfd-snp/nfd-snp.conf, INI, read by
`nfd-snp run`), the command line or the environment; the CLI builds its options from
`SETTINGS`, the file feeds click's defaults, and whatever the source, each value is checked
by `Setting.parse` with the same bounds before anything uses it. Non-finite numbers, empty
paths and values outside the bounds are refused at start (exit 2, one line naming the
source), so a malformed setting never reaches the service loop.

[nfd-snp]
interval = 60          ; seconds between probes
ttl = 600              ; seconds a written label stays valid without renewal
output = /etc/kubernetes/node-feature-discovery/features.d/nfd-snp
facts-cache = /run/nfd-snp/facts.json
libvirt = auto         ; auto | required | off
libvirt-timeout = 10
host-root = /
metrics-textfile =     ; empty: no Prometheus textfile
node-hook-socket =     ; empty: no KubeVirt node hook

This module is imported by every command (the CLI's options come from it): nothing heavy.
"""

from __future__ import annotations

import math
import os
from typing import Dict, Mapping, NamedTuple, Optional, Tuple

from nfd_snp import facts_cache
from nfd_snp.errors import InputError

DEFAULT_CONFIG = "/etc/nfd-snp/nfd-snp.conf"
SECTION = "nfd-snp"
LIBVIRT_MODES = ("auto", "required", "off")
DEFAULT_OUTPUT = "/etc/kubernetes/node-feature-discovery/features.d/nfd-snp"

SECONDS = "seconds"
CHOICE = "choice"
FILE = "file"  # a file to write: a non-empty path that is not a directory
OPTIONAL_FILE = "optional file"  # likewise, or empty for "none"
DIRECTORY = "directory"  # an existing directory


class Setting(NamedTuple):
    """One setting: `key` in the file, `--key` on the command line, `field` in Config.

    NamedTuples, not dataclasses, here: every command imports this module, and generating
    a dataclass's methods costs milliseconds of start-up.
    """

    key: str
    kind: str
    default: object
    help: str
    low: float = 0.0
    high: float = 0.0
    choices: Tuple[str, ...] = ()
    envvar: Optional[str] = None
    short: Optional[str] = None

    @property
    def field(self) -> str:
        return self.key.replace("-", "_")

    @property
    def option(self) -> str:
        return f"--{self.key}"

    @property
    def metavar(self) -> str:
        return {SECONDS: "SECONDS", CHOICE: "|".join(self.choices), DIRECTORY: "DIR"}.get(
            self.kind, "PATH"
        )

    def parse(self, value, where: str):
        """The typed value of `value` (a string from any source, or already typed).

        InputError `where: problem` when it is unusable; `where` names the source and the
        setting (`nfd-snp.conf: ttl`, `--ttl`, `NFD_SNP_HOST_ROOT`).
        """
        if self.kind == SECONDS:
            return self._seconds(value, where)
        text = "" if value is None else str(value).strip()
        if "\0" in text:
            raise InputError(f"{where}: contains a NUL character")
        if self.kind == CHOICE:
            if text not in self.choices:
                raise InputError(f"{where}: must be one of {', '.join(self.choices)}, not {text!r}")
            return text
        if not text:
            if self.kind == OPTIONAL_FILE:
                return None
            raise InputError(f"{where}: is empty (a path is needed)")
        if self.kind == DIRECTORY:
            if not os.path.isdir(text):
                raise InputError(f"{where}: {text} is not a directory")
        elif text.endswith("/") or os.path.isdir(text):
            raise InputError(f"{where}: {text} is a directory (a file path is needed)")
        return text

    def _seconds(self, value, where: str) -> float:
        if isinstance(value, bool):
            raise InputError(f"{where}: {value!r} is not a number of seconds")
        try:
            number = float(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError):
            raise InputError(f"{where}: {value!r} is not a number of seconds") from None
        # NaN fails every comparison, so it is refused here with the infinities.
        if not (math.isfinite(number) and self.low <= number <= self.high):
            raise InputError(
                f"{where}: must be {self.low:g}..{self.high:g} seconds, not {number:g}"
            )
        return number


SETTINGS = (
    Setting(
        "host-root",
        DIRECTORY,
        "/",
        "Read the host below DIR: / on a node, /host in a container, or a snapshot "
        "directory written by `nfd-snp capture` (replayed, no devices touched).",
        envvar="NFD_SNP_HOST_ROOT",
    ),
    Setting(
        "libvirt",
        CHOICE,
        "auto",
        "auto: ask the host's libvirt for its domain capabilities when a daemon runs; "
        "required: a node without host libvirt is not ready; off: never ask.",
        choices=LIBVIRT_MODES,
    ),
    Setting(
        "libvirt-timeout",
        SECONDS,
        10.0,
        "Give up on a libvirt daemon that does not answer.",
        low=0.1,
        high=300.0,
    ),
    Setting("interval", SECONDS, 60.0, "Seconds between probes.", low=1.0, high=86400.0),
    Setting(
        "ttl",
        SECONDS,
        facts_cache.DEFAULT_VALID_FOR,
        "How long labels (and the hook's facts) stay valid without renewal; at least "
        "twice the interval.",
        low=facts_cache.TTL_MIN,
        high=facts_cache.TTL_MAX,
    ),
    Setting(
        "output",
        FILE,
        DEFAULT_OUTPUT,
        "The NFD feature file to write ('-' prints it, for `features`).",
        short="-o",
    ),
    Setting(
        "facts-cache",
        FILE,
        facts_cache.DEFAULT_FACTS_CACHE,
        "Host facts for the libvirt hook.",
    ),
    Setting(
        "metrics-textfile",
        OPTIONAL_FILE,
        None,
        "Also write Prometheus metrics for node-exporter's textfile collector.",
    ),
    Setting(
        "node-hook-socket",
        OPTIONAL_FILE,
        None,
        "Also answer KubeVirt's node hooks (Plugins API, KubeVirt 1.9+) on this unix socket: "
        "refuse SEV-SNP VMIs this node cannot run (needs grpcio).",
    ),
)
SETTING: Dict[str, Setting] = {s.field: s for s in SETTINGS}


def _default(field: str):
    return SETTING[field].default


class Config(NamedTuple):
    """Validated settings; build one with `build` or `load`, never from raw input.

    Immutable; `config._replace(ttl=...)` gives a changed copy (unvalidated: tests only).
    """

    host_root: str = _default("host_root")
    libvirt: str = _default("libvirt")
    libvirt_timeout: float = _default("libvirt_timeout")
    interval: float = _default("interval")
    ttl: float = _default("ttl")
    output: str = _default("output")
    facts_cache: str = _default("facts_cache")
    metrics_textfile: Optional[str] = _default("metrics_textfile")
    node_hook_socket: Optional[str] = _default("node_hook_socket")


# field -> (value as given, where it was given); `where` prefixes every error message.
Given = Mapping[str, Tuple[object, str]]


def build(given: Given) -> Config:
    """The one validation: each given value by its setting, then the rules between them."""
    values = {}
    for setting in SETTINGS:
        if setting.field in given:
            value, where = given[setting.field]
            values[setting.field] = setting.parse(value, where)
    config = Config(**values)
    if config.ttl < 2 * config.interval:
        where = given.get("ttl", given.get("interval", (None, "ttl")))[1]
        default = "" if "interval" in given else ", the default"
        raise InputError(
            f"{where}: ttl ({config.ttl:g} s) must be at least twice the interval "
            f"({config.interval:g} s{default}), or labels would expire between refreshes"
        )
    return config


def read_file(path: str, *, required: bool = False) -> Dict[str, Tuple[str, str]]:
    """The settings a configuration file gives, as `Given` entries (absent file: none).

    Unknown sections and keys are errors, so a typo is not silently ignored.
    """
    import configparser

    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"))
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except FileNotFoundError:
        if required:
            raise InputError(f"{path}: no such file") from None
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from None
    except configparser.Error as exc:
        raise InputError(f"{path}: {' '.join(str(exc).split())}") from None
    unknown = [s for s in parser.sections() if s != SECTION]
    if unknown:
        raise InputError(f"{path}: unknown section [{unknown[0]}] (expected [{SECTION}])")
    if not parser.has_section(SECTION):
        return {}
    given = {}
    for key, raw in parser.items(SECTION):
        setting = SETTING.get(key.replace("-", "_"))
        if setting is None or setting.key != key:
            raise InputError(f"{path}: unknown setting '{key}'")
        given[setting.field] = (raw, f"{path}: {key}")
    return given


def load(path: str, *, required: bool = False, overrides: Optional[Given] = None) -> Config:
    """The file's settings with `overrides` (command line, environment) winning."""
    return build({**read_file(path, required=required), **(overrides or {})})
