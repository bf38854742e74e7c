"""The hook as `nfd-snp install` writes it, run as libvirt runs it: argv, XML on stdin, exit
code, stderr, with Debian's /bin/sh (dash) and with bash.

Fail-open for domains that did not ask for SEV-SNP, fail-closed for those that did; at most
one Python start per operation, and none for operations the hook ignores or for domains
that did not ask for SEV-SNP.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from nfd_snp import facts_cache
from nfd_snp.checks import evaluate
from nfd_snp import xmlio
from nfd_snp.domain import engine
from nfd_snp.domain.options import SnpOptions
from tests.conftest import (
    NFD_SNP,
    REPO,
    SAMPLES,
    install_hook,
    need,
    probe_root,
    python_starts,
)

SHELLS = ("dash", "bash")
_WORK = Path(tempfile.mkdtemp(prefix="nfd-snp-hook-test-"))
atexit.register(shutil.rmtree, _WORK, True)
OWN = REPO / "tests" / "data" / "domains"
PLAIN = (OWN / "plain-virtio.xml").read_bytes()
CONVERTED = (OWN / "converted-snp.xml").read_bytes()


def marked(data: bytes, **options) -> bytes:
    root = xmlio.parse(data)
    engine.set_request(root, SnpOptions.from_strings(options))
    return xmlio.serialize(root).encode()


MARKED = marked(PLAIN)
NOOP_OPS = [
    ("start", "begin"),
    ("started", "begin"),
    ("stopped", "end"),
    ("release", "end"),
    ("reconnect", "begin"),
    ("attach", "begin"),
    ("migrate", "end"),
    ("prepare", "end"),
]


@pytest.fixture
def facts(tmp_path):
    """A facts cache path; write(sample) fills it from a bundled sample node."""
    path = tmp_path / "facts.json"

    class Facts:
        def __init__(self):
            self.path = path

        def write(self, sample="genoa-snp-ready"):
            path.write_bytes(facts_cache.encode(evaluate(probe_root(SAMPLES / sample))))
            return self

    return Facts()


def hook_for(*python_flags) -> Path:
    """The installed hook whose Python runs with `python_flags` (one per set of flags)."""
    directory = _WORK / ("python" + "".join(python_flags).replace(" ", ""))
    hook = directory / "50-nfd-snp"
    return hook if hook.exists() else install_hook(directory, sys.executable, *python_flags)


def run_hook(op, sub, data, facts_path, *python_flags, name="vm1", shell="sh"):
    """The hook's exit, output and error, and (`.python_starts`) how often it started Python."""
    need(shutil.which(shell) is not None, f"{shell} is not installed")
    hook = hook_for(*python_flags)
    before = python_starts(hook)
    env = {"PATH": os.environ.get("PATH", ""), "NFD_SNP_FACTS_CACHE": str(facts_path)}
    proc = subprocess.run(
        [shell, str(hook), name, op, sub, "-"],
        input=data,
        capture_output=True,
        env=env,
        timeout=60,
    )
    proc.python_starts = python_starts(hook) - before
    return proc


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("op, sub", NOOP_OPS)
@pytest.mark.parametrize("data", [PLAIN, MARKED, b"garbage <<"], ids=["plain", "marked", "garbage"])
def test_other_operations_return_0_without_python(op, sub, data, facts, shell):
    proc = run_hook(op, sub, data, facts.path, shell=shell)
    assert (proc.returncode, proc.stdout, proc.stderr, proc.python_starts) == (0, b"", b"", 0)


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("cache", ["missing", "corrupt", "not-ready", "ready"])
@pytest.mark.parametrize("op", ["prepare", "migrate", "restore"])
def test_unmarked_domain_always_passes_untouched_without_python(op, cache, facts, shell):
    if cache == "corrupt":
        facts.path.write_text('{"schema": "nfd-snp.facts/v1", "verdicts": [')
    elif cache == "not-ready":
        facts.write("intel")
    elif cache == "ready":
        facts.write()
    for data in (
        PLAIN,
        b"<domain><name>x</name><description>about urn:nfd-snp:2</description></domain>",
        b"not xml at all",
        b"",
    ):
        proc = run_hook(op, "begin", data, facts.path, shell=shell)
        assert (proc.returncode, proc.stdout, proc.stderr, proc.python_starts) == (0, b"", b"", 0)


