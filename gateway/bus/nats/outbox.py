"""The NATS engine's outbound buffer: encoded PUBs in publish order, bounded in bytes.

``publish`` appends without waiting for the network; the connection's writer takes chunks from the
head and commits them once written, so a chunk whose write failed is sent again after reconnecting.
``published`` and ``written`` count PUBs ever buffered and ever written: ``flush`` waits for the
one to reach the other.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Final

import trio

from gateway.bus.base import BusError
from gateway.metrics import Metrics

# Buffered PUBs joined into one write; bounds the bytes a failed write has to send again.
WRITE_CHUNK: Final = 256 * 1024


@dataclass(slots=True)
class Outgoing:
    """One encoded PUB waiting in the buffer."""

    topic: str
    frame: bytes
    payload_size: int


class Outbox:
    def __init__(self, max_bytes: int, metrics: Metrics) -> None:
        self.max_bytes = max_bytes
        self._metrics = metrics
        self._items: deque[Outgoing] = deque()
        self.bytes = 0
        self.published = 0
        self.written = 0
        self.progress = trio.Event()  # set (and replaced) when ``written`` advances
        metrics.bus_buffered_bytes.set(0)

    def __len__(self) -> int:
        return len(self._items)

    def add(self, topic: str, frame: bytes, payload_size: int, *, connected: bool) -> None:
        """Buffer one PUB; when it does not fit, it is dropped (never an older one), counted, refused."""
        if self.bytes + len(frame) > self.max_bytes:
            reason = "bus_overflow" if connected else "bus_disconnected"
            self._metrics.events_dropped.labels(topic, reason).inc()
            if connected:
                raise BusError("bus outbound buffer is full: the broker is not keeping up")
            raise BusError("bus disconnected and its buffer is full")
        self._items.append(Outgoing(topic, frame, payload_size))
        self.published += 1
        self._set_bytes(self.bytes + len(frame))

    def take(self, max_payload: int) -> tuple[list[bytes], int]:
        """PUBs from the head, up to WRITE_CHUNK bytes: (frames, how many to commit once written).

        A PUB over the broker's current max_payload (lowered since it was buffered) is dropped
        here: sending it would only make the broker close the connection, again and again.
        """
        frames: list[bytes] = []
        size = taken = 0
        while taken < len(self._items) and size < WRITE_CHUNK:
            item = self._items[taken]
            if item.payload_size > max_payload:
                if taken:
                    break
                self._items.popleft()
                self._set_bytes(self.bytes - len(item.frame))
                self.written += 1
                self._metrics.events_dropped.labels(item.topic, "bus_too_large").inc()
                continue
            frames.append(item.frame)
            size += len(item.frame)
            taken += 1
        return frames, taken

    def commit(self, taken: int) -> None:
        """Remove ``taken`` written PUBs from the head."""
        freed = sum(len(self._items.popleft().frame) for _ in range(taken))
        self.written += taken
        self._set_bytes(self.bytes - freed)
        if taken:
            self.wake()

    def wake(self) -> None:
        """Wake whoever waits on ``progress`` (a flush)."""
        self.progress.set()
        self.progress = trio.Event()

    def _set_bytes(self, value: int) -> None:
        self.bytes = value
        self._metrics.bus_buffered_bytes.set(value)
