"""One task that writes for every session after a fan-out, instead of one task wake-up each.

Fan-out appends to streams and marks them; sessions mark themselves when a frame is queued for
them alone. Once the marking task yields, the flusher calls :meth:`Session.flush` for each member
of each marked stream and each marked session, once per round: one non-blocking write per session
per batch of events. Then it settles each marked stream: items every member has read are dropped,
and a member lagging by more than its bound is closed as a slow consumer (4008).
"""

from __future__ import annotations

import trio

from gateway.connection.writer import Parking
from gateway.delivery.streams import Stream
from gateway.hub import Hub
from gateway.protocol import ErrorCode
from gateway.session import LAGGING, Session


class Flusher:
    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        self._marked: dict[Session, None] = {}  # insertion-ordered set
        self._parking = Parking()
        self._round = 0
        hub.on_dirty = self._parking.wake

    def mark(self, session: Session) -> None:
        self._marked[session] = None
        self._parking.wake()

    async def run(self) -> None:
        while True:
            streams = self._hub.take_dirty()
            marked, self._marked = self._marked, {}
            if not streams and not marked:
                await self._parking.park()
                continue
            self.flush(streams, marked)
            await trio.lowlevel.checkpoint()

    def flush(self, streams: list[Stream[Session]], marked: dict[Session, None]) -> None:
        self._round += 1
        round_ = self._round
        for stream in streams:
            for session in list(stream.members):
                session.flush(round_)
        for session in marked:
            session.flush(round_)
        for stream in streams:
            settle(stream)


def settle(stream: Stream[Session]) -> None:
    """Drop what every member has read; close members that lag too far behind."""
    last = stream.last_offset
    behind = [s for s in stream.members if s.feed.cursor < last or s.unsent()]
    for session in behind:
        if stream.bytes_after(session.feed.cursor) + session.unsent() > session.limits.max_lag:
            session.fail(ErrorCode.SLOW_CONSUMER, LAGGING, discard=True)
    low = min((s.feed.cursor for s in stream.members), default=last)
    stream.trim(low)
