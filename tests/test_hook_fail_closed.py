"""The libvirt hook where a mistake would let an SEV-SNP domain start without SEV-SNP, or block
one that may start: its shell front's filters, its exit status, the check of its own
rewritten output, its catch-all for bugs, and the words of its refusals.

Run as libvirt runs it (tests/test_hook.py's installed hook, with dash and bash), except
where a fault has to be injected into the engine: there `nfd_snp.hook.handle` runs in this
process with the fault patched in.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys

import pytest

from nfd_snp import facts_cache, hook, xmlio
from nfd_snp.checks import evaluate
from nfd_snp.domain import engine
from tests.test_hook import (
    CONVERTED,
    MARKED,
    PLAIN,
    SHELLS,
    _hook_with_misc_cgroup,
    _refusal,
    hook_for,
    marked,
    run_hook,
)
from tests.conftest import SAMPLES, install_hook, need, probe_root


@pytest.fixture(scope="module")
def ready_cache() -> bytes:
    return facts_cache.encode(evaluate(probe_root(SAMPLES / "genoa-snp-ready")))


@pytest.fixture
def cache(tmp_path, ready_cache):
    """The facts cache of an SEV-SNP-ready node, as the service writes it."""
    path = tmp_path / "facts.json"
    path.write_bytes(ready_cache)
    return path


BAD_OPTION = CONVERTED.replace(b'vcek="yes"', b'vcek="yes" hostData="tooshort"')


# -- the words of a refusal ------------------------------------------------------------------


@pytest.mark.parametrize(
    "op, verb", [("prepare", "start"), ("restore", "restore"), ("migrate", "migrate in")]
)
def test_a_refusal_names_what_was_refused(cache, op, verb):
    line = _refusal(run_hook(op, "begin", BAD_OPTION, cache, name="web"))
    reason = "hostData: decodes to 6 bytes, must be exactly 32"
    assert line.startswith(f"nfd-snp: refusing to {verb} SEV-SNP domain 'web': ")
    if op == "prepare":  # a defined domain: what to run to correct it
        assert line.endswith(
            f"{reason}; give a valid value (base64 of exactly 32 bytes): `nfd-snp domain "
            "convert web --option hostData=VALUE`"
        )
    else:  # a domain coming from a save file or another host: the reason alone
        assert line.endswith(reason)


def test_a_wrong_option_is_named_whatever_the_node_knows(tmp_path):
    """The request's own mistake comes first: it is named even where the node's facts are
    missing, and its fix does not wait for the node."""
    line = _refusal(run_hook("prepare", "begin", BAD_OPTION, tmp_path / "missing.json"))
    assert "hostData: decodes to 6 bytes, must be exactly 32; give a valid value" in line
    assert "missing" not in line


def test_a_refusal_convert_cannot_fix_gives_no_advice(cache):
    """SMM is the domain's own setting: the reason alone, no command that would refuse it
    the same way, and nothing appended."""
    data = CONVERTED.replace(b"</devices>", b"</devices><features><smm/></features>")
    line = _refusal(run_hook("prepare", "begin", data, cache))
    assert line.endswith(
        ": SEV-SNP guests cannot use SMM: remove <smm/> from <features> or set state='off'"
    )


def test_a_refused_policy_names_each_bit_and_what_this_node_accepts(cache):
    """A node whose KVM takes only the reserved bit: each refused bit by number and name."""
    data = json.loads(cache.read_text())
    data["snp_policy"] = {"accepted": 0x20000, "required": 0x20000, "source": "a test rule"}
    cache.write_text(json.dumps(data))
    policy = "0x007b0000"  # bits 16, 17, 19, 20, 21, 22
    line = _refusal(run_hook("prepare", "begin", _policy(policy), cache))
    assert line.endswith(
        f"policy {policy}: this node's KVM refuses it (bit 16 (SMT), bit 19 (debug), "
        "bit 20 (single socket), bit 21 (CXL), bit 22 (AES-256-XTS) not accepted; accepted "
        "bits 0x20000, from a test rule)"
    )


def _policy(policy: str) -> bytes:
    return CONVERTED.replace(b'policy="0x00030000"', f'policy="{policy}"'.encode()).replace(
        b"<policy>0x30000</policy>", f"<policy>{policy}</policy>".encode()
    )


# -- the shell front finds every request, whatever the XML holds ------------------------------


@pytest.mark.parametrize("shell", SHELLS)
def test_a_request_far_into_a_large_domain_is_found(cache, shell):
    """The front reads all of the XML: a request after 100 KiB of description is refused
    unconverted, never waved through."""
    big = MARKED.replace(b"<name>", b"<description>" + b"x" * 100_000 + b"</description><name>")
    assert big.index(b"urn:nfd-snp:1") > 100_000
    line = _refusal(run_hook("prepare", "begin", big, cache, shell=shell))
    assert "not converted (no launchSecurity)" in line


@pytest.mark.parametrize("shell", SHELLS)
def test_a_request_under_another_prefix_is_found(cache, shell):
    """The request is the namespace, not the usual `snp:` prefix."""
    data = MARKED.replace(b"snp:sev-snp", b"confidential:sev-snp").replace(
        b"xmlns:snp=", b"xmlns:confidential="
    )
    assert b"snp:sev-snp" not in data.replace(b"confidential:sev-snp", b"")
    line = _refusal(run_hook("prepare", "begin", data, cache, shell=shell))
    assert "not converted (no launchSecurity)" in line


@pytest.mark.parametrize("shell", SHELLS)
def test_the_xml_reaches_python_byte_for_byte(cache, shell):
    """Backslashes, a `-n` line and a `%s` pass through the front untouched (dash's echo
    would turn `\\c` into the end of the output)."""
    text = "C:\\new\\cat\\t%s\\c -n -e"
    data = MARKED.replace(b"<name>", f"<description>{text}</description><name>".encode())
    proc = run_hook("restore", "begin", data, cache, shell=shell)
    assert (proc.returncode, proc.stderr) == (0, b"")
    assert xmlio.parse(proc.stdout).find("description").text == text


@pytest.mark.parametrize("shell", SHELLS)
def test_the_front_works_with_whatever_path_it_is_given(cache, shell):
    """libvirt gives hooks a cleared environment: the front sets its own PATH."""
    need(shutil.which(shell) is not None, f"{shell} is not installed")
    env = {"PATH": "/nonexistent", "NFD_SNP_FACTS_CACHE": str(cache)}
    script = hook_for()
    for data, status in ((MARKED, 1), (CONVERTED, 0), (PLAIN, 0)):
        proc = subprocess.run(
            [shutil.which(shell), str(script), "vm1", "prepare", "begin", "-"],
            input=data,
            capture_output=True,
            env=env,
            timeout=60,
        )
        assert proc.returncode == status, proc.stderr


def test_the_callers_pythonpath_cannot_replace_nfd_snp(cache, tmp_path):
    """Python runs isolated (-I): a PYTHONPATH holding another nfd_snp is not imported."""
    fake = tmp_path / "fake" / "nfd_snp"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "hook.py").write_text("def main(argv):\n    return 0\n")
    script = hook_for()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "NFD_SNP_FACTS_CACHE": str(cache),
        "PYTHONPATH": str(fake.parent),
    }
    proc = subprocess.run(
        ["sh", str(script), "vm1", "prepare", "begin", "-"],
        input=MARKED,
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert "not converted (no launchSecurity)" in _refusal(proc)


def test_an_nfd_snp_that_fails_to_import_refuses_snp_domains(cache, tmp_path):
    """Not only a missing package: any error while importing nfd_snp refuses the SEV-SNP
    domain with the reason, and other domains start."""
    broken = tmp_path / "broken"
    (broken / "nfd_snp").mkdir(parents=True)
    (broken / "nfd_snp" / "__init__.py").write_text("raise RuntimeError('half-upgraded')\n")
    env_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    site = subprocess.run(
        [
            str(env_dir / "bin" / "python"),
            "-c",
            "import sysconfig; print(sysconfig.get_path('purelib'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    with open(os.path.join(site, "broken.pth"), "w") as pth:
        pth.write(f"{broken}\n")
    script = install_hook(tmp_path / "hook", str(env_dir / "bin" / "python"))
    env = {"PATH": os.environ.get("PATH", ""), "NFD_SNP_FACTS_CACHE": str(cache)}

    def run(data):
        command = ["sh", str(script), "vm1", "prepare", "begin", "-"]
        return subprocess.run(command, input=data, capture_output=True, env=env, timeout=60)

    lines = run(MARKED).stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nfd-snp: cannot load nfd_snp with ")
    assert lines[0].endswith(
        "(RuntimeError: half-upgraded); refusing the SEV-SNP domain: install nfd-snp for that "
        "Python, or install the hook again with `nfd-snp install` run from the Python "
        "environment that has nfd-snp"
    )
    assert run(MARKED).returncode == 1
    plain = run(PLAIN)
    assert (plain.returncode, plain.stderr) == (0, b"")


# -- the Python entry point ------------------------------------------------------------------

MAIN = "import sys; from nfd_snp.hook import main; sys.exit(main(sys.argv[1:]))"


@pytest.mark.parametrize(
    "args, status",
    [
        (["vm1", "prepare", "begin", "-"], 1),
        (["vm1", "restore", "begin", "-"], 0),
        (["vm1", "prepare", "begin"], 1),
        (["vm1", "prepare"], 0),  # not what libvirt passes: not ours to judge
        (["vm1", "prepare", "end", "-"], 0),
        (["vm1", "started", "begin", "-"], 0),
    ],
)
def test_main_acts_on_what_the_front_lets_through(cache, args, status):
    proc = subprocess.run(
        [sys.executable, "-I", "-c", MAIN, *args],
        input=MARKED,
        capture_output=True,
        env={"NFD_SNP_FACTS_CACHE": str(cache)},
        timeout=60,
    )
    assert proc.returncode == status, proc.stderr
    if args[1:3] == ["restore", "begin"]:
        assert xmlio.parse(proc.stdout).find("launchSecurity").get("type") == "sev-snp"
    elif status == 0:
        assert (proc.stdout, proc.stderr) == (b"", b"")


@pytest.mark.parametrize("args", [["vm1", "prepare"], ["vm1", "started", "begin", "-"]])
def test_main_returns_0_for_what_it_ignores(monkeypatch, args):
    stdin = io.TextIOWrapper(io.BytesIO(MARKED))
    monkeypatch.setattr(sys, "stdin", stdin)
    assert hook.main(args) == 0
    assert stdin.buffer.read() == b""  # read whole all the same


def test_a_large_domain_is_read_and_rewritten_whole(cache):
    """Past the size where lxml takes over, and past one read of stdin: the restored XML is
    the whole domain, rewritten."""
    comment = b"<!--" + b"y" * (3 * 1024 * 1024) + b"-->"
    data = MARKED.replace(b"</devices>", comment + b"</devices>")
    proc = run_hook("restore", "begin", data, cache)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count(b"y" * 1024) == 3 * 1024
    assert xmlio.parse(proc.stdout).find("launchSecurity").get("type") == "sev-snp"


# -- ASIDs -----------------------------------------------------------------------------------


def test_ciphertext_hiding_leaves_the_asid_count_to_kvm(cache):
    """With ciphertext hiding SEV-SNP has a range of its own that the misc cgroup counts
    together with SEV-ES: a full `sev_es` count does not refuse an SEV-SNP guest."""
    data = json.loads(cache.read_text())
    data["asids_shared"] = False
    cache.write_text(json.dumps(data))
    proc = _hook_with_misc_cgroup(
        "sev 397\\nsev_es 509\\n", "sev 0\\nsev_es 509\\n", CONVERTED, cache
    )
    assert proc.returncode == 0, proc.stderr


# -- faults inside the engine: what the hook does about them (in this process) ---------------


@pytest.fixture
def handled(cache, monkeypatch):
    """handle() as the hook runs it, on this test's facts: (status, stdout, stderr)."""
    monkeypatch.setenv(hook.FACTS_ENV, str(cache))

    def run(op, data):
        out, err = io.StringIO(), io.StringIO()
        status = hook.handle("vm1", op, data, out, err)
        return status, out.getvalue(), err.getvalue()

    return run


