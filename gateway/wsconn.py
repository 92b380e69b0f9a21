"""The one place that reaches past trio-websocket's public API, and why.

trio-websocket encodes every message per connection and offers no way to write bytes that are
already framed. Server frames are unmasked, so the gateway encodes each distinct message once
(with wsproto, as trio-websocket would) and writes the same bytes to every recipient, joining
everything a session has queued into one ``send_all``: measured here as 2-4x the throughput of
``send_message`` per connection. It also needs to send a keepalive ping without parking a task
until the pong arrives. Both use the connection's own stream lock and ping table, so they
interleave safely with trio-websocket's reader (pongs, close replies).

``tests/test_wsconn.py`` pins the internals used here, so a trio-websocket upgrade that moves
them fails the suite instead of production.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection, Event, Ping


async def send_frames(conn: WebSocketConnection, data: bytes) -> None:
    """Write already-framed bytes; raises ConnectionClosed once the connection is closing."""
    if conn._wsproto.state is not ConnectionState.OPEN:
        raise ConnectionClosed(conn.closed)
    async with conn._stream_lock:
        try:
            await conn._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await conn._abort_web_socket()
            raise ConnectionClosed(conn.closed) from None


class _TailFirst(trio.abc.Stream):
    """The connection's stream once the Flusher writes to it directly.

    A direct write the kernel takes only part of leaves the rest of a frame here. Every later
    write, whoever makes it (the session's writer, or trio-websocket answering a ping or a
    close), sends that rest first, so nothing can land inside a half-written frame.
    """

    def __init__(self, inner: trio.SocketStream) -> None:
        self.inner = inner
        self.tail = b""

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.tail:
            data, self.tail = self.tail + bytes(data), b""
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


class DirectWriter:
    """Non-blocking writes of framed bytes to a session's socket, for the Flusher.

    Nothing awaits between the checks and the system call, so a direct write cannot interleave
    with trio-websocket's own writes; whatever the kernel does not take at once stays with the
    stream (see :class:`_TailFirst`) for the session's writer task to send.
    """

    def __init__(self, conn: WebSocketConnection, stream: trio.SocketStream) -> None:
        self._conn = conn
        self._socket = stream.socket
        self._stream = _TailFirst(stream)
        conn._stream = self._stream

    @property
    def tail_pending(self) -> bool:
        return bool(self._stream.tail)

    def write(self, data: bytes) -> bool:
        """Hand ``data`` to the kernel: True if it now belongs to the stream (all of it written,
        or the rest kept as the tail), False if nothing could be written (the caller keeps it)."""
        conn = self._conn
        fd = self._socket.fileno()
        if fd < 0 or self._stream.tail or conn._stream_lock.locked():
            return False
        if conn._wsproto.state is not ConnectionState.OPEN:
            return False
        try:
            written = os.write(fd, data)
        except OSError:  # EAGAIN, or a broken connection the writer task will report
            return False
        if written <= 0:
            return False
        self._stream.tail = data[written:]
        return True


def direct_writer(conn: WebSocketConnection, stream: trio.abc.Stream) -> DirectWriter | None:
    """A DirectWriter for a connection over a real socket (None for other streams, e.g. tests')."""
    return DirectWriter(conn, stream) if isinstance(stream, trio.SocketStream) else None


def answer_parse_failures(conn: WebSocketConnection) -> None:
    """Make a frame the peer got wrong close the connection with its code (1007, 1002), not 1006.

    wsproto reports a frame it cannot parse (a text frame that is not UTF-8: 1007; a protocol
    violation such as an unmasked frame: 1002) as a CloseConnection event while the connection is
    still OPEN, for the application to send that close. trio-websocket only answers closes the peer
    sent (state REMOTE_CLOSING) and drops the TCP connection without a close frame. Marking such an
    event's connection REMOTE_CLOSING makes trio-websocket send the close with wsproto's code. Call
    right after ``accept()``, before the reader task asks for events again.
    """
    wsproto = conn._wsproto
    events = wsproto.events

    def answered() -> Generator[Event, None, None]:
        for event in events():
            connection = wsproto.connection
            # A close while still OPEN is a parse failure: the peer's own close moves the state.
            if isinstance(event, CloseConnection) and connection and connection.state is ConnectionState.OPEN:
                connection._state = ConnectionState.REMOTE_CLOSING
            yield event

    wsproto.events = answered  # type: ignore[method-assign]


async def send_ping(conn: WebSocketConnection) -> trio.Event:
    """Send a ping and return an Event that trio-websocket sets when the matching pong arrives."""
    payload = os.urandom(8)
    pong = trio.Event()
    conn._pings[payload] = pong
    await conn._send(Ping(payload=payload))
    return pong


async def abort(conn: WebSocketConnection) -> None:
    """Drop the connection at once, without a closing handshake (a peer that stopped reading)."""
    with trio.CancelScope() as scope:
        scope.cancel()
        await conn.aclose()
