"""Who is in which room: presence timeouts, departures, and users put back after another instance
took them out.

A JOIN or a PING JOIN refreshes the user's ``last_seen`` in the members table; every instance sweeps
members silent for ``chat_presence_timeout`` and announces the room's new list. A session that
leaves (or closes) queues a departure: the user leaves the member list unless another of their
sessions here is still in the room. An instance only knows its own sessions: when another one
announces that a user left a room while a session of that user is still in it here, this instance
puts the user back at once, rather than at the session's next PING.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import trio

from gateway.chat.records import NotFound, StoreUnavailable
from gateway.chat.store import ChatStore
from gateway.metrics import Metrics

log = logging.getLogger("gateway.chat")

SWEEP_INTERVAL: Final = 1.0
QUEUE_SIZE: Final = 1024  # departures (and returns) waiting to be recorded

Announce = Callable[..., Awaitable[None]]  # (room_uuid, *, left=None)


@dataclass(slots=True)
class StoreOutage:
    """The last store outage the presence sweep met. No PING could be recorded during it, so members
    seen shortly before it stay until a full presence timeout after it ends, to ping again."""

    started: float | None = None
    ended: float | None = None

    def cutoff(self, now: float, timeout: float) -> float:
        """Members last seen before this time have left."""
        if self.started is None:
            return now - timeout
        if self.ended is not None and now >= self.ended + timeout:
            self.started = self.ended = None
            return now - timeout
        return min(now - timeout, self.started - timeout)

    def down(self, now: float) -> None:
        if self.started is None:
            self.started = now
        self.ended = None  # a new outage within the grace of the last one extends it

    def up(self, now: float) -> None:
        if self.started is not None and self.ended is None:
            self.ended = now


class Presence:
    def __init__(
        self,
        store: ChatStore,
        metrics: Metrics,
        *,
        timeout: float,
        clock: Callable[[], float],
        present: Callable[[str, str], bool],
        announce: Announce,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._timeout = timeout
        self._clock = clock
        self._present = present  # (room_uuid, user) -> a session of the user is in the room here
        self._announce = announce
        self._departures_in, self._departures = trio.open_memory_channel[tuple[str, str]](QUEUE_SIZE)
        self._returns_in, self._returns = trio.open_memory_channel[tuple[str, str]](QUEUE_SIZE)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._sweep)
            nursery.start_soon(self._record_departures)
            nursery.start_soon(self._record_returns)
            task_status.started()

    def depart(self, room_uuid: str, user: str) -> None:
        """A session of ``user`` left the room: record it, unless another one of theirs is still in."""
        try:
            self._departures_in.send_nowait((room_uuid, user))
        except trio.WouldBlock:  # presence expiry removes the member within the timeout anyway
            self._metrics.presence_dropped.labels("departure").inc()

    def left_elsewhere(self, room_uuid: str, users: list[str], left: str | None) -> None:
        """Another instance took ``left`` out of the room: put them back if they are here."""
        if left is None or left in users or not self._present(room_uuid, left):
            return
        try:
            self._returns_in.send_nowait((room_uuid, left))
        except trio.WouldBlock:  # the session's next PING puts the user back anyway
            self._metrics.presence_dropped.labels("return").inc()

    async def _sweep(self) -> None:
        outage = StoreOutage()
        while True:
            await trio.sleep(SWEEP_INTERVAL)
            now = self._clock()
            try:
                expired = await self._store.expire_members(outage.cutoff(now, self._timeout), now=now)
                outage.up(now)
                for room_uuid in expired:
                    await self._announce(room_uuid)
            except StoreUnavailable as exc:
                outage.down(now)
                log.warning("presence sweep skipped: %s", exc)
            except Exception:
                # A bug here must cost one sweep, not the chat service: log it and sweep again.
                log.exception("presence sweep failed")

    async def _record_departures(self) -> None:
        async for room_uuid, user in self._departures:
            if self._present(room_uuid, user):
                continue  # another of the user's sessions is still in the room
            try:
                if await self._store.remove_member(room_uuid, user, now=self._clock()):
                    await self._announce(room_uuid, left=user)
            except NotFound:
                pass  # the room was deleted while empty (the user had timed out): left already
            except StoreUnavailable as exc:
                log.warning("could not record that %s left a room: %s", user, exc)
            except Exception:
                log.exception("recording that %s left a room failed", user)

    async def _record_returns(self) -> None:
        async for room_uuid, user in self._returns:
            if not self._present(room_uuid, user):
                continue
            try:
                if await self._store.touch_member(room_uuid, user, now=self._clock()):
                    await self._announce(room_uuid)
            except NotFound:
                pass  # deleted while empty: the session's next heartbeat brings it back
            except StoreUnavailable as exc:
                log.warning("could not record that %s is still in a room: %s", user, exc)
            except Exception:
                log.exception("recording that %s is still in a room failed", user)
