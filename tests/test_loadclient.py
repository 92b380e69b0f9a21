"""The load client's checks find what they exist to find: a client that accepted anything would make
every reliability test and benchmark pass. In process, without sockets."""

from __future__ import annotations

import itertools
import json
from typing import Any

from loadclient.checks import CountCheck, Totals
from loadclient.interface import Progress, Ready, Spec, line, parse_line
from loadclient.marker import marker, parse_marker
from loadclient.markers import MarkerCheck
from loadclient.oracle import PlanCheck
from loadclient.plan import TREE, Plan
from loadclient.resume import Resumer, drop_points


def test_loadclient_spec_and_lines_round_trip() -> None:
    spec = Spec("ws://127.0.0.1:1/ws", ["a", "b"], sessions=5, phases=[20, 100])
    assert Spec.from_json(spec.to_json()) == spec
    assert [spec.token(i) for i in range(spec.session_count)] == ["a", "b", "a", "b", "a"]
    kind, payload = parse_line(line("ready", vars(Ready(4, 1, 0.5, "403"))))
    assert kind == "ready" and Ready(**payload) == Ready(4, 1, 0.5, "403")
    kind, payload = parse_line(line("progress", vars(Progress(3, 10, [1, 2]))))
    assert Progress(**payload) == Progress(3, 10, [1, 2])


def test_loadclient_marker_found_in_a_frame_and_nowhere_else() -> None:
    frame = json.dumps({"Target": {"Etag": marker(1, 42, 1_700_000_000_000_000)}}).encode()
    assert parse_marker(frame) == (1, 42, 1_700_000_000_000_000)
    assert parse_marker(b'{"Etag": "bm:1:x:3"}') is None
    assert parse_marker(b'{"Etag": "other"}') is None


def marked(phase: int, seq: int) -> bytes:
    return json.dumps({"Type": "UPDATE_PATH", "Target": {"Etag": marker(phase, seq, 0)}}).encode()


def test_loadclient_marker_check_counts_missing_duplicates_and_disorder() -> None:
    totals = Totals()
    check = MarkerCheck([3, 2], totals)
    good, bad = check.for_session(0), check.for_session(1)
    for seq in range(3):
        good.on_message(marked(0, seq), 10)
    for seq in (1, 0, 0):  # 2 missing, 0 twice, 0 after 1
        bad.on_message(marked(0, seq), 10)
    bad.on_message(b'{"@type":"error","error":"slow_consumer"}', 10)
    bad.on_message(b'{"Type":"CREATE"}', 10)  # no marker
    assert check.least() == [2, 0]
    phase = check.report()["phases"][0]
    assert (phase["missing"], phase["duplicates"], phase["disorder"]) == (1, 1, 1)
    assert totals.errors == {"slow_consumer": 1} and totals.unexpected == 1 and totals.received == 5


def plan_messages(plan: Plan, session: int) -> list[bytes]:
    """What session ``session`` must receive, as the gateway sends it (tree events only)."""
    found = []
    workspaces = {ws.uuid: ws for ws in plan.session_workspaces(session)}
    for j in range(plan.events):
        topic, shapes, user = plan.expected(j)
        for uuid, (kind, source, target) in shapes.items():
            if topic == TREE and user is None and uuid in workspaces:
                found.append(tree_message(j, uuid, kind, source, target))
    return found


def tree_message(j: int, ws: str, kind: str, source: str | None, target: str | None) -> bytes:
    def node(path: str | None) -> dict[str, Any] | None:
        meta = {"EventWorkspaceId": json.dumps(ws)}
        return None if path is None else {"Uuid": f"n-{j}", "Path": path, "MetaStore": meta}

    message = {"Type": kind, "Source": node(source), "Target": node(target)}
    return json.dumps({k: v for k, v in message.items() if v is not None}).encode()


def test_loadclient_plan_check_catches_what_the_gateway_must_never_do() -> None:
    plan = Plan(sessions=2, events=200, users=2, workspaces=3)
    mine = plan_messages(plan, 0)
    own = {ws.uuid for ws in plan.session_workspaces(0)}
    foreign = next(uuid for uuid in plan.all_workspaces if uuid not in own)
    elsewhere = tree_message(0, foreign, "CREATE", None, "x/y")
    totals = Totals()
    check = PlanCheck(plan, totals)
    session = check.for_session(0)
    for message in mine[1:]:  # the first one missing
        session.on_message(message, 0)
    session.on_message(mine[1], 0)  # one twice
    session.on_message(elsewhere, 0)  # another tenant's
    session.on_message(b'{"Hello": 1}', 0)
    report = check.report()
    assert report["missing"] == report["expected"] - (len(mine) - 1) and totals.duplicates == 1
    assert totals.cross_tenant == 1 and totals.malformed == 1
    assert totals.received == len(mine) - 1


