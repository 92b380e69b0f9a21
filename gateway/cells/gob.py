"""The gob stream Cells' NATS driver wraps around a message: metadata, then body. Pure.

Cells (``common/broker/nats``) publishes ``gob.Encode(map[string]string)`` followed by
``gob.Encode([]byte)`` when a message carries metadata. This reads exactly that and nothing more
general: type definitions of a map of strings, one such map, one byte slice, and the whole payload
consumed. Anything else raises :class:`GobError`, and the caller treats the payload as a bare
protobuf body, as Cells' own decoder does.

Wire format (Go's ``encoding/gob``): a stream of messages, each ``uint(length) int(typeId) value``;
a negative type id announces a type definition (a ``wireType`` struct) instead of a value; a
top-level non-struct value starts with a zero byte. Unsigned integers below 128 are one byte,
others a negated byte count and big-endian bytes; signed integers are unsigned ones with the sign
in the low bit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

BYTES_TYPE: Final = 5  # gob's predefined id of []byte
STRING_TYPE: Final = 6  # gob's predefined id of string
_MAP_FIELD: Final = 4  # wireType.MapT: the 4th field of gob's wireType struct
_MAX_ENTRIES: Final = 4096


class GobError(ValueError):
    """The payload is not the metadata-and-body gob stream Cells sends."""


class _Reader:
    """Sequential reads over one buffer; every read checks the bounds."""

    __slots__ = ("_data", "_end", "_pos")

    def __init__(self, data: bytes, start: int = 0, end: int | None = None) -> None:
        self._data = data
        self._pos = start
        self._end = len(data) if end is None else end

    @property
    def done(self) -> bool:
        return self._pos >= self._end

    def byte(self) -> int:
        if self._pos >= self._end:
            raise GobError("truncated gob value")
        value = self._data[self._pos]
        self._pos += 1
        return value

    def unsigned(self) -> int:
        first = self.byte()
        if first < 0x80:
            return first
        count = 256 - first
        if count > 8:
            raise GobError("gob integer wider than 8 bytes")
        return int.from_bytes(self.take(count), "big")

    def signed(self) -> int:
        raw = self.unsigned()
        return ~(raw >> 1) if raw & 1 else raw >> 1

    def take(self, count: int) -> bytes:
        if count < 0 or self._pos + count > self._end:
            raise GobError("truncated gob value")
        chunk = self._data[self._pos : self._pos + count]
        self._pos += count
        return chunk

    def string(self) -> str:
        try:
            return self.take(self.unsigned()).decode("utf-8")
        except UnicodeDecodeError:
            raise GobError("gob string is not UTF-8") from None

    def message(self) -> _Reader:
        """The next length-prefixed message, as a reader of its own."""
        length = self.unsigned()
        start = self._pos
        self.take(length)
        return _Reader(self._data, start, start + length)

    def expect_end(self) -> None:
        if not self.done:
            raise GobError("unexpected bytes after a gob value")


def decode(payload: bytes) -> tuple[dict[str, str], bytes]:
    """``(metadata, body)`` from a gob-encoded ``map[string]string`` and ``[]byte``; or GobError."""
    stream = _Reader(payload)
    string_maps: set[int] = set()
    metadata: dict[str, str] | None = None
    while not stream.done:
        message = stream.message()
        type_id = message.signed()
        if type_id < 0:
            if _is_string_map(message):
                string_maps.add(-type_id)
            message.expect_end()
        elif metadata is None:
            if type_id not in string_maps:
                raise GobError("the first gob value is not a map of strings")
            metadata = _string_map(message)
        else:
            if type_id != BYTES_TYPE:
                raise GobError("the second gob value is not a byte slice")
            _singleton(message)
            body = message.take(message.unsigned())
            message.expect_end()
            stream.expect_end()
            return metadata, body
    raise GobError("gob stream ended before the body")


def _singleton(message: _Reader) -> None:
    if message.unsigned() != 0:
        raise GobError("a top-level gob value must start with a zero delta")


def _string_map(message: _Reader) -> dict[str, str]:
    _singleton(message)
    count = message.unsigned()
    if count > _MAX_ENTRIES:
        raise GobError("gob map too large")
    entries = {}
    for _ in range(count):
        key = message.string()
        entries[key] = message.string()
    message.expect_end()
    return entries


def _is_string_map(message: _Reader) -> bool:
    """Read a ``wireType`` definition; True when it defines ``map[string]string``."""
    if message.unsigned() != _MAP_FIELD:
        return False
    fields = _struct_fields(message, {1: _skip_common_type, 2: _Reader.signed, 3: _Reader.signed})
    if message.unsigned() != 0:
        raise GobError("malformed gob type definition")
    return fields.get(2) == STRING_TYPE and fields.get(3) == STRING_TYPE


def _skip_common_type(message: _Reader) -> int:
    _struct_fields(message, {1: _Reader.string, 2: _Reader.signed})
    return 0


def _struct_fields(message: _Reader, readers: Mapping[int, Callable[[_Reader], object]]) -> dict[int, object]:
    """Read a gob struct (field deltas until 0) whose fields are all in ``readers``."""
    found: dict[int, object] = {}
    field = 0
    while (delta := message.unsigned()) != 0:
        field += delta
        reader = readers.get(field)
        if reader is None:
            raise GobError(f"unexpected field {field} in a gob type definition")
        found[field] = reader(message)
    return found
