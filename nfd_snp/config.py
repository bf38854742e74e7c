"""Service configuration: /etc/nfd-snp/nfd-snp.conf (INI), overridden by command-line options.

[nfd-snp]
interval = 60          ; seconds between probes
ttl = 600              ; seconds a written label stays valid without renewal
output = /etc/kubernetes/node-feature-discovery/features.d/nfd-snp
facts-cache = /run/nfd-snp/facts.json
libvirt = auto         ; auto | required | off
libvirt-timeout = 10
host-root = /
metrics-textfile =     ; empty: no Prometheus textfile
"""

from __future__ import annotations

import configparser
from dataclasses import dataclass, fields, replace
from typing import Optional

from nfd_snp.errors import InputError
from nfd_snp.nfd import DEFAULT_PATH

DEFAULT_CONFIG = "/etc/nfd-snp/nfd-snp.conf"
LIBVIRT_MODES = ("auto", "required", "off")
SECTION = "nfd-snp"


@dataclass(frozen=True)
class Config:
    interval: float = 60.0
    ttl: float = 600.0
    output: str = DEFAULT_PATH
    facts_cache: str = "/run/nfd-snp/facts.json"
    libvirt: str = "auto"
    libvirt_timeout: float = 10.0
    host_root: str = "/"
    metrics_textfile: Optional[str] = None

    def validate(self, where: str = "configuration") -> "Config":
        if not 1 <= self.interval <= 86400:
            raise InputError(f"{where}: interval must be 1..86400 seconds, not {self.interval:g}")
        if self.ttl < 2 * self.interval:
            raise InputError(
                f"{where}: ttl ({self.ttl:g} s) must be at least twice the interval "
                f"({self.interval:g} s), or labels would expire between refreshes"
            )
        if self.libvirt not in LIBVIRT_MODES:
            raise InputError(f"{where}: libvirt must be one of {', '.join(LIBVIRT_MODES)}")
        if not 0.1 <= self.libvirt_timeout <= 300:
            raise InputError(f"{where}: libvirt-timeout must be 0.1..300 seconds")
        return self


_FLOATS = {"interval", "ttl", "libvirt_timeout"}


def load(path: Optional[str], *, required: bool = False) -> Config:
    """Read the config file (absent is fine unless `required`); InputError names the line."""
    config = Config()
    if path is None:
        return config
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"))
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except FileNotFoundError:
        if required:
            raise InputError(f"{path}: no such file") from None
        return config
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from None
    except configparser.Error as exc:
        raise InputError(f"{path}: {' '.join(str(exc).split())}") from None
    if parser.sections() and parser.sections() != [SECTION]:
        unknown = [s for s in parser.sections() if s != SECTION]
        raise InputError(f"{path}: unknown section [{unknown[0]}] (expected [{SECTION}])")
    if not parser.has_section(SECTION):
        return config
    known = {f.name for f in fields(Config)}
    values = {}
    for key, raw in parser.items(SECTION):
        name = key.replace("-", "_")
        if name not in known:
            raise InputError(f"{path}: unknown setting '{key}'")
        raw = raw.strip()
        if name in _FLOATS:
            try:
                values[name] = float(raw)
            except ValueError:
                raise InputError(f"{path}: {key} = {raw!r} is not a number") from None
        elif name == "metrics_textfile":
            values[name] = raw or None  # empty: no textfile
        else:
            values[name] = raw
    return replace(config, **values).validate(path)


def override(config: Config, **options) -> Config:
    """Command-line values (None means "not given") win over the file."""
    given = {k: v for k, v in options.items() if v is not None}
    return replace(config, **given).validate("command line")
