"""Bounded input: settings files, manifests, options and annotations give a verdict or one
clear line (exit 1 or 2), never a hang, a MemoryError, an internal error (70) or a forged
output line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from nfd_snp.cli import cli
from tests.conftest import NFD_SNP, REPO, SAMPLES, cli_runner
from tests.test_check_vm import SIDECARS, dump, vm
from tests.test_service import _start, _stop, _wait_for
from tests.test_sidecar_bundle import ASK, bare_python, run_bare, script  # noqa: F401

yaml = pytest.importorskip("yaml")
SAMPLE = str(SAMPLES / "genoa-snp-ready")


def _run(*args, timeout=30, **kw):
    return subprocess.run([*NFD_SNP, *args], capture_output=True, text=True, timeout=timeout, **kw)


def _one_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("nfd-snp: error: "), stderr
    return lines[0]


# -- settings files (findings 12, 17) -----------------------------------------------------------


def _run_service(tmp_path, conf):
    return _run(
        "run",
        "--config",
        str(conf),
        "--host-root",
        SAMPLE,
        "--libvirt",
        "off",
        "--output",
        str(tmp_path / "f"),
        "--facts-cache",
        str(tmp_path / "fc.json"),
    )


def test_a_device_as_the_configuration_is_refused(tmp_path):
    """Finding: `--config /dev/zero` ran out of memory (exit 70)."""
    proc = _run_service(tmp_path, "/dev/zero")
    assert proc.returncode == 2
    assert _one_line(proc.stderr) == (
        "nfd-snp: error: /dev/zero: is a character device, not a configuration file"
    )


def test_a_fifo_as_the_configuration_is_refused_at_once(tmp_path):
    """Finding: a FIFO as --config blocked `run` at start (and ignored SIGTERM)."""
    fifo = tmp_path / "fifo.conf"
    os.mkfifo(fifo)
    proc = _run_service(tmp_path, fifo)
    assert proc.returncode == 2
    assert _one_line(proc.stderr).endswith(f"{fifo}: is a FIFO, not a configuration file")


def test_a_fifo_at_a_live_roots_cpu_devices_does_not_block(tmp_path):
    """Finding: a FIFO at a live root's dev/cpu/0/cpuid or msr blocked the probe for ever."""
    root = tmp_path / "host"
    (root / "dev" / "cpu" / "0").mkdir(parents=True)
    os.mkfifo(root / "dev" / "cpu" / "0" / "cpuid")
    os.mkfifo(root / "dev" / "cpu" / "0" / "msr")
    proc = _run("check", "--json", "--host-root", str(root), "--libvirt", "off", timeout=30)
    facts = json.loads(proc.stdout)["facts"]
    assert facts["cpu"]["unreadable"]["detail"].endswith("a FIFO, not a character device")
    assert facts["msr"]["unreadable"]["detail"].endswith("a FIFO, not a character device")


def test_a_huge_configuration_is_refused_without_reading_it(tmp_path):
    """Finding: a 1 GB file without a newline was read whole (MemoryError, exit 70)."""
    conf = tmp_path / "huge.conf"
    with open(conf, "wb") as handle:
        handle.truncate(1 << 30)  # sparse: 1 GB of NUL bytes, no newline
    started = time.monotonic()
    proc = _run_service(tmp_path, conf)
    assert proc.returncode == 2 and time.monotonic() - started < 10
    assert _one_line(proc.stderr).endswith("larger than 256 KiB, not a configuration file")
    assert not (tmp_path / "f").exists()


@pytest.mark.parametrize(
    "text, shown",
    [
        ("[nfd-snp]\ninterval = " + "9" * 100_000 + "x\n", "9" * 60 + "... (100001 characters)"),
        ("[nfd-snp]\n" + "k" * 200_000 + " = 1\n", "k" * 60 + "... (200000 characters)"),
        ("[nfd-snp]\ninterval = \x1b[31mred\n", "'\\x1b[31mred' is not a number"),
    ],
    ids=["100 KB value", "200 KB key", "escape sequence"],
)
def test_settings_errors_echo_a_short_escaped_value(tmp_path, text, shown):
    """Finding: errors echoed a whole 100 KB value or 1 MB key in one line (journald splits
    lines over 48 KiB); a 1 MB file is now beyond the size bound, so the key is 200 KB."""
    conf = tmp_path / "c.conf"
    conf.write_text(text)
    proc = _run_service(tmp_path, conf)
    assert proc.returncode == 2
    line = _one_line(proc.stderr)
    assert len(line) < 400 and shown in line, line[:300]


