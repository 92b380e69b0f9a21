"""NATS bus engine: a trio-native NATS client behind the ``Bus`` protocol.

Several gateways behind a load balancer share one NATS broker (or cluster), as Cells does when
clustered: every gateway subscribes to the platform's topics and publishes chat posts and admin
events, so each instance sees what any instance published. Subjects are the topic names as-is.

No maintained trio or anyio NATS client exists (nats-py is asyncio-only), so this is a small one:
the wire format lives in ``protocol`` (sans-IO), one connection's opening in ``connection``, the
publish buffer in ``outbox``; this module owns one reader task and one writer task per connection,
the subscriptions, and the reconnect loop.

Guarantees and drop policy (NATS core is at-most-once; so is this bus):

- ``publish`` never waits for the network: it appends to a bounded outbound buffer that the writer
  drains in order. While the broker is unreachable the buffer keeps messages, up to
  ``max_buffer_bytes``, and they are sent in order after reconnecting. A message that does not fit
  is dropped (the new one, never an older one), counted in ``events_dropped{reason=
  "bus_disconnected"}`` (``"bus_overflow"`` if connected but the broker is not reading), and the
  caller gets ``BusError``. A chunk whose write failed stays in the buffer and is written again
  after reconnecting, so it may arrive twice; bytes the kernel had accepted before the broker died
  may be lost.
- Subscriptions survive reconnects (same sid, re-sent on every connect). Messages published by
  other instances while this one was disconnected are not replayed (no JetStream).
- The reader never waits for a subscriber: each subscription has a bounded queue and a message for
  a full queue is dropped and counted in ``events_dropped{reason="bus_overflow"}``, so one stalled
  topic never stalls the connection (PINGs are still answered).
- A broken connection (EOF, reset, protocol error, ``-ERR``, two PINGs without PONG, a write stuck
  for ``WRITE_TIMEOUT``) never raises out of ``run``: it reconnects with exponential backoff and
  full jitter, trying the configured servers in turn.
"""

from __future__ import annotations

import logging
import random
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Final, TypeVar

import trio

from gateway.bus.base import BusError
from gateway.bus.nats.connection import (
    CONNECTION_ERRORS,
    DEFAULT_MAX_PAYLOAD,
    READ_SIZE,
    Connection,
    ConnectionLost,
    open_connection,
)
from gateway.bus.nats.outbox import WRITE_CHUNK, Outbox
from gateway.bus.nats.protocol import (
    PING,
    PONG,
    Err,
    Event,
    Info,
    Msg,
    Ping,
    Pong,
    check_subject,
    pub,
    sub,
    unsub,
)
from gateway.bus.nats.servers import ServerAddress, parse_servers
from gateway.bus.nats.subscription import NatsSubscription
from gateway.metrics import Metrics
from gateway.topics import EVENT_TOPICS

log = logging.getLogger("gateway.bus.nats")

_E = TypeVar("_E", bound=Event)

# A write that takes longer means a dead or stuck broker: drop the connection and reconnect.
WRITE_TIMEOUT: Final = 10.0
# The writer waits this long after a publish wakes it, so that a burst of publishes (each one a
# checkpoint) goes out in one write instead of one syscall per message. Control frames do not wait.
WRITE_LINGER: Final = 0.001
# Keepalive PINGs still unanswered when the next one is due: that many means a dead connection.
MAX_OUTSTANDING_PINGS: Final = 2


_Loop = Callable[[Connection], Awaitable[None]]


