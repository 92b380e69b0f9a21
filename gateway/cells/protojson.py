"""Protobuf messages as the JSON Cells' websocket service sends: Go ``protojson`` rules. Pure.

Cells marshals with ``protojson.Marshal`` and default options: keys are the fields' json names in
``.proto`` *declaration* order, enums by name (an unknown number as a number), zero values and
empty lists or maps omitted, 64-bit integers as strings, ``float`` by its shortest decimal
(``0.42``, and ``1`` for an integral value), bytes as base64, map keys sorted,
``google.protobuf.Timestamp`` as RFC 3339. Python's ``json_format`` orders fields by number and
prints float32 values at double precision, hence this module.
"""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

JsonObject = dict[str, Any]
_TIMESTAMP: Final = Timestamp.DESCRIPTOR.full_name
_MAX_EXACT: Final = 1e21  # past this, Go prints floats with an exponent: keep them floats
_FLOAT32: Final = struct.Struct("<f")


class ProtoJsonError(ValueError):
    """A message holds a value protojson refuses to print (e.g. a Timestamp out of range)."""


def to_json(message: Message) -> JsonObject:
    """The JSON object ``protojson.Marshal(message)`` prints, as Python values."""
    if message.DESCRIPTOR.full_name == _TIMESTAMP:
        raise ProtoJsonError("a bare Timestamp is not an object")
    present = {fd.name: value for fd, value in message.ListFields()}
    out: JsonObject = {}
    fields: Sequence[Any] = message.DESCRIPTOR.fields  # declaration order (the upb types differ)
    for fd in fields:
        if fd.name in present:
            out[fd.json_name] = _field(fd, present[fd.name])
    return out


def _field(fd: FieldDescriptor, value: Any) -> Any:
    if _is_map(fd):
        value_fd = _message_type(fd).fields_by_name["value"]
        return {str(k): _single(value_fd, value[k]) for k in sorted(value)}
    if fd.is_repeated:
        return [_single(fd, item) for item in value]
    return _single(fd, value)


def _is_map(fd: FieldDescriptor) -> bool:
    return fd.type == FieldDescriptor.TYPE_MESSAGE and bool(_message_type(fd).GetOptions().map_entry)


def _message_type(fd: FieldDescriptor) -> Descriptor:
    assert fd.message_type is not None  # a field of TYPE_MESSAGE always has one
    return fd.message_type


def _single(fd: FieldDescriptor, value: Any) -> Any:
    kind = fd.type
    if kind == FieldDescriptor.TYPE_MESSAGE:
        if _message_type(fd).full_name == _TIMESTAMP:
            return _timestamp(value)
        return to_json(value)
    if kind == FieldDescriptor.TYPE_ENUM:
        assert fd.enum_type is not None  # a field of TYPE_ENUM always has one
        named = fd.enum_type.values_by_number.get(value)
        return named.name if named is not None else value
    return _SCALARS.get(kind, _same)(value)


def _same(value: Any) -> Any:
    return value


def _timestamp(value: Timestamp) -> str:
    try:
        return value.ToJsonString()
    except ValueError as exc:
        raise ProtoJsonError(f"Timestamp out of range: {exc}") from None


def _float(value: float, *, single: bool) -> float | int | str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    number = _shortest_float32(value) if single else value
    return int(number) if number.is_integer() and abs(number) < _MAX_EXACT else number


def _shortest_float32(value: float) -> float:
    """The shortest decimal that reads back as the same 32-bit float (Go's 'g', -1, 32)."""
    for digits in range(1, 10):
        candidate = float(f"{value:.{digits}g}")
        try:
            if _FLOAT32.unpack(_FLOAT32.pack(candidate))[0] == value:
                return candidate
        except OverflowError:  # rounded past the largest float32 (near 3.4e38): more digits
            continue
    return value


_SCALARS: Final[Mapping[int, Callable[[Any], Any]]] = {
    FieldDescriptor.TYPE_INT64: str,
    FieldDescriptor.TYPE_UINT64: str,
    FieldDescriptor.TYPE_SINT64: str,
    FieldDescriptor.TYPE_FIXED64: str,
    FieldDescriptor.TYPE_SFIXED64: str,
    FieldDescriptor.TYPE_FLOAT: lambda v: _float(v, single=True),
    FieldDescriptor.TYPE_DOUBLE: lambda v: _float(v, single=False),
    FieldDescriptor.TYPE_BYTES: lambda v: base64.b64encode(v).decode("ascii"),
}
