"""A gateway in front of a (fake, real-HTTP) Cells: sessions with Cells' own tokens, end to end.

``identity = "cells"``: opaque and personal access tokens, sub-folder denies on every node sent,
Cells down then back (1013, then subscribe works), access that follows identity events, sessions
that outlive their token. ``bus_format = "cells"``: the golden fixtures published on a real
nats-server under Cells' subjects reach exactly the sessions their rule selects, as Cells sends them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, WebSocketConnection

from gateway.bus.nats.bus import NatsBus
from gateway.config import Settings
from gateway.metrics import Metrics
from gateway.topics import IDM_TOPIC, TREE_TOPIC
from tests.fakecells import ROLE_MARKETING, SERVICE_TOKEN, WS_COMMON, FakeCells, site
from tests.helpers import Harness, close_code, expect_nothing, make_settings, recv_json
from tests.servers import NatsServer, nats_servers

DATA = Path(__file__).parent / "data" / "cells"
FIXTURES: list[dict[str, Any]] = json.loads((DATA / "fixtures.json").read_text())["fixtures"]


def cells_settings(cells: FakeCells, tmp_path: Path, **changes: Any) -> Settings:
    service = tmp_path / "service-token"
    service.write_text(SERVICE_TOKEN + "\n")
    return make_settings(
        identity="cells",
        cells_url=cells.url,
        cells_service_token_file=str(service),
        jwt_secret=None,
        db_url=f"sqlite:///{tmp_path}/chat.db",
        **changes,
    )


@asynccontextmanager
async def cells_gateway(
    nursery: trio.Nursery, tmp_path: Path, cells: FakeCells | None = None, **changes: Any
) -> AsyncIterator[tuple[Harness, FakeCells]]:
    cells = cells or site()
    await nursery.start(cells.run)
    harness = await Harness(nursery, cells_settings(cells, tmp_path, **changes)).start()
    yield harness, cells


async def subscribe(ws: WebSocketConnection, token: str) -> dict[str, Any]:
    await ws.send_message(json.dumps({"@type": "subscribe", "jwt": token}))
    return await recv_json(ws)


def node(path: str, uuid: str = "n-1", **extra: Any) -> dict[str, Any]:
    return {"Uuid": uuid, "Path": path, "Type": "LEAF", **extra}


def acl(role: str) -> dict[str, Any]:
    """The ACL that opens common-files to ``role`` (its root is the pydiods1 data source)."""
    return {
        "Action": {"Name": "read"},
        "RoleID": role,
        "WorkspaceID": WS_COMMON,
        "NodeID": "DATASOURCE:pydiods1",
    }


# -- identity = "cells" ------------------------------------------------------------------------


async def test_cells_opaque_token_session_gets_its_workspaces_events_only(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with (
        cells_gateway(nursery, tmp_path) as (harness, _),
        harness.connect() as alice,
        harness.connect() as bob,
    ):
        reply = await subscribe(alice, "opaque-alice")
        assert reply == {"@type": "subscribed", "user": "alice", "endpoint": "events"}  # no expiresAt
        assert (await subscribe(bob, "pat-bob"))["user"] == "bob"
        await harness.publish(TREE_TOPIC, {"Target": node("pydiods1/a.txt")})
        await harness.publish(TREE_TOPIC, {"Target": node("personal/bob/b.txt", "n-2")})
        assert (await recv_json(alice))["Target"]["Path"] == "common-files/a.txt"
        assert (await recv_json(bob))["Target"]["Path"] == "personal-files/b.txt"
        await harness.publish(TREE_TOPIC, {"Target": node("personal/alice/c.txt", "n-3")})
        assert (await recv_json(alice))["Target"]["Path"] == "personal-files/c.txt"
        await harness.publish(TREE_TOPIC, {"Target": node("personal/bob/next.txt", "n-4")})
        assert (await recv_json(bob))["Target"]["Path"] == "personal-files/next.txt"  # nothing in between


async def test_cells_refused_token_closes_4001(nursery: trio.Nursery, tmp_path: Path) -> None:
    async with cells_gateway(nursery, tmp_path) as (harness, _), harness.connect() as ws:
        assert (await subscribe(ws, "not-a-cells-token"))["error"] == "token_invalid"
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
        assert close_code(closed) == 4001


async def test_cells_down_then_back_1013_then_subscribe_works(nursery: trio.Nursery, tmp_path: Path) -> None:
    async with cells_gateway(nursery, tmp_path) as (harness, cells):
        cells.statuses["/a/user/"] = 503
        async with harness.connect() as ws:
            error = await subscribe(ws, "opaque-alice")
            assert error["error"] == "platform_unavailable"
            with pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
            assert close_code(closed) == 1013  # try again later: the client reconnects
        cells.statuses.clear()
        async with harness.connect() as ws:
            assert (await subscribe(ws, "opaque-alice"))["@type"] == "subscribed"


async def test_cells_hundred_concurrent_subscribes_make_one_lookup(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with cells_gateway(nursery, tmp_path) as (harness, cells):
        cells.delay = 0.02
        users: list[str] = []

        async def one() -> None:
            async with harness.connect() as ws:
                users.append((await subscribe(ws, "opaque-alice"))["user"])

        async with trio.open_nursery() as clients:
            for _ in range(100):
                clients.start_soon(one)
    assert users == ["alice"] * 100
    assert cells.calls["/oidc/userinfo"] == 1 and cells.calls["/a/graph/state/ws"] == 1


async def test_cells_subfolder_deny_holds_for_source_and_target(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    cells = site()
    cells.deny_folder(ROLE_MARKETING, "folder-secret", "pydiods1/Secret")
    async with cells_gateway(nursery, tmp_path, cells) as (harness, _), harness.connect() as alice:
        await subscribe(alice, "opaque-alice")
        await harness.publish(TREE_TOPIC, {"Target": node("pydiods1/Secret/plan.txt")})
        await harness.publish(TREE_TOPIC, {"Type": "DELETE", "Source": node("pydiods1/Secret/old.txt")})
        # Moved out of the denied folder: a creation, without the name it had inside (Cells sends
        # the Source, and so the hidden name, because it checks only the Target).
        moved = {
            "Type": "UPDATE_PATH",
            "Source": node("pydiods1/Secret/x.txt"),
            "Target": node("pydiods1/x.txt"),
        }
        await harness.publish(TREE_TOPIC, moved)
        event = await recv_json(alice)
        assert "Type" not in event and "Source" not in event
        assert event["Target"]["Path"] == "common-files/x.txt"
        await harness.publish(TREE_TOPIC, {"Target": node("pydiods1/next.txt", "n-9")})
        assert (await recv_json(alice))["Target"]["Path"] == "common-files/next.txt"  # nothing in between


async def test_cells_session_outlives_its_token(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Cells' client sends a fresh token only when its workspace list reloads: no 4001 at expiry."""
    async with cells_gateway(nursery, tmp_path) as (harness, cells), harness.connect() as alice:
        await subscribe(alice, "opaque-alice")
        cells.tokens.clear()  # the token expired at Cells
        await trio.sleep(3 * 3600)
        await harness.publish(TREE_TOPIC, {"Target": node("pydiods1/late.txt")})
        assert (await recv_json(alice))["Target"]["Path"] == "common-files/late.txt"