def test_namespace_mentioned_without_marker_passes(facts):
    data = PLAIN.replace(
        b"<name>plain</name>", b"<name>plain</name><description>see urn:nfd-snp:1</description>"
    )
    proc = run_hook("prepare", "begin", data, facts.path)
    assert (proc.returncode, proc.stderr, proc.python_starts) == (0, b"", 1)


def _refusal(proc) -> str:
    assert proc.returncode == 1 and proc.stdout == b""
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nfd-snp: refusing to ")
    return lines[0]


@pytest.mark.parametrize("shell", SHELLS)
def test_prepare_refuses_unconverted_marked_domain(facts, shell):
    facts.write()
    proc = run_hook("prepare", "begin", MARKED, facts.path, name="web", shell=shell)
    assert proc.python_starts == 1
    line = _refusal(proc)
    assert "not converted (no launchSecurity)" in line
    assert "run `nfd-snp domain convert web`" in line


def test_prepare_accepts_converted_domain_on_ready_node(facts):
    facts.write()
    proc = run_hook("prepare", "begin", CONVERTED, facts.path)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")


@pytest.mark.parametrize(
    "cache, message",
    [
        ("missing", "readiness is unknown: {path} is missing (is nfd-snp.service running?)"),
        ("corrupt", "is not valid JSON"),
        ("wrong-shape", "no sev-snp verdict"),
        (
            "other-schema",
            "written by another version of nfd-snp ('nfd-snp.facts/v2'; this one reads "
            "nfd-snp.facts/v1): no node facts until nfd-snp.service rewrites it",
        ),
        (
            "not-ready",
            "this node cannot run SEV-SNP guests; blocked by: AMD CPU (cpu.vendor); fix: SEV "
            "needs an AMD EPYC CPU: 7002 (Rome) or later; SEV-SNP needs 7003 (Milan) or later; "
            "`nfd-snp check` on the node shows every check",
        ),
        (
            "old-cache",
            "this node cannot run SEV-SNP guests; blocked by: cpu.vendor; `nfd-snp check` on "
            "the node shows every check",
        ),
    ],
)
def test_prepare_fails_closed_when_node_unknown_or_not_ready(facts, cache, message):
    if cache == "corrupt":
        facts.path.write_text("{")
    elif cache == "wrong-shape":
        facts.path.write_text('{"schema": "nfd-snp.facts/v1", "verdicts": []}')
    elif cache == "other-schema":  # an upgrade: the old service's cache, the new hook
        facts.path.write_text('{"schema": "nfd-snp.facts/v2", "facts": {}}')
    elif cache == "not-ready":
        facts.write("intel")
    elif cache == "old-cache":  # written before the cache held titles and fixes
        facts.write("intel")
        data = json.loads(facts.path.read_text())
        del data["blocked_by"]
        facts.path.write_text(json.dumps(data))
    line = _refusal(run_hook("prepare", "begin", CONVERTED, facts.path))
    assert line.endswith(message.format(path=facts.path))


def test_prepare_refuses_stale_facts(facts):
    """Facts from a service that stopped expire like its labels: SNP domains are refused."""
    facts.write()
    old = os.stat(facts.path).st_mtime - 601  # the default validity is the service's ttl, 600 s
    os.utime(facts.path, (old, old))
    line = _refusal(run_hook("prepare", "begin", CONVERTED, facts.path))
    assert "was last refreshed 601 s ago, longer than its 600 s validity" in line
    plain = run_hook("prepare", "begin", PLAIN, facts.path)
    assert (plain.returncode, plain.stderr) == (0, b"")


