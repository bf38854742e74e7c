"""Shipped service files: the unit verifies clean, the default config is the defaults."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from nfd_snp import config as config_mod
from tests.conftest import NFD_SNP, REPO, need

UNIT = REPO / "systemd" / "nfd-snp.service"


def _verify(unit_text, tmp_path):
    """systemd-analyze verify against a root holding the system's units and our unit."""
    need(shutil.which("systemd-analyze") is not None, "systemd-analyze is not installed")
    root = tmp_path / "root"
    units = root / "usr/lib/systemd/system"
    shutil.copytree("/lib/systemd/system", units, symlinks=True)
    (units / "nfd-snp.service").write_text(unit_text)
    for exe in ("usr/bin/nfd-snp", "bin/kill"):
        path = root / exe
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    proc = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", "nfd-snp.service"],
        capture_output=True,
        text=True,
    )
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def test_unit_verifies_clean(tmp_path):
    code, output = _verify(UNIT.read_text(), tmp_path)
    assert (code, output) == (0, "")


def test_verify_would_catch_a_broken_unit(tmp_path):
    broken = UNIT.read_text().replace("ProtectSystem=strict", "ProtectSystem=sometimes")
    _, output = _verify(broken, tmp_path)
    assert "Failed to parse protect system value" in output


def test_unit_is_hardened():
    text = UNIT.read_text()
    for setting in (
        "ProtectSystem=strict",
        "DevicePolicy=closed",
        "DeviceAllow=/dev/sev rw",
        "DeviceAllow=/dev/kvm rw",
        "ReadOnlyPaths=/dev",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=CAP_SYS_RAWIO",
        "ReadWritePaths=/etc/kubernetes/node-feature-discovery/features.d",
        "RuntimeDirectory=nfd-snp",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Documentation=",
        # loads the CPU register drivers outside the sandbox, never failing the start
        "ExecStartPre=-+/usr/sbin/modprobe -q -a cpuid msr",
    ):
        assert setting in text, setting
    modules = (REPO / "systemd" / "nfd-snp.modules-load.conf").read_text().split("\n")
    assert {"cpuid", "msr"} <= {line.strip() for line in modules}


def test_a_read_only_dev_keeps_the_probe_reading_its_devices(tmp_path):
    """The unit's ReadOnlyPaths=/dev, as systemd sets it up (a read-only bind mount in the
    service's mount namespace): /dev cannot be changed, and the probe still opens and reads
    the cpuid device through it."""
    need(os.geteuid() == 0 and shutil.which("unshare") is not None, "needs root and unshare")
    if not os.path.exists("/dev/cpu/0/cpuid"):
        pytest.skip("no cpuid driver on this machine")
    script = (
        "mount --bind /dev /dev && mount -o remount,bind,ro /dev && "
        "{ touch /dev/nfd-snp-test 2>/dev/null && echo writable || echo read-only; } && "
        f"{' '.join(NFD_SNP)} check --json --libvirt off"
    )
    proc = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
    )
    first, _, report = proc.stdout.partition("\n")
    assert first == "read-only", proc.stdout + proc.stderr
    cpu = json.loads(report)["facts"]["cpu"]
    assert cpu["unreadable"] is None and cpu["vendor"], cpu  # read through the read-only /dev


def test_default_config_file_is_the_builtin_defaults():
    assert config_mod.load(str(REPO / "packaging" / "nfd-snp.conf")) == config_mod.Config()


def test_nodefeaturerule_uses_published_feature_names():
    yaml = pytest.importorskip("yaml")
    from nfd_snp import nfd
    from nfd_snp.checks import evaluate
    from tests.conftest import SAMPLES, probe_root

    rule = yaml.safe_load((REPO / "deploy/nfd/nodefeaturerule.yaml").read_text())
    assert rule["kind"] == "NodeFeatureRule"
    pub = nfd.publication(evaluate(probe_root(SAMPLES / "genoa-snp-ready")))
    published = dict(pub.labels + pub.features)
    for r in rule["spec"]["rules"]:
        for resource, value in r["extendedResources"].items():
            assert resource.split("/")[0].endswith(".node.kubevirt.io")
            assert value.startswith("@local.feature.")
            assert value[len("@local.feature.") :] in published
        for term in r["matchFeatures"]:
            for key in term["matchExpressions"]:
                assert key in published, key
