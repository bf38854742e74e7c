"""KubeVirt's node hook as virt-handler calls it: a gRPC client generated from the project's
.proto (KubeVirt's wire contract) on the unix socket of a real `nfd-snp run
--node-hook-socket` replaying bundled snapshots. What it admits and refuses, with which
status and words, and how the socket and the service behave around it."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import threading
import time
from concurrent import futures

import pytest

from nfd_snp.kubevirt import node_hook
from nfd_snp.kubevirt.node_hook import NodeView, decide
from tests.conftest import REPO, SAMPLES, report_of
from tests.test_service import _args, _start, _stop, _wait_for

grpc = pytest.importorskip("grpc", reason="the node hook needs grpcio (the kubevirt extra)")
pytest.importorskip("grpc_tools", reason="grpcio-tools (the test extra) compiles the .proto")
from tests.plugin_client import generated, node_hook_stub, request  # noqa: E402

HOSTS = REPO / "tests" / "data" / "hosts"
HOST_DATA = base64.b64encode(b"h" * 32).decode()
EFI = {"bootloader": {"efi": {"secureBoot": False}}}


def vmi(annotations=None, launch=None, uid="uid-1", **domain):
    launch = {"snp": {}} if launch is None else launch
    spec_domain = {"launchSecurity": launch, "firmware": EFI, "devices": {}, **domain}
    if launch == {}:
        del spec_domain["launchSecurity"]
    return json.dumps(
        {
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachineInstance",
            "metadata": {
                "name": "vm",
                "namespace": "default",
                "uid": uid,
                "annotations": annotations or {},
            },
            "spec": {"domain": spec_domain},
        }
    ).encode()


def view_of(root, probed_at=1000.0, valid_for=600.0):
    return NodeView.from_report(report_of(root), valid_for, probed_at)


READY = SAMPLES / "genoa-snp-ready"


@pytest.fixture(scope="module")
def ready_view():
    return view_of(READY)


# -- the decisions -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "hook_point, body",
    [
        ("PreVMStart", vmi(launch={})),  # not an SNP VMI
        ("PreVMStart", vmi(launch={"sev": {}})),  # plain SEV
        ("PreVMStart", vmi({"other.io/x": "y"}, launch={})),
        ("PostVMStart", b"{not json"),  # other hook points pass whatever they carry
        ("PreVMStop", vmi({"sev-snp.kubevirt.io/host-data": "bad"})),
        ("PreMigrationTarget", vmi()),
    ],
)
def test_what_is_not_an_snp_start_passes_even_on_a_node_without_snp(hook_point, body):
    off = view_of(SAMPLES / "milan-snp-off")
    assert decide(hook_point, body, "n1", off, 1000.0).code == node_hook.OK


def test_an_snp_vmi_passes_on_a_ready_node_with_its_options(ready_view):
    annotations = {
        "sev-snp.kubevirt.io/host-data": HOST_DATA,
        "sev-snp.kubevirt.io/policy": "0x30000",
        "sev-snp.kubevirt.io/vcek": "yes",
    }
    answer = decide("PreVMStart", vmi(annotations), "n1", ready_view, 1000.0)
    assert answer.admitted and answer.snp and answer.uid == "uid-1"


@pytest.mark.parametrize(
    "annotations, launch, code, words",
    [
        # the request itself, in the sidecar's words (the same option model)
        (
            {"sev-snp.kubevirt.io/host-data": "aGVsbG8="},
            None,
            "INVALID_ARGUMENT",
            "refusing SEV-SNP for this VMI: annotation sev-snp.kubevirt.io/host-data: "
            "decodes to 5 bytes, must be exactly 32",
        ),
        (
            {"sev-snp.kubevirt.io/policy": "0x70000"},
            None,
            "INVALID_ARGUMENT",
            "bit 18 (migration agent) is refused by KVM",
        ),
        (
            {"sev-snp.kubevirt.io/author-key": "yes"},
            None,
            "INVALID_ARGUMENT",
            "authorKey='yes' needs idAuth",
        ),
        (
            {"sev-snp.kubevirt.io/kernel-hashes": "yes"},
            None,
            "INVALID_ARGUMENT",
            "kernelHashes='yes' measures a directly booted kernel",
        ),
        (
            {"sev-snp.kubevirt.io/host-data": HOST_DATA},
            {},  # options without asking
            "INVALID_ARGUMENT",
            "SEV-SNP options are given (sev-snp.kubevirt.io/host-data) but SEV-SNP is not",
        ),
        (
            {"sev-snp.kubevirt.io/secure-nested-paging": "ture"},
            {"sev": {}},
            "INVALID_ARGUMENT",
            "'ture' is not yes or no",
        ),
        # what the CEL domain hook could not write as the engine would
        (
            {"sev-snp.kubevirt.io/host-data": HOST_DATA[:20] + "\n" + HOST_DATA[20:]},
            None,
            "INVALID_ARGUMENT",
            "write the value without spaces",
        ),
        (
            {"sev-snp.kubevirt.io/policy": "196_608"},
            None,
            "INVALID_ARGUMENT",
            "write the policy as 0x followed by hex digits, or decimal",
        ),
        # the SEV path without the sidecar would start as plain SEV
        (
            {"sev-snp.kubevirt.io/secure-nested-paging": "true"},
            {"sev": {}},
            "INVALID_ARGUMENT",
            "it would start as a plain SEV guest; use launchSecurity.snp",
        ),
        # the node's KVM refuses single-socket? no: 6.12's rule accepts it; bit 21 it does not
        (
            {"sev-snp.kubevirt.io/policy": "0x230000"},
            None,
            "FAILED_PRECONDITION",
            "SEV-SNP VM cannot start: node n1: policy 0x00230000: this node's KVM refuses it "
            "(bit 21 (CXL) not accepted",
        ),
        # a minimum firmware ABI above the node's 1.55
        (
            {"sev-snp.kubevirt.io/policy": "0x30138"},
            None,
            "FAILED_PRECONDITION",
            "requires SNP firmware ABI 1.56, but this node runs 1.55",
        ),
    ],
)
def test_refusals_say_why_in_one_line(ready_view, annotations, launch, code, words):
    answer = decide("PreVMStart", vmi(annotations, launch), "n1", ready_view, 1000.0)
    assert answer.code == code and words in answer.message, answer
    assert "\n" not in answer.message


def test_the_sev_path_with_the_hook_sidecar_passes(ready_view):
    annotations = {
        "sev-snp.kubevirt.io/secure-nested-paging": "true",
        "hooks.kubevirt.io/hookSidecars": "[]",
    }
    assert decide("PreVMStart", vmi(annotations, {"sev": {}}), "n1", ready_view, 1.0e3).admitted


def test_unreadable_vmi_json_is_refused():
    for body in (b"{not json", b"[1, 2]", b"\xff\xfe", b"", json.dumps("x" * 10).encode()):
        answer = decide("PreVMStart", body, "n1", None, 1000.0)
        assert answer.code == "INVALID_ARGUMENT", body
        assert answer.message.startswith("nfd-snp cannot read the VMI virt-handler sent")


@pytest.mark.parametrize(
    "root, code, words",
    [
        (
            SAMPLES / "milan-snp-off",
            "FAILED_PRECONDITION",
            "node n1 is not SEV-SNP ready (blocked by: bios.rmp, kvm.sev_snp, firmware.snp); "
            "`nfd-snp check` on the node says why",
        ),
        (
            HOSTS / "milan-enarx-es-asids-full",
            "RESOURCE_EXHAUSTED",
            "no free SEV-SNP ASID on node n1: 14 of 14 in use at 00:16:40 UTC; KubeVirt retries",
        ),
        (
            HOSTS / "genoa-ciphertext-hiding-split-6.19",
            "RESOURCE_EXHAUSTED",
            "no free SEV-SNP ASID on node n1: 50 of 50 in use",
        ),
    ],
)
def test_a_node_that_cannot_run_it_refuses_with_the_cause(root, code, words):
    answer = decide("PreVMStart", vmi(), "n1", view_of(root), 1000.0)
    assert answer.code == code and words in answer.message, answer.message


def test_a_vmi_admitted_before_is_not_refused_for_the_asid_it_holds():
    full = view_of(HOSTS / "milan-enarx-es-asids-full")
    assert decide("PreVMStart", vmi(), "n1", full, 1000.0, {"uid-1"}).admitted
    assert not decide("PreVMStart", vmi(uid="uid-2"), "n1", full, 1000.0, {"uid-1"}).admitted


def test_facts_missing_or_older_than_their_validity_refuse_snp_only(ready_view):
    assert decide("PreVMStart", vmi(), "n1", None, 1000.0).code == "UNAVAILABLE"
    stale = decide("PreVMStart", vmi(), "n1", ready_view, 1000.0 + 601)
    assert stale.code == "UNAVAILABLE" and "601 s old" in stale.message
    assert decide("PreVMStart", vmi(launch={}), "n1", None, 1000.0).admitted


def test_the_same_call_gets_the_same_answer(ready_view):
    body = vmi({"sev-snp.kubevirt.io/policy": "0x230000"})
    answers = {decide("PreVMStart", body, "n1", ready_view, 1000.0 + i) for i in range(5)}
    assert len(answers) == 1


# -- over gRPC, against the real service ---------------------------------------------------


@pytest.fixture
def serve(tmp_path):
    """Start `nfd-snp run --node-hook-socket` on a host root; yields (socket path, proc, log)."""
    started = []

    def start(root=READY, *more, sock=None):
        sock = sock or str(tmp_path / "plugins" / "nfd-snp.sock")
        args = _args(tmp_path, "--node-hook-socket", sock, "--interval", "30", "--ttl", "120")
        args[args.index("--host-root") + 1] = str(root)
        proc, log = _start([*args, *more], tmp_path)
        started.append((proc, log))

        def ready():
            log.seek(0)
            return "answering KubeVirt's node hook" in log.read() or proc.poll() is not None

        assert _wait_for(ready)
        return sock, proc, log

    yield start
    for proc, _log in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def call(sock, body, hook_point="PreVMStart", node="node-7", timeout=10):
    """(status code name, details) of one ExecuteNodeHook call."""
    pb2, _ = generated()
    channel, stub = node_hook_stub(sock)
    try:
        stub.ExecuteNodeHook(request(pb2, hook_point, body, node), timeout=timeout)
        return "OK", ""
    except grpc.RpcError as exc:
        return exc.code().name, exc.details()
    finally:
        channel.close()


def test_the_service_answers_kubevirts_client_on_a_ready_node(serve):
    sock, proc, log = serve()
    assert os.stat(sock).st_mode & 0o777 == 0o600
    assert call(sock, vmi({"sev-snp.kubevirt.io/host-data": HOST_DATA})) == ("OK", "")
    assert call(sock, vmi(launch={})) == ("OK", "")
    code, details = call(sock, vmi({"sev-snp.kubevirt.io/id-block": "AAAA"}))
    assert code == "INVALID_ARGUMENT"
    assert details == (
        "refusing SEV-SNP for this VMI: annotation sev-snp.kubevirt.io/id-block: decodes to "
        "3 bytes, must be exactly 96"
    )
    assert call(sock, b"\x00garbage")[0] == "INVALID_ARGUMENT"
    text = _stop(proc, log)
    assert "answering KubeVirt's node hook on" in text and "refused a VMI" in text
    assert not os.path.exists(sock), "the socket outlives the service"


def test_a_node_without_snp_refuses_snp_vmis_and_passes_the_rest(serve):
    sock, proc, log = serve(SAMPLES / "milan-snp-off")
    code, details = call(sock, vmi(), node="worker-3")
    assert code == "FAILED_PRECONDITION"
    assert details.startswith(
        "SEV-SNP VM cannot start: node worker-3 is not SEV-SNP ready (blocked by: bios.rmp"
    )
    assert call(sock, vmi(launch={"sev": {}})) == ("OK", "")
    assert call(sock, b"{", hook_point="PostVMStop") == ("OK", "")
    _stop(proc, log)


def test_a_stale_socket_is_replaced(serve, tmp_path):
    sock = str(tmp_path / "plugins" / "nfd-snp.sock")
    os.makedirs(os.path.dirname(sock))
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(sock)
    stale.close()  # the file stays, nobody listens: a run that died
    sock, proc, log = serve(sock=sock)
    assert call(sock, vmi()) == ("OK", "")
    _stop(proc, log)


def _refused_at_start(serve, sock, words):
    sock, proc, log = serve(sock=sock)
    assert proc.wait(timeout=15) == 2
    log.seek(0)
    text = log.read()
    assert words in text and "Traceback" not in text, text


def test_a_symlink_a_directory_or_a_foreign_socket_is_refused(serve, tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "target").write_text("")
    os.symlink(plugins / "target", plugins / "link.sock")
    _refused_at_start(serve, str(plugins / "link.sock"), "is a symbolic link")
    (plugins / "dir.sock").mkdir()
    _refused_at_start(serve, str(plugins / "dir.sock"), "is a directory")
    (plugins / "file.sock").write_text("")
    _refused_at_start(serve, str(plugins / "file.sock"), "exists and is not a socket")
    theirs = socket.socket(socket.AF_UNIX)
    theirs.bind(str(plugins / "theirs.sock"))
    theirs.close()
    if os.geteuid() == 0:
        os.chown(plugins / "theirs.sock", 1000, 1000)
        _refused_at_start(serve, str(plugins / "theirs.sock"), "owned by uid 1000, not by root")
    loose = tmp_path / "loose"
    loose.mkdir()
    loose.chmod(0o777)
    _refused_at_start(serve, str(loose / "nfd-snp.sock"), "writable by group or others")
    _refused_at_start(serve, "relative.sock", "must be an absolute path")


def test_a_socket_another_process_serves_is_left_alone(serve, tmp_path):
    sock = str(tmp_path / "plugins" / "nfd-snp.sock")
    os.makedirs(os.path.dirname(sock))
    live = socket.socket(socket.AF_UNIX)
    live.bind(sock)
    live.listen(1)
    try:
        _refused_at_start(serve, sock, "another process serves this socket")
        assert os.path.exists(sock)
    finally:
        live.close()


def test_hostile_clients_leave_the_service_healthy(serve):
    sock, proc, log = serve()
    # a client that connects, sends half a request and goes away
    for garbage in (b"PRI * HTTP/2.0\r\n", b"\x00" * 100, b""):
        raw = socket.socket(socket.AF_UNIX)
        raw.connect(sock)
        raw.sendall(garbage)
        raw.close()
    # a call cancelled mid-way
    pb2, _ = generated()
    channel, stub = node_hook_stub(sock)
    pending = stub.ExecuteNodeHook.future(request(pb2, "PreVMStart", vmi()))
    pending.cancel()
    channel.close()
    # a 1 MB VMI (an SNP one, and one that is not)
    big = json.loads(vmi())
    big["metadata"]["annotations"]["example.com/blob"] = "x" * (1 << 20)
    assert call(sock, json.dumps(big).encode()) == ("OK", "")
    big["spec"]["domain"].pop("launchSecurity")
    assert call(sock, json.dumps(big).encode()) == ("OK", "")
    # more than any VMI can be: refused by the transport, and the service goes on
    assert call(sock, b"x" * (9 << 20))[0] == "RESOURCE_EXHAUSTED"
    assert call(sock, vmi()) == ("OK", "")
    _stop(proc, log)


def test_sighup_keeps_serving(serve):
    sock, proc, log = serve()
    for _ in range(3):
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.2)
        assert call(sock, vmi()) == ("OK", "")
    _stop(proc, log)


def test_sigterm_during_calls_stops_cleanly(serve):
    sock, proc, log = serve()
    stop = threading.Event()
    codes = []

    def hammer():
        while not stop.is_set():
            codes.append(call(sock, vmi(), timeout=5)[0])

    with futures.ThreadPoolExecutor(8) as pool:
        for _ in range(8):
            pool.submit(hammer)
        assert _wait_for(lambda: len(codes) > 20)
        started = time.monotonic()
        text = _stop(proc, log)
        stop.set()
    assert time.monotonic() - started < 5
    assert "stopped" in text
    assert set(codes) <= {"OK", "UNAVAILABLE", "CANCELLED"}, set(codes)
    assert "OK" in codes


@pytest.mark.system  # the node service as a process
def test_a_socket_path_not_ours_stops_the_service_before_it_writes_anything(tmp_path):
    """A bad node-hook-socket is found at start, before the labels, the facts cache or
    READY=1: exit 2 with the reason, nothing written (else systemd would restart a service
    that had already published)."""
    taken = tmp_path / "plugins" / "nfd-snp.sock"
    taken.parent.mkdir(mode=0o755)
    taken.write_text("not a socket\n")
    proc, log = _start(_args(tmp_path, "--node-hook-socket", str(taken)), tmp_path)
    assert proc.wait(timeout=30) == 2
    log.seek(0)
    assert "exists and is not a socket" in log.read()
    assert not (tmp_path / "features.d" / "nfd-snp").exists()
    assert not (tmp_path / "run" / "facts.json").exists()