async def test_cells_idm_event_removing_a_workspace_stops_its_events(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with cells_gateway(nursery, tmp_path) as (harness, cells), harness.connect() as alice:
        await subscribe(alice, "opaque-alice")
        cells.acls = [a for a in cells.acls if a.get("WorkspaceID") != WS_COMMON]
        await harness.publish(IDM_TOPIC, {"Type": "DELETE", "Acl": acl(ROLE_MARKETING)})
        assert (await recv_json(alice))["@type"] == "idm"  # the browser reloads its workspaces
        await harness.publish(TREE_TOPIC, {"Target": node("pydiods1/after.txt")})
        await harness.publish(TREE_TOPIC, {"Target": node("personal/alice/kept.txt", "n-2")})
        assert (await recv_json(alice))["Target"]["Path"] == "personal-files/kept.txt"  # after.txt: not sent
    assert cells.calls["/a/acl"] >= 1  # recomputed with the service credential


async def test_cells_idm_event_for_a_deleted_user_closes_4001(nursery: trio.Nursery, tmp_path: Path) -> None:
    async with cells_gateway(nursery, tmp_path) as (harness, cells), harness.connect() as alice:
        await subscribe(alice, "opaque-alice")
        del cells.users["alice"]
        await harness.publish(IDM_TOPIC, {"Type": "DELETE", "User": {"Login": "alice", "Uuid": "x"}})
        assert (await recv_json(alice))["@type"] == "idm"
        assert (await recv_json(alice))["error"] == "token_invalid"
        with pytest.raises(ConnectionClosed) as closed:
            await alice.get_message()
        assert close_code(closed) == 4001


async def test_cells_idm_event_granting_a_workspace_opens_its_events(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with cells_gateway(nursery, tmp_path) as (harness, cells), harness.connect() as bob:
        await subscribe(bob, "opaque-bob")
        cells.grant("bob", WS_COMMON)
        user_role = cells.users["bob"].uuid
        await harness.publish(IDM_TOPIC, {"Acl": acl(user_role)})
        assert (await recv_json(bob))["@type"] == "idm"
        with trio.fail_after(5):
            while (
                harness.gateway.metrics.registry.get_sample_value(
                    "gateway_access_refreshes_total", {"outcome": "changed"}
                )
                is None
            ):
                await trio.testing.wait_all_tasks_blocked()
        await harness.publish(TREE_TOPIC, {"Target": node("pydiods1/welcome.txt")})
        assert (await recv_json(bob))["Target"]["Path"] == "common-files/welcome.txt"


# -- bus_format = "cells": the golden fixtures on a real nats-server -----------------------------


@pytest.fixture
async def nats(tmp_path: Path) -> AsyncIterator[NatsServer]:
    async with nats_servers(tmp_path) as start:
        yield await start()


def expected_frames(fixture: dict[str, Any]) -> list[dict[str, Any]]:
    """What Cells sends for the fixture on /ws/event (v5 form), without its stray "dump" frame."""
    frames = [e for e in fixture["expected_ws"] if e["endpoint"] == "/ws/event" and "json" in e]
    v5 = [e for e in frames if e["cells_versions"] in ("all", "v5")]
    return [e["json"] for e in v5]


# Who each fixture is for, as its rule selects: alice holds common-files (DATASOURCE:pydiods1) and the
# marketing role; admin sees system tasks; bob holds neither.
RECIPIENTS = {
    "task_finished_system": "admin",
}
EVENT_FIXTURES = [f for f in FIXTURES if f["topic"] != "topic.pydio.chat.event"]


async def test_cells_bus_fixtures_reach_exactly_their_sessions(
    nursery: trio.Nursery, tmp_path: Path, nats: NatsServer
) -> None:
    settings: dict[str, Any] = dict(bus_url=nats.url, bus_format="cells", bus_subject_prefix="localhost:4222")
    async with cells_gateway(nursery, tmp_path, **settings) as (harness, _), AsyncExitStack() as stack:
        sessions = {}
        for login, token in (("alice", "opaque-alice"), ("bob", "opaque-bob"), ("admin", "token-admin")):
            sessions[login] = await stack.enter_async_context(harness.connect())
            assert (await subscribe(sessions[login], token))["user"] == login
        publisher = NatsBus(nats.url, metrics=Metrics())  # a plain client, as Cells' services are
        await nursery.start(publisher.run)
        for fixture in EVENT_FIXTURES:
            await publisher.publish(fixture["subject"], (DATA / fixture["file"]).read_bytes())
            recipient = RECIPIENTS.get(fixture["name"], "alice")
            for expected in expected_frames(fixture):
                assert await recv_json(sessions[recipient]) == expected, fixture["name"]
        for ws in sessions.values():
            await expect_nothing(ws, 0.3)  # nothing else, to anyone (and never a "dump" frame)


async def test_cells_bus_undecodable_payload_is_counted_and_the_topic_goes_on(
    nursery: trio.Nursery, tmp_path: Path, nats: NatsServer
) -> None:
    settings: dict[str, Any] = dict(bus_url=nats.url, bus_format="cells")
    async with cells_gateway(nursery, tmp_path, **settings) as (harness, _), harness.connect() as alice:
        await subscribe(alice, "opaque-alice")
        publisher = NatsBus(nats.url, metrics=Metrics())
        await nursery.start(publisher.run)
        subject = harness.gateway.bus.subject(TREE_TOPIC)
        assert subject == f"127.0.0.1:{nats.port}/{TREE_TOPIC}"  # the broker URL's host:port, as written
        await publisher.publish(subject, b"\xff\xff not protobuf")
        good = next(f for f in FIXTURES if f["name"] == "tree_create_file")
        await publisher.publish(subject, (DATA / good["file"]).read_bytes())
        assert (await recv_json(alice))["Target"]["Path"] == "common-files/Documents/report.pdf"
        dropped = harness.gateway.metrics.registry.get_sample_value(
            "gateway_events_dropped_total", {"topic": TREE_TOPIC, "reason": "bad_event"}
        )
        assert dropped == 1


# -- chat NODE rooms: Cells answers itself (v5), or node_check_url, or nobody (v4) ------------------


async def chat_join_node(harness: Harness, token: str, node_uuid: str) -> dict[str, Any]:
    async with harness.connect("/ws/chat") as ws:
        await ws.send_message(json.dumps({"@type": "subscribe", "ack": True, "jwt": token}))
        assert (await recv_json(ws))["@type"] == "subscribed"
        await ws.send_message(
            json.dumps({"@type": "JOIN", "Room": {"Type": "NODE", "RoomTypeObject": node_uuid}})
        )
        return await recv_json(ws)


async def test_cells_v5_node_rooms_ask_cells_with_the_users_token(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    cells = site()
    cells.users["alice"].readable_nodes.add("node-ok")
    async with cells_gateway(nursery, tmp_path, cells) as (harness, _):
        assert (await chat_join_node(harness, "opaque-alice", "node-ok"))["@type"] == "ROOM_UPDATE"
        assert (await chat_join_node(harness, "opaque-alice", "node-hidden"))["error"] == "room_forbidden"
        assert (await chat_join_node(harness, "opaque-bob", "node-ok"))["error"] == "room_forbidden"
    assert cells.calls["/a/n/node/node-ok"] == 2 and cells.calls["/a/n/node/node-hidden"] == 1


async def test_cells_v4_node_rooms_are_refused_without_node_check_url(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    cells = site()
    cells.version = "4.4.9"
    cells.users["alice"].readable_nodes.add("node-ok")
    async with cells_gateway(nursery, tmp_path, cells) as (harness, _):
        assert (await chat_join_node(harness, "opaque-alice", "node-ok"))["error"] == "node_rooms_disabled"
    assert cells.calls["/a/n/node/node-ok"] == 0


# -- what cells modes turn off --------------------------------------------------------------------


async def test_cells_bus_format_refuses_admin_publish(
    nursery: trio.Nursery, tmp_path: Path, nats: NatsServer
) -> None:
    from tests.helpers import admin_publish

    async with cells_gateway(nursery, tmp_path, bus_url=nats.url, bus_format="cells") as (harness, _):
        await nursery.start(harness.gateway.admin.run)
        status, body = await admin_publish(harness.gateway.admin_port, {"topic": TREE_TOPIC, "event": {}})
    assert (status, body["error"]) == (409, "publish_unavailable")


def test_cells_identity_needs_its_settings(tmp_path: Path) -> None:
    from gateway.app import Gateway
    from gateway.config import ConfigError

    cells = FakeCells(port=1)
    base = cells_settings(cells, tmp_path)
    with pytest.raises(ConfigError, match="cells_url"):
        Gateway(base.with_changes(cells_url=None))
    with pytest.raises(ConfigError, match="cells_service_token_file"):
        Gateway(base.with_changes(cells_service_token_file=None))
    Gateway(base.with_changes(cells_service_token_file=None, cells_subfolder_acls="ignore"))  # accepted
    with pytest.raises(ConfigError, match="admin"):
        Gateway(base.with_changes(admin_key=None))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="one token"):
        Gateway(base.with_changes(cells_service_token_file=str(tmp_path / "empty")))
