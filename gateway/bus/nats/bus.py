"""NATS bus engine: a trio-native NATS client behind the ``Bus`` protocol.

Several gateways behind a load balancer share one NATS broker (or cluster), as Cells does when
clustered: every gateway subscribes to the platform's topics and publishes chat posts and admin
events, so each instance sees what any instance published. Subjects are the topic names as-is.

No maintained trio or anyio NATS client exists (nats-py is asyncio-only), so this is a small one:
the wire format lives in ``protocol`` (sans-IO), one connection's opening in ``connection``, the
publish buffer in ``outbox``, the reader, writer and reconnect loop in ``engine``; this module is
the public API. Besides the ``Bus`` protocol it offers what JetStream (``jetstream``) needs:
``publish_msg`` (any subject, a reply subject, headers), ``subscribe_msgs`` (whole messages) and
``request`` (request/reply through one wildcard inbox, see ``requests``).

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
  other instances while this one was disconnected are not replayed (core NATS; a JetStream
  consumer recreates itself where it stopped).
- The reader never waits for a subscriber: each subscription has a bounded queue and a message for
  a full queue is dropped and counted in ``events_dropped{reason="bus_overflow"}``, so one stalled
  topic never stalls the connection (PINGs are still answered).
- A broken connection (EOF, reset, protocol error, ``-ERR``, two PINGs without PONG, a write stuck
  for ``WRITE_TIMEOUT``) never raises out of ``run``: it reconnects with exponential backoff and
  full jitter, trying the configured servers in turn.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import trio

from gateway.bus.base import BusError
from gateway.bus.nats.engine import NatsEngine
from gateway.bus.nats.headers import encode_headers
from gateway.bus.nats.protocol import Msg, check_subject, hpub, pub
from gateway.bus.nats.requests import Inbox, NoResponders, RequestTimeout, is_no_responders
from gateway.bus.nats.servers import parse_servers
from gateway.bus.nats.subscription import MsgSubscription, NatsSubscription
from gateway.metrics import Metrics
from gateway.topics import EVENT_TOPICS

# The topic label of ``events_dropped`` for messages of ``publish_msg`` (any subject, so not one
# label per subject: request inboxes are random).
RAW_TOPIC = "nats"


class NatsBus(NatsEngine):
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
        servers = parse_servers(url)
        super().__init__(
            servers,
            metrics=metrics,
            max_buffer_bytes=max_buffer_bytes,
            name=name,
            ping_interval=ping_interval,
            connect_timeout=connect_timeout,
            reconnect_min=reconnect_min,
            reconnect_max=reconnect_max,
            # Built now so that a bad CA file fails at start, not on every reconnect.
            ssl_context=(
                ssl.create_default_context(cafile=tls_ca_file)
                if tls_ca_file or any(s.tls for s in servers)
                else None
            ),
        )
        # Event topics read on Cells' own subjects (bus_format = "cells"), never published on.
        self._cells_prefix = cells_subject_prefix
        self._queue_size = queue_size
        self._inbox: Inbox | None = None
        self._running = False
        self._closed = False

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
        subscription = NatsSubscription(topic, subject, self._new_sid(), self._queue_size, self._metrics)
        await self._add_subscriber(subscription)
        try:
            yield subscription
        finally:
            self._remove_subscriber(subscription)

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

    # -- what JetStream needs ------------------------------------------------------------------

    async def publish_msg(
        self,
        subject: str,
        payload: bytes,
        *,
        reply_to: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Buffer one message on any subject, with a reply subject and headers (HPUB) if given.

        Same buffering and drop policy as ``publish`` (drops counted under the topic ``nats``),
        without the topic rules. Raises BusError for a bad subject or header, a message over the
        broker's limit (headers included), or headers when the broker does not take them.
        """
        await trio.lowlevel.checkpoint()
        if self._closed:
            raise BusError("bus is closed")
        if headers and not self._headers:
            raise BusError("the NATS broker does not support headers")
        try:
            block = encode_headers(headers) if headers else b""
            frame = hpub(subject, block, payload, reply_to) if block else pub(subject, payload, reply_to)
        except ValueError as exc:
            raise BusError(str(exc)) from None
        size = len(block) + len(payload)
        if size > self._max_payload:
            raise BusError(f"message of {size} bytes is over the broker's limit of {self._max_payload}")
        self._outbox.add(RAW_TOPIC, frame, size, connected=self.connected)
        self._wakeup.set()

    @asynccontextmanager
    async def subscribe_msgs(
        self, subject: str, *, queue_size: int | None = None
    ) -> AsyncIterator[MsgSubscription]:
        """Receive whole messages (reply subject and headers included) on ``subject`` until exit."""
        try:
            check_subject(subject, wildcards=True)
        except ValueError as exc:
            raise BusError(str(exc)) from None
        subscription = MsgSubscription(subject, self._new_sid(), queue_size or self._queue_size)
        await self._add_subscriber(subscription)
        try:
            yield subscription
        finally:
            self._remove_subscriber(subscription)

    async def request(
        self, subject: str, payload: bytes, *, max_wait: float, headers: Mapping[str, str] | None = None
    ) -> Msg:
        """Publish with a reply subject and return the first reply, waiting at most ``max_wait`` seconds.

        Waits for a connection within the same time. Raises NoResponders (status 503: nobody
        subscribes to ``subject``), RequestTimeout, or BusError (bad subject, closed bus).
        """
        reply: Msg | None = None
        with trio.move_on_after(max_wait):
            reply = await self._request(subject, payload, headers)
        if reply is None:
            where = "no reply" if self.connected else "not connected to NATS"
            raise RequestTimeout(f"{where} within {max_wait:g} s (request on {subject})")
        if is_no_responders(reply):
            raise NoResponders(f"no responders on {subject}")
        return reply

    async def _request(self, subject: str, payload: bytes, headers: Mapping[str, str] | None) -> Msg | None:
        inbox = await self._request_inbox()
        reply_to, waiter = inbox.expect()
        try:
            await self._wait_connected()
            await self.publish_msg(subject, payload, reply_to=reply_to, headers=headers)
            self._urgent = True  # before the writer wakes: no linger, someone waits
            await waiter.done.wait()
        finally:
            inbox.forget(reply_to)
        return waiter.reply

    async def publish_unanswered(self, subject: str, payload: bytes) -> None:
        """A request whose reply nobody waits for (cleanups the server needs a reply subject for)."""
        inbox = await self._request_inbox()
        await self.publish_msg(subject, payload, reply_to=inbox.unanswered())

    async def _request_inbox(self) -> Inbox:
        """The wildcard inbox of every request, subscribed on first use for the bus's lifetime."""
        if self._inbox is None:
            self._inbox = Inbox(self._new_sid())
            await self._add_subscriber(self._inbox)
        else:
            await trio.lowlevel.checkpoint()
        return self._inbox
