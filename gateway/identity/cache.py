"""Answers kept for a while, and one lookup for everyone who asks the same question at once.

A reconnect storm brings many subscribes with the same token (several tabs of one user) and many
with different ones; the platform must see one lookup per token, and a session that goes away
while waiting must not cancel the lookup the others wait for. So lookups run in the owner's
nursery, not in the asking task; waiters only wait for the outcome. Bounded: least recently used
entries go first past ``max_entries``; expired entries are not served.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import trio

from gateway.protocol import ErrorCode, ProtocolError

log = logging.getLogger("gateway.identity")

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(slots=True)
class _Flight(Generic[V]):
    done: trio.Event = field(default_factory=trio.Event)
    value: V | None = None
    error: ProtocolError | None = None
    forgotten: bool = False  # the cache was told the answer may be stale: return it, keep it not


class SingleFlightCache(Generic[K, V]):
    """Per-key cache with a time to live and one lookup in flight per key."""

    def __init__(
        self,
        *,
        ttl: float,
        max_entries: int,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._flights: dict[K, _Flight[V]] = {}
        self._nursery: trio.Nursery | None = None
        self.lookups = 0  # lookups started (hits and joined flights do not count)

    def __len__(self) -> int:
        return len(self._entries)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Host the lookups until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    async def get(self, key: K, lookup: Callable[[], Awaitable[V]]) -> V:
        """The cached answer, or the answer of the lookup in flight, or of a new one."""
        cached = self._entries.get(key)
        if cached is not None and cached[0] > self._clock():
            self._entries.move_to_end(key)
            return cached[1]
        flight = self._flights.get(key)
        if flight is None or flight.forgotten:  # never join a lookup that may answer from stale data
            if self._nursery is None:
                raise RuntimeError("SingleFlightCache.run() is not running")
            flight = self._flights[key] = _Flight()
            self.lookups += 1
            self._nursery.start_soon(self._fly, key, flight, lookup)
        await flight.done.wait()
        if flight.error is not None:
            raise flight.error.fresh()
        return flight.value  # type: ignore[return-value]  # set whenever error is None

    def forget(self, stale: Callable[[K, V], bool] | None = None) -> int:
        """Drop the entries ``stale`` selects (all without it); lookups in flight are not kept."""
        keys = [k for k, (_, v) in self._entries.items() if stale is None or stale(k, v)]
        for key in keys:
            del self._entries[key]
        for flight in self._flights.values():
            flight.forgotten = True
        return len(keys)

    async def _fly(self, key: K, flight: _Flight[V], lookup: Callable[[], Awaitable[V]]) -> None:
        try:
            flight.value = await lookup()
        except ProtocolError as err:
            flight.error = err
        except Exception:
            # A bug must cost this lookup (its waiters get internal_error), not the whole cache.
            log.exception("identity lookup failed")
            flight.error = ProtocolError(ErrorCode.INTERNAL, "internal error while resolving the token")
        else:
            if self.ttl > 0 and not flight.forgotten:
                self._store(key, flight.value)
        finally:
            if self._flights.get(key) is flight:
                del self._flights[key]
            flight.done.set()

    def _store(self, key: K, value: V) -> None:
        self._entries[key] = (self._clock() + self.ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
