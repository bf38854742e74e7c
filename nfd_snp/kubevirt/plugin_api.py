"""KubeVirt's Plugins API messages on the wire, encoded and decoded without generated code.

The node hook speaks `kubevirt.hooks.plugins.v1alpha1.NodeHookService` (KubeVirt
pkg/hooks/plugins/v1alpha1/api.proto; nfd-snp's own declaration of the same contract is
plugins_v1alpha1.proto beside this file). Its messages are two strings, a bytes field and a
nested message, and the reply is empty, so they are encoded here by the protobuf wire rules
(protobuf.dev/programming-guides/encoding) rather than by protoc's `_pb2` modules, because:

- generated code pins the protobuf runtime it runs on (a `_pb2` from protoc N refuses an
  older runtime, and a newer runtime drops old gencode): the node service would then depend
  on one protobuf version per distribution; grpcio itself needs no protobuf, so with this
  codec `python3-grpcio` is the one runtime dependency of the node hook;
- the decoder is small enough to read whole, and bounded: it walks the bytes once, refuses
  a varint longer than 10 bytes, a length past the end, groups nested deeper than
  MAX_DEPTH and strings that are not UTF-8, and never allocates more than the input.

Proto3 rules kept: fields may come in any order, a repeated scalar field's last value wins,
a repeated message field is merged, unknown fields (any wire type, groups included) and
known fields of an unexpected wire type are skipped, defaults are not written. The tests
compare this codec with protobuf's own, on generated and on random bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

PACKAGE = "kubevirt.hooks.plugins.v1alpha1"
NODE_HOOK_SERVICE = f"{PACKAGE}.NodeHookService"
EXECUTE_NODE_HOOK = "ExecuteNodeHook"

VARINT, I64, LEN, SGROUP, EGROUP, I32 = 0, 1, 2, 3, 4, 5
MAX_VARINT_BYTES = 10
MAX_DEPTH = 32  # nested groups in skipped fields (protobuf's own limit is 100)


class WireError(ValueError):
    """The bytes are not a message of this contract (one line, safe to show a client)."""


def _varint(data: bytes, pos: int):
    value = shift = 0
    for i in range(pos, min(pos + MAX_VARINT_BYTES, len(data))):
        byte = data[i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            # protobuf keeps the low 64 bits of a 10-byte varint (upb's _upb_Decoder_DecodeVarint)
            return value & 0xFFFFFFFFFFFFFFFF, i + 1
        shift += 7
    raise WireError("a varint is truncated or longer than 10 bytes")


def _skip(data: bytes, pos: int, wire: int, number: int, depth: int) -> int:
    """The position after a field's value (its tag already read)."""
    if wire == VARINT:
        return _varint(data, pos)[1]
    if wire in (I64, I32):
        end = pos + (8 if wire == I64 else 4)
    elif wire == LEN:
        size, pos = _varint(data, pos)
        end = pos + size
    elif wire == SGROUP:
        if depth >= MAX_DEPTH:
            raise WireError("groups nested too deeply")
        while True:
            if pos >= len(data):
                raise WireError("a group is not closed")
            tag, pos = _varint(data, pos)
            inner_number, inner_wire = tag >> 3, tag & 7
            # Inside a skipped group protobuf (upb's _upb_WireReader_SkipGroup) takes any
            # 32-bit tag, field number 0 included, as a value to skip: so does this decoder.
            if tag >= 1 << 32:
                raise WireError("a tag overflows 32 bits")
            if inner_wire == EGROUP:
                if inner_number != number:
                    raise WireError("a group is closed by another field number")
                return pos
            pos = _skip(data, pos, inner_wire, inner_number, depth + 1)
    else:
        raise WireError(f"wire type {wire} where a field starts")
    if end > len(data):
        raise WireError("a field runs past the end of the message")
    return end


def fields(data: bytes):
    """(number, wire type, value) of each field: an int for VARINT, bytes for LEN, None for
    the other wire types (skipped)."""
    pos = 0
    while pos < len(data):
        tag, pos = _varint(data, pos)
        number, wire = tag >> 3, tag & 7
        if number == 0 or number >= 1 << 29:
            raise WireError(f"field number {number} is out of range")
        if wire == LEN:
            size, start = _varint(data, pos)
            pos = start + size
            if pos > len(data):
                raise WireError("a field runs past the end of the message")
            yield number, wire, bytes(data[start:pos])
        elif wire == VARINT:
            value, pos = _varint(data, pos)
            yield number, wire, value
        else:
            pos = _skip(data, pos, wire, number, 0)
            yield number, wire, None


def _text(value: bytes, name: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise WireError(f"{name} is not UTF-8") from None


def _put_varint(out: bytearray, value: int) -> None:
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)


def _put_bytes(out: bytearray, number: int, value: bytes) -> None:
    if value:  # proto3: a default value is not written
        _put_varint(out, number << 3 | LEN)
        _put_varint(out, len(value))
        out += value


# -- the messages ------------------------------------------------------------------------


@dataclass(frozen=True)
class ExecuteNodeHookRequest:
    """hookPoint = 1, vmi = 2 (VMI JSON), node_context = 3 (NodeContext: node_name = 1)."""

    hookPoint: str = ""
    vmi: bytes = b""
    node_name: str = ""

    @classmethod
    def decode(cls, data: bytes) -> "ExecuteNodeHookRequest":
        hook_point, vmi, node_name = "", b"", ""
        for number, wire, value in fields(data):
            if wire != LEN:
                continue
            if number == 1:
                hook_point = _text(value, "hookPoint")
            elif number == 2:
                vmi = value
            elif number == 3:
                # A nested message given twice is merged: its last node_name wins.
                for inner, inner_wire, inner_value in fields(value):
                    if inner == 1 and inner_wire == LEN:
                        node_name = _text(inner_value, "node_context.node_name")
        return cls(hook_point, vmi, node_name)

    def encode(self) -> bytes:
        out = bytearray()
        _put_bytes(out, 1, self.hookPoint.encode("utf-8"))
        _put_bytes(out, 2, self.vmi)
        if self.node_name:
            context = bytearray()
            _put_bytes(context, 1, self.node_name.encode("utf-8"))
            _put_varint(out, 3 << 3 | LEN)
            _put_varint(out, len(context))
            out += context
        return bytes(out)


EXECUTE_NODE_HOOK_RESPONSE = b""  # ExecuteNodeHookResponse has no fields


def decode_request(data: bytes):
    """The request, or the WireError saying why it is not one (so a handler, not grpcio's
    deserializer, turns it into a status the client reads)."""
    try:
        return ExecuteNodeHookRequest.decode(data)
    except WireError as exc:
        return exc


def encode_response(_response) -> bytes:
    return EXECUTE_NODE_HOOK_RESPONSE
