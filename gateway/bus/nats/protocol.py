"""The NATS client protocol, sans-IO: bytes from the server -> events; commands -> bytes.

Nothing here touches a socket or an event loop (like h11 and wsproto), so every rule of the wire
format is tested synchronously, including reads split at every byte boundary, and fuzzed.

Wire format (https://docs.nats.io/reference/reference-protocols/nats-protocol): text control lines
ended by CRLF, operation names case-insensitive, arguments separated by spaces or tabs; ``MSG`` and
``HMSG`` are followed by a payload of the announced size and a CRLF.

Errors::

    NatsProtocolError       the server sent bytes that are not the NATS protocol (or over a limit):
                            the connection cannot go on
    ValueError              a command was built from invalid arguments (bad subject, bad sid): a
                            caller bug or bad configuration, never the peer's fault

Also here, because they are pure: parsing of the ``nats://`` URL list into ``ServerAddress`` values
and the ``CONNECT`` options a client sends after the server's ``INFO``.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final

CRLF: Final = b"\r\n"
# Our own bounds on what we accept from the server. A control line is short except INFO, which
# lists cluster URLs; a payload is bounded by the server's max_payload (1 MiB default, 64 MiB max).
MAX_CONTROL_LINE: Final = 64 * 1024
MAX_PAYLOAD: Final = 64 * 1024 * 1024
DEFAULT_PORT: Final = 4222
PING: Final = b"PING\r\n"
PONG: Final = b"PONG\r\n"

_WHITESPACE: Final = re.compile(rb"[ \t]+")
_OPERATION: Final = re.compile(rb"[ \t]*([^ \t]*)[ \t]*(.*)", re.DOTALL)

# A subject token: anything but whitespace, control characters and the separator.
_TOKEN: Final = re.compile(r"[^\s.\x00-\x1f\x7f]+")


class NatsProtocolError(Exception):
    """The server broke the NATS protocol (or one of our bounds); the connection must be closed."""


# -- events (server -> client) -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Info:
    """The server's ``INFO``: sent first on every connection, and again when the cluster changes."""

    fields: Mapping[str, object] = field(default_factory=dict)

    @property
    def max_payload(self) -> int | None:
        value = self.fields.get("max_payload")
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None

    def flag(self, name: str) -> bool:
        """A boolean field of INFO; absent or not a boolean reads as False."""
        return self.fields.get(name) is True


@dataclass(frozen=True, slots=True)
class Msg:
    """A message delivered on subscription ``sid``; ``headers`` is the raw header block of HMSG."""

    subject: str
    sid: int
    reply_to: str | None
    payload: bytes
    headers: bytes | None = None


@dataclass(frozen=True, slots=True)
class Ping:
    """The server checks that we are alive: answer with PONG."""


@dataclass(frozen=True, slots=True)
class Pong:
    """The answer to one of our PINGs (answers come in the order of the PINGs)."""


@dataclass(frozen=True, slots=True)
class Ok:
    """``+OK``: only sent in verbose mode, which we do not ask for; accepted and ignored."""


@dataclass(frozen=True, slots=True)
class Err:
    """``-ERR``: most errors are followed by the server closing the connection."""

    message: str

    @property
    def is_fatal(self) -> bool:
        """False for the errors after which the server keeps the connection open."""
        lowered = self.message.lower()
        return not lowered.startswith(("invalid subject", "permissions violation"))


Event = Info | Msg | Ping | Pong | Ok | Err


# -- parser --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _PendingMsg:
    """A MSG/HMSG control line read; waiting for ``size`` payload bytes and a CRLF."""

    subject: str
    sid: int
    reply_to: str | None
    header_size: int | None
    size: int


