"""The admin listener's connection slots: a cap on open connections in which idle ones give way.

The listener is on loopback, so a local attacker and the operator's publisher share an address
and cannot be told apart by it; what tells them apart is what a connection does. A connection is
*idle* while it waits for a request (fresh, between keep-alive requests, or with half a request
head), *serving* while it handles a request, and *keyed* while it handles one carrying the admin
key. When the cap is reached, a new connection closes the connection idle the longest, else the
oldest serving one without the key; only when every connection serves a keyed request is it
refused. So keep-alive connections that poll ``/healthz`` hold no request slot, and a request
with the admin key always finds one.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Mapping
from typing import Final

import trio

log = logging.getLogger("gateway.admin")

MAX_CONNECTIONS: Final = 64


class State(enum.Enum):
    IDLE = "idle"
    SERVING = "serving"
    KEYED = "keyed"


class Slot:
    """One open admin connection; ``scope`` wraps its serving, so that closing it cancels that."""

    __slots__ = ("_slots", "scope", "since", "state")

    def __init__(self, slots: ConnectionSlots) -> None:
        self._slots = slots
        self.scope = trio.CancelScope()
        self.state = State.IDLE
        self.since = trio.current_time()

    def idle(self) -> None:
        """Waiting for the next request: the connection may be closed for a new one."""
        self._enter(State.IDLE)

    def serving(self, headers: Mapping[str, str]) -> None:
        """A request head arrived: it is served to the end unless it lacks the key and the cap presses."""
        self._enter(State.KEYED if self._slots.privileged(headers) else State.SERVING)

    def release(self) -> None:
        self._slots.release(self)

    def _enter(self, state: State) -> None:
        self.state = state
        self.since = trio.current_time()


class ConnectionSlots:
    """At most ``limit`` open connections; ``privileged(headers)`` says whether a request has the key."""

    def __init__(self, limit: int, privileged: Callable[[Mapping[str, str]], bool]) -> None:
        self.limit = limit
        self.privileged = privileged
        self._open: dict[Slot, None] = {}  # in order of opening, which breaks ties in ``_victim``

    def __len__(self) -> int:
        return len(self._open)

    def states(self) -> list[State]:
        """What each open connection does, oldest first (for tests and debugging)."""
        return [slot.state for slot in self._open]

    def open(self) -> Slot | None:
        """A slot for a new connection, closing another one when full; None if all serve keyed requests."""
        if len(self._open) >= self.limit:
            victim = self._victim()
            if victim is None:
                return None
            log.debug("admin listener full: closing a connection %s since %.1f s", victim.state.value,
                      trio.current_time() - victim.since)  # fmt: skip
            self.release(victim)
            victim.scope.cancel()
        slot = Slot(self)
        self._open[slot] = None
        return slot

    def release(self, slot: Slot) -> None:
        self._open.pop(slot, None)

    def _victim(self) -> Slot | None:
        """The connection idle the longest, else the one serving a request without the key the longest."""
        for state in (State.IDLE, State.SERVING):
            candidates = [slot for slot in self._open if slot.state is state]
            if candidates:
                return min(candidates, key=lambda slot: slot.since)
        return None
