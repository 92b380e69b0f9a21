"""The JetStream history's sequencer, pure: instances sharing a stream deliver alike, and replays too.

A simulated stream stands for JetStream: raw platform messages and release records get increasing
sequences, and a record whose id the stream already holds is dropped (its duplicate window).
Instances read it in order, each with its own clock, and publish their records to it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from gateway.events.debounce import Debouncer
from gateway.history.records import BadRecord, Release, decode, encode
from gateway.history.sequencer import Delivered, Sequencer
from gateway.topics import IDM_TOPIC, TREE_TOPIC

Json = dict[str, Any]
QUIET = 1.0
TICK = 0.05


def tree(kind: str | None, uuid: str, folder: str = "ds", **fields: Any) -> Json:
    event: Json = {"Target": {"Uuid": uuid, "Path": f"/{folder}/{uuid}.txt", **fields}}
    if kind is not None:
        event["Type"] = kind
    return event


@dataclass
class FakeStream:
    messages: list[tuple[str, Any]] = field(default_factory=list)  # seq = index + 1
    ids: set[str] = field(default_factory=set)

    def raw(self, topic: str, event: Json) -> int:
        self.messages.append(("raw", (topic, event)))
        return len(self.messages)

    def publish(self, release: Release) -> None:
        if release.msg_id not in self.ids:
            self.ids.add(release.msg_id)
            self.messages.append(("record", decode(encode(release))))


@dataclass
class Instance:
    stream: FakeStream
    skew: float = 0.0  # this instance's clock against the others'
    sequencer: Sequencer = field(default_factory=lambda: Sequencer(QUIET, 100))
    cursor: int = 0
    delivered: list[Delivered] = field(default_factory=list)

    def step(self, now: float, publish: bool = True) -> None:
        """Read the stream to its end, then release what is due and publish the records."""
        local = now + self.skew
        while self.cursor < len(self.stream.messages):
            kind, payload = self.stream.messages[self.cursor]
            self.cursor += 1
            if kind == "raw":
                topic, event = payload
                self.delivered += self.sequencer.raw(self.cursor, topic, event, local)
            else:
                self.delivered += self.sequencer.record(self.cursor, payload)
        self.sequencer.due(local)
        if publish:
            for release in self.sequencer.outbox():
                self.stream.publish(release)


def run(stream: FakeStream, instances: list[Instance], script: list[tuple[float, str, Json]]) -> None:
    """Publish ``script`` (time, topic, event) while every instance steps every 50 ms (its timer),
    then let all settle."""
    pending = list(script)
    end = (script[-1][0] if script else 0.0) + 10 * QUIET
    ticks = 0
    while ticks * TICK <= end:
        now = ticks * TICK
        while pending and pending[0][0] <= now:
            _, topic, event = pending.pop(0)
            stream.raw(topic, event)
            for instance in instances:
                instance.step(now)
        for instance in instances:
            instance.step(now)
        ticks += 1


def seqs(instance: Instance) -> list[int]:
    return [d.seq for d in instance.delivered]


def test_sequencer_an_event_without_debounce_is_delivered_at_its_own_sequence() -> None:
    stream = FakeStream()
    one = Instance(stream)
    run(stream, [one], [(0.0, IDM_TOPIC, {"Type": "UPDATE"})])
    assert one.delivered == [Delivered(1, IDM_TOPIC, {"Type": "UPDATE"})]


def test_sequencer_a_batch_is_delivered_once_where_its_record_lands() -> None:
    stream = FakeStream()
    a, b = Instance(stream), Instance(stream, skew=0.3)
    script = [
        (0.0, TREE_TOPIC, tree(None, "n1", Size=1)),
        (0.5, TREE_TOPIC, tree("UPDATE_CONTENT", "n1", Size=2)),
    ]
    run(stream, [a, b], script)
    assert [kind for kind, _ in stream.messages] == ["raw", "raw", "record"]  # one record kept
    assert a.delivered == b.delivered == [Delivered(3, TREE_TOPIC, a.delivered[0].event)]
    assert a.delivered[0].event["Target"]["Size"] == 2  # the merge of both


def test_sequencer_an_immediate_event_after_a_waiting_batch_comes_after_it() -> None:
    stream = FakeStream()
    a = Instance(stream)
    script = [(0.0, TREE_TOPIC, tree(None, "n1")), (0.2, TREE_TOPIC, tree("DELETE", "n1"))]
    run(stream, [a], script)
    kinds = [d.event.get("Type", "CREATE") for d in a.delivered]
    assert kinds == ["CREATE", "DELETE"]
    assert seqs(a) == [3, 4]  # two records, never two events at one sequence


def test_sequencer_a_node_at_another_path_releases_its_batch_first() -> None:
    stream = FakeStream()
    a = Instance(stream)
    script = [
        (0.0, TREE_TOPIC, tree(None, "n1", Size=1)),
        (0.2, TREE_TOPIC, tree("UPDATE_META", "n1", "other")),
    ]
    run(stream, [a], script)
    paths = [d.event["Target"]["Path"] for d in a.delivered]
    assert paths == ["/ds/n1.txt", "/other/n1.txt"]  # never merged, in order
    assert seqs(a) == sorted(set(seqs(a)))


def test_sequencer_positions_strictly_increase_across_debounce() -> None:
    stream = FakeStream()
    a = Instance(stream)
    script = [
        (0.0, TREE_TOPIC, tree(None, "n1")),
        (0.1, IDM_TOPIC, {"Type": "UPDATE"}),  # after n1's raw message, before its release
        (0.2, TREE_TOPIC, tree("UPDATE_META", "n2")),
    ]
    run(stream, [a], script)
    assert seqs(a) == sorted(set(seqs(a)))
    assert len(a.delivered) == 3


def test_sequencer_a_record_for_a_batch_that_grew_meanwhile_loses_nothing() -> None:
    stream = FakeStream()
    a = Instance(stream)
    stream.raw(TREE_TOPIC, tree(None, "n1", Size=1))
    a.step(0.0)
    a.step(1.0, publish=False)  # due: the record is ready but not yet in the stream
    stream.raw(TREE_TOPIC, tree("UPDATE_CONTENT", "n1", Size=2))  # lands before the record
    a.step(1.1)
    run(stream, [a], [])
    sizes = [d.event["Target"]["Size"] for d in a.delivered]
    assert sizes == [1, 2]  # the record's merge, then the rest of the batch


def test_sequencer_instances_with_skewed_clocks_and_a_late_reader_deliver_alike() -> None:
    rng = random.Random(7)
    stream = FakeStream()
    instances = [Instance(stream), Instance(stream, skew=0.4), Instance(stream, skew=-0.3)]
    script: list[tuple[float, str, Json]] = []
    at = 0.0
    for _ in range(300):
        at += rng.choice((0.05, 0.2, 0.7, 1.5))
        node = f"n{rng.randrange(8)}"
        kind = rng.choice((None, "UPDATE_CONTENT", "UPDATE_META", "DELETE", "UPDATE_PATH", "IDM"))
        if kind == "IDM":
            script.append((at, IDM_TOPIC, {"Type": "UPDATE", "n": len(script)}))
        else:
            folder = rng.choice(("ds", "ds", "ds", "other"))  # a node seen at another path: no merge
            script.append((at, TREE_TOPIC, tree(kind, node, folder, Size=len(script))))
    run(stream, instances, script)
    first = instances[0].delivered
    assert all(i.delivered == first for i in instances[1:])
    assert seqs(instances[0]) == sorted(set(seqs(instances[0])))
    # A replay (an instance reading everything afterwards, publishing nothing) is the same.
    late = Instance(stream)
    late.step(at + 100, publish=False)
    assert late.delivered == first
    # Nothing lost: every immediate event, and the last state of every node, is delivered.
    delivered_idm = [d.event["n"] for d in first if d.topic == IDM_TOPIC]
    assert delivered_idm == [e["n"] for _, topic, e in script if topic == IDM_TOPIC]
    for node in {e["Target"]["Uuid"] for _, topic, e in script if topic == TREE_TOPIC}:
        last_raw = [e for _, t, e in script if t == TREE_TOPIC and e["Target"]["Uuid"] == node][-1]
        last_out = [d.event for d in first if d.topic == TREE_TOPIC and d.event["Target"]["Uuid"] == node][-1]
        assert last_out["Target"]["Size"] == last_raw["Target"]["Size"]
        # A node's immediate events (moves, deletes) leave in the order they were published.
        immediate = ("DELETE", "UPDATE_PATH")
        raw_order = [
            e["Target"]["Size"]
            for _, t, e in script
            if t == TREE_TOPIC and e["Target"]["Uuid"] == node and e.get("Type") in immediate
        ]
        out_order = [
            d.event["Target"]["Size"]
            for d in first
            if d.topic == TREE_TOPIC
            and d.event["Target"]["Uuid"] == node
            and d.event.get("Type") in immediate
        ]
        assert out_order == raw_order


def test_sequencer_matches_the_memory_debouncer_when_alone() -> None:
    """One instance whose records come back at once merges exactly as the memory backend does."""
    stream = FakeStream()
    a = Instance(stream)
    memory = Debouncer(QUIET, 100)
    expected: list[Json] = []
    script = [
        (0.0, TREE_TOPIC, tree(None, "n1", Size=1)),
        (0.3, TREE_TOPIC, tree("UPDATE_META", "n1", Etag="e1")),
        (0.4, TREE_TOPIC, tree(None, "n2")),
        (0.6, TREE_TOPIC, tree("UPDATE_PATH", "n2")),
        (3.0, TREE_TOPIC, tree("UPDATE_CONTENT", "n1", Size=5)),
    ]
    for at, _, event in script:
        expected += memory.due(at) + memory.add(event, at)
    expected += memory.flush()
    run(stream, [a], script)
    assert [d.event for d in a.delivered] == expected


def test_records_refuse_what_they_cannot_read() -> None:
    for bad in (b"{", b"[]", b'{"topic":1}', b'{"topic":"t","key":"k","last":true,"event":{}}'):
        try:
            decode(bad)
        except BadRecord:
            continue
        raise AssertionError(bad)


def test_sequencer_events_of_a_node_wait_behind_its_deferred_ones() -> None:
    """CREATE, then a move that releases it (both deferred to records), then a DELETE before those
    records are back: the DELETE waits too, so the client never sees the file come back."""
    sequencer = Sequencer(QUIET, 100)
    assert sequencer.raw(1, TREE_TOPIC, tree(None, "k"), 0.0) == []
    assert sequencer.raw(2, TREE_TOPIC, tree("UPDATE_PATH", "k"), 0.1) == []  # CREATE, move: deferred
    assert sequencer.raw(3, TREE_TOPIC, tree("DELETE", "k"), 0.2) == []  # waits behind them
    assert sequencer.raw(4, TREE_TOPIC, tree("DELETE", "other"), 0.2) != []  # another node does not
    delivered = []
    for seq, release in enumerate(sequencer.outbox(), start=5):
        delivered += sequencer.record(seq, decode(encode(release)))
    assert [d.event.get("Type", "CREATE") for d in delivered] == ["CREATE", "UPDATE_PATH", "DELETE"]
    assert sequencer.raw(9, TREE_TOPIC, tree("DELETE", "k"), 0.3) == [
        Delivered(9, TREE_TOPIC, tree("DELETE", "k"))
    ]


def test_sequencer_flush_keeps_what_waits_for_a_record() -> None:
    sequencer = Sequencer(QUIET, 100)
    sequencer.raw(1, TREE_TOPIC, tree(None, "k"), 0.0)
    sequencer.raw(2, TREE_TOPIC, tree("DELETE", "k"), 0.1)
    sequencer.raw(3, TREE_TOPIC, tree(None, "n"), 0.1)
    flushed = [e.get("Type", "CREATE") + ":" + e["Target"]["Uuid"] for _, e in sequencer.flush()]
    assert flushed == ["CREATE:k", "DELETE:k", "CREATE:n"]
    assert sequencer.outbox() == [] and sequencer.pending() == 0


def test_sequencer_a_marker_delivers_nothing() -> None:
    sequencer = Sequencer(QUIET, 100)
    assert sequencer.record(1, Release("", "!resumed", 0, {})) == []
