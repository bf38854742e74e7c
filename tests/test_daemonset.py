"""deploy/node: the DaemonSet for nodes without the RPM, and the image it runs.

Containers cannot run here, so the container's contract is tested instead: the DaemonSet's
command runs from a stand-in for its image (Debian's python3 with Debian's click, lxml and
grpcio, and nfd-snp installed from a wheel built from exactly what the Containerfile
copies), in its own mount namespace whose root is read-only, with each volume the DaemonSet
declares bind-mounted from a sample host at its mountPath. The host's feature file and facts
cache must appear, carry their expiry, and lose the SNP label when the node loses SNP.

The one test-only addition is the capture file of the sample host, mounted at
/host/nfd-snp-capture.json: the hardware registers a real node answers through /dev enter
through it, replayed by the same parsing code (DESIGN.md, "Host root").
"""

from __future__ import annotations

import configparser
import copy
import datetime
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nfd_snp import __version__, paths
from nfd_snp.config import DEFAULT_OUTPUT, Config
from nfd_snp.domain import node as node_facts
from nfd_snp.errors import DomainError
from tests import nfdlocal
from tests.conftest import REPO, SAMPLES, need

yaml = pytest.importorskip("yaml")
NODE = REPO / "deploy" / "node"
FEATURES_DIR = os.path.dirname(DEFAULT_OUTPUT)
FACTS = Config().facts_cache
SNP_LABEL = "sev-snp.node.kubevirt.io/enabled"
# Host paths the probe reads only where a host libvirt runs; a KubeVirt node has none (its
# VMs' virt-launcher pods bring their own libvirt, QEMU and firmware, and no nfd-snp hook),
# and the DaemonSet does not show them to the probe.
LIBVIRT_ONLY = (
    *paths.LIBVIRT_SOCKETS_RO,
    *paths.LIBVIRT_SOCKETS_RW,
    *paths.FIRMWARE_DESCRIPTOR_DIRS,
    paths.LIBVIRT_QEMU_HOOK,
)


@pytest.fixture(scope="module")
def daemonset():
    return yaml.safe_load((NODE / "daemonset.yaml").read_text())


def container(ds):
    (only,) = ds["spec"]["template"]["spec"]["containers"]
    return only


def mounts(ds):
    """(hostPath, type, mountPath, readOnly) for each volume mount of the container."""
    volumes = {v["name"]: v["hostPath"] for v in ds["spec"]["template"]["spec"]["volumes"]}
    return [
        (
            volumes[m["name"]]["path"],
            volumes[m["name"]].get("type", ""),
            m["mountPath"],
            m.get("readOnly", False),
        )
        for m in container(ds)["volumeMounts"]
    ]


# -- what the DaemonSet declares ------------------------------------------------------------


def test_it_runs_the_node_service_on_the_host_root(daemonset):
    c = container(daemonset)
    assert c["command"] == ["nfd-snp"]
    assert c["args"][:3] == ["run", "--host-root", "/host"]
    assert c["image"].endswith(f"/nfd-snp:{__version__}")


def test_every_host_path_the_probe_reads_is_mounted_read_only(daemonset):
    host_mounts = [(m[2], m[3]) for m in mounts(daemonset) if m[2].startswith("/host/")]
    assert all(read_only for _path, read_only in host_mounts)
    visible = [path for path, _ro in host_mounts]
    wanted = [
        value
        for name, value in vars(paths).items()
        if name.isupper() and isinstance(value, str) and "/" in value and value not in LIBVIRT_ONLY
    ]
    wanted += [d for d in paths.MISC_CGROUP_DIRS]
    for rel in wanted:
        assert any(f"/host/{rel}".startswith(p + "/") for p in visible), rel
    for rel in LIBVIRT_ONLY:
        assert not any(f"/host/{rel}".startswith(p + "/") for p in visible), rel