def test_a_reload_into_a_bad_file_keeps_the_running_settings(tmp_path):
    """Finding: a SIGHUP reload into such a file ended the running service."""
    conf = tmp_path / "nfd-snp.conf"
    conf.write_text("[nfd-snp]\ninterval = 1\nttl = 60\n")
    out = tmp_path / "features.d" / "nfd-snp"
    args = ["--config", str(conf), "--host-root", SAMPLE, "--libvirt", "off", "-o", str(out)]
    proc, log = _start([*args, "--facts-cache", str(tmp_path / "run" / "f.json")], tmp_path)
    try:
        assert _wait_for(out.exists)
        with open(conf, "wb") as handle:
            handle.truncate(1 << 30)
        proc.send_signal(signal.SIGHUP)
        assert _wait_for(lambda: "reload failed" in open(log.name).read())
        facts = tmp_path / "run" / "f.json"
        os.utime(facts, (0, 0))
        # still cycling every second with the settings it had: the facts are stamped again
        assert _wait_for(lambda: os.stat(facts).st_mtime > 0)
        assert proc.poll() is None
        text = _stop(proc, log)
    finally:
        proc.kill()
    assert "larger than 256 KiB, not a configuration file" in text


# -- check-vm (findings 11, 13, 16) -------------------------------------------------------------


def check_vm_text(text: str, timeout=60):
    started = time.monotonic()
    proc = subprocess.run(
        [*NFD_SNP, "kubevirt", "check-vm", "-"],
        input=text.encode("utf-8", "surrogateescape"),
        capture_output=True,
        timeout=timeout,
    )
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode(), time.monotonic() - started


def _alias_bomb() -> str:
    """Nine levels of nine aliases as metadata.name: 573 bytes, 387 million nodes."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 9):
        refs = ", ".join([f"*a{level - 1}"] * 9)
        lines.append(f"a{level}: &a{level} [{refs}]")
    return "\n".join(lines) + "\nkind: VirtualMachine\nmetadata:\n  name: *a8\n"


def test_an_alias_bomb_is_refused_at_once():
    status, out, err, took = check_vm_text(_alias_bomb(), timeout=30)
    assert status == 2 and took < 5
    assert "aliases (*name) and merge keys (<<) are not accepted" in _one_line(err)


@pytest.mark.parametrize(
    "text, message",
    [
        ("a: &a [*a]\nkind: VirtualMachine\n", "aliases (*name)"),
        ("base: &b {x: 1}\nkind: VirtualMachine\nspec:\n  <<: *b\n", "merge keys"),
        ("kind: VirtualMachine\nmetadata:\n  annotations:\n    1: x\n", "a mapping key is int"),
        ("kind: VirtualMachine\nmetadata:\n  annotations:\n    true: x\n", "key is bool"),
        ("kind: VirtualMachine\nmetadata:\n  annotations:\n    null: x\n", "key is NoneType"),
        ("kind: VirtualMachine\nspec:\n  2024-01-01: x\n", "a mapping key is date"),
        (
            "kind: VirtualMachine\nspec:\n  instancetype:\n    name: [a, b]\n",
            "is list, not a string",
        ),
        (
            "kind: VirtualMachine\nspec:\n  instancetype:\n    name: {a: b}\n",
            "is dict, not a string",
        ),
        (
            "kind: VirtualMachine\nspec:\n  preference:\n    kind: 3\n",
            "spec.preference.kind is int",
        ),
        ("kind: 7\nmetadata: {name: x}\n", "kind is int, not a string"),
        ("kind: VirtualMachine\nspec:\n  x: " + "9" * 5000 + "\n", "not valid YAML"),
        ("kind: VirtualMachine\nspec: " + "[" * 600 + "]" * 600 + "\n", "deeper than 64 levels"),
        ('{"kind": "VirtualMachine", "spec": ' + "[" * 600 + "]" * 600 + "}", "deeper than"),
        ('{"kind": "VirtualMachine", "x": ' + "9" * 5000 + "}", "not valid JSON"),
    ],
    ids=[
        "recursive",
        "merge",
        "int-key",
        "bool-key",
        "null-key",
        "date-key",
        "list-name",
        "map-name",
        "int-ref-kind",
        "int-kind",
        "5000-digits",
        "600-deep",
        "600-deep-json",
        "5000-digits-json",
    ],
)
def test_ordinary_yaml_that_no_object_can_be_is_an_input_error(text, message):
    """Finding: each of these was an internal error (exit 70)."""
    status, _out, err, _took = check_vm_text(text)
    assert status == 2, err
    assert message in _one_line(err)


def test_a_hook_sidecars_annotation_nested_20000_deep_is_not_valid_json():
    annotation = "[" * 20000 + "]" * 20000
    status, out, err, _ = check_vm_text(dump(vm({"hooks.kubevirt.io/hookSidecars": annotation})))
    assert status == 1 and err == ""
    assert "hooks.kubevirt.io/hookSidecars is not valid JSON" in out


def test_a_control_character_in_the_firmware_annotation_is_refused():
    annotations = {
        "hooks.kubevirt.io/hookSidecars": SIDECARS,
        "sev-snp.kubevirt.io/firmware": "/usr/share/OVMF/a\x01b.fd",
    }
    status, out, err, _ = check_vm_text(dump(vm(annotations)))
    assert status == 1 and err == ""
    assert "contains a control character" in out and "\x01" not in out


def test_names_are_escaped_and_shortened():
    """Finding: a newline in an instancetype name forged an output line, and escape
    sequences reached the terminal."""
    forged = vm(name="evil\nVirtualMachine ok: SEV-SNP\x1b[2J")
    forged["spec"]["instancetype"] = {"name": "x" * 5000 + "\nforged"}
    status, out, err, _ = check_vm_text(dump(forged))
    assert status == 2, err
    lines = out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("VirtualMachine evil\\nVirtualMachine ok")
    assert "\x1b" not in out and "\\x1b[2J" in out
    assert len(lines[0]) < 600 and "... (5007 characters)" in lines[0]


def test_manifests_are_read_by_libyaml():
    """Finding: an input just under the 16 MiB limit took over 10 s: the pure-Python loader
    was used although libyaml's was installed. (bench/check_vm.py measures the time.)"""
    from nfd_snp.kubevirt import check_vm as kubevirt_check

    assert hasattr(yaml, "CSafeLoader"), "python3-yaml (pyyaml) is built with libyaml"
    assert issubclass(kubevirt_check._loader(yaml), yaml.CSafeLoader)
    filler = {f"note-{i}": "x" * 100 for i in range(2000)}
    text = dump(vm({"hooks.kubevirt.io/hookSidecars": SIDECARS, **filler}))
    (obj,) = kubevirt_check.load_documents(text.encode(), "stdin")
    assert obj["spec"]["template"]["metadata"]["annotations"]["note-1999"] == "x" * 100