class NatsParser:
    """Turns the bytes a NATS server sends into events, whatever way the reads split them.

    ``receive_data`` appends; ``next_event`` returns one complete event or None when more bytes
    are needed. Memory is bounded: at most one control line (``max_control_line``) or one message
    (``max_payload``) is buffered before an error is raised.
    """

    def __init__(self, *, max_control_line: int = MAX_CONTROL_LINE, max_payload: int = MAX_PAYLOAD) -> None:
        self._buffer = bytearray()
        self._pending: _PendingMsg | None = None
        self._max_control_line = max_control_line
        self._max_payload = max_payload

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        self._buffer += data

    def events(self) -> Iterator[Event]:
        """Every event complete in the bytes received so far."""
        while (event := self.next_event()) is not None:
            yield event

    def next_event(self) -> Event | None:
        if self._pending is None:
            line = self._take_line()
            if line is None:
                return None
            event = self._parse_line(line)
            if event is not None:
                return event
        return self._take_payload()

    def _take_line(self) -> bytes | None:
        end = self._buffer.find(CRLF, 0, self._max_control_line + len(CRLF))
        if end < 0:
            if len(self._buffer) >= self._max_control_line + len(CRLF):
                raise NatsProtocolError(f"control line longer than {self._max_control_line} bytes")
            return None
        line = bytes(self._buffer[:end])
        del self._buffer[: end + len(CRLF)]
        return line

    def _parse_line(self, line: bytes) -> Event | None:
        """An event for a line that is complete by itself; None when a payload must follow."""
        match = _OPERATION.fullmatch(line)
        assert match is not None  # the pattern matches any line
        op, rest = match.group(1).upper(), match.group(2)
        if op == b"MSG":
            self._pending = _parse_msg_args(_split(rest), headers=False, max_payload=self._max_payload)
            return None
        if op == b"HMSG":
            self._pending = _parse_msg_args(_split(rest), headers=True, max_payload=self._max_payload)
            return None
        return _parse_simple(op, rest)

    def _take_payload(self) -> Msg | None:
        pending = self._pending
        assert pending is not None
        if len(self._buffer) < pending.size + len(CRLF):
            return None
        if self._buffer[pending.size : pending.size + len(CRLF)] != CRLF:
            raise NatsProtocolError("message payload not followed by CRLF")
        body = bytes(self._buffer[: pending.size])
        del self._buffer[: pending.size + len(CRLF)]
        self._pending = None
        if pending.header_size is None:
            return Msg(pending.subject, pending.sid, pending.reply_to, body)
        return Msg(
            pending.subject,
            pending.sid,
            pending.reply_to,
            body[pending.header_size :],
            headers=body[: pending.header_size],
        )


def _split(args: bytes) -> list[bytes]:
    return [a for a in _WHITESPACE.split(args.strip(b" \t")) if a]


def _parse_simple(op: bytes, rest: bytes) -> Event:
    """INFO, PING, PONG, +OK, -ERR: everything is on the control line."""
    if op == b"INFO":
        return Info(_parse_json_object(rest))
    if op in (b"PING", b"PONG", b"+OK"):
        if rest.strip(b" \t"):
            raise NatsProtocolError(f"unexpected arguments after {op.decode()}")
        return Ping() if op == b"PING" else Pong() if op == b"PONG" else Ok()
    if op == b"-ERR":
        return Err(_decode(rest.strip(b" \t")).strip("'"))
    raise NatsProtocolError(f"unknown operation {op[:32]!r}")


def _parse_json_object(raw: bytes) -> dict[str, object]:
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        raise NatsProtocolError("INFO is not valid JSON") from None
    if not isinstance(doc, dict):
        raise NatsProtocolError("INFO is not a JSON object")
    return doc


