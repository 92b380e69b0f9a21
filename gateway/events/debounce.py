"""Per-node debounce of tree events (sans-IO: the caller passes the time and runs the timer).

CREATE, UPDATE_CONTENT and UPDATE_META events with a Target wait for a quiet period per node uuid
(each new event for the node restarts it) and leave as one merged event, the platform's rules:
the first Target, with later Etag (unless temporary), Type, MTime, Size and MetaStore keys laid
over it; the last Source; the type is CREATE if any event was a CREATE, else UPDATE_CONTENT if
any was, else the last type.

Only events whose Target has the same path are merged: the path decides who receives the event
(which workspaces), so an event for the node at another path first releases the waiting batch
and starts its own. Metadata (name, Etag, Size, tags) thus never reaches the readers of another
path or workspace, and the node's events still leave in order.

Ordering fix over the platform: an immediate event (DELETE, UPDATE_PATH, ...) for a node that has
a batch waiting first releases that batch, so a client never sees a move before the creation.
Memory is bounded: past ``max_pending`` nodes the oldest batch is released early, never dropped.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Final

from gateway import paths
from gateway.events.model import JsonObject
from gateway.events.tree import (
    CREATE,
    DEBOUNCED_TYPES,
    EVENT_TYPES,
    READ,
    UPDATE_CONTENT,
    event_type,
    node_of,
    node_uuids,
)

TEMPORARY_ETAG: Final = "temporary"
_LAID_OVER: Final = ("Type", "MTime", "Size")


@dataclass(slots=True)
class _Batch:
    deadline: float
    target: JsonObject
    source: JsonObject | None
    path: str | None  # the Target's normalised path: what routes the batch
    types: list[str] = field(default_factory=list)

    def event(self) -> JsonObject:
        kind = self.types[-1]
        if CREATE in self.types:
            kind = CREATE
        elif UPDATE_CONTENT in self.types:
            kind = UPDATE_CONTENT
        out: JsonObject = {} if kind == CREATE else {"Type": kind}
        if self.source is not None:
            out["Source"] = self.source
        out["Target"] = self.target
        return out


class Debouncer:
    def __init__(self, quiet: float, max_pending: int) -> None:
        self.quiet = quiet
        self.max_pending = max_pending
        self._batches: OrderedDict[str, _Batch] = OrderedDict()  # deadline order
        self.released_keys: list[str] = []  # the batches the last ``add`` released, in order

    def __len__(self) -> int:
        return len(self._batches)

    def add(self, event: JsonObject, now: float) -> list[JsonObject]:
        """Take one event; return the events to route now, in order."""
        self.released_keys = []
        kind = event_type(event)
        if kind == READ or kind not in EVENT_TYPES:
            return [event]  # never routed anywhere: no reason to cut a batch short
        key = self.key_of(event)
        if key is None:
            return [*self._release_for(event), event]
        released = []
        batch = self._batches.pop(key, None)
        if batch is not None and batch.path != _target_path(event):
            self.released_keys.append(key)
            released.append(batch.event())  # another path, other readers: never merged
            batch = None
        if batch is None:
            self._batches[key] = self._new_batch(event, now)
        else:
            _merge(batch, event)
            batch.deadline = now + self.quiet
            self._batches[key] = batch
        while len(self._batches) > self.max_pending:
            oldest, batch = self._batches.popitem(last=False)
            self.released_keys.append(oldest)
            released.append(batch.event())
        return released

    def due(self, now: float) -> list[JsonObject]:
        """Release every batch whose quiet period is over."""
        released = []
        while self._batches:
            key, batch = next(iter(self._batches.items()))
            if batch.deadline > now:
                break
            del self._batches[key]
            released.append(batch.event())
        return released

    def next_deadline(self) -> float | None:
        if not self._batches:
            return None
        return next(iter(self._batches.values())).deadline

    # -- for a history shared by several instances (gateway.history.sequencer) ---------------

    def due_keys(self, now: float) -> list[str]:
        """The keys of the batches whose quiet period is over, without releasing them."""
        keys = []
        for key, batch in self._batches.items():
            if batch.deadline > now:
                break
            keys.append(key)
        return keys

    def peek(self, key: str) -> JsonObject | None:
        """What batch ``key`` would release now, leaving it pending (a copy: later merges change
        the batch, never what was peeked)."""
        batch = self._batches.get(key)
        return copy.deepcopy(batch.event()) if batch is not None else None

    def pop(self, key: str) -> JsonObject | None:
        """Release batch ``key`` now, out of turn."""
        batch = self._batches.pop(key, None)
        return batch.event() if batch is not None else None

    def postpone(self, key: str, now: float) -> None:
        """Give batch ``key`` another quiet period (it stays last in deadline order)."""
        batch = self._batches.pop(key)
        batch.deadline = now + self.quiet
        self._batches[key] = batch

    def flush(self) -> list[JsonObject]:
        """Release everything (shutdown)."""
        released = [b.event() for b in self._batches.values()]
        self._batches.clear()
        return released

    def key_of(self, event: JsonObject) -> str | None:
        """The batch an event joins, or None when it is sent at once."""
        if self.quiet <= 0 or event_type(event) not in DEBOUNCED_TYPES:
            return None
        target = node_of(event, "Target")
        uuid = target.get("Uuid") if target else None
        return uuid if isinstance(uuid, str) and uuid else None

    def _release_for(self, event: JsonObject) -> list[JsonObject]:
        released = []
        for uuid in node_uuids(event):
            if batch := self._batches.pop(uuid, None):
                self.released_keys.append(uuid)
                released.append(batch.event())
        return released

    def _new_batch(self, event: JsonObject, now: float) -> _Batch:
        target = node_of(event, "Target")
        assert target is not None
        batch = _Batch(now + self.quiet, dict(target), node_of(event, "Source"), _target_path(event))
        meta = target.get("MetaStore")
        batch.target["MetaStore"] = dict(meta) if isinstance(meta, dict) else {}
        batch.types.append(event_type(event))
        return batch


def _merge(batch: _Batch, event: JsonObject) -> None:
    target = node_of(event, "Target")
    assert target is not None
    batch.types.append(event_type(event))
    batch.source = node_of(event, "Source")
    into = batch.target
    etag = target.get("Etag")
    if etag and etag != TEMPORARY_ETAG:
        into["Etag"] = etag
    for key in _LAID_OVER:
        if target.get(key):
            into[key] = target[key]
    meta = target.get("MetaStore")
    if isinstance(meta, dict):
        into["MetaStore"].update(meta)


def _target_path(event: JsonObject) -> str | None:
    """The Target's path as routing reads it (None when missing or invalid: routed nowhere)."""
    target = node_of(event, "Target")
    raw = target.get("Path") if target else None
    return paths.normalize(raw) if isinstance(raw, str) and raw else None