class NatsBus:
    """The ``Bus`` over a NATS broker: see the module docstring for the guarantees."""

    def __init__(
        self,
        url: str,
        *,
        metrics: Metrics,
        queue_size: int = 10000,
        max_buffer_bytes: int = 8 << 20,
        name: str = "cells-ws-gateway",
        ping_interval: float = 20.0,
        connect_timeout: float = 5.0,
        reconnect_min: float = 0.1,
        reconnect_max: float = 5.0,
        tls_ca_file: str | None = None,
        cells_subject_prefix: str | None = None,
    ) -> None:
        self._servers = parse_servers(url)
        # Event topics read on Cells' own subjects (bus_format = "cells"), never published on.
        self._cells_prefix = cells_subject_prefix
        self._metrics = metrics
        self._queue_size = queue_size
        self._name = name
        self._ping_interval = ping_interval
        self._connect_timeout = connect_timeout
        self._reconnect_min = reconnect_min
        self._reconnect_max = max(reconnect_max, reconnect_min)
        # Built now so that a bad CA file fails at start, not on every reconnect.
        self._ssl_context = (
            ssl.create_default_context(cafile=tls_ca_file)
            if tls_ca_file or any(s.tls for s in self._servers)
            else None
        )
        self._subscriptions: dict[int, NatsSubscription] = {}
        self._next_sid = 1
        self._outbox = Outbox(max_buffer_bytes, metrics)
        self._wakeup = trio.Event()  # set when the writer has something to do
        self._conn: Connection | None = None
        self._ever_connected = False
        self._first_connect = trio.Event()
        self._running = False
        self._closed = False
        self.server_pings = 0  # PINGs from the broker answered (diagnostics and tests)
        self._max_payload = DEFAULT_MAX_PAYLOAD
        metrics.bus_connected.set(0)

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def subject(self, topic: str) -> str:
        if self._cells_prefix is not None and topic in EVENT_TOPICS:
            return f"{self._cells_prefix}/{topic}"
        return topic

    # -- Bus protocol --------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, and stay connected until cancelled.

        ``started()`` comes after the first successful connect, or after ``connect_timeout`` if the
        broker is down, so the gateway can start and report itself not ready.
        """
        if self._running or self._closed:
            raise RuntimeError("NatsBus.run() can be called only once")
        self._running = True
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._keep_connected)
                with trio.move_on_after(self._connect_timeout):
                    await self._first_connect.wait()
                task_status.started()
        finally:
            self._closed = True
            self._metrics.bus_connected.set(0)

    async def publish(self, topic: str, data: bytes) -> None:
        """Buffer one message for the writer; never waits for the network (see module docstring)."""
        await trio.lowlevel.checkpoint()
        if self._closed:
            raise BusError("bus is closed")
        if len(data) > self._max_payload:
            raise BusError(f"message of {len(data)} bytes is over the broker's limit of {self._max_payload}")
        if self.subject(topic) != topic:
            raise BusError(f"{topic} is read from Cells' subjects: the gateway never publishes there")
        try:
            frame = pub(topic, data)
        except ValueError as exc:
            raise BusError(str(exc)) from None
        self._outbox.add(topic, frame, len(data), connected=self.connected)
        self._wakeup.set()

    @asynccontextmanager
    async def subscribe(self, topic: str) -> AsyncIterator[NatsSubscription]:
        """SUB now if connected (and wait, bounded, for the broker to confirm), else on connect."""
        subject = self.subject(topic)
        try:
            check_subject(subject, wildcards=True)
        except ValueError as exc:
            raise BusError(str(exc)) from None
        sid = self._next_sid
        self._next_sid += 1
        subscription = NatsSubscription(topic, subject, sid, self._queue_size, self._metrics)
        self._subscriptions[sid] = subscription
        try:
            await self._send_sub(subscription)
            yield subscription
        finally:
            del self._subscriptions[sid]
            subscription._close()
            if self._conn is not None:
                self._conn.send_control(unsub(sid))
                self._wakeup.set()

    # -- extras --------------------------------------------------------------------------------

    async def flush(self) -> None:
        """Wait until every message published before the call has reached the broker.

        Proven by a PING/PONG round trip after the last of them was written; a connection lost
        on the way means waiting for the next one. Waits as long as the broker is down: bound it
        with a cancel scope (for shutdown and tests; publishing never needs it).
        """
        target = self._outbox.published
        while True:
            conn = self._conn
            if conn is not None and self._outbox.written >= target and await self._round_trip(conn):
                return
            if conn is self._conn:
                await self._outbox.progress.wait()

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
        for sid, subscription in self._subscriptions.items():
            conn.send_control(sub(subscription.subject, sid))
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
            subscription = self._subscriptions.get(event.sid)
            if subscription is not None:  # None: a message sent before our UNSUB arrived
                subscription._offer(event.payload)
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
                if not conn.control and self._outbox.bytes < WRITE_CHUNK:
                    await trio.sleep(WRITE_LINGER)
            if trio.current_time() >= next_ping:
                self._keepalive(conn)
                next_ping = trio.current_time() + self._ping_interval
            self._wakeup = trio.Event()
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

    async def _send_sub(self, subscription: NatsSubscription) -> None:
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
