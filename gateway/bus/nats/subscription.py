"""One NATS subscription: a topic's messages in broker order, in a queue the reader never awaits."""

from __future__ import annotations

import trio

from gateway.bus.base import receive_batch
from gateway.metrics import Metrics


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
