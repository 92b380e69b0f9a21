"""Resume mode: a session asks for positions, drops its connection at random and resumes after them.

docs/PROTOCOL.md, "Resuming". The session subscribes with ``"recover": true`` and, after a drop,
with ``"since"``; the gateway replays what it missed, says ``recovered`` and goes on live. The
session must end with every event exactly once, as if it had never been dropped.

One event can reach a session as several messages with one position (one per workspace of the
session that covers its path: a team workspace nested in another). A connection dropped between
them leaves that position half received, and resuming after it would lose the rest. So the session
keeps two positions: ``complete``, the last one all of whose messages arrived (a later position
came, or ``recovered`` named it), and ``current``, the last one received. It resumes after
``complete`` and skips the messages of ``current`` it already has (counted as ``reseen``).

Drops are deterministic: session ``i`` drops after message counts drawn from the plan's seed and
``i``, all before its last expected message (so that nothing drops once a session has all). A
replay can be longer than the gap between two drops (the gateway sent more than the client read
before it dropped), so most drops would cut a replay short: one in four may, the others wait for
``recovered`` and drop right after it. Pure: no I/O.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any, Final

from loadclient.checks import SessionChecker, Totals

PREFIX: Final = b'{"@position":"'  # how the gateway starts every event frame of a session with positions
CUT_REPLAY: Final = 0.25  # the share of drops that may cut a replay short

Drop = tuple[int, bool]
"""A drop: after how many messages, and whether it may cut a replay short."""


def drop_points(seed: int, index: int, every: int, limit: int) -> list[Drop]:
    """When session ``index`` drops its connection: gaps of 1..2*``every`` messages (``every`` on
    average), all below ``limit``. ``every`` 0: never."""
    if every <= 0:
        return []
    rng = random.Random(f"{seed}:drops:{index}")
    points: list[Drop] = []
    count = rng.randint(1, 2 * every)
    while count < limit:
        points.append((count, rng.random() < CUT_REPLAY))
        count += rng.randint(1, 2 * every)
    return points


class Resumer:
    """One session's positions, what it skips after a resume, and when it drops next."""

    def __init__(
        self, checker: SessionChecker, totals: Totals, drops: list[Drop], drop: Callable[[], None]
    ) -> None:
        self.checker = checker
        self.totals = totals
        self.drops = drops[::-1]  # popped from the end
        self.drop = drop
        self.complete: str | None = None  # after this position, nothing is missing
        self.current: str | None = None  # the position of the last message, perhaps half received
        self.at_current: list[bytes] = []  # the messages received at ``current``
        self.cut: tuple[str | None, list[bytes]] = (None, [])  # at the last resume: current and its messages
        self.recovering = False  # a resume is under way: its replay has not ended yet
        self.delivered = 0  # messages handed to the checker, over every connection

    def subscribe_fields(self) -> dict[str, Any]:
        """What the next subscribe adds: a first one asks for positions, a later one resumes."""
        if self.complete is None:
            return {"recover": True}
        self.recovering = True
        self.cut = (self.current, list(self.at_current))
        return {"since": self.complete}

    def on_subscribed(self, reply: dict[str, Any]) -> None:
        if self.recovering:
            self.totals.resumes += 1
        elif self.complete is None:  # a first start: live from the head
            self.complete = str(reply.get("position"))

    def on_message(self, payload: bytes, now_us: int) -> None:
        """Every message after ``subscribed``: events to the checker (once), control frames here."""
        if payload.startswith(PREFIX):
            end = payload.index(b'"', len(PREFIX))
            if self._is_new(payload[len(PREFIX) : end].decode(), payload):
                self.checker.on_message(payload, now_us)
                self._count()
            return
        message = json.loads(payload)
        kind = message.get("@type") if isinstance(message, dict) else None
        if kind == "recovered":
            self._recovered(str(message.get("position")), int(message.get("replayed", 0)))
            self._drop_if_due()
        elif kind == "gap":
            self.totals.problem("gaps", payload[:200].decode(errors="replace"))
            self._recovered(str(message.get("position")), 0)
            self._drop_if_due()
        elif kind == "error":
            self.checker.on_message(payload, now_us)
        else:
            self.totals.problem("malformed", "no @position: " + payload[:200].decode(errors="replace"))

    def _is_new(self, position: str, payload: bytes) -> bool:
        cut, had = self.cut
        if position == cut:
            if _already(payload, had):
                self.totals.reseen += 1
                return False
            self.totals.split += 1  # the rest of a position the drop cut: lost by resuming after it
        if position != self.current:
            self.complete = self.current or self.complete  # a later position: the last one is whole
            self.current, self.at_current = position, []
        self.at_current.append(payload)
        return True

    def _recovered(self, position: str, replayed: int) -> None:
        if self.recovering:
            self.totals.recovered += 1
            self.totals.replayed += replayed
        self.recovering = False
        self.complete, self.current, self.at_current, self.cut = position, None, [], (None, [])

    def _count(self) -> None:
        self.delivered += 1
        self._drop_if_due()

    def _drop_if_due(self) -> None:
        if not self.drops:
            return
        after, cuts_replay = self.drops[-1]
        if self.delivered >= after and (cuts_replay or not self.recovering):
            self.drops.pop()
            self.totals.drops += 1
            self.drop()


def _already(payload: bytes, received: list[bytes]) -> bool:
    """True when ``payload`` is one of ``received`` (byte for byte, else as JSON)."""
    if payload in received:
        return True
    message = json.loads(payload)
    return any(json.loads(other) == message for other in received)