def test_yaml_documents_still_read():
    text = (REPO / "deploy" / "kubevirt" / "vm-snp.yaml").read_text()
    status, out, err, _ = check_vm_text(text)
    assert status == 0, out + err


# -- options and the sidecar (findings 14, 15) -----------------------------------------------


def test_domain_rewrite_refuses_a_control_character_in_firmware():
    """Finding: `domain rewrite --option firmware=$'/a\\x01b'` was an internal error."""
    domain = (REPO / "tests" / "data" / "domains" / "kubevirt-sev.xml").read_text()
    result = cli_runner().invoke(
        cli,
        ["domain", "rewrite", "--facts", "none", "--option", "firmware=/a\x01b"],
        input=domain,
    )
    assert result.exit_code == 2
    assert result.stderr == (
        "nfd-snp: error: --option: firmware: '/a\\x01b' contains a control character\n"
    )


def _vmi(annotations):
    return json.dumps(
        {
            "metadata": {"annotations": {**ASK, **annotations}},
            "spec": {"domain": {"launchSecurity": {"sev": {}}}},
        }
    )


def test_the_sidecar_without_lxml_refuses_a_control_character(bare_python, script):  # noqa: F811
    """Finding: in the shim's environment (no lxml) the sidecar wrote the control character
    into the XML and exited 0; libvirt's parse error then hid the reason."""
    domain = (REPO / "tests" / "data" / "domains" / "kubevirt-sev.xml").read_text()
    vmi = _vmi({"sev-snp.kubevirt.io/firmware": "/usr/share/OVMF/a\x01b.fd"})
    proc = run_bare(bare_python, script, ["--vmi", vmi, "--domain", domain])
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == (
        "nfd-snp: refusing SEV-SNP for this VMI: annotation sev-snp.kubevirt.io/firmware: "
        "'/usr/share/OVMF/a\\x01b.fd' contains a control character\n"
    )


def test_the_sidecar_says_when_its_domain_is_not_utf8(bare_python, script):  # noqa: F811
    """Finding: invalid UTF-8 in the domain argument was an "internal error"."""
    domain = (REPO / "tests" / "data" / "domains" / "kubevirt-sev.xml").read_bytes()
    args = [bare_python, "-I", str(script), "--vmi", _vmi({}), "--domain", domain + b"\xff"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == "nfd-snp: domain XML from KubeVirt: not UTF-8\n"


def test_the_sidecar_says_when_its_vmi_is_not_utf8(bare_python, script):  # noqa: F811
    domain = (REPO / "tests" / "data" / "domains" / "kubevirt-sev.xml").read_text()
    args = [bare_python, "-I", str(script), "--vmi", _vmi({}).encode() + b"\xff"]
    proc = subprocess.run([*args, "--domain", domain], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr == "nfd-snp: VMI: not UTF-8\n"
