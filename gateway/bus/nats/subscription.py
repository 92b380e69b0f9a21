"""NATS subscriptions: each one a bounded queue that the connection's reader never awaits.

- ``NatsSubscription``  one topic's payloads, in broker order (what the ``Bus`` protocol offers)
- ``MsgSubscription``   whole messages (subject, reply subject, headers, payload) of one subject,
                        and a count of reconnects: what JetStream consumers build on
- ``Subscriber``        what the bus needs of either (and of the request inbox)
"""

from __future__ import annotations

import contextlib
from typing import Protocol

import trio

from gateway.bus.base import receive_batch
from gateway.bus.nats.protocol import Msg
from gateway.metrics import Metrics


class Subscriber(Protocol):
    """One SUB as the bus sees it: where, under which sid, and what to do with a message."""

    subject: str
    sid: int

    def _offer(self, msg: Msg) -> None:
        """Take one message without waiting (the reader calls it)."""

    def _reconnected(self) -> None:
        """The SUB was sent again on a new connection: messages may have been missed in between."""

    def _close(self) -> None: ...


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

    def _offer(self, msg: Msg) -> None:
        """Queue one message without waiting; a full queue drops it (counted)."""
        try:
            self._send.send_nowait(msg.payload)
        except trio.WouldBlock:
            self._dropped.inc()
            self._lag.set(self._size)

    def _reconnected(self) -> None:
        """Core NATS does not replay what was missed: nothing to do."""

    def _close(self) -> None:
        self._send.close()
        self._receive.close()


class MsgSubscription:
    """One SUB delivering whole messages; a full queue drops the new message and counts it.

    ``reconnects`` counts the connections lost and re-established since the SUB: a consumer that
    must not miss anything compares it before and after a batch. A reconnect also wakes a
    ``receive_batch`` that is waiting (it then returns what it has, possibly nothing).
    """

    def __init__(self, subject: str, sid: int, size: int) -> None:
        self.subject = subject
        self.sid = sid
        self.dropped = 0
        self.reconnects = 0
        # None in the queue only wakes the receiver after a reconnect.
        self._send, self._receive = trio.open_memory_channel[Msg | None](size)

    async def receive_batch(self, limit: int) -> list[Msg]:
        """Wait for one message (or a reconnect), then take up to ``limit`` without waiting again."""
        first = await self._receive.receive()
        batch = [] if first is None else [first]
        while len(batch) < limit:
            try:
                msg = self._receive.receive_nowait()
            except trio.WouldBlock:
                break
            if msg is not None:
                batch.append(msg)
        return batch

    def lag(self) -> int:
        """Messages (and reconnect marks) received but not yet taken."""
        return self._receive.statistics().current_buffer_used

    def _offer(self, msg: Msg) -> None:
        try:
            self._send.send_nowait(msg)
        except trio.WouldBlock:
            self.dropped += 1

    def _reconnected(self) -> None:
        self.reconnects += 1
        # A full queue wakes the receiver anyway; it reads ``reconnects`` after the batch.
        with contextlib.suppress(trio.WouldBlock):
            self._send.send_nowait(None)

    def _close(self) -> None:
        self._send.close()
        self._receive.close()