def test_the_hook_checks_its_own_rewrite_before_libvirt_gets_it(handled, monkeypatch):
    """A rewrite that got the requested policy wrong (the debug bit set) is refused, and
    libvirt gets nothing, rather than a guest that runs with a policy nobody asked for."""
    write = engine._write_launch_security
    asked = marked(PLAIN, policy="0x30000")

    def faulty(root, layout, ls, wanted):
        write(root, layout, ls, wanted)
        root.find("launchSecurity/policy").text = "0x000b0000"

    assert handled("restore", asked)[0] == 0
    monkeypatch.setattr(engine, "_write_launch_security", faulty)
    for op, verb in (("restore", "restore"), ("migrate", "migrate in")):
        status, out, err = handled(op, asked)
        assert (status, out) == (1, "")
        assert err == (
            f"nfd-snp: refusing to {verb} SEV-SNP domain 'vm1': the domain's launchSecurity "
            "does not match its SEV-SNP request and this node (policy)\n"
        )


@pytest.mark.parametrize("op", ["prepare", "restore"])
def test_a_bug_refuses_the_snp_domain_in_one_line(handled, monkeypatch, op):
    def broken(*_args, **_kwargs):
        raise ZeroDivisionError("division by zero\nsecond line")

    monkeypatch.setattr(engine, "verify", broken)
    status, out, err = handled(op, CONVERTED if op == "prepare" else MARKED)
    assert (status, out) == (1, "")
    assert err == (
        "nfd-snp: internal error on SEV-SNP domain 'vm1' (ZeroDivisionError: division by "
        "zero\\nsecond line); refusing it\n"
    )


def test_a_domain_that_only_mentions_the_namespace_is_left_alone(handled, monkeypatch):
    """No request, no judgement: not even a node that cannot run SEV-SNP refuses it."""
    monkeypatch.setenv(hook.FACTS_ENV, "/nonexistent/facts.json")
    data = PLAIN.replace(b"<name>plain</name>", b"<name>plain</name><title>urn:nfd-snp:1</title>")
    for op in ("prepare", "restore", "migrate"):
        assert handled(op, data) == (0, "", "")


def test_a_converted_domain_on_a_ready_node_starts(handled):
    assert handled("prepare", CONVERTED) == (0, "", "")


def test_an_unconverted_domain_restored_is_converted_for_this_node(handled):
    status, out, err = handled("restore", marked(PLAIN, policy="0x30000"))
    assert (status, err) == (0, "")
    root = xmlio.parse(out)
    ls = root.find("launchSecurity")
    assert (ls.find("cbitpos").text, ls.find("reducedPhysBits").text) == ("51", "1")
    assert root.find("os/loader").text == "/usr/share/edk2/ovmf/OVMF.amdsev.fd"
