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
from collections.abc import Callable, Generator

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection, Event, Ping
from wsproto.frame_protocol import FrameProtocol

# Encodes complete server->client text frames. Stateless for complete messages (fin=True).
_ENCODER = FrameProtocol(client=False, extensions=[])


def text_frame(payload: str) -> bytes:
    """One complete, unmasked WebSocket text frame carrying ``payload``."""
    return bytes(_ENCODER.send_data(payload, fin=True))


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


def direct_writer(conn: WebSocketConnection, stream: trio.abc.Stream) -> Callable[[bytes], int] | None:
    """A non-blocking write of framed bytes for the Flusher, or None when the stream is not a socket.

    Returns how many bytes the kernel took (0 when it takes none now, or when someone else is
    writing, or the connection is closing); the caller leaves the rest to the writer task, which
    goes through trio and so meets any error properly. Nothing awaits between the checks and the
    write, so they cannot interleave with trio-websocket's own writes.
    """
    if not isinstance(stream, trio.SocketStream):
        return None
    sock = stream.socket

    def write(data: bytes) -> int:
        fd = sock.fileno()
        if fd < 0 or conn._stream_lock.locked() or conn._wsproto.state is not ConnectionState.OPEN:
            return 0
        try:
            return os.write(fd, data)
        except OSError:  # EAGAIN, or a broken connection the writer task will report
            return 0

    return write


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
