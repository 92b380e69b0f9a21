"""How often a user may post: a bounded rate per user, kept across reconnects. (What may be posted,
the cleaned text within its limit, is ``chat.sanitise``'s.)"""

from __future__ import annotations

from typing import Final

from gateway.protocol import ErrorCode, ProtocolError
from gateway.session import RateLimiters

MAX_USERS: Final = 10000  # users whose post rate is remembered (least recently posting dropped)


class PostRates:
    """Posts per user: ``rate`` per second sustained, ``burst`` at once. Kept across reconnects (a new
    session must not bring a fresh burst), in a bounded LRU."""

    def __init__(self, rate: float, burst: int) -> None:
        self._rates = RateLimiters(rate, burst, MAX_USERS)

    def check(self, user: str, now: float) -> None:
        if not self._rates.allow(user, now):
            raise ProtocolError(ErrorCode.POST_RATE_LIMITED, "too many posts; slow down")
