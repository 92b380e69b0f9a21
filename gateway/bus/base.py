"""What every bus engine offers: the ``Bus`` and ``Subscription`` protocols, and ``BusError``."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol

import trio


class BusError(Exception):
    """The bus could not take a message (disconnected, closed, or over a size limit)."""


async def receive_batch(channel: trio.MemoryReceiveChannel[bytes], limit: int) -> list[bytes]:
    """Wait for one message, then take up to ``limit`` in all without waiting again."""
    batch = [await channel.receive()]
    while len(batch) < limit:
        try:
            batch.append(channel.receive_nowait())
        except trio.WouldBlock:
            break
    return batch


class Subscription(Protocol):
    """Messages of one topic, in publish order, buffered in a bounded queue."""

    topic: str

    async def receive_batch(self, limit: int) -> list[bytes]:
        """Wait for at least one message, then take up to ``limit`` without waiting again."""
        ...

    def lag(self) -> int:
        """Messages received from the bus but not yet taken by the subscriber."""
        ...


class Bus(Protocol):
    """What the router, the chat service and the admin API need from any bus engine."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect and keep the engine going until cancelled; ``started()`` once usable."""
        ...

    async def publish(self, topic: str, data: bytes) -> None:
        """Hand one message to the bus. Raises BusError if it cannot be taken."""
        ...

    def subscribe(self, topic: str) -> AbstractAsyncContextManager[Subscription]:
        """Receive every message published on ``topic`` from now on, until the context exits."""
        ...

    async def flush(self) -> None:
        """Wait until everything published so far has left this process (bound it by a scope)."""
        ...

    @property
    def connected(self) -> bool:
        """False while a remote engine is unreachable (readiness reports it)."""
        ...

    def subject(self, topic: str) -> str:
        """Where the engine carries ``topic`` (for logs: Cells' subjects are prefixed)."""
        ...
