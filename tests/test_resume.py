"""Positions, replay after a reconnect, and the explicit gap (docs/PROTOCOL.md, "Resuming").

Pure replay cases on an ``EventLog``, then end to end over real sockets: a reconnect recovers
exactly the missed events (also while publishing goes on), a restarted gateway and an overflowed
history answer ``gap``, a revoked workspace is not replayed, a debounced event gets its position
when it is released.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from trio_websocket import WebSocketConnection

from gateway.app import Gateway
from gateway.delivery.log import EventLog
from gateway.delivery.replay import Gap, Replay, replay
from gateway.events import route
from gateway.hub import Hub, audiences_of
from gateway.identity import Identity, Workspace
from gateway.paths import ancestors_and_self
from tests.helpers import (
    COMMON,
    TREE,
    admin_publish,
    hand_session,
    make_hub,
    make_settings,
    pending_frames,
    recv_json,
    token,
    ws_client,
)

OTHER = {"uuid": "ws-other", "slug": "other-files", "roots": ["/ds/other"], "permissions": "rw"}
WS_COMMON = Workspace(uuid="ws-common", slug="common-files", roots=("ds/common",), permissions="rw")
WS_OTHER = Workspace(uuid="ws-other", slug="other-files", roots=("ds/other",), permissions="rw")
ALICE = Identity(sub="alice", user="alice", workspaces=(WS_COMMON,))


def deleted(name: str, root: str = "/ds/common") -> dict[str, Any]:
    return {"Type": "DELETE", "Source": {"Uuid": name, "Path": f"{root}/{name}.txt", "Type": "LEAF"}}


def append(log: EventLog, event: dict[str, Any], covering: list[Workspace]) -> None:
    """As the dispatcher does: route with the workspaces of the sessions connected then."""

    def cover(path: str) -> list[tuple[Workspace, str]]:
        return [(ws, p) for p in ancestors_and_self(path) for ws in covering if p in ws.roots]

    log.append(TREE, event, route(TREE, event, cover), 0.0)


# -- pure ------------------------------------------------------------------------------------


def test_replay_routes_again_for_the_identity_as_it_is_now() -> None:
    log = EventLog(max_entries=100, max_age=600)
    since = log.position()
    append(log, deleted("a"), covering=[])  # no session watched: routed to no one then
    append(log, deleted("b", "/ds/other"), covering=[WS_OTHER])
    append(log, deleted("c"), covering=[WS_COMMON])
    found = replay(log, since, ALICE, audiences_of(ALICE))
    assert isinstance(found, Replay)
    assert [m["Source"]["Uuid"] for m in found.messages] == ["a", "c"]
    assert [m["@position"] for m in found.messages] == [log.position(1), log.position(3)]
    assert found.position == log.position(3)


def test_replay_leaves_out_a_workspace_the_user_lost() -> None:
    log = EventLog(max_entries=100, max_age=600)
    since = log.position()
    append(log, deleted("b", "/ds/other"), covering=[WS_OTHER])
    both = Identity(sub="alice", user="alice", workspaces=(WS_COMMON, WS_OTHER))
    assert len(_messages(replay(log, since, both, audiences_of(both)))) == 1
    assert _messages(replay(log, since, ALICE, audiences_of(ALICE))) == []


def test_nothing_missed_recovers_at_the_position_asked() -> None:
    log = EventLog(max_entries=100, max_age=600)
    append(log, deleted("a"), covering=[WS_COMMON])
    found = replay(log, log.position(), ALICE, audiences_of(ALICE))
    assert found == Replay([], log.position())


@pytest.mark.parametrize(
    ("since", "cause"),
    [("nonsense", "malformed"), ("x:1", "epoch"), ("{epoch}:99", "malformed"), ("{epoch}:-1", "malformed"),
     ("{epoch}:1", "expired"), ("{epoch}:" + "9" * 40, "malformed")],
)  # fmt: skip
def test_a_position_that_cannot_be_served_is_a_gap(since: str, cause: str) -> None:
    log = EventLog(max_entries=2, max_age=600)
    for name in "abcd":
        append(log, deleted(name), covering=[WS_COMMON])
    assert replay(log, since.format(epoch=log.epoch), ALICE, audiences_of(ALICE)) == Gap(cause)


def _messages(found: Replay | Gap) -> list[dict[str, Any]]:
    assert isinstance(found, Replay), found
    return found.messages


# -- end to end ------------------------------------------------------------------------------


@asynccontextmanager
async def subscribed(
    gateway: Gateway, user_token: str, **fields: Any
) -> AsyncIterator[tuple[WebSocketConnection, dict[str, Any]]]:
    async with ws_client(f"ws://127.0.0.1:{gateway.ws_port}/ws") as ws:
        await ws.send_message(json.dumps({"@type": "subscribe", "jwt": user_token, **fields}))
        yield ws, await recv_json(ws)


async def publish(gateway: Gateway, *events: dict[str, Any]) -> None:
    body = {"events": [{"topic": TREE, "event": e} for e in events]}
    status, answer = await admin_publish(gateway.admin_port, body)
    assert status == 202, answer


async def test_positions_only_when_asked(nursery: trio.Nursery) -> None:
    gateway: Gateway = await nursery.start(Gateway(make_settings()).run)
    async with (
        subscribed(gateway, token()) as (plain, reply),
        subscribed(gateway, token(), recover=True) as (
            positioned,
            recover_reply,
        ),
    ):
        assert "position" not in reply and recover_reply["position"] == gateway.log.position()
        await publish(gateway, deleted("a"), deleted("b"))
        assert "@position" not in await recv_json(plain)
        first, second = await recv_json(positioned), await recv_json(positioned)
        assert [first["@position"], second["@position"]] == [gateway.log.position(1), gateway.log.position(2)]


async def test_reconnect_recovers_exactly_the_missed_events(nursery: trio.Nursery) -> None:
    gateway: Gateway = await nursery.start(Gateway(make_settings()).run)
    async with subscribed(gateway, token(), recover=True) as (ws, _):
        await publish(gateway, deleted("a"))
        last = (await recv_json(ws))["@position"]
    await publish(gateway, deleted("b"), deleted("x", "/ds/other"), deleted("c"))
    async with subscribed(gateway, token(), since=last) as (ws, reply):
        assert reply["@type"] == "subscribed" and reply["position"] == gateway.log.position(4)
        missed = [await recv_json(ws), await recv_json(ws)]
        assert [m["Source"]["Uuid"] for m in missed] == ["b", "c"]
        assert await recv_json(ws) == {
            "@type": "recovered",
            "position": gateway.log.position(4),
            "replayed": 2,
        }
        await publish(gateway, deleted("d"))
        live = await recv_json(ws)
        assert live["Source"]["Uuid"] == "d" and live["@position"] == gateway.log.position(5)


async def test_no_duplicate_and_no_hole_at_the_seam_while_publishing(nursery: trio.Nursery) -> None:
    gateway: Gateway = await nursery.start(Gateway(make_settings()).run)
    total = 60
    published = trio.Event()

    async def publisher() -> None:
        for n in range(total):
            await publish(gateway, deleted(f"n{n}"))
        published.set()

    seen: list[str] = []
    positions: list[str] = []
    async with subscribed(gateway, token(), recover=True) as (ws, _):
        nursery.start_soon(publisher)
        while len(seen) < total // 3:
            message = await recv_json(ws)
            seen.append(message["Source"]["Uuid"])
            positions.append(message["@position"])
    async with subscribed(gateway, token(), since=positions[-1]) as (ws, _):
        while len(seen) < total:
            message = await recv_json(ws)
            if message.get("@type") == "recovered":
                continue
            seen.append(message["Source"]["Uuid"])
            positions.append(message["@position"])
        await published.wait()
    assert seen == [f"n{n}" for n in range(total)]
    offsets = [int(p.split(":")[1]) for p in positions]
    assert offsets == sorted(set(offsets))  # strictly increasing


async def test_a_restarted_gateway_answers_gap(nursery: trio.Nursery) -> None:
    first: Gateway = await nursery.start(Gateway(make_settings()).run)
    async with subscribed(first, token(), recover=True) as (ws, _):
        await publish(first, deleted("a"))
        last = (await recv_json(ws))["@position"]
    second: Gateway = await nursery.start(Gateway(make_settings()).run)  # another process, another epoch
    async with subscribed(second, token(), since=last) as (ws, _):
        gap = await recv_json(ws)
        assert gap == {"@type": "gap", "since": last, "position": second.log.position(), "reason": "epoch"}
        await publish(second, deleted("b"))
        assert (await recv_json(ws))["Source"]["Uuid"] == "b"


async def test_an_overflowed_history_answers_gap(nursery: trio.Nursery) -> None:
    gateway: Gateway = await nursery.start(Gateway(make_settings(history_size=3)).run)
    async with subscribed(gateway, token(), recover=True) as (ws, _):
        await publish(gateway, deleted("a"))
        last = (await recv_json(ws))["@position"]
    await publish(gateway, *(deleted(f"m{n}") for n in range(5)))
    async with subscribed(gateway, token(), since=last) as (ws, _):
        gap = await recv_json(ws)
        assert gap["@type"] == "gap" and gap["reason"] == "expired"
    assert gateway.metrics.history_gaps.labels("expired")._value.get() == 1


async def test_a_revoked_workspace_is_not_replayed(nursery: trio.Nursery) -> None:
    gateway: Gateway = await nursery.start(Gateway(make_settings()).run)
    both = token(workspaces=[COMMON, OTHER])
    async with subscribed(gateway, both, recover=True) as (ws, _):
        await publish(gateway, deleted("a"))
        last = (await recv_json(ws))["@position"]
    await publish(gateway, deleted("secret", "/ds/other"), deleted("b"))
    async with subscribed(gateway, token(workspaces=[COMMON]), since=last) as (ws, _):
        assert (await recv_json(ws))["Source"]["Uuid"] == "b"
        recovered = await recv_json(ws)
        assert recovered["@type"] == "recovered" and recovered["replayed"] == 1


async def test_a_debounced_event_gets_its_position_when_released(nursery: trio.Nursery) -> None:
    gateway: Gateway = await nursery.start(Gateway(make_settings(debounce_seconds=2.0)).run)
    created = {"Type": "CREATE", "Target": {"Uuid": "n1", "Path": "/ds/common/new.txt", "Type": "LEAF"}}
    async with subscribed(gateway, token(), recover=True) as (ws, reply):
        before = reply["position"]
        await publish(gateway, created)  # pending in the batcher: not in the history yet
    async with subscribed(gateway, token(), since=before) as (ws, _):
        # Resumed while the batch is pending: nothing to replay yet, then the event arrives live.
        assert (await recv_json(ws))["@type"] == "recovered"
        released = await recv_json(ws)
        assert released["Target"]["Uuid"] == "n1"
        assert int(released["@position"].split(":")[1]) > int(before.split(":")[1])


# -- the same connection, and a history that cannot give positions --------------------------


def test_a_resume_on_the_same_connection_does_not_repeat_what_was_queued() -> None:
    hub = make_hub()
    session = hand_session(hub)
    session.positions = True
    hub.start_delivering(session, ALICE)
    append_to(hub, deleted("a"))
    append_to(hub, deleted("b"))  # both queued, neither written yet (no socket here)
    since = hub.log.position(1)  # the client got "a" and resumes from it
    hub.start_delivering(session, ALICE, resume=True)  # the replay will send "b"
    assert pending_frames(session) == []
    found = replay(hub.log, since, ALICE, audiences_of(ALICE))
    assert [m["Source"]["Uuid"] for m in _messages(found)] == ["b"]


def test_a_suspended_history_gives_no_position_and_answers_gap() -> None:
    hub = make_hub()
    session = hand_session(hub)
    session.positions = True
    hub.start_delivering(session, ALICE)
    append_to(hub, deleted("a"))
    since = hub.log.position()
    hub.log.suspend("unavailable")
    append_to(hub, deleted("b"))
    taken = session.feed.gather(hub.log.head, ALICE, limit=1 << 20, positions=True)
    frames = [json.loads(f[f.index(b"{") :]) for f in taken]
    assert ["@position" in f for f in frames] == [True, False]
    assert hub.log.current_position is None
    assert replay(hub.log, since, ALICE, audiences_of(ALICE)) == Gap("unavailable")
    hub.log.restart("e2", 40)  # back, at the stream's end: nothing before can be resumed
    append_to(hub, deleted("c"), seq=42)
    assert hub.log.position() == "e2:42"
    assert replay(hub.log, since, ALICE, audiences_of(ALICE)) == Gap("epoch")
    assert _messages(replay(hub.log, "e2:40", ALICE, audiences_of(ALICE)))[0]["@position"] == "e2:42"


def append_to(hub: Hub, event: dict[str, Any], seq: int | None = None) -> None:
    hub.fan_out(TREE, route(TREE, event, hub.covering), event, seq)


# -- one event, several messages for one session ---------------------------------------------

WS_TEAM = Workspace(uuid="ws-team", slug="team", roots=("ds/common/team",), permissions="rw")
NESTED = Identity(sub="alice", user="alice", workspaces=(WS_COMMON, WS_TEAM))


def test_each_message_of_one_event_has_its_own_position() -> None:
    """A node in a workspace nested in another reaches the session twice: ``S.0`` then ``S``;
    a client cut between them resumes from ``S.0`` and gets only the second."""
    hub = make_hub()
    session = hand_session(hub)
    session.positions = True
    hub.start_delivering(session, NESTED)
    since = hub.log.position()
    append_to(hub, deleted("x", "/ds/common/team"))
    taken = session.feed.gather(hub.log.head, NESTED, limit=1 << 20, positions=True)
    live = [json.loads(f[f.index(b"{") :]) for f in taken]
    seq = hub.log.position(1)
    assert [m["@position"] for m in live] == [f"{seq}.0", seq]
    assert [m["Source"]["Path"] for m in live] == ["team/x.txt", "common-files/team/x.txt"]
    rest = _messages(replay(hub.log, f"{seq}.0", NESTED, audiences_of(NESTED)))
    assert rest == [live[1]]  # the same message, at the same position
    assert _messages(replay(hub.log, since, NESTED, audiences_of(NESTED))) == live
    assert _messages(replay(hub.log, seq, NESTED, audiences_of(NESTED))) == []


@pytest.mark.parametrize("since", ["{epoch}:1.", "{epoch}:1.x", "{epoch}:.1", "{epoch}:1.2.3"])
def test_a_malformed_part_is_a_gap(since: str) -> None:
    log = EventLog(max_entries=10, max_age=600)
    append(log, deleted("a"), covering=[WS_COMMON])
    assert replay(log, since.format(epoch=log.epoch), ALICE, audiences_of(ALICE)) == Gap("malformed")
