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
output = /etc/kubernetes/node-feature-discovery/features.d/nfd-snp   ; none: no feature file
facts-cache = /run/nfd-snp/facts.json
libvirt = auto         ; auto | required | off
libvirt-timeout = 10
host-root = /
metrics-textfile =     ; empty or none: no Prometheus textfile
node-hook-socket =     ; empty: no KubeVirt node hook

The file is input like any other: read non-blocking (a FIFO there cannot hang the service),
only a regular file (or /dev/null, for "no settings"), at most MAX_CONFIG_BYTES, and every
value or key echoed in an error is escaped and cut short (`errors.excerpt`).

This module is imported by every command (the CLI's options come from it): nothing heavy.
"""

from __future__ import annotations

import math
import os
import stat
from typing import Dict, List, Mapping, NamedTuple, Optional, Tuple

from nfd_snp import facts_cache
from nfd_snp.errors import InputError, excerpt

DEFAULT_CONFIG = "/etc/nfd-snp/nfd-snp.conf"
SECTION = "nfd-snp"
LIBVIRT_MODES = ("auto", "required", "off")
DEFAULT_OUTPUT = "/etc/kubernetes/node-feature-discovery/features.d/nfd-snp"

SECONDS = "seconds"
CHOICE = "choice"
FILE = "file"  # a file to write: a non-empty path that is not a directory
FILE_OR_NONE = "file or none"  # likewise, or `none` for no such file
OPTIONAL_FILE = "optional file"  # likewise, or empty (or `none`) for no such file
DIRECTORY = "directory"  # an existing directory
NONE = "none"
# A settings file is a few hundred bytes; anything much larger is not one (/dev/zero, a log).
MAX_CONFIG_BYTES = 256 * 1024
# Characters of a value or key, and of a path, echoed in an error (errors.excerpt).
SHOWN = 60
PATH_SHOWN = 200


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
                shown = excerpt(text, SHOWN)
                raise InputError(
                    f"{where}: must be one of {', '.join(self.choices)}, not '{shown}'"
                )
            return text
        if text == NONE and self.kind in (FILE_OR_NONE, OPTIONAL_FILE):
            return None  # a file really called "none" is ./none
        if not text:
            if self.kind == OPTIONAL_FILE:
                return None
            raise InputError(f"{where}: is empty (a path is needed)")
        if any(ord(c) < 32 or ord(c) == 127 for c in text):
            raise InputError(f"{where}: '{excerpt(text, SHOWN)}' contains a control character")
        if self.kind == DIRECTORY:
            if not os.path.isdir(text):
                raise InputError(f"{where}: {excerpt(text, PATH_SHOWN)} is not a directory")
        elif text.endswith("/") or os.path.isdir(text):
            raise InputError(
                f"{where}: {excerpt(text, PATH_SHOWN)} is a directory (a file path is needed)"
            )
        return text

    def _seconds(self, value, where: str) -> float:
        if isinstance(value, bool):
            raise InputError(f"{where}: {value!r} is not a number of seconds")
        try:
            number = float(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError, OverflowError):
            shown = excerpt(value, SHOWN)
            raise InputError(f"{where}: '{shown}' is not a number of seconds") from None
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
        FILE_OR_NONE,
        DEFAULT_OUTPUT,
        "The NFD feature file to write: a regular file or absent, never a device or link; "
        "'none' for no feature file (`run` on a libvirt-only host; ./none names a file); "
        "'-' prints it (`features`).",
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
        "Also write Prometheus metrics for node-exporter's textfile collector (empty or "
        "'none': no textfile).",
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
    output: Optional[str] = _default("output")  # None: no feature file
    facts_cache: str = _default("facts_cache")
    metrics_textfile: Optional[str] = _default("metrics_textfile")
    node_hook_socket: Optional[str] = _default("node_hook_socket")

    def outputs(self) -> List[Tuple[str, str]]:
        """(setting, path) of every file the service writes; a switched-off one is left out."""
        named = [
            ("output", self.output),
            ("facts-cache", self.facts_cache),
            ("metrics-textfile", self.metrics_textfile),
        ]
        return [(where, path) for where, path in named if path is not None]


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


def _is_null_device(st: os.stat_result) -> bool:
    """/dev/null (character device 1:3, devices.txt): read as an empty file."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)


def read_text(path: str, what: str = "a configuration file") -> str:
    """The text of a settings file: opened non-blocking, only a regular file (or /dev/null),
    at most MAX_CONFIG_BYTES, UTF-8. FileNotFoundError passes; anything else is InputError."""
    from nfd_snp.confined import kind_of, read_limited

    shown = excerpt(path, PATH_SHOWN)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise InputError(f"{shown}: cannot read ({exc.strerror or exc})") from None
    try:
        st = os.fstat(fd)
        if not (stat.S_ISREG(st.st_mode) or _is_null_device(st)):
            raise InputError(f"{shown}: is {kind_of(st.st_mode)}, not {what}")
        data = read_limited(fd, MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise InputError(f"{shown}: cannot read ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    if len(data) > MAX_CONFIG_BYTES:
        raise InputError(f"{shown}: larger than {MAX_CONFIG_BYTES // 1024} KiB, not {what}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{shown}: not UTF-8 text (byte {exc.start})") from None


def read_file(path: str, *, required: bool = False) -> Dict[str, Tuple[str, str]]:
    """The settings a configuration file gives, as `Given` entries (absent file: none).

    Unknown sections and keys are errors, so a typo is not silently ignored.
    """
    import configparser

    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"))
    shown = excerpt(path, PATH_SHOWN)
    try:
        parser.read_string(read_text(path), source=path)
    except FileNotFoundError:
        if required:
            raise InputError(f"{shown}: no such file") from None
        return {}
    except configparser.Error as exc:
        raise InputError(f"{shown}: {excerpt(' '.join(str(exc).split()), PATH_SHOWN)}") from None
    except (RecursionError, MemoryError, ValueError):  # configparser's own limits
        raise InputError(f"{shown}: not a configuration file") from None
    unknown = [s for s in parser.sections() if s != SECTION]
    if unknown:
        raise InputError(
            f"{shown}: unknown section [{excerpt(unknown[0], SHOWN)}] (expected [{SECTION}])"
        )
    if not parser.has_section(SECTION):
        return {}
    given = {}
    for key, raw in parser.items(SECTION):
        setting = SETTING.get(key.replace("-", "_"))
        if setting is None or setting.key != key:
            raise InputError(f"{shown}: unknown setting '{excerpt(key, SHOWN)}'")
        given[setting.field] = (raw, f"{shown}: {key}")
    return given


def load(path: str, *, required: bool = False, overrides: Optional[Given] = None) -> Config:
    """The file's settings with `overrides` (command line, environment) winning."""
    return build({**read_file(path, required=required), **(overrides or {})})
