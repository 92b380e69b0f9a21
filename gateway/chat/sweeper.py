"""Rooms nobody uses are deleted: no member and no message for ``chat_empty_room_ttl``.

Every instance sweeps the shared database now and then, a bounded batch at a time (a backlog is
worked off a batch per short pause, never in one long transaction). A room is also kept for the
hour after its creation, during which it counts against its creator's hourly cap
(``chat_rooms_created_per_hour``). A deleted room comes back with the same uuid when someone with
access joins it again: room uuids derive from (Type, RoomTypeObject).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

import trio

from gateway.chat.records import StoreUnavailable
from gateway.chat.sql import CREATION_WINDOW
from gateway.chat.store import ChatStore

log = logging.getLogger("gateway.chat")

SWEEP_INTERVAL: Final = 60.0
SWEEP_BATCH: Final = 500  # rooms deleted in one transaction at most
BACKLOG_PAUSE: Final = 1.0  # between two full batches


class RoomSweeper:
    def __init__(
        self,
        store: ChatStore,
        *,
        ttl: float,
        clock: Callable[[], float],
        interval: float = SWEEP_INTERVAL,
        batch: int = SWEEP_BATCH,
    ) -> None:
        self._store = store
        self._ttl = ttl
        self._clock = clock
        self._interval = min(interval, ttl)
        self._batch = batch

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        pause = self._interval
        while True:
            await trio.sleep(pause)
            pause = BACKLOG_PAUSE if await self.sweep() == self._batch else self._interval

    async def sweep(self) -> int:
        """Delete one batch of the rooms due; how many went. Never raises but Cancelled."""
        now = self._clock()
        try:
            deleted = await self._store.delete_vacant_rooms(
                vacant_before=now - self._ttl, created_before=now - CREATION_WINDOW, limit=self._batch
            )
        except StoreUnavailable as exc:
            log.warning("empty-room sweep skipped: %s", exc)
            return 0
        except Exception:
            # A bug here must cost one sweep, not the chat service: log it and sweep again later.
            log.exception("empty-room sweep failed")
            return 0
        if deleted:
            log.info("deleted %d empty chat rooms", deleted)
        return deleted
