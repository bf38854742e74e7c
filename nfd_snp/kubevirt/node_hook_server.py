"""The node hook's transport: a gRPC server on a unix socket inside `nfd-snp run`.

virt-handler dials the socket a Plugin names (`nodeHooks[].socket`) from its own mount
namespace, where the host's /var/run/kubevirt is mounted (virt-operator's virt-handler
DaemonSet, volume virt-share-dir); KubeVirt's own example plugin serves
/var/run/kubevirt/plugins/<name>.sock (cmd/example-node-hook-plugin). The service is
grpcio with one generic handler: requests arrive as bytes and are decoded by
nfd_snp.kubevirt.plugin_api, decisions come from nfd_snp.kubevirt.node_hook, and this
module only moves bytes and statuses, and owns the socket file:

- a stale socket (nothing listens on it: a crashed run) is replaced;
- a path that is a symbolic link, a directory or another kind of file, a socket someone
  else owns or still serves, or a directory others may write into, is refused with the
  reason, before anything binds;
- the socket is created mode 0600 (virt-handler runs as root) and removed at stop.

grpcio is imported here only, and only when the socket is configured: `nfd-snp check`,
the libvirt hook and a service without the socket never load it.
"""

from __future__ import annotations

import os
import socket
import stat
import threading
from collections import OrderedDict
from typing import Callable, Optional

from nfd_snp.errors import InputError, NfdSnpError, printable
from nfd_snp.kubevirt import node_hook, plugin_api

WORKERS = 4  # decisions take well under a millisecond; the GIL serialises them anyway
MAX_CONCURRENT = 256  # calls in flight or queued; more get RESOURCE_EXHAUSTED at once
MAX_REQUEST_BYTES = 8 * 1024 * 1024  # a VMI is at most etcd's 1.5 MB; JSON limit 4 MiB
ADMITTED_MEMORY = 4096  # UIDs of admitted SNP VMIs kept for idempotent retries
STOP_GRACE = 2.0  # seconds in-flight calls get at stop


class SocketError(NfdSnpError):
    """The node hook socket cannot be served (exit status 2: a setting to fix)."""

    exit_code = 2


def _refused(path: str, why: str) -> SocketError:
    return SocketError(f"node-hook-socket {path}: {why}")


def _listening(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except OSError:
            return False
    return True


def prepare_socket_path(path: str) -> None:
    """Make `path` free to bind, or raise SocketError saying why it is not ours to take."""
    from nfd_snp.atomic import make_directories
    from nfd_snp.facts_cache import untrusted_because

    if not os.path.isabs(path):
        raise _refused(path, "must be an absolute path")
    if len(os.fsencode(path)) >= 108:  # sockaddr_un.sun_path, NUL included
        raise _refused(path, "is longer than a unix socket path may be (107 bytes)")
    directory = os.path.dirname(path)
    make_directories(directory)
    why = untrusted_because(os.stat(directory), f"its directory {directory}")
    if why:
        raise _refused(path, why)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise _refused(path, "is a symbolic link; remove it (the socket is never followed)")
    if stat.S_ISDIR(st.st_mode):
        raise _refused(path, "is a directory")
    if not stat.S_ISSOCK(st.st_mode):
        raise _refused(path, "exists and is not a socket; remove it if it is no longer used")
    if st.st_uid not in (0, os.geteuid()):
        raise _refused(path, f"is a socket owned by uid {st.st_uid}, not by root")
    if _listening(path):
        raise _refused(path, "another process serves this socket")
    os.unlink(path)  # stale: left by a run that died


def preflight(path: str) -> None:
    """What `NodeHookServer.start` would refuse, found before the service writes anything or
    tells systemd it is ready: grpcio missing, a socket path that is not ours to take."""
    try:
        import grpc  # noqa: F401
    except ImportError:
        raise InputError(
            "node-hook-socket needs grpcio (python3-grpcio, or pip install 'nfd-snp[kubevirt]')"
        ) from None
    prepare_socket_path(path)


class NodeHookServer:
    """ExecuteNodeHook on a unix socket, answered from `view()` (the service's NodeView)."""

    def __init__(
        self,
        path: str,
        view: Callable[[], Optional[node_hook.NodeView]],
        log: Callable[[int, str], None],
        clock: Callable[[], float],
    ) -> None:
        self.path = path
        self.view = view
        self.log = log
        self.clock = clock
        self._admitted: "OrderedDict[str, None]" = OrderedDict()
        self._lock = threading.Lock()
        self._server = None
        self._grpc = None

    def start(self) -> None:
        preflight(self.path)
        from concurrent import futures

        import grpc

        self._grpc = grpc
        handler = grpc.method_handlers_generic_handler(
            plugin_api.NODE_HOOK_SERVICE,
            {
                plugin_api.EXECUTE_NODE_HOOK: grpc.unary_unary_rpc_method_handler(
                    self._execute,
                    request_deserializer=plugin_api.decode_request,
                    response_serializer=plugin_api.encode_response,
                )
            },
        )
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="node-hook"),
            handlers=(handler,),
            maximum_concurrent_rpcs=MAX_CONCURRENT,
            options=(
                ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
                ("grpc.max_send_message_length", 64 * 1024),
                ("grpc.so_reuseport", 0),
            ),
        )
        umask = os.umask(0o177)  # the socket file is born 0600
        try:
            bound = server.add_insecure_port(f"unix:{self.path}")
        except RuntimeError as exc:
            bound = 0
            reason = str(exc)
        else:
            reason = "grpc could not bind it"
        finally:
            os.umask(umask)
        if not bound:
            raise _refused(self.path, printable(reason))
        server.start()
        self._server = server

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.stop(STOP_GRACE).wait(STOP_GRACE + 1)
        try:
            st = os.lstat(self.path)
            if stat.S_ISSOCK(st.st_mode):
                os.unlink(self.path)
        except OSError:
            pass

    # -- one call --------------------------------------------------------------------

    def _execute(self, request, context):
        from nfd_snp.log import INFO, ERR

        if isinstance(request, plugin_api.WireError):
            context.abort(
                self._grpc.StatusCode.INVALID_ARGUMENT,
                f"nfd-snp: not an ExecuteNodeHookRequest ({request})",
            )
        try:
            answer = node_hook.decide(
                request.hookPoint,
                request.vmi,
                request.node_name,
                self.view(),
                self.clock(),
                self._admitted,
            )
        except Exception as exc:  # a bug: refuse (fail closed) and say so once per call
            self.log(ERR, printable(f"node hook: internal error {type(exc).__name__}: {exc}"))
            context.abort(
                self._grpc.StatusCode.INTERNAL,
                f"nfd-snp internal error ({type(exc).__name__}); see the nfd-snp log",
            )
        if answer.admitted:
            if answer.snp and answer.uid:
                self._remember(answer.uid)
            return None
        self.log(INFO, f"node hook: refused a VMI ({answer.code}): {answer.message}")
        context.abort(getattr(self._grpc.StatusCode, answer.code), answer.message)

    def _remember(self, uid: str) -> None:
        with self._lock:
            self._admitted[uid] = None
            self._admitted.move_to_end(uid)
            while len(self._admitted) > ADMITTED_MEMORY:
                self._admitted.popitem(last=False)
