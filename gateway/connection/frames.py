"""WebSocket frames after the upgrade, with wsproto: inbound messages within a size bound, and the
control frames the gateway sends (ping, pong, close).

Data frames going out are not made here: they are encoded once per message for every recipient
(``gateway.protocol.text_frame``) and written as bytes; only control frames go through wsproto,
which keeps the closing handshake's state.
"""

from __future__ import annotations

from dataclasses import dataclass

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.frame_protocol import CloseReason


@dataclass(frozen=True, slots=True)
class Message:
    data: str | bytes


@dataclass(frozen=True, slots=True)
class TooBig:
    """A message grew past the hard bound: close with 1009 without reading the rest."""


@dataclass(frozen=True, slots=True)
class PingReceived:
    pong: bytes  # the answer, ready to write


@dataclass(frozen=True, slots=True)
class PongReceived:
    pass


@dataclass(frozen=True, slots=True)
class PeerClosed:
    """The peer's close frame (``reply`` answers it), or the end of the stream (no reply)."""

    code: int
    reply: bytes


@dataclass(frozen=True, slots=True)
class Malformed:
    """A frame the peer got wrong: close with ``code`` (1002 protocol error, 1007 not UTF-8)."""

    code: int
    reason: str


Inbound = Message | TooBig | PingReceived | PongReceived | PeerClosed | Malformed


class FrameConnection:
    """The frame layer of one server connection."""

    __slots__ = ("_parts", "_size", "_ws", "hard_limit")

    def __init__(self, trailing: bytes, hard_limit: int) -> None:
        self._ws = Connection(ConnectionType.SERVER)
        self.hard_limit = hard_limit  # characters (text) or bytes (binary) in one message
        self._parts: list[str | bytes] = []
        self._size = 0
        if trailing:
            self._ws.receive_data(trailing)

    @property
    def open(self) -> bool:
        return self._ws.state is ConnectionState.OPEN

    @property
    def closed(self) -> bool:
        return self._ws.state is ConnectionState.CLOSED

    @property
    def assembling(self) -> bool:
        """A message has begun and not ended (its first fragments are held)."""
        return bool(self._parts)

    def receive(self, data: bytes) -> list[Inbound]:
        """What ``data`` (b"" at the end of the stream) completes."""
        if self._ws.state is ConnectionState.CLOSED:
            return []
        self._ws.receive_data(data or None)
        return self.pending()

    def pending(self) -> list[Inbound]:
        """What the data received so far completes (and was not returned yet)."""
        found: list[Inbound] = []
        for event in self._ws.events():
            inbound = self._inbound(event)
            if inbound is not None:
                found.append(inbound)
                if isinstance(inbound, TooBig | Malformed | PeerClosed):
                    break
        return found

    def _inbound(self, event: object) -> Inbound | None:
        if isinstance(event, TextMessage | BytesMessage):
            return self._assemble(event)
        if isinstance(event, Ping):
            if self._ws.state is not ConnectionState.OPEN:
                return None  # closing: no more pongs
            return PingReceived(self._ws.send(event.response()))
        if isinstance(event, Pong):
            return PongReceived()
        if isinstance(event, CloseConnection):
            if event.code == CloseReason.ABNORMAL_CLOSURE:  # the end of the stream, not a frame
                return PeerClosed(event.code, b"")
            if self._ws.state is ConnectionState.OPEN:  # wsproto's report of a frame it could not parse
                return Malformed(int(event.code), event.reason or "")
            reply = (
                self._ws.send(event.response()) if self._ws.state is ConnectionState.REMOTE_CLOSING else b""
            )
            return PeerClosed(int(event.code), reply)
        return None

    def _assemble(self, event: TextMessage | BytesMessage) -> Inbound | None:
        self._size += len(event.data)
        if self._size > self.hard_limit:
            return TooBig()
        data = event.data if isinstance(event.data, str) else bytes(event.data)
        if event.message_finished and not self._parts:
            self._size = 0
            return Message(data)
        self._parts.append(data)
        if not event.message_finished:
            return None
        parts, self._parts, self._size = self._parts, [], 0
        if isinstance(event, TextMessage):
            return Message("".join(p for p in parts if isinstance(p, str)))
        return Message(b"".join(p for p in parts if isinstance(p, bytes)))

    def ping(self, payload: bytes) -> bytes:
        return self._ws.send(Ping(payload=payload)) if self.open else b""

    def close(self, code: int, reason: str) -> bytes:
        """Our close frame (b"" when the closing handshake is past that point)."""
        if self._ws.state not in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            return b""
        return self._ws.send(CloseConnection(code=code, reason=reason))
