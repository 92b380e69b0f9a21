"""The NATS engine's connection loop: connect, serve one connection (a reader and a writer
task), and on any loss reconnect with backoff; the subscriber table and the outbound buffer the
loop serves. ``NatsBus`` (``bus``) adds the public API on top.

One reader task and one writer task per connection:

- the reader never awaits anything but the socket: each message goes to its subscriber's bounded
  queue without waiting (``Subscriber._offer``), PINGs are answered through the writer;
- the writer sends control frames (SUB, UNSUB, PING, PONG) first, then buffered PUBs in order,
  and PINGs every ``ping_interval``; a write stuck for ``WRITE_TIMEOUT`` drops the connection;
- every SUB is sent again on each new connection, and each subscriber is told of the reconnect.
"""

from __future__ import annotations

import logging
import random
import ssl
from collections.abc import Awaitable, Callable
from typing import Final

import trio

from gateway.bus.nats.connection import (
    CONNECTION_ERRORS,
    DEFAULT_MAX_PAYLOAD,
    READ_SIZE,
    Connection,
    ConnectionLost,
    open_connection,
)
from gateway.bus.nats.outbox import WRITE_CHUNK, Outbox
from gateway.bus.nats.protocol import PING, PONG, Err, Event, Info, Msg, Ping, Pong, sub, unsub
from gateway.bus.nats.servers import ServerAddress
from gateway.bus.nats.subscription import Subscriber
from gateway.metrics import Metrics

log = logging.getLogger("gateway.bus.nats")

# A write that takes longer means a dead or stuck broker: drop the connection and reconnect.
WRITE_TIMEOUT: Final = 10.0
# The writer waits this long after a publish wakes it, so that a burst of publishes (each one a
# checkpoint) goes out in one write instead of one syscall per message. Control frames and requests
# (someone waits for the reply) do not wait.
WRITE_LINGER: Final = 0.001
# Keepalive PINGs still unanswered when the next one is due: that many means a dead connection.
MAX_OUTSTANDING_PINGS: Final = 2


_Loop = Callable[[Connection], Awaitable[None]]


