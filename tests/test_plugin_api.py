"""nfd-snp's codec of KubeVirt's node hook messages against protobuf's own, generated from
the project's .proto by grpcio-tools: the same bytes for the same message, the same
message from the same bytes, and on random bytes the same accept-or-refuse."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nfd_snp.kubevirt import plugin_api
from nfd_snp.kubevirt.plugin_api import ExecuteNodeHookRequest, WireError

pytest.importorskip("grpc_tools", reason="grpcio-tools (the test extra) compiles the .proto")
from tests.plugin_client import generated  # noqa: E402

PB2 = generated()[0]
HOOKS = ["PreVMStart", "PostVMStart", "PreVMStop", "PostVMStop", "PreMigrationTarget"]


def reference(data: bytes):
    """protobuf's reading of the bytes: (hookPoint, vmi, node_name) or None if it refuses."""
    from google.protobuf.message import DecodeError

    message = PB2.ExecuteNodeHookRequest()
    try:
        message.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError):
        return None
    return message.hookPoint, message.vmi, message.node_context.node_name


def ours(data: bytes):
    try:
        decoded = ExecuteNodeHookRequest.decode(data)
    except WireError:
        return None
    return decoded.hookPoint, decoded.vmi, decoded.node_name


requests = st.builds(
    ExecuteNodeHookRequest,
    hookPoint=st.one_of(st.sampled_from(HOOKS), st.text(max_size=40)),
    vmi=st.binary(max_size=3000),
    node_name=st.text(max_size=40),
)


@settings(max_examples=300, deadline=None)
@given(requests)
def test_both_codecs_write_the_same_bytes_and_read_them_back(request):
    theirs = PB2.ExecuteNodeHookRequest(
        hookPoint=request.hookPoint,
        vmi=request.vmi,
        node_context=PB2.NodeContext(node_name=request.node_name) if request.node_name else None,
    )
    wire = theirs.SerializeToString()
    assert request.encode() == wire
    assert ExecuteNodeHookRequest.decode(wire) == request


def _field(number: int, wire: int, payload: bytes) -> bytes:
    out = bytearray()
    plugin_api._put_varint(out, number << 3 | wire)
    if wire == plugin_api.LEN:
        plugin_api._put_varint(out, len(payload))
    return bytes(out) + payload


# Messages built field by field: known fields in any order and repeated, unknown fields of
# every wire type, nested node contexts, and a few broken endings.
_varint_field = st.builds(
    lambda n, v: _field(n, 0, bytes(_v(v))), st.integers(1, 40), st.integers(0, 2**64 - 1)
)


def _v(value):
    out = bytearray()
    plugin_api._put_varint(out, value)
    return out


fields = st.one_of(
    st.builds(lambda s: _field(1, 2, s.encode()), st.sampled_from(HOOKS)),
    st.builds(lambda b: _field(1, 2, b), st.binary(max_size=8)),  # maybe not UTF-8
    st.builds(lambda b: _field(2, 2, b), st.binary(max_size=64)),
    st.builds(lambda s: _field(3, 2, _field(1, 2, s.encode())), st.text(max_size=12)),
    st.builds(lambda b: _field(3, 2, b), st.binary(max_size=12)),
    _varint_field,
    st.builds(lambda n, b: _field(n, 1, b), st.integers(1, 40), st.binary(min_size=8, max_size=8)),
    st.builds(lambda n, b: _field(n, 5, b), st.integers(1, 40), st.binary(min_size=4, max_size=4)),
    st.builds(lambda n, b: _field(n, 2, b), st.integers(4, 40), st.binary(max_size=16)),
    st.builds(
        lambda n, inner: _field(n, 3, b"") + inner + _field(n, 4, b""),
        st.integers(4, 40),
        st.binary(max_size=6),
    ),
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(fields, max_size=8), st.binary(max_size=6))
def test_both_codecs_agree_on_arbitrary_messages(parts, tail):
    for data in (b"".join(parts), b"".join(parts) + tail):
        assert ours(data) == reference(data), data


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_are_read_alike_or_refused_alike(data):
    assert ours(data) == reference(data)


@pytest.mark.parametrize(
    "data, why",
    [
        (b"\x0a\x05abc", "past the end"),
        (b"\x0a" + b"\xff" * 11, "varint"),
        (b"\x00\x00", "field number 0"),
        (b"\x0a\x02\xff\xfe", "not UTF-8"),
        (b"\x23" * 40 + b"\x24" * 40, "nested too deeply"),
        (b"\x1b\x0a\x00", "not closed"),
    ],
)
def test_broken_messages_are_refused_with_a_reason(data, why):
    with pytest.raises(WireError, match=why):
        ExecuteNodeHookRequest.decode(data)


def test_the_response_is_empty_as_protobuf_writes_it():
    assert plugin_api.encode_response(None) == PB2.ExecuteNodeHookResponse().SerializeToString()