@pytest.mark.parametrize(
    "attack, message",
    [
        ("fifo", "{path} is not a regular file"),
        ("symlink", "{path} is a symbolic link, not trusted"),
        ("world-writable", "{path} is not trusted: it is writable by group or others"),
        ("other-owner", "{path} is not trusted: it is owned by uid 65534, not root"),
        ("open-directory", "is not trusted: its directory {dir} is writable by group or others"),
        ("infinite-validity", "{path} is not valid JSON"),
        ("huge-validity", "facts cache: valid_for is not 2..604800 seconds"),
        ("future-stamp", "s in the future, more than the 60 s of clock skew allowed"),
    ],
)
def test_prepare_never_trusts_facts_others_could_have_written(facts, tmp_path, attack, message):
    """The hook decides as root: facts anyone but root could have planted are refused."""
    facts.write()
    path = facts.path
    if attack == "fifo":
        path.unlink()
        os.mkfifo(path)
    elif attack == "symlink":
        good = tmp_path / "good.json"
        path.rename(good)
        path.symlink_to(good)
    elif attack == "world-writable":
        path.chmod(0o666)
    elif attack == "other-owner":
        os.chown(path, 65534, 65534)
    elif attack == "open-directory":
        tmp_path.chmod(0o1777)
    elif attack == "infinite-validity":
        path.write_text(path.read_text().replace('"valid_for":600.0', '"valid_for":Infinity'))
    elif attack == "huge-validity":
        path.write_text(path.read_text().replace('"valid_for":600.0', '"valid_for":1e12'))
    elif attack == "future-stamp":
        year = os.stat(path).st_mtime + 365 * 86400
        os.utime(path, (year, year))
    line = _refusal(run_hook("prepare", "begin", CONVERTED, path))
    assert message.format(path=path, dir=tmp_path) in line
    plain = run_hook("prepare", "begin", PLAIN, path)  # everyone else still starts
    assert (plain.returncode, plain.stderr) == (0, b"")


def test_prepare_refuses_invalid_options(facts):
    facts.write()
    bad = CONVERTED.replace(b'vcek="yes"', b'vcek="yes" hostData="tooshort"')
    line = _refusal(run_hook("prepare", "begin", bad, facts.path))
    assert "hostData: decodes to 6 bytes, must be exactly 32" in line


def _with_policy(policy: str) -> bytes:
    """CONVERTED asking for `policy` and converted without node facts, as a sidecar or an
    older node would leave it."""
    return CONVERTED.replace(b'policy="0x00030000"', f'policy="{policy}"'.encode()).replace(
        b"<policy>0x30000</policy>", f"<policy>{policy}</policy>".encode()
    )


HOST_DATA = "A" * 43 + "="  # base64 of 32 bytes


@pytest.mark.parametrize(
    "broken, advice, option",
    [
        # this node (genoa-snp-ready, Linux 6.12) accepts no bit 24
        (
            _with_policy("0x01030000"),
            "convert it with a policy this node accepts: `nfd-snp domain convert vm1 --option "
            "policy=0x00030000`",
            "policy=0x00030000",
        ),
        (
            CONVERTED.replace(b'vcek="yes"', b'vcek="yes" hostData="tooshort"'),
            "give a valid value (base64 of exactly 32 bytes): `nfd-snp domain convert vm1 "
            "--option hostData=VALUE`",
            f"hostData={HOST_DATA}",
        ),
        (MARKED, "run `nfd-snp domain convert vm1`", None),
    ],
    ids=["policy", "option-value", "not-converted"],
)
def test_the_advice_of_a_refusal_fixes_it(facts, broken, advice, option):
    """What a refusal tells the admin to run, run (convert's own rewrite), makes the domain
    start: the advice never sends them back to the same refusal."""
    facts.write()
    line = _refusal(run_hook("prepare", "begin", broken, facts.path))
    assert line.endswith(advice)
    flags = ["--option", option] if option else []
    fixed = subprocess.run(
        [*NFD_SNP, "domain", "rewrite", "--facts", str(facts.path), *flags],
        input=broken,
        capture_output=True,
        timeout=60,
    )
    assert fixed.returncode == 0, fixed.stderr
    started = run_hook("prepare", "begin", fixed.stdout, facts.path)
    assert (started.returncode, started.stderr) == (0, b"")


def test_an_unknown_option_in_the_metadata_is_corrected_there(facts):
    facts.write()
    line = _refusal(run_hook("prepare", "begin", CONVERTED.replace(b"vcek=", b"vcke="), facts.path))
    assert "unknown option 'vcke'" in line
    assert line.endswith("correct <snp:sev-snp> in the domain's <metadata>: `virsh edit vm1`")


def test_no_policy_advice_where_even_the_default_is_refused(facts):
    """A node whose KVM refuses SMT-allowed policies gets no policy to try: the reason
    names the bits it accepts."""
    facts.write()
    data = json.loads(facts.path.read_text())
    data["snp_policy"]["required"] = 1 << 20  # single socket required
    facts.path.write_text(json.dumps(data))
    line = _refusal(run_hook("prepare", "begin", CONVERTED, facts.path))
    assert line.endswith(
        "(bit 20 (single socket) required; accepted bits 0x1bffff, from the rule of Linux 6.12)"
    )