def test_it_writes_only_the_feature_file_the_facts_cache_and_the_hook_socket(daemonset):
    writable = {(h, m) for h, _t, m, ro in mounts(daemonset) if not ro}
    plugins = "/var/run/kubevirt/plugins"  # where virt-handler dials node hooks
    assert writable == {(FEATURES_DIR, FEATURES_DIR), (os.path.dirname(FACTS),) * 2, (plugins,) * 2}
    args = container(daemonset)["args"]
    assert args[args.index("--node-hook-socket") + 1].startswith(plugins + "/")
    assert container(daemonset)["securityContext"]["readOnlyRootFilesystem"] is True


def test_it_schedules_on_amd_nodes_only_and_needs_no_api_access(daemonset):
    spec = daemonset["spec"]["template"]["spec"]
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    (term,) = terms["nodeSelectorTerms"]
    assert {
        "key": "feature.node.kubernetes.io/cpu-model.vendor_id",
        "operator": "In",
        "values": ["AMD"],
    } in term["matchExpressions"]
    assert {"operator": "Exists"} in spec["tolerations"]
    assert spec["automountServiceAccountToken"] is False and "serviceAccountName" not in spec
    kinds = [doc["kind"] for p in NODE.glob("*.yaml") for doc in yaml.safe_load_all(p.read_text())]
    assert kinds == ["DaemonSet"]  # no namespace, no RBAC


# -- the image ------------------------------------------------------------------------------


def containerfile():
    """(instruction, argument) pairs of the Containerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (NODE / "Containerfile").read_text())
    steps = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            instruction, _, argument = line.strip().partition(" ")
            steps.append((instruction.upper(), argument.strip()))
    return steps


def test_containerfile_entrypoint_is_the_daemonset_command(daemonset):
    steps = dict(containerfile())
    assert json.loads(steps["ENTRYPOINT"]) == container(daemonset)["command"]
    assert json.loads(steps["CMD"]) == container(daemonset)["args"]


def test_containerfile_installs_the_runtime_dependencies():
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    requires = setup["options"]["install_requires"].split()
    names = {re.split(r"[<>=!~ ]", r)[0].lower() for r in requires if r.strip()}
    run = " ".join(arg for instr, arg in containerfile() if instr == "RUN")
    # libvirt-python only talks to a host libvirt, which the DaemonSet does not show.
    for name in names - {"libvirt-python"}:
        assert f"python3-{name}" in run.split(), name


def copied_sources():
    sources = []
    for instr, arg in containerfile():
        if instr == "COPY":
            sources += arg.split()[:-1]
    return sources


def test_containerfile_copies_what_exists():
    for source in copied_sources():
        assert (REPO / source).exists(), source


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """A stand-in for the image: Debian's python3 with Debian's click and lxml, and
    nfd-snp from a wheel built from exactly what the Containerfile copies."""
    need(os.geteuid() == 0, "mount namespaces need root")
    need(shutil.which("unshare") is not None, "unshare (util-linux) is not installed")
    system_python = "/usr/bin/python3"
    probe = subprocess.run([system_python, "-c", "import click, lxml, grpc"])
    need(probe.returncode == 0, "Debian's python3-click, -lxml and -grpcio")
    base = tmp_path_factory.mktemp("image")
    context = base / "context"
    context.mkdir()
    for source in copied_sources():
        src = REPO / source
        if src.is_dir():
            shutil.copytree(src, context / source, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, context / source)
    wheels = base / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(context),
        ],
        check=True,
    )
    env = base / "usr-local"
    subprocess.run([system_python, "-m", "venv", "--system-site-packages", str(env)], check=True)
    subprocess.run(
        [
            str(env / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            *map(str, wheels.glob("*.whl")),
        ],
        check=True,
    )
    return env


# -- the pod, as the DaemonSet declares it -------------------------------------------------


def kubevirt_node(root: Path, sample: str = "genoa-snp-ready") -> Path:
    """A host tree: a bundled sample as a KubeVirt node (no host libvirt), nothing written."""
    shutil.copytree(SAMPLES / sample, root, symlinks=True)
    capture = root / paths.CAPTURE_FILE
    data = json.loads(capture.read_text())
    data["domcaps"] = None  # libvirt runs in each VM's pod, not on the host
    capture.write_text(json.dumps(data))
    (root / "lib/firmware").mkdir(parents=True, exist_ok=True)  # every node has one
    return root


def pod_script(ds, host: Path, image: Path, rootfs: Path) -> str:
    """A shell script for `unshare -m` that builds the pod's filesystem and execs its command."""
    q = shlex.quote
    lines = ["set -eu", f"R={q(str(rootfs))}", 'mount -t tmpfs -o mode=0755 pod-root "$R"']
    # The image: the system's /usr (Debian's python3 and its packages) and the image's venv.
    lines += ['mkdir -p "$R/usr" "$R/etc" "$R/tmp" "$R/proc" "$R/dev"']
    lines += ['mount --rbind /usr "$R/usr"', 'mount -o remount,bind,ro "$R/usr"']
    for link in ("bin", "sbin", "lib", "lib64"):
        if os.path.islink(f"/{link}"):
            lines.append(f'ln -s {q(os.readlink(f"/{link}"))} "$R/{link}"')
    lines += [f'mkdir -p "$R"{q(str(image))}', f'mount --bind {q(str(image))} "$R"{q(str(image))}']
    lines.append(f'mount -o remount,bind,ro "$R"{q(str(image))}')
    for dev in ("null", "zero", "urandom"):
        lines += [f'touch "$R/dev/{dev}"', f'mount --bind /dev/{dev} "$R/dev/{dev}"']
    lines.append('mount -t proc proc "$R/proc"')
    # The volumes: hostPath (created by the kubelet for DirectoryOrCreate) at mountPath.
    for host_path, kind, mount_path, read_only in mounts(ds):
        source = host / host_path.lstrip("/")
        if kind == "DirectoryOrCreate":
            source.mkdir(parents=True, exist_ok=True)
        assert source.is_dir(), f"{host_path} ({kind}) is missing on the sample host"
        target = f'"$R"{q(mount_path)}'
        lines += [f"mkdir -p {target}", f"mount --rbind {q(str(source))} {target}"]
        if read_only:
            lines.append(f"mount -o remount,bind,ro {target}")
    # Test-only: the sample's captured registers, replayed by the same parsing code.
    capture = host / paths.CAPTURE_FILE
    lines += [
        f'touch "$R/host/{paths.CAPTURE_FILE}"',
        f'mount --bind -o ro {q(str(capture))} "$R/host/{paths.CAPTURE_FILE}"',
    ]
    lines.append('mount -o remount,ro "$R"')  # readOnlyRootFilesystem
    c = container(ds)
    env = f"PATH={image}/bin:/usr/local/bin:/usr/bin:/bin HOME=/ LANG=C.UTF-8"
    command = " ".join(q(a) for a in c["command"] + c["args"])
    lines.append(f'exec chroot "$R" /usr/bin/env -i {env} {command}')
    return "\n".join(lines)


