"""Replay: what one identity missed after a position, routed again for that identity as it is now.

A session that resumes (``"since": "<epoch>:<offset>"``) gets the log's events after that offset
that it may see *now*: each stored event is routed again by the same rules, with only the
identity's own workspaces covering paths, and a delivery is kept when one of its audiences is the
identity's and its per-identity check passes. An event of a workspace the user has lost since is
therefore not replayed, and one of a workspace no session watched when it was published is. Pure.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from operator import attrgetter

from gateway.delivery.log import EXPIRED, MALFORMED, BadPosition, Entry, EventLog, with_position
from gateway.events import route
from gateway.events.model import Audience, JsonObject
from gateway.identity import Identity, Workspace
from gateway.paths import ancestors_and_self


@dataclass(frozen=True)
class Replay:
    messages: list[JsonObject]  # each with its "@position", in log order
    position: str  # the last replayed position, or the one asked for when nothing was missed


@dataclass(frozen=True)
class Gap:
    cause: str  # log.MALFORMED, OTHER_EPOCH, EXPIRED or UNAVAILABLE


def replay(log: EventLog, since: str, identity: Identity, audiences: list[Audience]) -> Replay | Gap:
    """The messages ``identity`` missed after ``since``; Gap when the log cannot tell."""
    try:
        seq, part = log.offset_of(since)
    except BadPosition as exc:
        return Gap(exc.cause)
    entries = log.after(seq)
    if entries is None:
        return Gap(EXPIRED)
    mine = set(audiences)
    covering = _IdentityCovering(identity.workspaces)  # once, not per replayed event
    messages: list[JsonObject] = []
    if part is not None:  # the rest of an event the client got part of
        cut = log.entry_at(seq)
        if cut is None:  # kept, yet no event there: not a position this log gave
            return Gap(MALFORMED)
        messages += _messages_for(cut, identity, mine, covering)[part + 1 :]
    for entry in entries:
        messages += _messages_for(entry, identity, mine, covering)
    return Replay(messages, messages[-1]["@position"] if messages else since)


def _messages_for(
    entry: Entry, identity: Identity, mine: set[Audience], covering: _IdentityCovering
) -> list[JsonObject]:
    """What ``identity`` gets of one event, each message with its position (the last one the
    event's, those before it ``<event's>.<k>``, as the live path numbers them)."""
    deliveries = route(entry.topic, entry.event, covering)
    kept = [
        d.message
        for d in deliveries
        if mine.intersection(d.audiences) and (d.allow is None or d.allow(identity))
    ]
    position = entry.position or ""
    last = len(kept) - 1
    return [with_position(m, position if k == last else f"{position}.{k}") for k, m in enumerate(kept)]


class _IdentityCovering:
    """``Covering`` for one identity: its own workspaces whose root covers a path, deepest first."""

    def __init__(self, workspaces: tuple[Workspace, ...] | list[Workspace]) -> None:
        self._by_root: dict[str, list[Workspace]] = {}
        # In uuid order within a root, as the hub's covering: the messages of one event come in
        # the same order live and replayed, so their positions match.
        for ws in sorted(dict.fromkeys(workspaces), key=attrgetter("uuid")):
            for root in ws.roots:
                self._by_root.setdefault(root, []).append(ws)

    def __call__(self, path: str) -> Iterator[tuple[Workspace, str]]:
        for candidate in ancestors_and_self(path):
            for ws in self._by_root.get(candidate, ()):
                yield ws, candidate
