#!/usr/bin/env python3
"""Node hook cost: latency of concurrent ExecuteNodeHook calls, and the service's memory.

Starts a real `nfd-snp run --node-hook-socket` on a bundled sample, and beside it, as the
baseline, a bare grpcio server on another unix socket that answers the same method with an
empty reply and does nothing else. Each round sends 50 calls at once, each on its own
connection as virt-handler dials one per call (pkg/hooks/plugins/v1alpha1/client.go), with
a ~6 KB SEV-SNP VMI; it prints:
  - p50/p99 latency against nfd-snp (target: p99 <= 20 ms) and the ratio to the bare
    server's p99 (what deciding adds to gRPC itself);
  - the decision alone (node_hook.decide in this process, no gRPC), per call;
  - the RSS of `nfd-snp run` with the socket and without it, after the same probes (and,
    with it, after the calls), and their ratio.

    .venv/bin/python bench/node_hook.py [--rounds N] [--sample NAME]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import grpc  # noqa: E402
import psutil  # noqa: E402

from tests.plugin_client import generated, request  # noqa: E402

CONCURRENT = 50
NFD_SNP = [str(Path(sys.executable).with_name("nfd-snp"))]

BARE_SERVER = r"""
import sys, time, grpc
from concurrent import futures
handler = grpc.method_handlers_generic_handler(
    "kubevirt.hooks.plugins.v1alpha1.NodeHookService",
    {"ExecuteNodeHook": grpc.unary_unary_rpc_method_handler(lambda req, ctx: b"",
        request_deserializer=bytes, response_serializer=bytes)})