@pytest.mark.parametrize(
    "op, data", [("prepare", CONVERTED), ("restore", MARKED)], ids=["prepare", "restore"]
)
def test_snp_domains_are_handled_without_lxml(op, data, facts):
    """The hot path parses with the standard library: lxml's import alone costs about twice
    the interpreter's start (bench/hook.py)."""
    facts.write()
    proc = run_hook(op, "begin", data, facts.path, "-X", "importtime")
    assert proc.returncode == 0 and proc.python_starts == 1
    imported = proc.stderr.decode()
    assert " nfd_snp.domain.engine" in imported
    for heavy in ("lxml", "click", "libvirt", "nfd_snp.domain.schema"):
        assert f" {heavy}" not in imported, heavy


@pytest.mark.parametrize("op", ["migrate", "restore"])
def test_filter_operations_print_rewritten_xml(op, facts):
    facts.write()
    proc = run_hook(op, "begin", MARKED, facts.path)
    assert proc.returncode == 0 and proc.stderr == b""
    root = xmlio.parse(proc.stdout)
    assert root.find("launchSecurity").get("type") == "sev-snp"
    assert root.find("launchSecurity/cbitpos").text == "51"
    engine.verify(root, None)


def test_restore_of_marked_domain_fails_closed_on_sev_attestation_data(facts):
    facts.write()
    sev = REPO.parent / "shared/fixtures/domains/libvirt-launch-security-sev.xml"
    if not sev.exists():
        pytest.skip("../shared is absent")
    line = _refusal(run_hook("restore", "begin", marked(sev.read_bytes()), facts.path))
    assert "SEV attestation data" in line


@pytest.mark.parametrize("shell", SHELLS)
def test_broken_install_fails_closed_only_for_snp(facts, shell):
    """Without the nfd_snp package (-S: no site-packages) an SNP domain is refused."""
    facts.write()
    proc = run_hook("prepare", "begin", MARKED, facts.path, "-S", shell=shell)
    line = _refusal_of_a_broken_install(proc)
    assert f"cannot load nfd_snp with {sys.executable} (ModuleNotFoundError: " in line
    assert "install the hook again with `nfd-snp install`" in line
    plain = run_hook("prepare", "begin", PLAIN, facts.path, "-S", shell=shell)
    assert (plain.returncode, plain.stderr) == (0, b"")


@pytest.mark.parametrize("shell", SHELLS)
def test_missing_interpreter_fails_closed_only_for_snp(facts, tmp_path, shell):
    """A hook whose Python is gone (a removed virtualenv) refuses SNP domains, names the fix."""
    need(shutil.which(shell) is not None, f"{shell} is not installed")
    hook = install_hook(tmp_path, str(tmp_path / "gone" / "python3"))
    hook.write_text(hook.read_text().replace(str(tmp_path / "python"), "/nonexistent/python3"))
    env = {"PATH": os.environ.get("PATH", ""), "NFD_SNP_FACTS_CACHE": str(facts.path)}
    for data, expected in ((MARKED, 1), (PLAIN, 0)):
        proc = subprocess.run(
            [shell, str(hook), "vm1", "prepare", "begin", "-"],
            input=data,
            capture_output=True,
            env=env,
            timeout=60,
        )
        assert proc.returncode == expected
        if expected:
            line = _refusal_of_a_broken_install(proc)
            assert "cannot run /nonexistent/python3, the Python this hook was installed" in line
            assert "`nfd-snp install`" in line
        else:
            assert proc.stderr == b""


def _refusal_of_a_broken_install(proc) -> str:
    assert proc.returncode == 1 and proc.stdout == b""
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nfd-snp: cannot ")
    assert "refusing the SEV-SNP domain" in lines[0]
    return lines[0]


def test_huge_unmarked_domain_is_read_whole_and_passes(facts):
    data = PLAIN.replace(b"</devices>", b"<!--" + b"x" * (20 * 1024 * 1024) + b"--></devices>")
    proc = run_hook("prepare", "begin", data, facts.path)
    assert (proc.returncode, proc.stderr) == (0, b"")


# -- causes of a failed launch, refused at prepare with the reason (troubleshooting.md) ----------


