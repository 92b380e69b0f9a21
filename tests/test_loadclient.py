"""The load client's checks find what they exist to find: a client that accepted anything would make
every reliability test and benchmark pass. In process, without sockets."""

from __future__ import annotations

import json
from typing import Any

from loadclient.checks import CountCheck, Totals
from loadclient.interface import Progress, Ready, Spec, line, parse_line
from loadclient.marker import marker, parse_marker
from loadclient.markers import MarkerCheck
from loadclient.oracle import PlanCheck
from loadclient.plan import TREE, Plan


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
