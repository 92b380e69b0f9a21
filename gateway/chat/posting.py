"""What may be posted: text cleaned of unsafe HTML within its size limit, at a bounded rate per user."""

from __future__ import annotations

from typing import Final

import nh3

from gateway.protocol import ErrorCode, ProtocolError
from gateway.session import RateLimiters

MAX_USERS: Final = 10000  # users whose post rate is remembered (least recently posting dropped)


def clean_text(raw: str, max_bytes: int) -> str:
    """The text as stored and sent: unsafe HTML removed (nh3), bounded, not empty."""
    if len(raw.encode("utf-8", "surrogatepass")) > max_bytes:
        raise ProtocolError(ErrorCode.MESSAGE_TOO_LONG, f"messages are limited to {max_bytes} bytes")
    text = nh3.clean(raw).strip()
    if not text:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "the message is empty (after removing unsafe HTML)")
    return text


class PostRates:
    """Posts per user: ``rate`` per second sustained, ``burst`` at once. Kept across reconnects (a new
    session must not bring a fresh burst), in a bounded LRU."""

    def __init__(self, rate: float, burst: int) -> None:
        self._rates = RateLimiters(rate, burst, MAX_USERS)

    def check(self, user: str, now: float) -> None:
        if not self._rates.allow(user, now):
            raise ProtocolError(ErrorCode.POST_RATE_LIMITED, "too many posts; slow down")
