"""A client of KubeVirt's Plugins API generated at test time from nfd-snp's .proto.

grpcio-tools compiles nfd_snp/kubevirt/plugins_v1alpha1.proto (the wire contract of
KubeVirt's pkg/hooks/plugins/v1alpha1/api.proto) into protobuf's own message classes and a
gRPC stub, as KubeVirt's Go client is generated from its api.proto: the tests call the node
service through them, and compare nfd-snp's hand-written codec with them.
"""

from __future__ import annotations

import importlib
import sys
import tempfile
from pathlib import Path

PROTO = Path(__file__).resolve().parent.parent / "nfd_snp" / "kubevirt" / "plugins_v1alpha1.proto"
_generated = {}


def generated():
    """(messages module, grpc stubs module), compiled once per test session."""
    if not _generated:
        from grpc_tools import protoc

        out = Path(tempfile.mkdtemp(prefix="nfd-snp-proto-"))
        include = Path(protoc.__file__).parent / "_proto"
        status = protoc.main(
            [
                "protoc",
                f"-I{PROTO.parent}",
                f"-I{include}",
                f"--python_out={out}",
                f"--grpc_python_out={out}",
                str(PROTO),
            ]
        )
        assert status == 0, f"protoc failed on {PROTO}"
        sys.path.insert(0, str(out))
        try:
            _generated["pb2"] = importlib.import_module("plugins_v1alpha1_pb2")
            _generated["grpc"] = importlib.import_module("plugins_v1alpha1_pb2_grpc")
        finally:
            sys.path.remove(str(out))
    return _generated["pb2"], _generated["grpc"]


def node_hook_stub(path: str):
    """(channel, NodeHookService stub) on the unix socket `path`, as virt-handler dials it."""
    import grpc

    _pb2, stubs = generated()
    channel = grpc.insecure_channel(f"unix:{path}")
    return channel, stubs.NodeHookServiceStub(channel)


def request(pb2, hook_point: str, vmi: bytes, node: str = "node-1"):
    return pb2.ExecuteNodeHookRequest(
        hookPoint=hook_point, vmi=vmi, node_context=pb2.NodeContext(node_name=node)
    )
