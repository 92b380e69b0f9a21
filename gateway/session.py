"""One client connection's state: what it may see, what it has to send, its limits and its close.

The fan-out path never waits on a session: events reach it through the shared streams it reads
from its cursor (``gateway.delivery``), and :meth:`Session.send` queues a frame for it alone.
Either way the flusher (``gateway.flusher``) then calls :meth:`Session.flush`, and the session's
:class:`~gateway.connection.writer.Writer` writes what the socket takes. A session that lags by
more than ``max_lag`` bytes, or whose socket takes nothing for ``write_stall_seconds``, is closed
with 4008 and costs nothing more.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import trio

from gateway.delivery.feed import Feed
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

if TYPE_CHECKING:
    from gateway.connection.frames import FrameConnection
    from gateway.connection.writer import Writer
    from gateway.delivery.log import EventLog

# Bytes gathered into one write: large enough to empty a burst in a few system calls, small enough
# that a partial write leaves little behind.
WRITE_CHUNK: Final = 256 * 1024
LAGGING: Final = "too far behind what was sent to it; read faster"
STALLED: Final = "the connection took nothing for too long"


@dataclass(frozen=True, slots=True)
class CloseRequest:
    code: CloseCode
    reason: str


@dataclass(frozen=True, slots=True)
class Limits:
    max_lag: int  # bytes waiting for the session before it is a slow consumer
    write_stall: float  # seconds its socket may take nothing while data waits
    close_timeout: float  # seconds a closing session gets to flush and say goodbye


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


class RateLimiters:
    """One :class:`RateLimiter` per key (a user), kept across sessions (a new session must not bring
    a fresh burst) in a bounded LRU: past ``max_keys``, the least recently seen key is forgotten."""

    __slots__ = ("_limiters", "burst", "max_keys", "rate")

    def __init__(self, rate: float, burst: int, max_keys: int) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._limiters: dict[str, RateLimiter] = {}

    def allow(self, key: str, now: float) -> bool:
        limiter = self._limiters.pop(key, None) or RateLimiter(self.rate, self.burst, now)
        self._limiters[key] = limiter
        while len(self._limiters) > self.max_keys:
            del self._limiters[next(iter(self._limiters))]
        return limiter.allow(now)


_ids = itertools.count(1)


class Session:
    """A WebSocket session as the rest of the gateway sees it."""

    def __init__(
        self,
        endpoint: str,
        remote: str,
        limiter: RateLimiter,
        timers: SessionTimers,
        *,
        log: EventLog,
        limits: Limits,
        on_close: Callable[[Session, CloseRequest], None] | None = None,
    ) -> None:
        self.id = next(_ids)
        self.endpoint = endpoint
        self.remote = remote
        self.limit_key = remote  # what per-address limits count by (an IPv6 prefix)
        self.limiter = limiter
        self.timers = timers  # subscribe deadline, token expiry, keepalive (trio clock)
        self.log = log
        self.limits = limits
        self.feed = Feed(log.head)
        self.identity: Identity | None = None
        self.token = ""  # the raw token, kept only to ask the platform on the user's behalf
        self.positions = False  # subscribed with "recover" (or "since"): events carry "@position"
        # False on a chat socket whose (last) subscribe did not ask for acknowledgements: Cells'
        # chat client would take a subscribed or error frame for a room message.
        self.errors_visible = True
        self.on_quiet_refusal: Callable[[Session, ErrorCode, str], None] | None = None
        self.subscribed = False  # subscribed and not unsubscribed: events may reach it
        self.closing: CloseRequest | None = None
        self.cancel_scope: trio.CancelScope | None = None
        # Set once connected: the frame layer (control frames) and the socket's writer.
        self.frames: FrameConnection | None = None
        self.writer: Writer | None = None
        self.on_flush_wanted: Callable[[Session], None] | None = None  # the flusher's mark
        self.flushed_round = 0
        self._close_sent = False
        self._goodbye: trio.Event | None = None
        self._on_close = on_close

    def __repr__(self) -> str:
        user = self.identity.user if self.identity else "-"
        return f"<Session {self.id} {self.endpoint} {user}@{self.remote}>"

    def attach_scope(self, scope: trio.CancelScope) -> None:
        """The scope of the session's tasks; a close asked for before it existed gets its deadline."""
        self.cancel_scope = scope
        if self.closing is not None:
            scope.deadline = min(scope.deadline, trio.current_time() + self.limits.close_timeout)

    # -- what it sends ------------------------------------------------------------------------

    def send(self, frame: bytes) -> None:
        """Queue an encoded frame for this session alone, without waiting."""
        if self.closing is not None:
            return
        self.feed.queue(self.log.head, frame)
        if self.unsent() > self.limits.max_lag:
            self.fail(ErrorCode.SLOW_CONSUMER, LAGGING, discard=True)
        else:
            self.flush_soon()

    def flush_soon(self) -> None:
        """Ask the flusher to write for this session once the current task yields."""
        if self.on_flush_wanted is not None:
            self.on_flush_wanted(self)

    def send_json(self, obj: JsonObject) -> None:
        self.send(json_frame(obj))

    def send_control(self, frame: bytes) -> None:
        """A control frame (pong, ping): written as soon as the frames before it are."""
        if frame:
            self.feed.queue(self.log.head, frame)
            self.flush()

    def flush(self, round_: int = 0) -> None:
        """Write what is waiting, as far as the socket takes it now (once per flusher round)."""
        if round_:
            if self.flushed_round == round_:
                return
            self.flushed_round = round_
        if self.writer is not None:
            self.writer.pump()

    def next_chunk(self) -> bytes:
        """The writer's source: the next frames in order, then the close frame once closing."""
        if self.feed.behind(self.log.head):
            frames = self.feed.gather(self.log.head, self.identity, WRITE_CHUNK, self.positions)
            if frames:
                return frames[0] if len(frames) == 1 else b"".join(frames)
        if self.closing is not None and not self._close_sent and self.frames is not None:
            self._close_sent = True
            return self.frames.close(self.closing.code, self.closing.reason)
        return b""

    def lag(self) -> int:
        """Bytes routed to this session and not yet taken by its socket."""
        return self.feed.lag() + self.unsent()

    def unsent(self) -> int:
        """Bytes taken from the streams, or queued for it alone, that its socket has not taken."""
        return self.feed.own_bytes + (self.writer.pending if self.writer is not None else 0)

    # -- errors and the close -----------------------------------------------------------------

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
        """Stop delivery, send what is queued (or ``discard`` it), the error frame, then the close.

        Never waits. The whole connection gets ``close_timeout`` seconds from now to finish; after
        that it is aborted, which is what makes a client that stopped reading harmless.
        """
        if self.closing is not None:
            return
        request = CloseRequest(code, close_reason(reason))
        if discard:
            self.feed.drop_own()
            self.feed.streams = []
        if self._on_close is not None:
            self._on_close(self, request)  # the hub stops delivery: what was routed stays queued
        self.subscribed = False
        if error is not None:
            self.feed.queue(self.log.head, json_frame(error_frame(error, reason)))
        self.closing = request
        if self.cancel_scope is not None:
            self.cancel_scope.deadline = min(
                self.cancel_scope.deadline, trio.current_time() + self.limits.close_timeout
            )
        self.flush()

    def closed_by_peer(self, reply: bytes) -> None:
        """The peer sent its close: answer it (nothing else is sent after it)."""
        if self.closing is None:
            self.closing = CloseRequest(CloseCode.NORMAL, "")
            if self._on_close is not None:
                self._on_close(self, self.closing)
        self.subscribed = False
        self.feed.drop_own()
        self.feed.streams = []
        self._close_sent = True  # the reply is the close frame
        self.send_control(reply)

    @property
    def close_written(self) -> bool:
        """Our close frame (or the reply to the peer's) has been handed to the kernel."""
        return self._close_sent and self.writer is not None and not self.writer.busy and not self.feed.has_own

    async def wait_close_written(self) -> None:
        if self.writer is None or self.close_written or self.writer.broken:
            await trio.lowlevel.checkpoint()
            return
        self._goodbye = trio.Event()
        self.writer.on_drained = self._goodbye.set
        self.writer.pump()
        await self._goodbye.wait()

    # -- timers -------------------------------------------------------------------------------

    def check_timers(self, now: float) -> None:
        """Do what the session's timers say is due (``gateway.timers``), and check for a stall."""
        if self.closing is not None:
            return
        due = self.timers.due(now)
        if due is Due.PING:
            if self.frames is not None:
                self.send_control(self.frames.ping(os.urandom(4)))
        elif due is Due.SUBSCRIBE_TIMEOUT:
            self.fail(ErrorCode.SUBSCRIBE_TIMEOUT, "no valid subscribe message in time")
        elif due is Due.TOKEN_EXPIRED:
            self.fail(ErrorCode.TOKEN_EXPIRED, "token expired; subscribe again with a fresh token")
        elif due is Due.PING_TIMEOUT:
            self.fail(ErrorCode.PING_TIMEOUT, "no answer to keepalive ping")
        elif self.writer is not None and self.writer.stalled(now, self.limits.write_stall):
            self.fail(ErrorCode.SLOW_CONSUMER, STALLED, discard=True)
