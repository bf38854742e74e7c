"""A test-side reading of feature files by NFD's documented local-source rules.

Written from NFD's documentation of the local feature source (REFERENCE §7), independently of
nfd_snp.nfd, so the tests check our files against the rules rather than against ourselves.
"""

from __future__ import annotations

import datetime
import os
import re

MAX_FILE = 65536
DEFAULT_NS = "feature.node.kubernetes.io/"
ALLOWED_K8S_NS = ("feature.node.kubernetes.io", "profile.node.kubernetes.io")
NAME_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


class Problem(Exception):
    """Something NFD would log and skip; the tests treat it as a failure."""


def _check_name(name: str) -> str:
    if "/" not in name:
        name = DEFAULT_NS + name
    ns, _, short = name.rpartition("/")
    if ns.endswith("kubernetes.io") and ns not in ALLOWED_K8S_NS:
        raise Problem(f"namespace {ns} is denied")
    if not NAME_RE.match(short) or len(short) > 63:
        raise Problem(f"invalid name {short!r}")
    return name


def parse_file(text: str, now: datetime.datetime):
    """(labels, features) that NFD publishes from one file's text at time `now`."""
    labels, features = {}, {}
    expiry = None
    no_label = no_feature = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("# +"):
            directive = line[3:]
            if directive.startswith("expiry-time="):
                expiry = datetime.datetime.fromisoformat(
                    directive.split("=", 1)[1].replace("Z", "+00:00")
                )
            elif directive == "no-label":
                no_label = True
            elif directive == "no-feature":
                no_feature = True
            else:
                raise Problem(f"unknown directive {directive!r}")
            continue
        if line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        value = value if sep else "true"
        name = _check_name(name)
        if len(value) > 63 or not VALUE_RE.match(value):
            raise Problem(f"invalid value {value!r} for {name}")
        if expiry is None or expiry > now:
            if not no_feature:
                features[name] = value
            if not no_label:
                labels[name] = value
        no_label = no_feature = False
    return labels, features


def parse_dir(directory, now: datetime.datetime):
    """All files of a features.d directory, as nfd-worker reads them."""
    labels, features = {}, {}
    for entry in sorted(os.listdir(directory)):
        path = os.path.join(directory, entry)
        if entry.startswith(".") or not os.path.isfile(path):
            continue
        if os.path.getsize(path) > MAX_FILE:
            continue
        with open(path, encoding="utf-8") as handle:
            file_labels, file_features = parse_file(handle.read(), now)
        labels.update(file_labels)
        features.update(file_features)
    return labels, features