class NatsEngine:
    """The connection loop and the state it serves (see the module docstring)."""

    def __init__(
        self,
        servers: list[ServerAddress],
        *,
        metrics: Metrics,
        max_buffer_bytes: int,
        name: str,
        ping_interval: float,
        connect_timeout: float,
        reconnect_min: float,
        reconnect_max: float,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self._servers = servers
        self._metrics = metrics
        self._name = name
        self._ping_interval = ping_interval
        self._connect_timeout = connect_timeout
        self._reconnect_min = reconnect_min
        self._reconnect_max = max(reconnect_max, reconnect_min)
        self._ssl_context = ssl_context
        self._subscriptions: dict[int, Subscriber] = {}
        self._next_sid = 1
        self._outbox = Outbox(max_buffer_bytes, metrics)
        self._wakeup = trio.Event()  # set when the writer has something to do
        self._urgent = False  # a request is waiting for its reply: write without lingering
        self._conn: Connection | None = None
        self._up = trio.Event()  # set while connected
        self._ever_connected = False
        self._first_connect = trio.Event()
        self.server_pings = 0  # PINGs from the broker answered (diagnostics and tests)
        self._max_payload = DEFAULT_MAX_PAYLOAD
        self._headers = True  # whether the broker takes headers (HPUB): known once connected
        metrics.bus_connected.set(0)

    # -- connection loop -----------------------------------------------------------------------

    async def _keep_connected(self) -> None:
        """Connect, serve, and on any loss reconnect with backoff, trying the servers in turn."""
        failures = 0
        index = 0
        while True:
            server = self._servers[index % len(self._servers)]
            index += 1
            established = False
            try:
                conn = await open_connection(
                    server,
                    name=self._name,
                    ssl_context=self._ssl_context,
                    connect_timeout=self._connect_timeout,
                )
                established = True
                await self._serve(conn)
            except (ConnectionLost, *CONNECTION_ERRORS) as exc:
                self._log_failure(server, exc, established, failures)
            failures = 0 if established else failures + 1
            await trio.sleep(self._backoff(failures))

    def _backoff(self, failures: int) -> float:
        """Full jitter: uniform between the minimum and a ceiling that doubles with each failure."""
        ceiling = min(self._reconnect_max, self._reconnect_min * 2 ** min(failures, 32))
        return random.uniform(self._reconnect_min, ceiling)

    def _log_failure(self, server: ServerAddress, exc: BaseException, established: bool, n: int) -> None:
        reason = str(exc) or type(exc).__name__
        if established:
            log.warning("lost the NATS connection to %s: %s; reconnecting", server, reason)
        elif n < 3 or n % 20 == 0:
            log.warning("cannot connect to NATS at %s (attempt %d): %s", server, n + 1, reason)
        else:
            log.debug("cannot connect to NATS at %s (attempt %d): %s", server, n + 1, reason)

    async def _serve(self, conn: Connection) -> None:
        """Run the reader and the writer until the connection fails; always raises ConnectionLost."""
        self._on_connected(conn)
        try:
            async with trio.open_nursery() as nursery:
                conn.cancel_scope = nursery.cancel_scope
                if conn.error is not None:
                    nursery.cancel_scope.cancel()
                nursery.start_soon(self._guard, self._read_loop, conn)
                nursery.start_soon(self._guard, self._write_loop, conn)
        finally:
            self._on_disconnected(conn)
            await trio.aclose_forcefully(conn.stream)
        raise ConnectionLost(conn.error or "connection closed")

    async def _guard(self, loop: _Loop, conn: Connection) -> None:
        """Turn the expected failures of one loop into ``conn.fail`` (which stops the other)."""
        try:
            await loop(conn)
        except (ConnectionLost, *CONNECTION_ERRORS) as exc:
            conn.fail(str(exc) or type(exc).__name__)

    def _on_connected(self, conn: Connection) -> None:
        self._conn = conn
        self._max_payload = conn.max_payload
        self._headers = conn.headers
        for sid, subscriber in self._subscriptions.items():
            conn.send_control(sub(subscriber.subject, sid))
            if self._ever_connected:
                subscriber._reconnected()
        self._up.set()
        self._wakeup.set()
        self._outbox.wake()
        self._metrics.bus_connected.set(1)
        if self._ever_connected:
            self._metrics.bus_reconnects.inc()
        self._ever_connected = True
        self._first_connect.set()
        log.info("connected to NATS at %s", conn.server)

    def _on_disconnected(self, conn: Connection) -> None:
        if conn.error is None:
            conn.error = "connection closed"
        if self._conn is conn:
            self._conn = None
            self._up = trio.Event()
        conn.release_waiters()
        self._outbox.wake()
        self._metrics.bus_connected.set(0)

    # -- reader --------------------------------------------------------------------------------

    async def _read_loop(self, conn: Connection) -> None:
        """Read and handle events; never awaits anything but the socket (liveness is the writer's)."""
        while True:
            data = await conn.stream.receive_some(READ_SIZE)
            if not data:
                raise ConnectionLost("the broker closed the connection")
            conn.parser.receive_data(data)
            for event in conn.parser.events():
                self._handle(conn, event)

    def _handle(self, conn: Connection, event: Event) -> None:
        if isinstance(event, Msg):
            subscriber = self._subscriptions.get(event.sid)
            if subscriber is not None:  # None: a message sent before our UNSUB arrived
                subscriber._offer(event)
        elif isinstance(event, Ping):
            self.server_pings += 1
            conn.send_control(PONG)
            self._wakeup.set()
        elif isinstance(event, Pong):
            conn.on_pong()
        elif isinstance(event, Info):
            conn.max_payload = event.max_payload or conn.max_payload
            self._max_payload = conn.max_payload
        elif isinstance(event, Err):
            if event.is_fatal:
                raise ConnectionLost(f"broker error: {event.message}")
            log.warning("NATS broker error (connection kept): %s", event.message)

    # -- writer --------------------------------------------------------------------------------

    async def _write_loop(self, conn: Connection) -> None:
        """Send control frames, then buffered PUBs in order; PING every ``ping_interval``."""
        next_ping = trio.current_time() + self._ping_interval
        while True:
            with trio.move_on_at(next_ping):
                await self._wakeup.wait()
                if not (conn.control or self._urgent) and self._outbox.bytes < WRITE_CHUNK:
                    await trio.sleep(WRITE_LINGER)
            if trio.current_time() >= next_ping:
                self._keepalive(conn)
                next_ping = trio.current_time() + self._ping_interval
            self._wakeup = trio.Event()
            self._urgent = False
            data, taken = self._next_write(conn)
            if data:
                with trio.fail_after(WRITE_TIMEOUT):
                    await conn.stream.send_all(data)
                self._outbox.commit(taken)
            if self._outbox:
                self._wakeup.set()

    def _keepalive(self, conn: Connection) -> None:
        if conn.keepalives >= MAX_OUTSTANDING_PINGS:
            raise ConnectionLost(f"no PONG to {conn.keepalives} PINGs: the broker is unreachable")
        conn.keepalives += 1
        conn.pings.append(None)
        conn.send_control(PING)

    def _next_write(self, conn: Connection) -> tuple[bytes, int]:
        """Control frames, then PUBs from the head of the buffer: (bytes, PUBs to commit)."""
        frames, taken = self._outbox.take(conn.max_payload)
        data = b"".join([*conn.control, *frames])
        conn.control = []
        return data, taken

    # -- helpers -------------------------------------------------------------------------------

    def _new_sid(self) -> int:
        sid = self._next_sid
        self._next_sid += 1
        return sid

    async def _add_subscriber(self, subscriber: Subscriber) -> None:
        """Register, and SUB now if connected (else on connect); waits (bounded) for the broker."""
        self._subscriptions[subscriber.sid] = subscriber
        await self._send_sub(subscriber)

    def _remove_subscriber(self, subscriber: Subscriber) -> None:
        del self._subscriptions[subscriber.sid]
        subscriber._close()
        if self._conn is not None:
            self._conn.send_control(unsub(subscriber.sid))
            self._wakeup.set()

    async def _wait_connected(self) -> None:
        """Until a connection is up (bound it with a cancel scope)."""
        while self._conn is None:
            await self._up.wait()

    async def _send_sub(self, subscription: Subscriber) -> None:
        """SUB at once when connected and wait (bounded) for the broker to have it."""
        conn = self._conn
        if conn is None:
            await trio.lowlevel.checkpoint()
            return
        conn.send_control(sub(subscription.subject, subscription.sid))
        self._wakeup.set()
        with trio.move_on_after(self._connect_timeout):
            await self._round_trip(conn)

    async def _round_trip(self, conn: Connection) -> bool:
        """PING and wait for its PONG: the broker has processed everything we sent before it."""
        waiter = trio.Event()
        conn.pings.append(waiter)
        conn.send_control(PING)
        self._wakeup.set()
        await waiter.wait()
        return conn.error is None
