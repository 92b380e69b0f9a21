"""The shared log of routed events: one offset sequence per instance and epoch, across all topics.

Every event the dispatcher routes is appended once, with its routing (the deliveries, each with its
message encoded when first needed). Offsets increase by one per event; the epoch names this run of
the log, so a position of another run (another process, a restart) is recognised as such. The log
keeps the newest ``max_entries`` events for at most ``max_age`` seconds: the history that a
position can be resumed from. Pure: the caller passes the time.
"""

from __future__ import annotations

import secrets
from collections import deque
from dataclasses import dataclass, field
from typing import Final

from gateway.events.model import Delivery, JsonObject
from gateway.protocol import json_frame


@dataclass(slots=True)
class Entry:
    offset: int
    topic: str
    event: JsonObject  # as the bus delivered it: a replay routes it again for the identity of now
    deliveries: list[Delivery]  # as routed when it was appended
    appended_at: float
    position: str  # "<epoch>:<offset>"
    frames: list[bytes | None] = field(default_factory=list)
    positioned: list[bytes | None] = field(default_factory=list)  # the same with "@position"

    def frame(self, seq: int) -> bytes:
        """Delivery ``seq``'s message as a text frame, encoded once for every session."""
        if not self.frames:
            self.frames = [None] * len(self.deliveries)
        return self.frames[seq] or _store(self.frames, seq, self.deliveries[seq].message)

    def positioned_frame(self, seq: int) -> bytes:
        """The frame with the event's ``"@position"``, for sessions that asked for positions."""
        if not self.positioned:
            self.positioned = [None] * len(self.deliveries)
        message = self.deliveries[seq].message
        return self.positioned[seq] or _store(self.positioned, seq, with_position(message, self.position))


def _store(cache: list[bytes | None], seq: int, message: JsonObject) -> bytes:
    frame = cache[seq] = json_frame(message)
    return frame


def with_position(message: JsonObject, position: str) -> JsonObject:
    return {"@position": position, **message}


class BadPosition(Exception):
    """A position this log cannot resume from; ``cause`` says why (a ``gap`` reason)."""

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


# Why a position cannot be served (the ``reason`` of a ``gap``, and a metric label).
MALFORMED: Final = "malformed"
OTHER_EPOCH: Final = "epoch"  # another process or a restart: another history
EXPIRED: Final = "expired"  # older than the history keeps
UNAVAILABLE: Final = "unavailable"  # the history cannot be read now (JetStream down)


MAX_OFFSET_DIGITS: Final = 19  # offsets fit in 63 bits


class EventLog:
    def __init__(self, *, max_entries: int, max_age: float, epoch: str | None = None) -> None:
        self.epoch = epoch or secrets.token_hex(4)
        self.max_entries = max_entries
        self.max_age = max_age
        self.head = 0  # the offset of the newest entry; 0 before the first
        self._entries: deque[Entry] = deque()

    def __len__(self) -> int:
        return len(self._entries)

    def append(self, topic: str, event: JsonObject, deliveries: list[Delivery], now: float) -> Entry:
        self.head += 1
        entry = Entry(self.head, topic, event, deliveries, now, self.position(self.head))
        self._entries.append(entry)
        self.expire(now)
        return entry

    def expire(self, now: float) -> None:
        """Forget entries beyond the count or older than the age bound."""
        entries = self._entries
        while len(entries) > self.max_entries:
            entries.popleft()
        oldest = now - self.max_age
        while entries and entries[0].appended_at < oldest:
            entries.popleft()

    @property
    def first(self) -> int:
        """The oldest offset still kept (``head + 1`` when the log is empty)."""
        return self._entries[0].offset if self._entries else self.head + 1

    def position(self, offset: int | None = None) -> str:
        """``"<epoch>:<offset>"``, the form clients hold (the head by default)."""
        return f"{self.epoch}:{self.head if offset is None else offset}"

    def offset_of(self, position: str) -> int:
        """The offset of ``"<epoch>:<offset>"`` in this log; BadPosition when it cannot be resumed."""
        epoch, sep, digits = position.partition(":")
        if not sep or not digits.isascii() or not digits.isdigit() or len(digits) > MAX_OFFSET_DIGITS:
            raise BadPosition(MALFORMED)
        if epoch != self.epoch:
            raise BadPosition(OTHER_EPOCH)
        offset = int(digits)
        if offset > self.head:
            raise BadPosition(MALFORMED)  # a position this log never gave
        if offset + 1 < self.first:
            raise BadPosition(EXPIRED)
        return offset

    def after(self, offset: int) -> list[Entry] | None:
        """Every entry after ``offset``, or None when some of them are no longer kept."""
        if offset > self.head or offset < 0:
            return None
        if offset + 1 < self.first:
            return None
        start = offset + 1 - self.first
        return [self._entries[i] for i in range(start, len(self._entries))]

    @property
    def oldest_appended_at(self) -> float | None:
        return self._entries[0].appended_at if self._entries else None