@pytest.mark.parametrize(
    "policy, message",
    [
        # genoa-snp-ready runs Linux 6.12: no KVM before 6.19 accepts bits above 20
        ("0x01030000", "bit 24 (ciphertext hiding) not accepted"),
        ("0x00830000", "bit 23 (RAPL disabled) not accepted"),
        ("0x00070000", "bit 18 (migration agent) is refused by KVM"),
        ("0x00030138", "requires SNP firmware ABI 1.56, but this node runs 1.55"),
    ],
)
@pytest.mark.parametrize("op", ["prepare", "restore"])
def test_policy_this_node_refuses_is_refused_before_launch(facts, policy, message, op):
    facts.write()
    line = _refusal(run_hook(op, "begin", _with_policy(policy), facts.path))
    assert message in line
    # the accepted policy of the same domain starts
    ok = run_hook(op, "begin", _with_policy("0x00030000"), facts.path)
    assert ok.returncode == 0, ok.stderr


def test_policy_bits_come_from_the_kernel_where_it_publishes_them(facts, snapshot):
    # Linux 6.19 with KVM_X86_SNP_POLICY_BITS: bit 20 and ciphertext hiding (bit 24) accepted
    root = snapshot(
        base="genoa-snp-ready",
        files={"proc/sys/kernel/osrelease": "6.19.2\n"},
        capture={"kvm_snp_policy_bits": 0x1FBFFFF},
    )
    facts.path.write_bytes(facts_cache.encode(evaluate(probe_root(root))))
    proc = run_hook("prepare", "begin", _with_policy("0x01130000"), facts.path)
    assert proc.returncode == 0, proc.stderr
    line = _refusal(run_hook("prepare", "begin", _with_policy("0x02030000"), facts.path))
    assert "bit 25 (page-swap disable) not accepted" in line
    assert "from KVM_X86_SNP_POLICY_BITS" in line


@pytest.mark.parametrize(
    "old, new",
    [
        (b"<loader type='rom' stateless='yes'>", b"<loader type='pflash' readonly='yes'>"),
        (b"</os>", b"<nvram>/var/lib/libvirt/qemu/nvram/vm1_VARS.fd</nvram></os>"),
    ],
    ids=["pflash", "nvram"],
)
def test_flash_firmware_is_refused_at_prepare(facts, old, new):
    facts.write()
    assert old in CONVERTED
    line = _refusal(run_hook("prepare", "begin", CONVERTED.replace(old, new), facts.path))
    assert "flash firmware" in line or "keeps no NVRAM" in line
    assert "run `nfd-snp domain convert vm1`" in line


def _hook_with_misc_cgroup(capacity, current, data, facts_path):
    """The real hook in a mount namespace whose /sys/fs/cgroup holds these misc files."""
    need(shutil.which("unshare") is not None and os.geteuid() == 0, "needs root and unshare")
    env = {"PATH": os.environ.get("PATH", ""), "NFD_SNP_FACTS_CACHE": str(facts_path)}
    script = (
        "mount -t tmpfs tmpfs /sys/fs/cgroup && "
        f"printf '{capacity}' > /sys/fs/cgroup/misc.capacity && "
        f"printf '{current}' > /sys/fs/cgroup/misc.current && "
        f'exec sh "{hook_for()}" vm1 prepare begin -'
    )
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", script], input=data, capture_output=True, env=env, timeout=60
    )


def test_prepare_refuses_when_every_es_snp_asid_is_in_use(facts):
    facts.write()
    full = _hook_with_misc_cgroup(
        "sev 497\\nsev_es 509\\n", "sev 0\\nsev_es 509\\n", CONVERTED, facts.path
    )
    assert "every SEV-ES/SNP ASID of this node is in use (509 of 509" in _refusal(full)
    free = _hook_with_misc_cgroup(
        "sev 497\\nsev_es 509\\n", "sev 0\\nsev_es 508\\n", CONVERTED, facts.path
    )
    assert free.returncode == 0, free.stderr
    # a domain that did not ask for SNP is never refused for it
    plain = _hook_with_misc_cgroup("sev_es 1\\n", "sev_es 1\\n", PLAIN, facts.path)
    assert plain.returncode == 0, plain.stderr


def test_refusal_is_one_line_whatever_the_domain_name(facts):
    facts.write()
    proc = run_hook("prepare", "begin", MARKED, facts.path, name="web\nnfd-snp: forged\x1b[2J")
    line = _refusal(proc)  # exactly one line
    assert "'web\\nnfd-snp: forged\\x1b[2J'" in line
