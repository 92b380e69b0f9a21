"""One client connection's state, independent of the socket: outbox, rate limit, close request.

The fan-out path only ever calls :meth:`Session.send`, which never waits: a frame goes into the
bounded :class:`Outbox` or, when the outbox is full, the session is marked as a slow consumer and
asked to close with 4008. The writer task (``gateway.server``) drains the outbox in batches.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from gateway.identity import Identity
from gateway.protocol import (
    CLOSE_CODE_FOR,
    CloseCode,
    ErrorCode,
    JsonObject,
    close_reason,
    error_frame,
    json_frame,
)
from gateway.timers import Due, SessionTimers


class DirectWrite(Protocol):
    """What the Flusher needs from a socket (``gateway.wsconn.DirectWriter``)."""

    @property
    def tail_pending(self) -> bool: ...

    def write(self, data: bytes) -> bool: ...


@dataclass(frozen=True, slots=True)
class CloseRequest:
    code: CloseCode
    reason: str


class _Parking:
    """Where one task waits until woken: trio's low-level park, with no object made per wait.

    The writers of a thousand sessions may each wait and wake for every event.
    """

    __slots__ = ("_task",)

    def __init__(self) -> None:
        self._task: trio.lowlevel.Task | None = None

    @property
    def occupied(self) -> bool:
        return self._task is not None

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


class Outbox:
    """Encoded frames waiting for the writer; bounded by frame count and by bytes."""

    __slots__ = ("_bytes", "_frames", "_waiter", "closing", "max_bytes", "max_frames", "ping_wanted")

    def __init__(self, max_frames: int, max_bytes: int) -> None:
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self._frames: list[bytes] = []
        self._bytes = 0
        self._waiter = _Parking()
        self.closing: CloseRequest | None = None
        self.ping_wanted = False

    def __len__(self) -> int:
        return len(self._frames)

    def put(self, frame: bytes) -> bool:
        """Queue a frame; False (and nothing queued) when that would pass a bound."""
        if len(self._frames) >= self.max_frames or self._bytes + len(frame) > self.max_bytes:
            return False
        self._frames.append(frame)
        self._bytes += len(frame)
        return True

    def put_back(self, data: bytes) -> None:
        """Return frames a direct write could not start to the head of the queue."""
        self._frames.insert(0, data)
        self._bytes += len(data)

    @property
    def writer_parked(self) -> bool:
        """True while the writer waits with nothing in hand: nobody else is writing."""
        return self._waiter.occupied

    def put_final(self, frames: list[bytes], request: CloseRequest, *, discard: bool) -> None:
        """Queue the last frames (past the bounds) and the close that follows them."""
        if discard:  # whole frames only: a half-written one is finished by the stream (wsconn)
            self._frames.clear()
            self._bytes = 0
        self._frames.extend(frames)
        self._bytes += sum(map(len, frames))
        self.closing = request
        self.wake()

    def take(self) -> list[bytes]:
        frames, self._frames, self._bytes = self._frames, [], 0
        return frames

    def request_ping(self) -> None:
        self.ping_wanted = True
        self.wake()

    def wake(self) -> None:
        self._waiter.wake()

    async def wait(self) -> None:
        """Return once there is something to write, a ping or a close to perform (one waiter)."""
        if self._frames or self.closing is not None or self.ping_wanted:
            await trio.lowlevel.checkpoint()
            return
        await self._waiter.park()


class RateLimiter:
    """Token bucket: ``rate`` messages per second sustained, ``burst`` at once."""

    __slots__ = ("_tokens", "_updated", "burst", "rate")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._tokens = float(burst)
        self._updated = now

    def allow(self, now: float) -> bool:
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class Flusher:
    """One task that writes every session's newly queued frames, instead of one wake-up each.

    Fan-out marks sessions; once the marking task yields, the flusher writes each marked
    session's frames with one non-blocking system call. Whatever the socket does not take at once
    (a full kernel buffer) is left to that session's writer task, which waits for the socket.
    """

    def __init__(self) -> None:
        self._marked: dict[Session, None] = {}  # insertion-ordered set
        self._waiter = _Parking()

    def mark(self, session: Session) -> None:
        self._marked[session] = None
        self._waiter.wake()

    async def run(self) -> None:
        while True:
            if not self._marked:
                await self._waiter.park()
            marked, self._marked = self._marked, {}
            for session in marked:
                session.flush_now()
            await trio.lowlevel.checkpoint()


_ids = itertools.count(1)


class Session:
    """A WebSocket session as the rest of the gateway sees it."""

    def __init__(
        self,
        endpoint: str,
        remote: str,
        outbox: Outbox,
        limiter: RateLimiter,
        timers: SessionTimers,
        *,
        close_timeout: float,
        on_close: Callable[[Session, CloseRequest], None] | None = None,
    ) -> None:
        self.id = next(_ids)
        self.endpoint = endpoint
        self.remote = remote
        self.outbox = outbox
        self.limiter = limiter
        self.identity: Identity | None = None
        self.token = ""  # the raw token, kept only to ask the platform on the user's behalf
        # False on a chat socket whose (last) subscribe did not ask for acknowledgements: Cells'
        # chat client would take a subscribed or error frame for a room message.
        self.errors_visible = True
        self.on_quiet_refusal: Callable[[Session, ErrorCode, str], None] | None = None
        self.subscribed = False  # subscribed and not unsubscribed: events may reach it
        self.timers = timers  # subscribe deadline, token expiry, keepalive (trio clock)
        self.pong: trio.Event | None = None  # set by trio-websocket when the pong arrives
        self.cancel_scope: trio.CancelScope | None = None
        # Set for sessions on a real socket: non-blocking writes, and the task that makes them.
        self.direct_write: DirectWrite | None = None
        self.flusher: Flusher | None = None
        self._close_timeout = close_timeout
        self._on_close = on_close

    def __repr__(self) -> str:
        user = self.identity.user if self.identity else "-"
        return f"<Session {self.id} {self.endpoint} {user}@{self.remote}>"

    def attach_scope(self, scope: trio.CancelScope) -> None:
        """The scope of the session's tasks; a close asked for before it existed gets its deadline."""
        self.cancel_scope = scope
        if self.outbox.closing is not None:
            scope.deadline = min(scope.deadline, trio.current_time() + self._close_timeout)

    @property
    def closing(self) -> CloseRequest | None:
        return self.outbox.closing

    def send(self, frame: bytes) -> None:
        """Queue an encoded frame without waiting; overflow closes the session with 4008."""
        if self.outbox.closing is not None:
            return
        if not self.outbox.put(frame):
            self.fail(ErrorCode.SLOW_CONSUMER, "outbound queue overflowed; read faster", discard=True)
        elif self.flusher is not None and self.direct_write is not None:
            self.flusher.mark(self)
        else:
            self.outbox.wake()

    def flush_now(self) -> None:
        """Write what is queued straight to the socket if the writer is idle; else wake the writer.

        Called by the Flusher, once per session per batch of events: one system call and no task
        switch per session, where waking a writer task costs tens of microseconds.
        """
        outbox = self.outbox
        if outbox.closing is not None or not outbox.writer_parked or self.direct_write is None:
            outbox.wake()
            return
        frames = outbox.take()
        if not frames:
            return
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        if not self.direct_write.write(data):
            outbox.put_back(data)
            outbox.wake()
        elif self.direct_write.tail_pending:
            outbox.wake()  # the writer sends the rest, waiting for the socket

    def send_json(self, obj: JsonObject) -> None:
        self.send(json_frame(obj))

    def fail(self, code: ErrorCode, message: str, *, discard: bool = False, **context: Any) -> None:
        """Send an error frame; close the session if the error requires it."""
        close_code = CLOSE_CODE_FOR.get(code)
        if close_code is not None:
            self.close(close_code, message, error=code if self.errors_visible else None, discard=discard)
        elif self.errors_visible:
            self.send_json(error_frame(code, message, **context))
        elif self.on_quiet_refusal is not None:
            self.on_quiet_refusal(self, code, message)

    def close(
        self,
        code: CloseCode,
        reason: str,
        *,
        error: ErrorCode | None = None,
        discard: bool = False,
    ) -> None:
        """Ask the writer to flush (or ``discard``) the queue, then close with ``code``.

        Never waits. The whole connection gets ``close_timeout`` seconds from now to finish;
        after that it is aborted, which is what makes a client that stopped reading harmless.
        """
        if self.outbox.closing is not None:
            return
        request = CloseRequest(code, close_reason(reason))
        final = [json_frame(error_frame(error, reason))] if error is not None else []
        self.outbox.put_final(final, request, discard=discard)
        self.subscribed = False
        if self.cancel_scope is not None:
            self.cancel_scope.deadline = min(
                self.cancel_scope.deadline, trio.current_time() + self._close_timeout
            )
        if self._on_close is not None:
            self._on_close(self, request)

    def check_timers(self, now: float) -> None:
        """Do what the session's timers say is due (``gateway.timers``)."""
        if self.closing is not None:
            return
        if self.pong is not None and self.pong.is_set():
            self.pong = None
            self.timers.pong_received()
        due = self.timers.due(now)
        if due is Due.PING:
            self.outbox.request_ping()
        elif due is Due.SUBSCRIBE_TIMEOUT:
            self.fail(ErrorCode.SUBSCRIBE_TIMEOUT, "no valid subscribe message in time")
        elif due is Due.TOKEN_EXPIRED:
            self.fail(ErrorCode.TOKEN_EXPIRED, "token expired; subscribe again with a fresh token")
        elif due is Due.PING_TIMEOUT:
            self.fail(ErrorCode.PING_TIMEOUT, "no answer to keepalive ping")
