"""What one session has to send: its streams read from its cursor, and the frames queued for it alone.

The cursor is the log offset up to which the session has taken every frame meant for it. A
gather takes, in log order, the frames past the cursor from each of the session's streams (merged
by offset, a delivery reaching it through two audiences taken once, per-identity checks applied),
interleaved with its own frames (replies, errors, chat) at the log head they were queued at, and
moves the cursor. It stops at an event boundary past ``limit`` bytes: one write's worth.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable
from itertools import islice
from typing import Any

from gateway.delivery.streams import Item, Stream
from gateway.identity import Identity


def _order(item: Item) -> tuple[int, int]:
    return item[0], item[1]


class Feed:
    __slots__ = ("cursor", "own", "own_bytes", "streams")

    def __init__(self, cursor: int = 0) -> None:
        self.cursor = cursor
        self.streams: list[Stream[Any]] = []
        self.own: deque[tuple[int, bytes]] | None = None  # (log head when queued, frame)
        self.own_bytes = 0

    def queue(self, head: int, frame: bytes) -> None:
        """A frame for this session alone, after every stream frame up to ``head``."""
        if self.own is None:
            self.own = deque()
        self.own.append((head, frame))
        self.own_bytes += len(frame)

    def drop_own(self) -> None:
        self.own = None
        self.own_bytes = 0

    @property
    def has_own(self) -> bool:
        return bool(self.own)

    def behind(self, head: int) -> bool:
        """True when a gather may find something."""
        if self.own:
            return True
        cursor = self.cursor
        return cursor < head and any(s.items and s.items[-1][0] > cursor for s in self.streams)

    def lag(self) -> int:
        """Bytes waiting for this session (a frame in two of its streams counts twice)."""
        return self.own_bytes + sum(s.bytes_after(self.cursor) for s in self.streams)

    def gather(
        self, head: int, identity: Identity | None, limit: int, positions: bool = False
    ) -> list[bytes]:
        """The next frames, in order, up to an event boundary past ``limit`` bytes (with their
        ``@position`` when ``positions``)."""
        cursor = self.cursor
        sources = [s for s in self.streams if s.items and s.items[-1][0] > cursor]
        out: list[bytes] = []
        size = 0
        through = head  # the cursor after this gather
        last = (-1, -1)
        group: list[Item] = []  # with positions: the messages of one event, numbered once all seen
        for item in _merged(sources, cursor):
            offset, seq, frame, allow, _ = item
            if (offset, seq) == last:
                continue  # the same delivery through another audience
            if group and offset != last[0]:
                size += _positioned(out, group)
                group = []
            if size >= limit and offset != last[0]:
                through = last[0] if last[0] >= 0 else offset - 1
                break
            if self.own and self.own[0][0] < offset:
                size += self._take_own(out, offset - 1)
            last = (offset, seq)
            if allow is None or (identity is not None and allow(identity)):
                if positions:
                    group.append(item)
                else:
                    out.append(frame)
                    size += len(frame)
        if group:
            _positioned(out, group)
        if self.own:
            self._take_own(out, through)
        self.cursor = through
        return out

    def keep_routed(self, head: int, identity: Identity | None, positions: bool = False) -> None:
        """Before the session leaves its streams: queue what they hold for it as its own frames."""
        if self.behind(head):
            frames = self.gather(head, identity, limit=1 << 62, positions=positions)
            for frame in frames:
                self.queue(head, frame)
        self.streams = []
        self.cursor = head

    def forget_routed(self, head: int) -> None:
        """Leave the streams without taking what they hold (a replay will send it again)."""
        self.streams = []
        self.cursor = head

    def _take_own(self, out: list[bytes], through: int) -> int:
        own = self.own
        assert own is not None
        size = 0
        while own and own[0][0] <= through:
            frame = own.popleft()[1]
            out.append(frame)
            size += len(frame)
        self.own_bytes -= size
        if not own:
            self.own = None  # an empty deque costs 600 bytes, and most sessions are idle
        return size


def _positioned(out: list[bytes], group: list[Item]) -> int:
    """The messages one event makes for a session, each with its own position: the last (most
    often the only) one ``<epoch>:<seq>``, those before it ``<epoch>:<seq>.<k>``."""
    size = 0
    last = len(group) - 1
    for k, (_, seq, _, _, entry) in enumerate(group):
        frame = entry.positioned_frame(seq, None if k == last else k)
        out.append(frame)
        size += len(frame)
    return size


def _merged(sources: list[Stream[Any]], cursor: int) -> Iterable[Item]:
    if not sources:
        return ()
    if len(sources) == 1:
        stream = sources[0]
        return islice(stream.items, stream.index_after(cursor), None)
    return heapq.merge(
        *(islice(s.items, s.index_after(cursor), None) for s in sources),
        key=_order,
    )
