"""A session's deadlines as one state machine. Pure: the caller passes the time and acts on the answer.

Three clocks run per session: the subscribe deadline (a new or unsubscribed socket must subscribe
within ``subscribe_timeout``), the token's expiry (while subscribed, when the identity has one),
and the keepalive (a ping every ``ping_interval``, answered within ``ping_timeout``). One task
checks every session each tick and does what :meth:`SessionTimers.due` says.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Due(Enum):
    NOTHING = "nothing"
    PING = "ping"  # send a keepalive ping now
    SUBSCRIBE_TIMEOUT = "subscribe_timeout"  # close with 4001: no subscribe in time
    TOKEN_EXPIRED = "token_expired"  # close with 4001: the token lapsed
    PING_TIMEOUT = "ping_timeout"  # close with 4002: the ping was not answered in time


@dataclass(slots=True)
class SessionTimers:
    ping_interval: float
    ping_timeout: float
    subscribe_timeout: float
    subscribe_by: float | None = None  # a subscribe must arrive by then
    expires_at: float | None = None  # the token lapses then (only while subscribed)
    next_ping: float = 0.0
    pong_by: float | None = None  # a ping is out: its pong must arrive by then

    @classmethod
    def connected(
        cls, now: float, *, ping_interval: float, ping_timeout: float, subscribe_timeout: float
    ) -> SessionTimers:
        return cls(
            ping_interval, ping_timeout, subscribe_timeout, now + subscribe_timeout, None, now + ping_interval
        )

    def subscribed(self, expires_at: float | None) -> None:
        self.subscribe_by = None
        self.expires_at = expires_at

    def unsubscribed(self, now: float) -> None:
        """Like a new socket: it must subscribe again in time."""
        self.subscribe_by = now + self.subscribe_timeout
        self.expires_at = None

    def pong_received(self) -> None:
        self.pong_by = None

    def due(self, now: float) -> Due:
        """What is due at ``now``; a PING also starts the wait for its pong."""
        if self.subscribe_by is not None and now >= self.subscribe_by:
            return Due.SUBSCRIBE_TIMEOUT
        if self.expires_at is not None and now >= self.expires_at:
            return Due.TOKEN_EXPIRED
        if self.pong_by is not None:
            # Also when the ping could not even be written: the client stopped reading.
            return Due.PING_TIMEOUT if now >= self.pong_by else Due.NOTHING
        if now >= self.next_ping:
            self.next_ping = now + self.ping_interval
            self.pong_by = now + self.ping_timeout
            return Due.PING
        return Due.NOTHING


def deadline_of(expires_at: float | None, leeway: float, now: float, wall_now: float) -> float | None:
    """The session-clock time at a token's exp + leeway (exp is wall-clock time), counted from exp,
    whenever the session subscribed."""
    if expires_at is None:
        return None
    return now + max(0.0, expires_at + leeway - wall_now)
