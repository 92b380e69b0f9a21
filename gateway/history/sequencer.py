"""What the JetStream history delivers, and at which stream sequence. Pure: no I/O, no clock.

Every instance reads the same stream in the same order and runs this state machine over it, so
every instance delivers the same events at the same positions, and a replay reproduces them:

- A raw message delivers at most one event, at its own sequence: an event of a topic without
  debounce, or a tree event sent at once (DELETE, UPDATE_PATH, ...) when no batch of its node
  waits. A debounced tree event joins its node's batch and delivers nothing.
- A release record (``gateway.history.records``) delivers exactly one event, at the record's
  sequence: a batch whose quiet period ended, or an event that a raw message released out of turn.
- When a raw message releases several events at once (an immediate event for a node whose batch
  waits: the batch first, then the event; a batch released early because too many wait), those
  events are not delivered at that message's sequence, which could carry only one of them: each
  gets a record ``@<seq>.<n>``, published in order, delivered where it lands. Until those records
  are back, the node's next immediate events are deferred the same way, so none overtakes them.

Hence positions strictly increase for every session, whatever the debounce did; the merges are
those of the instance whose record the stream kept first, which every other instance adopts (a
record for a batch that got newer events meanwhile releases what it carries, and the batch goes
on with everything, so nothing is lost; its next release repeats older fields).

The caller publishes ``outbox()`` records (deduplicated by the stream) and tells ``due`` the time.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Final

from gateway.events.debounce import Debouncer
from gateway.events.model import JsonObject
from gateway.events.tree import node_uuids
from gateway.history.records import Release
from gateway.topics import TREE_TOPICS

# Releases remembered to ignore a record that came twice (past the stream's duplicate window).
REMEMBERED: Final = 50_000
# Keys of records that deliver nothing (the point where an instance follows the stream again).
MARKER: Final = "!"


@dataclass(frozen=True, slots=True)
class Delivered:
    seq: int
    topic: str
    event: JsonObject


class Sequencer:
    def __init__(self, quiet: float, max_pending: int) -> None:
        self._debouncers = {topic: Debouncer(quiet, max_pending) for topic in TREE_TOPICS}
        self._last: dict[tuple[str, str], int] = {}  # (topic, batch key) -> newest raw seq merged
        self._released: OrderedDict[tuple[str, str], int] = OrderedDict()  # -> released through
        self._outbox: dict[str, Release] = {}  # msg id -> record to publish, in order
        # Nodes with events deferred to records not back yet: their next events wait behind them.
        self._deferred: Counter[tuple[str, str]] = Counter()

    def pending(self) -> int:
        return sum(len(d) for d in self._debouncers.values())

    def raw(self, seq: int, topic: str, event: JsonObject, now: float) -> list[Delivered]:
        """A platform message at ``seq``: what it delivers there (nothing, or one event)."""
        debouncer = self._debouncers.get(topic)
        if debouncer is None:
            return [Delivered(seq, topic, event)]
        key = debouncer.key_of(event)
        released = debouncer.add(event, now)
        for batch_key in debouncer.released_keys:  # a record of theirs may still come: ignore it
            self._remember((topic, batch_key), self._last.pop((topic, batch_key), seq))
        if key is not None:
            self._last[(topic, key)] = seq  # after: the key's previous batch may have just left
        elif released == [event] and not self._waits(topic, event):
            return [Delivered(seq, topic, event)]
        for n, out in enumerate(released):
            self._defer(Release(topic, f"@{seq}.{n}", seq, out))
            for uuid in node_uuids(out):
                self._deferred[(topic, uuid)] += 1
        return []

    def _waits(self, topic: str, event: JsonObject) -> bool:
        """True when an event of the same node is deferred to a record still out: this one must
        come after it (a delete never before the creation a move released)."""
        return any(self._deferred[(topic, uuid)] for uuid in node_uuids(event))

    def record(self, seq: int, release: Release) -> list[Delivered]:
        """A release record at ``seq``: the event it carries, unless it was delivered already."""
        self._outbox.pop(release.msg_id, None)
        if release.key.startswith(MARKER):
            return []
        done = (release.topic, release.key)
        if self._released.get(done, -1) >= release.last:
            return []
        self._remember(done, release.last)
        if release.key.startswith("@"):
            for uuid in node_uuids(release.event):
                if self._deferred[(release.topic, uuid)] > 1:
                    self._deferred[(release.topic, uuid)] -= 1
                else:
                    self._deferred.pop((release.topic, uuid), None)
        debouncer = self._debouncers.get(release.topic)
        batch = debouncer is not None and not release.key.startswith("@")
        # The batch goes with its record unless it merged newer events meanwhile (then it stays).
        if batch and self._last.get(done, -1) <= release.last:
            assert debouncer is not None
            if debouncer.pop(release.key) is not None:
                del self._last[done]
        return [Delivered(seq, release.topic, release.event)]

    def due(self, now: float) -> None:
        """Queue a record for every batch whose quiet period is over (again after another quiet
        period if its record has not come back: the stream keeps one of them)."""
        for topic, debouncer in self._debouncers.items():
            for key in debouncer.due_keys(now):
                event = debouncer.peek(key)
                assert event is not None
                self._defer(Release(topic, key, self._last[(topic, key)], event))
                debouncer.postpone(key, now)

    def next_deadline(self) -> float | None:
        deadlines = [d for x in self._debouncers.values() if (d := x.next_deadline()) is not None]
        return min(deadlines, default=None)

    def flush(self) -> list[tuple[str, JsonObject]]:
        """Everything held, released now (JetStream failed: it goes out without a position): the
        events deferred to records, in order, then every waiting batch."""
        deferred = [(r.topic, r.event) for r in self._outbox.values() if r.key.startswith("@")]
        self._outbox.clear()
        self._deferred.clear()
        batches = [(t, e) for t, debouncer in self._debouncers.items() for e in debouncer.flush()]
        return deferred + batches

    def waiting(self, msg_id: str) -> bool:
        """True while the record ``msg_id`` is still to be published (not back through the stream)."""
        return msg_id in self._outbox

    def outbox(self) -> list[Release]:
        """Records to publish, oldest first; each leaves when it comes back through the stream."""
        return list(self._outbox.values())

    def _defer(self, release: Release) -> None:
        self._outbox[release.msg_id] = release

    def _remember(self, done: tuple[str, str], last: int) -> None:
        self._released[done] = last
        self._released.move_to_end(done)
        while len(self._released) > REMEMBERED:
            self._released.popitem(last=False)