def start_pod(ds, host, image, tmp_path):
    rootfs = tmp_path / f"pod-root-{len(list(tmp_path.iterdir()))}"
    rootfs.mkdir()
    script = pod_script(ds, host, image, rootfs)
    return subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "bash", "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(condition, proc, seconds=60.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    _out, err = proc.communicate()
    pytest.fail(f"the pod did not get there (exit {proc.returncode}): {err[-1500:]}")


def stop_pod(proc) -> str:
    proc.send_signal(signal.SIGTERM)  # what the kubelet sends first
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return err


def tree(root: Path) -> set:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _utc(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)


def _expiry(text: str) -> datetime.datetime:
    stamp = re.search(r"^# \+expiry-time=(\S+)$", text, re.M).group(1)
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def node_hook_answer(sock: Path) -> str:
    """The status of an SNP VMI's PreVMStart, asked as virt-handler asks it."""
    grpc = pytest.importorskip("grpc")
    pytest.importorskip("grpc_tools")
    from tests.plugin_client import generated, node_hook_stub, request

    pb2, _ = generated()
    vmi = {
        "metadata": {"name": "vm", "uid": "u"},
        "spec": {"domain": {"launchSecurity": {"snp": {}}}},
    }
    channel, stub = node_hook_stub(str(sock))
    try:
        stub.ExecuteNodeHook(request(pb2, "PreVMStart", json.dumps(vmi).encode()), timeout=10)
        return "OK"
    except grpc.RpcError as exc:
        return f"{exc.code().name}: {exc.details()}"
    finally:
        channel.close()


