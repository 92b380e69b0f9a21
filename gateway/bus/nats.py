"""NATS bus engine: a trio-native NATS client behind the ``Bus`` protocol.

Several gateways behind a load balancer share one NATS broker (or cluster), as Cells does when
clustered: every gateway subscribes to the platform's topics and publishes chat posts and admin
events, so each instance sees what any instance published. Subjects are the topic names as-is.

No maintained trio or anyio NATS client exists (nats-py is asyncio-only), so this is a small one:
the wire format lives in ``nats_protocol`` (sans-IO); this module owns the socket, one reader task
and one writer task per connection, and the reconnect loop.

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
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final, TypeVar

import trio

from gateway import __version__
from gateway.bus import BusError, receive_batch
from gateway.bus.nats_protocol import (
    PING,
    PONG,
    Err,
    Event,
    Info,
    Msg,
    NatsParser,
    NatsProtocolError,
    Ping,
    Pong,
    ServerAddress,
    check_subject,
    connect,
    connect_options,
    parse_servers,
    pub,
    sub,
    unsub,
)
from gateway.metrics import Metrics
from gateway.topics import EVENT_TOPICS

log = logging.getLogger("gateway.bus.nats")

_E = TypeVar("_E", bound=Event)

READ_SIZE: Final = 64 * 1024
# Buffered PUBs joined into one write; bounds the bytes a failed write has to send again.
WRITE_CHUNK: Final = 256 * 1024
# A write that takes longer means a dead or stuck broker: drop the connection and reconnect.
WRITE_TIMEOUT: Final = 10.0
# The writer waits this long after a publish wakes it, so that a burst of publishes (each one a
# checkpoint) goes out in one write instead of one syscall per message. Control frames do not wait.
WRITE_LINGER: Final = 0.001
# Keepalive PINGs still unanswered when the next one is due: that many means a dead connection.
MAX_OUTSTANDING_PINGS: Final = 2
# Until the server's INFO says otherwise (NATS default).
DEFAULT_MAX_PAYLOAD: Final = 1024 * 1024
# SUB/UNSUB/PING/PONG frames waiting for the writer; more means the writer is stuck.
MAX_CONTROL_FRAMES: Final = 4096

# What a broken connection or an unreachable broker raises; anything else is a bug and surfaces.
_CONNECTION_ERRORS: Final = (
    OSError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    trio.TooSlowError,
    NatsProtocolError,
)


class _ConnectionLost(Exception):
    """The current broker connection is unusable (closed, -ERR, keepalive failed, ...)."""


class NatsSubscription:
    """One SUB: messages of one topic in broker order, in a bounded queue the reader never awaits."""

    def __init__(self, topic: str, subject: str, sid: int, size: int, metrics: Metrics) -> None:
        self.topic = topic
        self.subject = subject
        self.sid = sid
        self._size = size
        self._send, self._receive = trio.open_memory_channel[bytes](size)
        self._dropped = metrics.events_dropped.labels(topic, "bus_overflow")
        self._lag = metrics.bus_lag.labels(topic)

    async def receive_batch(self, limit: int) -> list[bytes]:
        return await receive_batch(self._receive, limit)

    def lag(self) -> int:
        return self._receive.statistics().current_buffer_used

    def _offer(self, data: bytes) -> None:
        """Queue one message without waiting; a full queue drops it (counted)."""
        try:
            self._send.send_nowait(data)
        except trio.WouldBlock:
            self._dropped.inc()
            self._lag.set(self._size)

    def _close(self) -> None:
        self._send.close()
        self._receive.close()


@dataclass(slots=True)
class _Outgoing:
    """One encoded PUB waiting in the outbound buffer."""

    topic: str
    frame: bytes
    payload_size: int


class _Connection:
    """One established broker connection: stream, parser, control frames and PINGs in flight."""

    def __init__(self, stream: trio.abc.Stream, parser: NatsParser, server: ServerAddress, info: Info):
        self.stream = stream
        self.parser = parser
        self.server = server
        self.max_payload = info.max_payload or DEFAULT_MAX_PAYLOAD
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


_Loop = Callable[[_Connection], Awaitable[None]]


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
        self._max_buffer_bytes = max_buffer_bytes
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
        self._outbox: deque[_Outgoing] = deque()
        self._outbox_bytes = 0
        self._published = 0  # PUBs ever buffered; ``flush`` waits for ``_written`` to reach it
        self._written = 0
        self._progress = trio.Event()  # set when ``_written`` advances or a connection is made
        self._wakeup = trio.Event()  # set when the writer has something to do
        self._conn: _Connection | None = None
        self._ever_connected = False
        self._first_connect = trio.Event()
        self._running = False
        self._closed = False
        self.server_pings = 0  # PINGs from the broker answered (diagnostics and tests)
        self._max_payload = DEFAULT_MAX_PAYLOAD
        metrics.bus_connected.set(0)
        metrics.bus_buffered_bytes.set(0)

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
        if self._outbox_bytes + len(frame) > self._max_buffer_bytes:
            self._refuse(topic)
        self._outbox.append(_Outgoing(topic, frame, len(data)))
        self._published += 1
        self._set_outbox_bytes(self._outbox_bytes + len(frame))
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
        target = self._published
        while True:
            conn = self._conn
            if conn is not None and self._written >= target and await self._round_trip(conn):
                return
            if conn is self._conn:
                await self._progress.wait()

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
                conn = await self._open(server)
                established = True
                await self._serve(conn)
            except (_ConnectionLost, *_CONNECTION_ERRORS) as exc:
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

    async def _open(self, server: ServerAddress) -> _Connection:
        """TCP connect, INFO, optional TLS, CONNECT + PING, PONG: all within ``connect_timeout``."""
        with trio.fail_after(self._connect_timeout):
            stream: trio.abc.Stream = await trio.open_tcp_stream(server.host, server.port)
            try:
                parser = NatsParser()
                info = await _expect(stream, parser, Info)
                use_tls = server.tls or info.flag("tls_required")
                if use_tls:
                    stream = await self._start_tls(stream, server, info)
                options = connect_options(info, server, name=self._name, version=__version__, tls=use_tls)
                await stream.send_all(connect(options) + PING)
                await _expect(stream, parser, Pong)
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
        return _Connection(stream, parser, server, info)

    async def _start_tls(
        self, stream: trio.abc.Stream, server: ServerAddress, info: Info
    ) -> trio.SSLStream[trio.abc.Stream]:
        if not (info.flag("tls_required") or info.flag("tls_available")):
            raise _ConnectionLost(f"{server} does not offer TLS")
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()
        tls_stream = trio.SSLStream(stream, self._ssl_context, server_hostname=server.host)
        await tls_stream.do_handshake()
        return tls_stream

    async def _serve(self, conn: _Connection) -> None:
        """Run the reader and the writer until the connection fails; always raises _ConnectionLost."""
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
        raise _ConnectionLost(conn.error or "connection closed")

    async def _guard(self, loop: _Loop, conn: _Connection) -> None:
        """Turn the expected failures of one loop into ``conn.fail`` (which stops the other)."""
        try:
            await loop(conn)
        except (_ConnectionLost, *_CONNECTION_ERRORS) as exc:
            conn.fail(str(exc) or type(exc).__name__)

    def _on_connected(self, conn: _Connection) -> None:
        self._conn = conn
        self._max_payload = conn.max_payload
        for sid, subscription in self._subscriptions.items():
            conn.send_control(sub(subscription.subject, sid))
        self._wakeup.set()
        self._progress.set()
        self._progress = trio.Event()
        self._metrics.bus_connected.set(1)
        if self._ever_connected:
            self._metrics.bus_reconnects.inc()
        self._ever_connected = True
        self._first_connect.set()
        log.info("connected to NATS at %s", conn.server)

    def _on_disconnected(self, conn: _Connection) -> None:
        if conn.error is None:
            conn.error = "connection closed"
        if self._conn is conn:
            self._conn = None
        conn.release_waiters()
        self._progress.set()
        self._progress = trio.Event()
        self._metrics.bus_connected.set(0)

    # -- reader --------------------------------------------------------------------------------

    async def _read_loop(self, conn: _Connection) -> None:
        """Read and handle events; never awaits anything but the socket (liveness is the writer's)."""
        while True:
            data = await conn.stream.receive_some(READ_SIZE)
            if not data:
                raise _ConnectionLost("the broker closed the connection")
            conn.parser.receive_data(data)
            for event in conn.parser.events():
                self._handle(conn, event)

    def _handle(self, conn: _Connection, event: Event) -> None:
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
                raise _ConnectionLost(f"broker error: {event.message}")
            log.warning("NATS broker error (connection kept): %s", event.message)

    # -- writer --------------------------------------------------------------------------------

    async def _write_loop(self, conn: _Connection) -> None:
        """Send control frames, then buffered PUBs in order; PING every ``ping_interval``."""
        next_ping = trio.current_time() + self._ping_interval
        while True:
            with trio.move_on_at(next_ping):
                await self._wakeup.wait()
                if not conn.control and self._outbox_bytes < WRITE_CHUNK:
                    await trio.sleep(WRITE_LINGER)
            if trio.current_time() >= next_ping:
                self._keepalive(conn)
                next_ping = trio.current_time() + self._ping_interval
            self._wakeup = trio.Event()
            data, taken = self._next_write(conn)
            if data:
                with trio.fail_after(WRITE_TIMEOUT):
                    await conn.stream.send_all(data)
                self._commit(taken)
            if self._outbox:
                self._wakeup.set()

    def _keepalive(self, conn: _Connection) -> None:
        if conn.keepalives >= MAX_OUTSTANDING_PINGS:
            raise _ConnectionLost(f"no PONG to {conn.keepalives} PINGs: the broker is unreachable")
        conn.keepalives += 1
        conn.pings.append(None)
        conn.send_control(PING)

    def _next_write(self, conn: _Connection) -> tuple[bytes, int]:
        """Control frames, then PUBs from the head of the buffer up to WRITE_CHUNK bytes.

        Returns the bytes and how many buffered PUBs they hold (removed once written). A PUB over
        the broker's current max_payload (lowered since it was buffered) is dropped here: sending
        it would only make the broker close the connection, again and again.
        """
        parts = conn.control
        conn.control = []
        size = taken = 0
        while taken < len(self._outbox) and size < WRITE_CHUNK:
            item = self._outbox[taken]
            if item.payload_size > conn.max_payload:
                if taken:
                    break
                self._outbox.popleft()
                self._set_outbox_bytes(self._outbox_bytes - len(item.frame))
                self._written += 1
                self._metrics.events_dropped.labels(item.topic, "bus_too_large").inc()
                continue
            parts.append(item.frame)
            size += len(item.frame)
            taken += 1
        return b"".join(parts), taken

    def _commit(self, taken: int) -> None:
        """Remove ``taken`` written PUBs from the buffer."""
        written = 0
        for _ in range(taken):
            written += len(self._outbox.popleft().frame)
        self._written += taken
        self._set_outbox_bytes(self._outbox_bytes - written)
        if taken:
            self._progress.set()
            self._progress = trio.Event()

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

    async def _round_trip(self, conn: _Connection) -> bool:
        """PING and wait for its PONG: the broker has processed everything we sent before it."""
        waiter = trio.Event()
        conn.pings.append(waiter)
        conn.send_control(PING)
        self._wakeup.set()
        await waiter.wait()
        return conn.error is None

    def _refuse(self, topic: str) -> None:
        """The buffer is full: drop the new message, count it, tell the caller."""
        if self.connected:
            self._metrics.events_dropped.labels(topic, "bus_overflow").inc()
            raise BusError("bus outbound buffer is full: the broker is not keeping up")
        self._metrics.events_dropped.labels(topic, "bus_disconnected").inc()
        raise BusError("bus disconnected and its buffer is full")

    def _set_outbox_bytes(self, value: int) -> None:
        self._outbox_bytes = value
        self._metrics.bus_buffered_bytes.set(value)


async def _expect(stream: trio.abc.Stream, parser: NatsParser, kind: type[_E]) -> _E:
    """Read until an event of ``kind`` (handshake only): -ERR fails, PING is answered."""
    while True:
        for event in parser.events():
            if isinstance(event, kind):
                return event
            if isinstance(event, Err):
                raise _ConnectionLost(f"broker refused the connection: {event.message}")
            if isinstance(event, Ping):
                await stream.send_all(PONG)
        data = await stream.receive_some(READ_SIZE)
        if not data:
            raise _ConnectionLost("the broker closed the connection during the handshake")
        parser.receive_data(data)