def test_loadclient_count_check_counts_errors_apart() -> None:
    totals = Totals()
    check = CountCheck(totals)
    check.for_session(0).on_message(b'{"@type":"error","error":"shutting_down"}', 0)
    check.for_session(1).on_message(b'{"Type":"CREATE"}', 0)
    assert totals.errors == {"shutting_down": 1} and totals.other == 1


class Recorder:
    """A session checker that keeps what it is handed."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []

    def on_message(self, payload: bytes, now_us: int) -> None:
        self.messages.append(payload)


def at(position: int | str, name: str) -> bytes:
    return json.dumps({"@position": f"e:{position}", "Type": "DELETE", "Source": {"Path": name}},
                      separators=(",", ":")).encode()  # fmt: skip


def control(kind: str, **fields: Any) -> bytes:
    return json.dumps({"@type": kind, **fields}).encode()


def test_loadclient_resume_after_a_half_received_event_gets_the_rest_once() -> None:
    """One event, two messages (two workspaces of the session cover it), ``6.0`` then ``6``: a
    drop between them resumes from ``6.0`` and the replay brings only the second."""
    totals, recorder = Totals(), Recorder()
    resumer = Resumer(recorder, totals, [], lambda: None)
    assert resumer.subscribe_fields() == {"recover": True}
    resumer.on_subscribed({"@type": "subscribed", "position": "e:4"})
    for message in (at(5, "a"), at("6.0", "b1")):
        resumer.on_message(message, 0)
    assert resumer.subscribe_fields() == {"since": "e:6.0"}
    resumer.on_subscribed({"@type": "subscribed", "position": "e:9"})
    assert resumer.recovering
    for message in (at(6, "b2"), at(7, "c"), control("recovered", position="e:7", replayed=2)):
        resumer.on_message(message, 0)
    assert recorder.messages == [at(5, "a"), at("6.0", "b1"), at(6, "b2"), at(7, "c")]
    assert (totals.split, totals.resumes, totals.recovered, totals.replayed) == (1, 1, 1, 2)
    assert not resumer.recovering and resumer.subscribe_fields() == {"since": "e:7"}


def test_loadclient_resume_counts_gaps_and_events_without_a_position() -> None:
    totals, recorder = Totals(), Recorder()
    resumer = Resumer(recorder, totals, [], lambda: None)
    resumer.subscribe_fields()
    resumer.on_subscribed({"@type": "subscribed", "position": "e:1"})
    resumer.on_message(control("gap", since="e:1", position="e:50", reason="expired"), 0)
    resumer.on_message(b'{"Type":"DELETE","Source":{"Path":"x"}}', 0)
    resumer.on_message(control("error", error="slow_consumer"), 0)
    assert (totals.gaps, totals.malformed) == (1, 1)
    assert recorder.messages == [control("error", error="slow_consumer")]  # errors go to the checker
    assert resumer.subscribe_fields() == {"since": "e:50"}  # after a gap: from the head it named


def test_loadclient_drops_are_seeded_and_wait_for_a_replay_to_end_unless_they_may_cut_it() -> None:
    points = drop_points(seed=3, index=7, every=5, limit=200)
    assert points == drop_points(seed=3, index=7, every=5, limit=200) != drop_points(3, 8, 5, 200)
    assert all(0 < a < b < 200 for (a, _), (b, _) in itertools.pairwise(points))
    assert {cut for _, cut in points} == {True, False} and drop_points(3, 7, 0, 200) == []
    dropped: list[int] = []
    totals = Totals()
    resumer = Resumer(Recorder(), totals, [(1, False), (2, True)], lambda: dropped.append(resumer.delivered))
    resumer.subscribe_fields()
    resumer.on_subscribed({"position": "e:0"})
    resumer.on_message(at(1, "a"), 0)  # live: drop after message 1
    resumer.subscribe_fields()
    resumer.on_message(at(2, "b"), 0)  # replaying: the drop after 2 may cut it
    assert dropped == [1, 2]
    resumer = Resumer(Recorder(), totals, [(1, False)], lambda: dropped.append(-1))
    resumer.subscribe_fields()
    resumer.on_subscribed({"position": "e:0"})
    resumer.subscribe_fields()  # a resume under way: the drop waits for its end
    resumer.on_message(at(1, "a"), 0)
    assert dropped == [1, 2]
    resumer.on_message(control("recovered", position="e:1", replayed=1), 0)
    assert dropped == [1, 2, -1] and totals.drops == 3