@pytest.mark.system  # a wheel built and the node service run in a mount namespace
def test_pod_publishes_labels_that_expire_and_drops_them_when_snp_goes(daemonset, image, tmp_path):
    host = kubevirt_node(tmp_path / "host")
    feature_file = host / DEFAULT_OUTPUT.lstrip("/")
    facts_file = host / FACTS.lstrip("/")
    hook = host / "var/run/kubevirt/plugins/nfd-snp.sock"
    before = tree(host)

    # 1. The pod starts: the feature file and the facts cache appear on the host, and the
    #    node hook answers on the host's socket, where virt-handler dials it.
    started = time.time()
    pod = start_pod(daemonset, host, image, tmp_path)
    wait_for(lambda: feature_file.exists() and facts_file.exists() and hook.exists(), pod)
    assert node_hook_answer(hook) == "OK"
    stop_pod(pod)
    # The only new files (the kubelet made the DirectoryOrCreate directories) are these, and
    # the service's lock beside each (.NAME.lock: one service per output).
    new_files = {p for p in tree(host) - before if (host / p).is_file()}
    written = [feature_file.relative_to(host), facts_file.relative_to(host)]
    assert new_files == {
        *(str(p) for p in written),
        *(str(p.parent / f".{p.name}.lock") for p in written),
    }, "the pod wrote outside its two writable volumes"
    text = feature_file.read_text()
    labels, features = nfdlocal.parse_file(text, _utc(time.time()))
    assert labels[SNP_LABEL] == "true" and labels["sev-snp.node.kubevirt.io/api-version"]
    assert "sev-es.node.kubevirt.io/asids" in features
    facts = node_facts.load(str(facts_file))
    assert facts.snp_ready == "yes" and facts.cbitpos == 51

    # 2. Without the pod, both expire: NFD drops the labels, the hook stops trusting facts.
    ttl = Config().ttl
    expiry = _expiry(text)
    assert ttl - 120 <= (expiry - _utc(started)).total_seconds() <= ttl + 5
    assert nfdlocal.parse_file(text, expiry + datetime.timedelta(seconds=1)) == ({}, {})
    stamped = facts_file.stat().st_mtime
    with pytest.raises(DomainError, match="last refreshed"):
        node_facts.load(str(facts_file), now=stamped + facts.valid_for + 1)

    # 3. The node loses SEV-SNP (kvm_amd.sev_snp=N after a reboot): the next pod removes
    #    the SNP labels from the file and says so in the facts cache.
    (host / "sys/module/kvm_amd/parameters/sev_snp").write_text("N\n")
    pod = start_pod(daemonset, host, image, tmp_path)
    wait_for(lambda: SNP_LABEL not in feature_file.read_text(), pod)
    wait_for(lambda: node_facts.load(str(facts_file)).snp_ready != "yes", pod)
    stop_pod(pod)
    labels, _features = nfdlocal.parse_file(feature_file.read_text(), _utc(time.time()))
    assert SNP_LABEL not in labels and labels["sev.node.kubevirt.io/enabled"] == "true"
    assert node_facts.load(str(facts_file)).snp_ready == "no"


@pytest.mark.system
def test_pod_without_its_sys_mount_publishes_no_snp_label(daemonset, image, tmp_path):
    # The harness mounts only what the DaemonSet declares: without /host/sys the kvm_amd
    # parameters are unreadable, and the node gets no SEV-SNP label.
    ds = copy.deepcopy(daemonset)
    c = container(ds)
    c["volumeMounts"] = [m for m in c["volumeMounts"] if m["mountPath"] != "/host/sys"]
    host = kubevirt_node(tmp_path / "host")
    feature_file = host / DEFAULT_OUTPUT.lstrip("/")
    pod = start_pod(ds, host, image, tmp_path)
    wait_for(feature_file.exists, pod)
    stop_pod(pod)
    labels, _features = nfdlocal.parse_file(feature_file.read_text(), _utc(time.time()))
    assert SNP_LABEL not in labels
