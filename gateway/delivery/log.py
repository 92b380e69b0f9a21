"""The shared log of routed events, and the positions clients resume from.

Every event the dispatcher routes is appended once, with its routing (the deliveries, each with its
message encoded when first needed). Two numbers name an entry:

- ``offset``: this process's own, increasing by one per entry; the cursors of the sessions' feeds
  count in it, whatever the history backend.
- ``seq``: the public half of a position ``"<epoch>:<seq>"``. With the memory backend it is the
  offset itself and the epoch names this run of the process; with JetStream it is the sequence the
  stream gave the message and the epoch names the stream (so every instance gives the same
  positions). While JetStream is unreachable entries have no ``seq``: events go out without a
  position and no position can be resumed from (``suspend``).

The log keeps the newest ``max_entries`` events for at most ``max_age`` seconds: the history that a
position can be resumed from. Pure: the caller passes the time.
"""

from __future__ import annotations

import secrets
from bisect import bisect_left, bisect_right
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
    seq: int | None  # the public offset of its position; None while positions are suspended
    position: str | None  # "<epoch>:<seq>"
    frames: list[bytes | None] = field(default_factory=list)
    positioned: list[bytes | None] = field(default_factory=list)  # the same with "@position"

    def frame(self, seq: int) -> bytes:
        """Delivery ``seq``'s message as a text frame, encoded once for every session."""
        if not self.frames:
            self.frames = [None] * len(self.deliveries)
        return self.frames[seq] or _store(self.frames, seq, self.deliveries[seq].message)

    def positioned_frame(self, seq: int, part: int | None = None) -> bytes:
        """The frame with its ``"@position"``, for sessions that asked for positions (without one
        while positions are suspended). ``part``: this is message ``part`` of several the event
        makes for the session, not the last."""
        if self.position is None:
            return self.frame(seq)
        message = self.deliveries[seq].message
        if part is not None:
            return json_frame(with_position(message, f"{self.position}.{part}"))
        if not self.positioned:
            self.positioned = [None] * len(self.deliveries)
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
        self.seq = 0  # the public offset of the newest position given
        self.floor = 0  # the oldest public offset a resume may start after
        self.suspended: str | None = None  # why no position is given now (a gap reason)
        self._entries: deque[Entry] = deque()

    def __len__(self) -> int:
        return len(self._entries)

    def append(
        self, topic: str, event: JsonObject, deliveries: list[Delivery], now: float, seq: int | None = None
    ) -> Entry:
        """Append one routed event; ``seq`` is its stream sequence (JetStream), else the next."""
        self.head += 1
        if self.suspended is not None:
            entry = Entry(self.head, topic, event, deliveries, now, None, None)
            self.expire(now)
            return entry
        self.seq = self.seq + 1 if seq is None else seq
        entry = Entry(self.head, topic, event, deliveries, now, self.seq, self.position(self.seq))
        self._entries.append(entry)
        self.expire(now)
        return entry

    def expire(self, now: float) -> None:
        """Forget entries beyond the count or older than the age bound."""
        entries = self._entries
        oldest = now - self.max_age
        while entries and (len(entries) > self.max_entries or entries[0].appended_at < oldest):
            self.floor = entries.popleft().seq or self.floor

    def suspend(self, reason: str) -> None:
        """Stop giving positions (JetStream is unreachable): events go out without one, and every
        resume is answered with a gap saying ``reason``."""
        self.suspended = reason
        self._entries.clear()

    def restart(self, epoch: str, seq: int) -> None:
        """Give positions again from ``seq`` on, in ``epoch``; nothing before it can be resumed
        (what went out meanwhile had no position, so a replay could only repeat it)."""
        self.suspended = None
        self.epoch = epoch
        self.seq = self.floor = seq
        self._entries.clear()

    @property
    def current_position(self) -> str | None:
        """The newest position, or None while positions are suspended."""
        return None if self.suspended is not None else self.position()

    def position(self, seq: int | None = None) -> str:
        """``"<epoch>:<seq>"``, the form clients hold (the newest by default)."""
        return f"{self.epoch}:{self.seq if seq is None else seq}"

    def offset_of(self, position: str) -> tuple[int, int | None]:
        """``(seq, part)`` of ``"<epoch>:<seq>[.<part>]"``; BadPosition when it cannot be resumed
        from. ``part``: the client has messages ``0..part`` of that event, not its last."""
        epoch, seq, part = parse_position(position)
        if self.suspended is not None:
            raise BadPosition(self.suspended)
        if epoch != self.epoch:
            raise BadPosition(OTHER_EPOCH)
        if seq > self.seq:
            raise BadPosition(MALFORMED)  # a position this log never gave
        if seq < self.floor or (part is not None and seq == self.floor):
            raise BadPosition(EXPIRED)
        return seq, part

    def is_ahead(self, position: str) -> bool:
        """True for a position of this epoch past the newest given here (another instance of a
        shared history gave it, and this one has not read that far yet)."""
        try:
            epoch, seq, _ = parse_position(position)
        except BadPosition:
            return False
        return epoch == self.epoch and seq > self.seq

    def entry_at(self, seq: int) -> Entry | None:
        entries = self._entries
        i = bisect_left(entries, seq, key=_seq)
        return entries[i] if i < len(entries) and entries[i].seq == seq else None

    def after(self, seq: int) -> list[Entry] | None:
        """Every entry after public offset ``seq``, or None when some of them are no longer kept."""
        if seq > self.seq or seq < self.floor or self.suspended is not None:
            return None
        entries = self._entries
        start = bisect_right(entries, seq, key=_seq)
        return [entries[i] for i in range(start, len(entries))]

    @property
    def oldest_appended_at(self) -> float | None:
        return self._entries[0].appended_at if self._entries else None


def parse_position(position: str) -> tuple[str, int, int | None]:
    """``"<epoch>:<seq>"`` or ``"<epoch>:<seq>.<part>"`` -> (epoch, seq, part); BadPosition."""
    epoch, sep, rest = position.partition(":")
    digits, dot, part = rest.partition(".")
    if not sep or not _is_number(digits) or (dot and not _is_number(part)):
        raise BadPosition(MALFORMED)
    return epoch, int(digits), int(part) if dot else None


def _is_number(digits: str) -> bool:
    return digits.isascii() and digits.isdigit() and len(digits) <= MAX_OFFSET_DIGITS


def _seq(entry: Entry) -> int:
    return entry.seq or 0
