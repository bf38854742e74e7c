"""libvirt.hook: a libvirt daemon that started before nfd-snp's hook was installed does not
run it, and `check` says to restart it.

Snapshots give the process table as procfs writes it (read through the root's proc
directory, as on a node); the live tests run real processes named like the daemons in
a host root whose proc entries are the machine's own, capture it, and replay the capture.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from nfd_snp import hook_script, paths
from nfd_snp.checks import Guest, Readiness, Status, evaluate
from nfd_snp.cli import cli
from nfd_snp.host import LiveHost
from nfd_snp.sources import hook_loaded
from tests.conftest import REPO, SAMPLES, cli_runner, probe_root

HOOK = paths.LIBVIRT_QEMU_HOOK
BOOT = 1_790_000_000  # /proc/stat btime
TICKS = os.sysconf("SC_CLK_TCK")  # USER_HZ: 100 on every Linux x86 build


def proc_stat(pid: int, name: str, started: float, state: str = "S") -> str:
    """/proc/<pid>/stat of a process started `started` seconds after boot (proc(5))."""
    fields = [state, "1", str(pid), str(pid)] + ["0"] * 15 + [str(round(started * TICKS))]
    fields += ["1000", "100"] + ["0"] * 28
    return f"{pid} ({name}) {' '.join(fields)}\n"


def proc_status(name: str, uid: int) -> str:
    return f"Name:\t{name}\nUmask:\t0077\nState:\tS (sleeping)\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n"


@pytest.fixture
def node(snapshot):
    """A genoa-snp-ready snapshot with the hook changed at BOOT + `changed` and daemons
    (pid, name, seconds after boot, uid)."""

    def build(
        changed=600.0, daemons=(), mode=0o100755, files=None, stat=None, base="genoa-snp-ready"
    ):
        capture = {
            "stat": stat if stat is not None else {HOOK: {"mode": mode, "ctime": BOOT + changed}}
        }
        tree = {"proc/stat": f"cpu  1 2 3\nbtime {BOOT}\nprocesses 42\n"}
        for pid, name, started, uid in daemons:
            tree[f"proc/{pid}/stat"] = proc_stat(pid, name, started)
            tree[f"proc/{pid}/status"] = proc_status(name, uid)
        tree.update(files or {})
        tree = {rel: text for rel, text in tree.items() if text is not None}  # None: absent
        return snapshot(base=base, files=tree, capture=capture)

    return build


def hook_result(root):
    report = evaluate(probe_root(root))
    (result,) = [r for r in report.results if r.check.name == "libvirt.hook"]
    return report, result


def test_a_daemon_started_before_the_hook_must_restart(node):
    report, result = hook_result(node(daemons=[(812, "virtqemud", 300.0, 0)]))
    assert result.outcome.status is Status.WARN
    assert result.outcome.reason.code == "hook-not-loaded"
    assert "virtqemud (pid 812) started" in result.outcome.detail
    assert "systemctl try-restart virtqemud libvirtd" in result.fix
    # The hook guards SEV-SNP guests; it does not make them run: still ready, with a warning.
    snp = report.verdict(Guest.SEV_SNP)
    assert snp.ready is Readiness.YES and "libvirt.hook" in snp.warnings
    assert "libvirt.hook" not in report.verdict(Guest.SEV).warnings


def test_check_tells_the_admin_to_restart_and_still_exits_0(node):
    root = node(daemons=[(812, "virtqemud", 300.0, 0)])
    result = cli_runner().invoke(cli, ["check", "--host-root", str(root)])
    assert result.exit_code == 0, result.output
    assert "systemctl try-restart virtqemud" in " ".join(result.stdout.split())
    assert "(warnings: " in result.stdout and "libvirt.hook" in result.stdout


@pytest.mark.parametrize(
    "daemons, status, fragment",
    [
        ([(900, "virtqemud", 900.0, 0)], Status.PASS, "virtqemud (pid 900) started"),
        ([(77, "libvirtd", 599.0, 0)], Status.WARN, "libvirtd (pid 77)"),
        ([(900, "virtqemud", 900.0, 0), (77, "libvirtd", 30.0, 0)], Status.WARN, "libvirtd"),
        ([], Status.PASS, "no libvirt daemon runs"),
        # a process may call itself virtqemud; only root's daemons read /etc/libvirt/hooks
        ([(66, "virtqemud", 30.0, 1000)], Status.PASS, "no libvirt daemon runs"),
        ([(66, "virtqemud-x", 30.0, 0)], Status.PASS, "no libvirt daemon runs"),
    ],
    ids=["after", "before", "one-of-two-before", "none", "not-root", "other-name"],
)
def test_daemons(node, daemons, status, fragment):
    _, result = hook_result(node(daemons=daemons))
    assert result.outcome.status is status
    assert fragment in result.outcome.detail


def test_a_daemon_that_exited_but_is_not_reaped_runs_nothing(node):
    """A restarted libvirtd leaves a zombie until its parent reaps it: not a daemon."""
    zombie = {"proc/77/stat": proc_stat(77, "libvirtd", 30.0, state="Z")}
    daemons = [(77, "libvirtd", 30.0, 0), (900, "libvirtd", 900.0, 0)]
    _, result = hook_result(node(daemons=daemons, files=zombie))
    assert result.outcome.status is Status.PASS
    assert "pid 77" not in result.outcome.detail and "libvirtd (pid 900)" in result.outcome.detail


def test_not_installed_is_skipped_without_reading_processes(snapshot):
    """KubeVirt nodes and hosts without nfd-snp-libvirt: nothing to load, no process read
    (an unreadable process table would make the check UNKNOWN, not SKIP)."""
    root = snapshot(base="genoa-snp-ready", files={"proc/stat/x": ""})  # stat: a directory
    _, result = hook_result(root)
    assert result.outcome.status is Status.SKIP


def test_a_hook_libvirt_cannot_run(node):
    _, result = hook_result(node(mode=0o100644, daemons=[(900, "virtqemud", 900.0, 0)]))
    assert result.outcome.status is Status.WARN
    assert result.outcome.reason.code == "hook-not-executable"


@pytest.mark.parametrize(
    "build, reason",
    [
        (dict(files={"proc/stat": None}), "processes-unreadable"),
        (dict(files={"proc/stat": "cpu  1 2 3\n"}), "processes-unreadable"),  # no btime
        (dict(stat={}, files={HOOK: "#!/bin/sh\n"}), "not-in-snapshot"),
    ],
    ids=["no-proc-stat", "no-btime", "hook-without-its-stat"],
)
def test_unknown_when_nothing_decides(node, build, reason):
    _, result = hook_result(node(**build))
    assert result.outcome.status is Status.UNKNOWN
    assert result.outcome.reason.code == reason


def test_hostile_process_files_neither_block_nor_crash(node, tmp_path):
    root = node(
        daemons=[(900, "virtqemud", 900.0, 0)],
        files={
            "proc/13/stat": "13 (virtqemud) garbage\n",
            "proc/13/status": proc_status("virtqemud", 0),
            "proc/14/stat": proc_stat(14, "libvirtd", 10.0) + "x" * 8192,  # beyond the bound
            "proc/14/status": proc_status("libvirtd", 0),
        },
    )
    os.mkfifo(root / "proc" / "15")  # not a process directory
    (root / "proc" / "16").mkdir()
    os.mkfifo(root / "proc" / "16" / "stat")  # would block an open() without O_NONBLOCK
    code = (
        "import sys; from tests.conftest import report_of; "
        f"r = report_of({str(root)!r}); "
        "print([x.outcome.detail for x in r.results if x.check.name == 'libvirt.hook'][0])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert out.stdout.startswith("virtqemud (pid 900) started"), out.stdout


def test_a_fifo_for_proc_stat_is_refused(node):
    root = node(daemons=[(900, "virtqemud", 900.0, 0)], files={"proc/stat": None})
    os.mkfifo(root / "proc" / "stat")
    _, result = hook_result(root)
    assert result.outcome.status is Status.UNKNOWN


@pytest.mark.parametrize(
    "entry", [{"mode": "755", "ctime": 1.0}, {"mode": 493, "ctime": float("nan")}, [1, 2]]
)
def test_a_malformed_stat_entry_is_an_input_error(node, entry):
    root = node(stat={HOOK: entry})
    result = cli_runner().invoke(cli, ["check", "--host-root", str(root)])
    assert result.exit_code == 2 and "stat[" in result.stderr


def test_capture_keeps_only_the_boot_time_of_proc_stat():
    data = b"cpu  1 2 3 4\ncpu0 1 2 3 4\nintr 12 0 0\nbtime 1790000000\nprocesses 9\n"
    assert hook_loaded.btime_line(data) == b"btime 1790000000\n"


# -- live: real processes, captured and replayed ----------------------------------------------


@pytest.fixture
def bind():
    """bind(source, target): a bind mount, undone after the test. A live host root resolves
    absolute links at its own root (as /host does in a container), so the machine's proc
    entries enter a test root as mounts, not as links."""
    mounted = []

    def mount(source, target):
        if os.path.isdir(source):
            os.makedirs(target, exist_ok=True)
        else:
            open(target, "a").close()
        subprocess.run(["mount", "--bind", str(source), str(target)], check=True)
        mounted.append(target)

    yield mount
    for target in reversed(mounted):
        subprocess.run(["umount", "-l", str(target)], check=False)


def _live_root(tmp_path, pids, bind):
    """A host root whose hook is a real file and whose proc shows these processes only."""
    root = tmp_path / "host"
    (root / "proc").mkdir(parents=True)
    bind("/proc/stat", root / "proc" / "stat")
    for pid in pids:
        bind(f"/proc/{pid}", root / "proc" / str(pid))
    return root


def _install_hook(root):
    hook = root / HOOK
    hook.parent.mkdir(parents=True, exist_ok=True)
    hook.write_text("#!/bin/sh\nexit 0\n")
    hook.chmod(0o755)


def _daemon(tmp_path, name):
    """A process whose name is `name`: a copy of sleep (the name is the executable's)."""
    exe = tmp_path / name
    if not exe.exists():
        shutil.copy(shutil.which("sleep"), exe)
    return subprocess.Popen([str(exe), "60"])


def _outcome(root):
    report = evaluate(probe_root(root))
    return next(r.outcome for r in report.results if r.check.name == "libvirt.hook")


@pytest.mark.system  # a stand-in libvirt daemon process
def test_live_restart_hint_then_captured_and_replayed(tmp_path, bind):
    if os.geteuid() != 0:
        pytest.skip("the daemons libvirt runs are root's; so must be these")
    old = _daemon(tmp_path, "virtqemud")
    try:
        root = _live_root(tmp_path, [old.pid], bind)
        _install_hook(root)  # after the daemon started: it has not loaded it
        live = _outcome(root)
        assert live.status is Status.WARN and f"virtqemud (pid {old.pid})" in live.detail
        out = tmp_path / "capture"
        result = cli_runner().invoke(
            cli, ["capture", "--host-root", str(root), "--libvirt", "off", str(out)]
        )
        assert result.exit_code == 0, result.output
    finally:
        old.kill()
        old.wait()
    # the capture holds what the source parses, and no more
    assert (out / "proc" / "stat").read_text().startswith("btime ")
    assert (out / "proc" / str(old.pid) / "stat").exists()
    assert (out / "proc" / str(old.pid) / "status").exists()
    capture = json.loads((out / paths.CAPTURE_FILE).read_text())
    assert capture["stat"][HOOK]["mode"] & 0o777 == 0o755
    assert _outcome(out) == live  # replayed after the process is gone: the same answer


@pytest.mark.system  # a stand-in libvirt daemon process
def test_live_daemon_started_after_the_hook_has_loaded_it(tmp_path, bind):
    if os.geteuid() != 0:
        pytest.skip("the daemons libvirt runs are root's; so must be these")
    root = _live_root(tmp_path, [], bind)
    _install_hook(root)
    time.sleep(1.1)  # /proc/stat's btime has a one-second resolution
    new = _daemon(tmp_path, "libvirtd")
    try:
        bind(f"/proc/{new.pid}", root / "proc" / str(new.pid))
        outcome = _outcome(root)
    finally:
        new.kill()
        new.wait()
    assert outcome.status is Status.PASS
    assert f"libvirtd (pid {new.pid}) started" in outcome.detail


def test_sample_nodes_have_no_hook():
    for sample in ("genoa-snp-ready", "intel"):
        _, result = hook_result(SAMPLES / sample)
        assert result.outcome.status is Status.SKIP


# -- wherever the hook is installed, whatever the CPU ------------------------------------------


@pytest.mark.parametrize("base", ["intel", "milan-snp-off", "rome-sev-only"])
def test_checked_on_hosts_without_snp(node, base):
    """A domain that asks for SEV-SNP relies on the hook on every host: on one without SNP
    too, where without the hook it would start as a plain VM."""
    report, result = hook_result(node(daemons=[(812, "libvirtd", 300.0, 0)], base=base))
    assert result.outcome.status is Status.WARN
    assert result.outcome.reason.code == "hook-not-loaded"
    assert report.verdict(Guest.SEV_SNP).ready is Readiness.NO


def _alert_fires(report, alert: str) -> bool:
    """Whether the example rule `alert` (a `series == 1` comparison) holds for `report`."""
    yaml = pytest.importorskip("yaml")
    pytest.importorskip("prometheus_client")
    from nfd_snp import metrics
    from tests.test_metrics import samples_of

    groups = yaml.safe_load((REPO / "deploy/prometheus/nfd-snp-rules.yaml").read_text())
    (rule,) = [r for g in groups["groups"] for r in g["rules"] if r["alert"] == alert]
    name, labels = re.fullmatch(r"(\w+)\{(.*)\} == 1", rule["expr"].strip()).groups()
    wanted = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', labels)))
    return samples_of(metrics.render(report, BOOT + 900.0)).get((name, wanted)) == 1


@pytest.mark.parametrize("base", ["intel", "genoa-snp-ready"])
def test_the_hook_alert_fires_whatever_the_cpu(node, base):
    stale, _ = hook_result(node(daemons=[(812, "virtqemud", 300.0, 0)], base=base))
    assert _alert_fires(stale, "NfdSnpHookNotLoaded")
    loaded, _ = hook_result(node(daemons=[(812, "virtqemud", 900.0, 0)], base=base))
    assert not _alert_fires(loaded, "NfdSnpHookNotLoaded")


# -- the hook's Python ---------------------------------------------------------------------------


def _front(python="/opt/nfd-snp/bin/python3"):
    return hook_script.render(python)


@pytest.mark.parametrize("base", ["intel", "genoa-snp-ready"])
def test_a_hook_whose_python_cannot_load_nfd_snp(node, base):
    """Every SEV-SNP domain would be refused: a warning, and the alert fires."""
    root = node(
        daemons=[(900, "virtqemud", 900.0, 0)],
        files={HOOK: _front("/usr/bin/python3")},
        base=base,
    )
    _set_capture(root, hook_import={"/usr/bin/python3": "No module named 'nfd_snp'"})
    report, result = hook_result(root)
    assert result.outcome.status is Status.WARN
    assert result.outcome.reason.code == "hook-cannot-load"
    assert "its Python /usr/bin/python3 cannot import nfd_snp (No module named" in (
        result.outcome.detail
    )
    assert "run `nfd-snp install` from the Python environment that has nfd-snp" in result.fix
    assert _alert_fires(report, "NfdSnpHookNotLoaded")


def test_a_hook_whose_python_loads_nfd_snp(node):
    root = node(daemons=[(900, "virtqemud", 900.0, 0)], files={HOOK: _front()})
    _set_capture(root, hook_import={"/opt/nfd-snp/bin/python3": None})
    _, result = hook_result(root)
    assert result.outcome.status is Status.PASS
    assert result.outcome.detail.endswith("; its Python /opt/nfd-snp/bin/python3 loads nfd_snp")


@pytest.mark.parametrize(
    "text, detail",
    [
        (
            _front(),
            "whether its Python /opt/nfd-snp/bin/python3 loads nfd_snp is unknown (not "
            "in the snapshot)",
        ),
        # a hook from before the shell front: a Python script
        (
            "#!/usr/libexec/platform-python -I\nimport sys\n",
            "whether its Python "
            "/usr/libexec/platform-python loads nfd_snp is unknown (not in the snapshot)",
        ),
        ("#!/bin/sh\nexit 0\n", "the hook names no Python (not nfd-snp's hook script)"),
    ],
    ids=["front", "python-script", "other-script"],
)
def test_the_hook_python_unknown(node, text, detail):
    _, result = hook_result(node(daemons=[(900, "virtqemud", 900.0, 0)], files={HOOK: text}))
    assert result.outcome.status is Status.PASS
    assert result.outcome.detail.endswith(detail)


def _set_capture(root, **entries):
    path = root / paths.CAPTURE_FILE
    capture = json.loads(path.read_text())
    capture.update(entries)
    path.write_text(json.dumps(capture))


def test_a_malformed_hook_import_entry_is_an_input_error(node):
    root = node(files={HOOK: _front()})
    _set_capture(root, hook_import={"/opt/nfd-snp/bin/python3": 3})
    result = cli_runner().invoke(cli, ["check", "--host-root", str(root)])
    assert result.exit_code == 2 and "hook_import" in result.stderr


def test_live_interpreter_run_as_the_hook_runs_it_and_recorded():
    """The Python the tests run loads nfd_snp; the system's, without it, cannot; a path that
    is not there cannot run. A capture records each answer for its replay."""
    host = LiveHost("/", record=True)
    assert host.hook_import(sys.executable) is None
    missing = host.hook_import("/nonexistent/python3")
    assert missing == "cannot run it: No such file or directory"
    assert host.recording.hook_imports == {sys.executable: None, "/nonexistent/python3": missing}
    bare = "/usr/bin/python3"
    if os.path.exists(bare) and subprocess.run([bare, "-I", "-c", "import nfd_snp"]).returncode:
        assert "No module named 'nfd_snp'" in host.hook_import(bare)


def test_live_root_other_than_slash_does_not_run_the_hook_python(tmp_path, bind):
    root = _live_root(tmp_path, [], bind)
    hook = root / HOOK
    hook.parent.mkdir(parents=True)
    hook.write_text(_front(sys.executable))
    hook.chmod(0o755)
    outcome = _outcome(root)
    assert outcome.status is Status.PASS
    assert f"not run under host root {root}, only on the host itself" in outcome.detail
