"""One established connection to a NATS broker, and how it is opened (TCP, INFO, TLS, CONNECT)."""

from __future__ import annotations

import ssl
from collections import deque
from typing import Final, TypeVar

import trio

from gateway import __version__
from gateway.bus.nats.protocol import (
    PING,
    PONG,
    Err,
    Event,
    Info,
    NatsParser,
    NatsProtocolError,
    Ping,
    Pong,
    connect,
)
from gateway.bus.nats.servers import ServerAddress, connect_options

_E = TypeVar("_E", bound=Event)

READ_SIZE: Final = 64 * 1024
# Until the server's INFO says otherwise (NATS default).
DEFAULT_MAX_PAYLOAD: Final = 1024 * 1024
# SUB/UNSUB/PING/PONG frames waiting for the writer; more means the writer is stuck.
MAX_CONTROL_FRAMES: Final = 4096

# What a broken connection or an unreachable broker raises; anything else is a bug and surfaces.
CONNECTION_ERRORS: Final = (
    OSError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    trio.TooSlowError,
    NatsProtocolError,
)


class ConnectionLost(Exception):
    """The current broker connection is unusable (closed, -ERR, keepalive failed, ...)."""


class Connection:
    """One established broker connection: stream, parser, control frames and PINGs in flight."""

    def __init__(self, stream: trio.abc.Stream, parser: NatsParser, server: ServerAddress, info: Info):
        self.stream = stream
        self.parser = parser
        self.server = server
        self.max_payload = info.max_payload or DEFAULT_MAX_PAYLOAD
        self.headers = info.flag("headers")  # we declared headers (and no_responders) in CONNECT
        self.control: list[bytes] = []
        # One entry per PING sent, in order: None for a keepalive, an Event for a round trip.
        self.pings: deque[trio.Event | None] = deque()
        self.keepalives = 0
        self.error: str | None = None
        self.cancel_scope = trio.CancelScope()

    def send_control(self, frame: bytes) -> None:
        if len(self.control) >= MAX_CONTROL_FRAMES:
            self.fail("control frames piled up: the writer is stuck")
            return
        self.control.append(frame)

    def on_pong(self) -> None:
        if not self.pings:
            return
        waiter = self.pings.popleft()
        if waiter is None:
            self.keepalives -= 1
        else:
            waiter.set()

    def fail(self, reason: str) -> None:
        """Mark the connection lost (first reason wins) and stop its reader and writer."""
        if self.error is None:
            self.error = reason
        self.cancel_scope.cancel()

    def release_waiters(self) -> None:
        """Wake every round trip still waiting; they see ``error`` set and report failure."""
        for waiter in self.pings:
            if waiter is not None:
                waiter.set()
        self.pings.clear()


async def open_connection(
    server: ServerAddress, *, name: str, ssl_context: ssl.SSLContext | None, connect_timeout: float
) -> Connection:
    """TCP connect, INFO, optional TLS, CONNECT + PING, PONG: all within ``connect_timeout``."""
    with trio.fail_after(connect_timeout):
        stream: trio.abc.Stream = await trio.open_tcp_stream(server.host, server.port)
        try:
            parser = NatsParser()
            info = await _expect(stream, parser, Info)
            use_tls = server.tls or info.flag("tls_required")
            if use_tls:
                stream = await _start_tls(stream, server, info, ssl_context)
            options = connect_options(info, server, name=name, version=__version__, tls=use_tls)
            await stream.send_all(connect(options) + PING)
            await _expect(stream, parser, Pong)
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
    return Connection(stream, parser, server, info)


async def _start_tls(
    stream: trio.abc.Stream, server: ServerAddress, info: Info, context: ssl.SSLContext | None
) -> trio.SSLStream[trio.abc.Stream]:
    if not (info.flag("tls_required") or info.flag("tls_available")):
        raise ConnectionLost(f"{server} does not offer TLS")
    tls_stream = trio.SSLStream(stream, context or ssl.create_default_context(), server_hostname=server.host)
    await tls_stream.do_handshake()
    return tls_stream


async def _expect(stream: trio.abc.Stream, parser: NatsParser, kind: type[_E]) -> _E:
    """Read until an event of ``kind`` (handshake only): -ERR fails, PING is answered."""
    while True:
        for event in parser.events():
            if isinstance(event, kind):
                return event
            if isinstance(event, Err):
                raise ConnectionLost(f"broker refused the connection: {event.message}")
            if isinstance(event, Ping):
                await stream.send_all(PONG)
        data = await stream.receive_some(READ_SIZE)
        if not data:
            raise ConnectionLost("the broker closed the connection during the handshake")
        parser.receive_data(data)
