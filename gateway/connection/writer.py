"""The one writer of a connection's socket.

Whoever has something for a session (the flusher after a fan-out, the reader answering a ping, a
close) calls :meth:`Writer.pump`, which writes what the kernel takes at once, without waiting:
one system call per session per batch of events, and no task switch. Only when the socket's buffer
is full does the rest go to the session's writer task, started the first time it is needed, which
waits for the socket and then goes on pumping. Nothing else writes to the socket, so no frame can
land inside another. ``waiting_since`` tells how long the socket has taken nothing while data
waited: the stall the slow-consumer check reads.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from gateway.connection.transport import Transport, TransportClosed


class Parking:
    """Where one task waits until woken: trio's low-level park, with no object made per wait."""

    __slots__ = ("_task",)

    def __init__(self) -> None:
        self._task: trio.lowlevel.Task | None = None

    def wake(self) -> None:
        if self._task is not None:
            task, self._task = self._task, None
            trio.lowlevel.reschedule(task)

    async def park(self) -> None:
        self._task = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:
            self._task = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)


Spawn = Callable[[Callable[[], Awaitable[None]]], None]


def _nothing() -> bytes:
    return b""


class Writer:
    __slots__ = (
        "_parking",
        "_scope",
        "_source",
        "_spawn",
        "_started",
        "_tail",
        "_transport",
        "broken",
        "on_drained",
        "waiting_since",
    )

    def __init__(self, transport: Transport, source: Callable[[], bytes], spawn: Spawn) -> None:
        self._transport = transport
        self._source = source  # the next bytes to write (b"": nothing now)
        self._spawn = spawn  # starts the writer task in the connection's nursery
        self._tail: bytes | memoryview = b""  # what the kernel has not taken yet
        self._parking = Parking()
        self._started = False
        self._scope: trio.CancelScope | None = None
        self.broken = False  # the socket failed: nothing more is written
        self.waiting_since: float | None = None  # since when data waits for the socket
        self.on_drained: Callable[[], None] | None = None  # everything the source had is written

    @property
    def busy(self) -> bool:
        """The writer task owns the socket until it has written its tail."""
        return self.waiting_since is not None

    @property
    def pending(self) -> int:
        return len(self._tail)

    def pump(self) -> None:
        """Write what the source has now, as far as the kernel takes it without waiting."""
        if self.broken:
            return
        if self.busy:
            self._parking.wake()
            return
        while data := self._source():
            written = self._try_send(data)
            if written < len(data):
                self._tail = memoryview(data)[written:]
                self.waiting_since = trio.current_time()
                self._hand_over()
                return
        if self.on_drained is not None:
            self.on_drained()

    def _try_send(self, data: bytes) -> int:
        if not self._transport.direct:
            return 0
        try:
            return self._transport.try_send(data)
        except TransportClosed:
            self.broken = True
            return len(data)  # dropped: the reader sees the connection end

    def _hand_over(self) -> None:
        if not self._started:
            self._started = True
            self._spawn(self._run)
        self._parking.wake()

    async def _run(self) -> None:
        with trio.CancelScope() as self._scope:
            while not self.broken:
                if not self.busy:
                    await self._parking.park()
                    continue
                try:
                    await self._transport.send_all(self._tail, progress=self)
                except TransportClosed:
                    self.broken = True
                    return
                self._tail = b""
                self.waiting_since = None
                self.pump()

    def stalled(self, now: float, limit: float) -> bool:
        """Data has waited ``limit`` seconds or more without the socket taking any of it."""
        return self.waiting_since is not None and now - self.waiting_since >= limit

    def wrote(self, count: int) -> None:
        """Progress of a waiting write: the stall clock starts again."""
        if self.waiting_since is not None:
            self.waiting_since = trio.current_time()

    def stop(self) -> None:
        """The connection is over: write nothing more (the task, if any, ends)."""
        self.broken = True
        # The source and the callback are the session's: dropping them breaks the session <->
        # writer cycle, so a finished session is freed at once by reference counting.
        self._source = _nothing
        self.on_drained = None
        if self._scope is not None:
            self._scope.cancel()