server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), handlers=(handler,))
server.add_insecure_port("unix:" + sys.argv[1])
server.start()
print("ready", flush=True)
server.wait_for_termination()
"""


def vmi() -> bytes:
    disks = [{"name": f"disk{i}", "disk": {"bus": "virtio"}} for i in range(20)]
    body = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {
            "name": "snp-vm",
            "namespace": "default",
            "uid": "7d0c2b4e-0000-4000-8000-000000000001",
            "labels": {f"app.example.com/l{i}": "x" * 20 for i in range(20)},
            "annotations": {
                "sev-snp.kubevirt.io/host-data": "aGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGg=",
                "sev-snp.kubevirt.io/policy": "0x30000",
                **{f"example.com/a{i}": "y" * 60 for i in range(30)},
            },
        },
        "spec": {
            "domain": {
                "launchSecurity": {"snp": {}},
                "firmware": {"bootloader": {"efi": {"secureBoot": False, "persistent": False}}},
                "features": {"smm": {"enabled": False}},
                "devices": {"disks": disks},
                "cpu": {"cores": 2},
                "memory": {"guest": "4Gi"},
            }
        },
    }
    return json.dumps(body).encode()


METHOD = "/kubevirt.hooks.plugins.v1alpha1.NodeHookService/ExecuteNodeHook"


def _stub(channel):
    return channel.unary_unary(
        METHOD, request_serializer=lambda m: m.SerializeToString(), response_deserializer=bytes
    )


def rounds(sock: str, message, count: int, fresh: bool) -> list:
    """Latencies (ms) of `count` rounds of 50 simultaneous calls: each on a new connection
    (fresh, as virt-handler dials), or each on its own already open one (what the server
    itself adds, without the Python client's connection set-up)."""
    channels = [grpc.insecure_channel(f"unix:{sock}") for _ in range(CONCURRENT)]
    times = []
    try:
        for channel in channels:
            _stub(channel)(message, timeout=30)  # connect
        with ThreadPoolExecutor(CONCURRENT) as pool:
            for _ in range(count):
                barrier = threading.Barrier(CONCURRENT)

                def timed(i, barrier=barrier):
                    barrier.wait()
                    start = time.perf_counter()
                    if fresh:
                        with grpc.insecure_channel(f"unix:{sock}") as channel:
                            _stub(channel)(message, timeout=30)
                    else:
                        _stub(channels[i])(message, timeout=30)
                    return (time.perf_counter() - start) * 1000

                times += list(pool.map(timed, range(CONCURRENT)))
    finally:
        for channel in channels:
            channel.close()
    return times


def wait_line(proc, log: Path, text: str, timeout=30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in log.read_text():
            return
        if proc.poll() is not None:
            raise SystemExit(f"exited: {log.read_text()[-500:]}")
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {text!r}: {log.read_text()[-500:]}")


def service(work: Path, name: str, sample: str, socket_path=None):
    log = work / f"{name}.log"
    args = [
        *NFD_SNP,
        "run",
        "--config",
        "/dev/null",
        "--host-root",
        str(REPO / "nfd_snp" / "samples" / sample),
        "--libvirt",
        "off",
        "--interval",
        "30",
        "--ttl",
        "120",
        "--output",
        str(work / name / "features"),
        "--facts-cache",
        str(work / name / "facts.json"),
    ]
    if socket_path:
        args += ["--node-hook-socket", socket_path]
    with open(log, "w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    wait_line(proc, log, "answering KubeVirt's node hook" if socket_path else "labels:")
    return proc


def p(values, q) -> float:
    return sorted(values)[min(len(values) - 1, int(len(values) * q))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--sample", default="genoa-snp-ready")
    args = parser.parse_args()
    pb2, _ = generated()
    message = request(pb2, "PreVMStart", vmi(), "node-1")
    work = Path(tempfile.mkdtemp(prefix="nfd-snp-bench-hook-"))
    procs = []
    try:
        hook_sock = str(work / "plugins" / "nfd-snp.sock")
        bare_sock = str(work / "bare.sock")
        with_hook = service(work, "on", args.sample, hook_sock)
        without = service(work, "off", args.sample)
        bare_log = work / "bare.log"
        with open(bare_log, "w") as out:
            bare = subprocess.Popen([sys.executable, "-c", BARE_SERVER, bare_sock], stdout=out)
        procs = [with_hook, without, bare]
        wait_line(bare, bare_log, "ready")
        rss_on_idle = psutil.Process(with_hook.pid).memory_info().rss / 2**20
        rss_off = psutil.Process(without.pid).memory_info().rss / 2**20
        results = {}
        for fresh in (False, True):
            rounds(hook_sock, message, 1, fresh)  # warm-up: thread pools, first connections
            rounds(bare_sock, message, 1, fresh)
            ours, theirs = [], []
            for _ in range(args.rounds):  # alternate, so both see the same machine load
                ours += rounds(hook_sock, message, 1, fresh)
                theirs += rounds(bare_sock, message, 1, fresh)
            results[fresh] = ours, theirs
        rss_on = psutil.Process(with_hook.pid).memory_info().rss / 2**20
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)
    for fresh, (ours, theirs) in results.items():
        how = "a new connection each (as virt-handler)" if fresh else "open connections"
        print(
            f"{len(ours)} ExecuteNodeHook calls, {CONCURRENT} at a time on {how}, "
            f"{len(message.vmi)} bytes of VMI, sample {args.sample}:"
        )
        print(
            f"  nfd-snp p50 {statistics.median(ours):.1f} ms, p99 {p(ours, 0.99):.1f} ms "
            f"(target p99 <= 20 ms); bare grpcio server p50 {statistics.median(theirs):.1f} "
            f"ms, p99 {p(theirs, 0.99):.1f} ms; p99 ratio {p(ours, 0.99) / p(theirs, 0.99):.2f}x"
        )
    from nfd_snp.kubevirt.node_hook import NodeView, decide
    from tests.conftest import SAMPLES, report_of

    view = NodeView.from_report(report_of(SAMPLES / args.sample), 600, time.time())
    body = message.vmi
    start = time.perf_counter()
    for _ in range(2000):
        decide("PreVMStart", body, "node-1", view, time.time())
    each = (time.perf_counter() - start) / 2000 * 1000
    print(f"the decision alone: {each:.2f} ms per call ({CONCURRENT} of them: {each * 50:.1f} ms)")
    print(
        f"RSS of nfd-snp run: {rss_off:.1f} MB without the socket, {rss_on_idle:.1f} MB with "
        f"it ({rss_on_idle / rss_off:.2f}x), {rss_on:.1f} MB after the calls "
        f"({rss_on / rss_off:.2f}x)"
    )


if __name__ == "__main__":
    main()
