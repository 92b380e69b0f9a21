"""Resume mode: a session asks for positions, drops its connection at random and resumes after them.

docs/PROTOCOL.md, "Resuming". The session subscribes with ``"recover": true`` and, after a drop,
with ``"since"`` set to the last position it received, as ``/client.js`` does; the gateway replays
what it missed, says ``recovered`` and goes on live. The session must end with every event exactly
once, as if it had never been dropped (the plan check counts anything missing or repeated).

One event can reach a session as several messages (one per workspace of the session that covers
its path: a team workspace nested in another), each with its own position (``<seq>.0``, ...,
``<seq>``). A drop between them is a resume from ``<seq>.<k>``: the replay brings the rest
(counted as ``split``, so the test can tell the case was exercised).

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
    """One session's last position, what its resumes brought, and when it drops next."""

    def __init__(
        self, checker: SessionChecker, totals: Totals, drops: list[Drop], drop: Callable[[], None]
    ) -> None:
        self.checker = checker
        self.totals = totals
        self.drops = drops[::-1]  # popped from the end
        self.drop = drop
        self.position: str | None = None  # the last position received
        self.cut: str | None = None  # at a resume from a part of an event: that event's position
        self.recovering = False  # a resume is under way: its replay has not ended yet
        self.delivered = 0  # messages handed to the checker, over every connection

    def subscribe_fields(self) -> dict[str, Any]:
        """What the next subscribe adds: a first one asks for positions, a later one resumes."""
        if self.position is None:
            return {"recover": True}
        self.recovering = True
        event, dot, _ = self.position.partition(".")
        self.cut = event if dot else None
        return {"since": self.position}

    def on_subscribed(self, reply: dict[str, Any]) -> None:
        if self.recovering:
            self.totals.resumes += 1
        elif self.position is None:  # a first start: live from the head
            self.position = str(reply.get("position"))

    def on_message(self, payload: bytes, now_us: int) -> None:
        """Every message after ``subscribed``: events to the checker, control frames here."""
        if payload.startswith(PREFIX):
            end = payload.index(b'"', len(PREFIX))
            self.position = payload[len(PREFIX) : end].decode()
            if self.cut is not None and self.position.partition(".")[0] == self.cut:
                self.totals.split += 1  # the rest of an event the drop cut in two
            self.checker.on_message(payload, now_us)
            self._count()
            return
        message = json.loads(payload)
        kind = message.get("@type") if isinstance(message, dict) else None
        if kind == "recovered":
            self._recovered(int(message.get("replayed", 0)))
        elif kind == "gap":
            self.totals.problem("gaps", payload[:200].decode(errors="replace"))
            self.position = str(message.get("position"))
            self._recovered(0)
        elif kind == "error":
            self.checker.on_message(payload, now_us)
        else:
            self.totals.problem("malformed", "no @position: " + payload[:200].decode(errors="replace"))

    def _recovered(self, replayed: int) -> None:
        if self.recovering:
            self.totals.recovered += 1
            self.totals.replayed += replayed
        self.recovering = False
        self.cut = None
        self._drop_if_due()

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