def _parse_msg_args(args: list[bytes], *, headers: bool, max_payload: int) -> _PendingMsg:
    """``subject sid [reply-to] [#header-bytes] #total-bytes`` -> what the payload must be."""
    fixed = 4 if headers else 3
    if len(args) not in (fixed, fixed + 1):
        raise NatsProtocolError(f"{'HMSG' if headers else 'MSG'} takes {fixed} or {fixed + 1} arguments")
    subject, sid = _decode(args[0]), _parse_int(args[1], "sid")
    reply_to = _decode(args[2]) if len(args) == fixed + 1 else None
    size = _parse_int(args[-1], "size")
    header_size = _parse_int(args[-2], "header size") if headers else None
    if header_size is not None and header_size > size:
        raise NatsProtocolError("HMSG header size larger than its total size")
    if size > max_payload:
        raise NatsProtocolError(f"message of {size} bytes is over the {max_payload} bytes limit")
    return _PendingMsg(subject, sid, reply_to, header_size, size)


def _parse_int(raw: bytes, what: str) -> int:
    if not raw.isdigit() or len(raw) > 18:
        raise NatsProtocolError(f"invalid {what} {raw[:32]!r}")
    return int(raw)


def _decode(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise NatsProtocolError("control line is not UTF-8") from None


# -- commands (client -> server) -----------------------------------------------------------------


def check_subject(subject: str, *, wildcards: bool = False) -> None:
    """Raise ValueError unless ``subject`` is a valid NATS subject (wildcards only to subscribe)."""
    error = _subject_error(subject, wildcards)
    if error is not None:
        raise ValueError(error)


@functools.lru_cache(maxsize=1024)  # a gateway uses a handful of subjects, each checked per publish
def _subject_error(subject: str, wildcards: bool) -> str | None:
    tokens = subject.split(".")
    if not all(_TOKEN.fullmatch(token) for token in tokens):
        return f"invalid NATS subject {subject!r}"
    if not wildcards and any(t in ("*", ">") for t in tokens):
        return f"a published subject cannot hold wildcards: {subject!r}"
    if wildcards and ">" in tokens[:-1]:
        return f"'>' must be the last token: {subject!r}"
    return None


def _check_sid(sid: int) -> None:
    if sid < 1:
        raise ValueError(f"a sid is a positive integer, got {sid}")


def connect(options: Mapping[str, object]) -> bytes:
    """``CONNECT {json}``: the first command after the server's INFO."""
    return b"CONNECT " + json.dumps(options, separators=(",", ":")).encode() + CRLF


def pub(subject: str, payload: bytes, reply_to: str | None = None) -> bytes:
    """``PUB subject [reply-to] #bytes`` + payload."""
    reply = _reply_part(subject, reply_to)
    return f"PUB {subject}{reply} {len(payload)}\r\n".encode() + payload + CRLF


def hpub(subject: str, headers: bytes, payload: bytes, reply_to: str | None = None) -> bytes:
    """``HPUB subject [reply-to] #header-bytes #total-bytes`` + headers + payload.

    ``headers`` is a complete block (``headers.encode_headers``); the server accepts HPUB only
    from a client that declared ``headers`` in CONNECT.
    """
    reply = _reply_part(subject, reply_to)
    total = len(headers) + len(payload)
    return f"HPUB {subject}{reply} {len(headers)} {total}\r\n".encode() + headers + payload + CRLF


def _reply_part(subject: str, reply_to: str | None) -> str:
    """Check the subject and the reply subject (no wildcards in either): `` reply-to`` or ''."""
    check_subject(subject)
    if not reply_to:
        return ""
    check_subject(reply_to)
    return f" {reply_to}"


def sub(subject: str, sid: int, queue_group: str | None = None) -> bytes:
    """``SUB subject [queue group] sid``."""
    check_subject(subject, wildcards=True)
    _check_sid(sid)
    queue = f" {queue_group}" if queue_group else ""
    return f"SUB {subject}{queue} {sid}\r\n".encode()


def unsub(sid: int, max_msgs: int | None = None) -> bytes:
    """``UNSUB sid [max_msgs]``."""
    _check_sid(sid)
    limit = f" {max_msgs}" if max_msgs is not None else ""
    return f"UNSUB {sid}{limit}\r\n".encode()
