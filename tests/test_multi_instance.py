"""Two gateway processes sharing one nats-server and one PostgreSQL database, all on loopback.

What a scaled-out deployment relies on (docs/SCALING.md): an event published once, through either
instance, reaches every entitled session once, wherever it is connected; chat sessions on both
instances see each other; tree events are debounced the same on both; a broker restart costs
neither instance its WebSocket sessions; a PostgreSQL restart costs chat writes only while it is
down. Each test starts its own nats-server, database and gateways; the PostgreSQL cluster is
shared by the module (the restart test stops and starts it again).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import WebSocketConnection

from gateway.topics import CHAT_TOPIC
from tests.helpers import COMMON, TASKS, TREE, admin_publish, http_request, recv_json, token, ws_client
from tests.process import GatewayProcess, gateway_env, gateway_process
from tests.servers import (
    NatsServer,
    PostgresCluster,
    free_port,
    nats_servers,
    new_pg_database,
    postgres_cluster,
    requires_nats,
    wait_until_async,
)
from tests.test_chat import GLOBAL_ROOM, ChatClient

pytestmark = requires_nats

CAROL = {"uuid": "ws-carol", "slug": "carol-files", "roots": ["/personal/carol"], "permissions": "rw"}
# The outage of the broker-restart test, as the scaling guide describes it.
NATS_OUTAGE = 5.0
# nats.py's outbound buffer (NatsBus max_buffer_bytes), and events that fill it in eight.
BUS_BUFFER = 8 << 20
BIG_EVENT_PAD = 1_000_000
RESTARTS = 10  # broker outages in the slow variant


# --- servers ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg_cluster() -> Iterator[PostgresCluster]:
    with postgres_cluster() as cluster:
        yield cluster


@pytest.fixture
def db_url(pg_cluster: PostgresCluster) -> str:
    """A fresh database in the module's cluster (each test's gateways migrate it at start)."""
    return new_pg_database(pg_cluster.url)


@pytest.fixture
async def nats(tmp_path: Path) -> AsyncIterator[NatsServer]:
    async with nats_servers(tmp_path) as start:
        yield await start()


@asynccontextmanager
async def gateways(nats: NatsServer, db_url: str, **env: str) -> AsyncIterator[list[GatewayProcess]]:
    """Two ``gateway serve`` processes on the same bus and database (``env``: GATEWAY_* extras)."""
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(
                gateway_process("--bus", nats.url, "--db", db_url, env=gateway_env(**env))
            )
            for _ in range(2)
        ]


# --- clients and admin API ----------------------------------------------------------------------


async def subscribe(ws: WebSocketConnection, jwt: str) -> None:
    await ws.send_message(json.dumps({"@type": "subscribe", "ack": True, "jwt": jwt}))
    reply = await recv_json(ws)
    assert reply["@type"] == "subscribed", reply


@asynccontextmanager
async def events_session(
    gw: GatewayProcess, user: str, workspaces: list[dict[str, Any]] | None = None
) -> AsyncIterator[WebSocketConnection]:
    async with ws_client(f"{gw.ws_url}/ws") as ws:
        await subscribe(ws, token(user, workspaces=workspaces or [COMMON]))
        yield ws


@asynccontextmanager
async def chat_session(gw: GatewayProcess, user: str) -> AsyncIterator[ChatClient]:
    async with ws_client(f"{gw.ws_url}/chat") as ws:
        await subscribe(ws, token(user, profile="standard"))
        yield ChatClient(ws, user)


async def publish(gw: GatewayProcess, *events: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    """Publish through ``gw``'s admin API; the answer must be 202."""
    body = {"events": [{"topic": topic, "event": event} for topic, event in events]}
    status, answer = await admin_publish(gw.admin_port, body)
    assert status == 202, answer
    assert answer == {"published": len(events)}
    return answer


async def metric(gw: GatewayProcess, name: str, **labels: str) -> float:
    """One sample of ``gw``'s /metrics (0 when absent)."""
    status, _, body = await http_request(gw.admin_port, "GET", "/metrics")
    assert status == 200
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


async def readiness(gw: GatewayProcess) -> tuple[int, dict[str, Any]]:
    status, _, body = await http_request(gw.admin_port, "GET", "/readyz")
    return status, json.loads(body)


async def wait_metric(gw: GatewayProcess, name: str, value: float, **labels: str) -> None:
    async def reached() -> bool:
        return await metric(gw, name, **labels) >= value

    await wait_until_async(reached)


async def chat_synced(instances: list[GatewayProcess], events: int) -> None:
    """Wait until every instance has read ``events`` chat events from the bus.

    Member lists travel as snapshots, ordered per publishing instance only: a session that joins
    while another instance's older snapshot is on its way gets that one too (after its own).
    """
    for gw in instances:
        await wait_metric(gw, "gateway_events_received_total", events, topic=CHAT_TOPIC)


def delete(path: str, uuid: str) -> dict[str, Any]:
    return {"Type": "DELETE", "Source": {"Uuid": uuid, "Path": path, "Type": "LEAF"}}


def node_update(kind: str | None, etag: str, **fields: Any) -> dict[str, Any]:
    """A tree event for node n-7 at /ds/common/doc.txt (``kind`` None: a CREATE)."""
    target = {"Uuid": "n-7", "Path": "/ds/common/doc.txt", "Type": "LEAF", "Etag": etag, **fields}
    return {"Target": target} if kind is None else {"Type": kind, "Target": target}


async def paths(ws: WebSocketConnection, count: int) -> list[str]:
    """The Source paths of the next ``count`` tree events (DELETEs) of a session."""
    return [(await recv_json(ws))["Source"]["Path"] for _ in range(count)]


async def posted(client: ChatClient, room_uuid: str, text: str, **extra: Any) -> dict[str, Any]:
    """POST, and check that the very next frame is its acknowledgement."""
    await client.send("POST", message={"RoomUuid": room_uuid, "Message": text, **extra})
    ack = await client.recv()
    assert ack.get("Author") == client.user and ack.get("Message") == text, ack
    return ack


async def members(client: ChatClient) -> list[str]:
    """The member list of the next frame, which must be a ROOM_UPDATE."""
    frame = await client.recv()
    assert frame["@type"] == "ROOM_UPDATE", frame
    return list(frame["Room"]["Users"])


# --- events -------------------------------------------------------------------------------------


async def test_multi_event_published_once_reaches_each_entitled_session_once(
    nats: NatsServer, db_url: str
) -> None:
    with trio.fail_after(30):
        async with (
            gateways(nats, db_url) as (a, b),
            events_session(a, "alice") as alice_a,
            events_session(b, "alice") as alice_b,
            events_session(b, "bob") as bob_b,
            events_session(a, "carol", [CAROL]) as carol_a,
        ):
            for origin, name in ((a, "a"), (b, "b")):
                # After the event, one for each session in the same batch: what comes next proves
                # that nothing else (a second copy) came before it, since NATS keeps one
                # publisher's order.
                await publish(
                    origin,
                    (TREE, delete(f"/ds/common/{name}.txt", f"n-{name}")),
                    (TREE, delete(f"/personal/carol/end-{name}", f"c-{name}")),
                    (TREE, delete(f"/ds/common/end-{name}", f"e-{name}")),
                )
                for ws in (alice_a, alice_b, bob_b):
                    assert await paths(ws, 2) == [f"common-files/{name}.txt", f"common-files/end-{name}"]
                assert await paths(carol_a, 1) == [f"carol-files/end-{name}"]
            # Each instance read each event once; A queued 3 per round (alice 2, carol 1), B 4.
            for gw, delivered in ((a, 6), (b, 8)):
                assert await metric(gw, "gateway_events_received_total", topic=TREE) == 6
                assert await metric(gw, "gateway_events_delivered_total", topic=TREE) == delivered


async def test_multi_debounce_merges_events_published_through_both(nats: NatsServer, db_url: str) -> None:
    """CREATE/UPDATE events for one node, through A and B in turn: each session gets one merge."""
    updates = [
        (0, node_update(None, "e1", Size="10")),
        (1, node_update("UPDATE_CONTENT", "e2", Size="20")),
        (0, node_update("UPDATE_META", "e3", MetaStore={"color": '"red"'})),
        (1, node_update("UPDATE_CONTENT", "e4", Size="40")),
    ]
    with trio.fail_after(30):
        async with (
            gateways(nats, db_url, GATEWAY_DEBOUNCE_SECONDS="1.5") as instances,
            events_session(instances[0], "alice") as alice_a,
            events_session(instances[1], "bob") as bob_b,
        ):
            for count, (origin, event) in enumerate(updates, 1):
                await publish(instances[origin], (TREE, event))
                # Both instances have it before the next one goes: the merge order is fixed.
                for gw in instances:
                    await wait_metric(gw, "gateway_events_received_total", count, topic=TREE)
            for ws in (alice_a, bob_b):
                merged = await recv_json(ws)
                assert "Type" not in merged  # a CREATE
                target = merged["Target"]
                assert (target["Path"], target["Etag"], target["Size"]) == (
                    "common-files/doc.txt",
                    "e4",
                    "40",
                )
                assert target["MetaStore"] == {"color": '"red"', "EventWorkspaceId": '"ws-common"'}
            # The deletion goes at once: had a second merged event been waiting, it would come first.
            await publish(instances[1], (TREE, delete("/ds/common/doc.txt", "n-7")))
            for ws in (alice_a, bob_b):
                assert await paths(ws, 1) == ["common-files/doc.txt"]
            for gw in instances:
                assert await metric(gw, "gateway_debounce_pending") == 0
                assert await metric(gw, "gateway_events_delivered_total", topic=TREE) == 2


# --- chat ---------------------------------------------------------------------------------------


async def test_multi_chat_posts_edits_deletes_and_members_across_instances(
    nats: NatsServer, db_url: str
) -> None:
    with trio.fail_after(30):
        async with (
            gateways(nats, db_url) as instances,
            chat_session(instances[0], "alice") as alice,
            chat_session(instances[1], "bob") as bob,
        ):
            room = await alice.join(GLOBAL_ROOM)
            assert room["Users"] == ["alice"]
            await chat_synced(instances, 1)
            on_b = await bob.join(GLOBAL_ROOM)
            assert (on_b["Uuid"], on_b["Users"]) == (room["Uuid"], ["alice", "bob"])
            assert await members(alice) == ["alice", "bob"]

            hello = await posted(bob, room["Uuid"], "hello from B")
            assert await alice.recv() == hello
            reply = await posted(alice, room["Uuid"], "hello from A")
            assert await bob.recv() == reply
            assert reply["Seq"] == hello["Seq"] + 1

            edited = await posted(alice, room["Uuid"], "edited on A", Uuid=reply["Uuid"])
            assert (edited["Uuid"], edited["Seq"]) == (reply["Uuid"], reply["Seq"]) and "Edited" in edited
            assert await bob.recv() == edited

            await bob.send("DELETE_MSG", message={"Uuid": hello["Uuid"]})
            deleted = await bob.recv()
            assert deleted["@type"] == "DELETE_MSG" and deleted["Message"]["Uuid"] == hello["Uuid"]
            assert await alice.recv() == deleted

            await bob.send("HISTORY", {"Uuid": room["Uuid"]}, {"Message": '{"Offset":0,"Limit":40}'})
            assert await members(bob) == ["alice", "bob"]
            assert await bob.recv() == edited  # the deleted message is gone; no MAY_HAVE_MORE

            await bob.send("LEAVE", {"Uuid": room["Uuid"]})
            assert await members(bob) == ["alice"]
            assert await members(alice) == ["alice"]

            await chat_synced(instances, 7)  # 2 joins, 2 posts, an edit, a deletion, a leave
            async with chat_session(instances[1], "bob") as bob_again:
                assert (await bob_again.join(GLOBAL_ROOM))["Users"] == ["alice", "bob"]
                await bob_again.send("HISTORY", GLOBAL_ROOM)  # as Cells' client does after a JOIN
                assert (await bob_again.recv())["@type"] == "ROOM_UPDATE"
                assert await bob_again.recv() == edited
                assert await members(alice) == ["alice", "bob"]
            assert await members(alice) == ["alice"]  # the session on B closed: bob left

            # Nothing else was queued for alice (a duplicate would come before her own post).
            await posted(alice, room["Uuid"], "bye")


async def test_multi_chat_user_room_is_one_room_across_instances(nats: NatsServer, db_url: str) -> None:
    with trio.fail_after(30):
        async with (
            gateways(nats, db_url) as (a, b),
            chat_session(a, "alice") as alice,
            chat_session(b, "bob") as bob,
        ):
            room = await alice.join({"Type": "USER", "RoomTypeObject": "bob"})
            await chat_synced([a, b], 1)
            on_b = await bob.join({"Type": "USER", "RoomTypeObject": "alice"})
            assert on_b["Uuid"] == room["Uuid"] and on_b["RoomTypeObject"] == "alice"
            update = await alice.recv()
            assert (update["Room"]["RoomTypeObject"], update["Room"]["Users"]) == ("bob", ["alice", "bob"])
            message = await posted(alice, room["Uuid"], "private")
            assert await bob.recv() == message


async def test_multi_chat_user_stays_member_while_a_session_on_the_other_instance_is_in(
    nats: NatsServer, db_url: str
) -> None:
    """alice is in the room from A and from B; closing A's session must not take her out (as on one
    instance, where her other session keeps her in). B's instance restores her at once."""
    with trio.fail_after(30):
        async with (
            gateways(nats, db_url) as (a, b),
            chat_session(b, "alice") as alice_b,
            chat_session(b, "bob") as bob,
        ):
            room = await alice_b.join(GLOBAL_ROOM)
            await chat_synced([a, b], 1)
            assert (await bob.join(GLOBAL_ROOM))["Users"] == ["alice", "bob"]
            assert await members(alice_b) == ["alice", "bob"]
            await chat_synced([a, b], 2)
            async with chat_session(a, "alice") as alice_a:
                assert (await alice_a.join(GLOBAL_ROOM))["Users"] == ["alice", "bob"]
                assert await members(bob) == ["alice", "bob"]  # the JOIN's update
            # A announced that alice left; B, which still has her session, put her back.
            assert await members(bob) == ["bob"]
            assert await members(bob) == ["alice", "bob"]
            await bob.send("HISTORY", {"Uuid": room["Uuid"]}, {"Message": '{"Offset":0,"Limit":40}'})
            assert await members(bob) == ["alice", "bob"]


async def test_multi_chat_presence_timeout_seen_on_both_instances(nats: NatsServer, db_url: str) -> None:
    """carol (on B) stops pinging: both instances sweep, one announces; her PING brings her back."""
    timeout = 1.5
    with trio.fail_after(30):
        async with (
            gateways(nats, db_url, GATEWAY_CHAT_PRESENCE_TIMEOUT=str(timeout)) as (a, b),
            chat_session(a, "alice") as alice,
            chat_session(b, "carol") as carol,
            trio.open_nursery() as nursery,
        ):
            room = await alice.join(GLOBAL_ROOM)
            nursery.start_soon(heartbeat, alice, timeout / 5)
            await chat_synced([a, b], 1)
            assert (await carol.join(GLOBAL_ROOM))["Users"] == ["alice", "carol"]
            assert await members(alice) == ["alice", "carol"]
            silent_since = trio.current_time()

            assert await members(alice) == ["alice"]
            assert trio.current_time() - silent_since >= timeout * 0.9
            assert await members(carol) == ["alice"]  # her session on B still follows the room

            await carol.send("JOIN", GLOBAL_ROOM, {"Message": "PING"})
            assert await members(alice) == ["alice", "carol"]  # not a second "left" update first
            assert await members(carol) == ["alice", "carol"]
            reply = await posted(alice, room["Uuid"], "welcome back")
            assert await carol.recv() == reply
            nursery.cancel_scope.cancel()


async def heartbeat(client: ChatClient, interval: float) -> None:
    """The browser client's presence PING, faster (the gateway answers none)."""
    while True:
        await client.send("JOIN", GLOBAL_ROOM, {"Message": "PING"})
        await trio.sleep(interval)


# --- outages ------------------------------------------------------------------------------------


def big_task(i: int) -> dict[str, Any]:
    """A tasks event of about BIG_EVENT_PAD bytes, for nobody (no session receives it)."""
    return {"TaskUpdated": {"ID": f"t-{i}", "TriggerOwner": "nobody", "StatusMessage": "x" * BIG_EVENT_PAD}}


async def test_multi_nats_restart_keeps_sessions_and_buffers(nats: NatsServer, db_url: str) -> None:
    """nats-server down for 5 s, then back on its port: same sessions, not ready meanwhile, and
    what was published during the outage is buffered (up to 8 MiB), then sent, as the docs say."""
    env = {"GATEWAY_ADMIN_MAX_BODY": str(16 << 20)}
    with trio.fail_after(45):
        async with (
            gateways(nats, db_url, **env) as (a, b),
            events_session(a, "alice") as alice_a,
            events_session(b, "alice") as alice_b,
        ):
            await publish(a, (TREE, delete("/ds/common/before.txt", "n-0")))
            for ws in (alice_a, alice_b):
                assert await paths(ws, 1) == ["common-files/before.txt"]

            await nats.stop()
            stopped = trio.current_time()
            for gw in (a, b):
                await wait_until_async(not_ready, gw)
                assert await readiness(gw) == (503, {"status": "not_ready", "reason": "bus disconnected"})
                assert await metric(gw, "gateway_bus_connected") == 0
            # Published during the outage: kept in each publisher's buffer, in order.
            await publish(a, (TREE, delete("/ds/common/during-a.txt", "n-a")))
            await publish(b, (TREE, delete("/ds/common/during-b.txt", "n-b")))
            small = await metric(a, "gateway_bus_buffered_bytes")
            assert small > 0
            # Until the buffer is full: the event that does not fit is refused, and counted.
            status, answer = await admin_publish(
                a.admin_port, {"events": [{"topic": TASKS, "event": big_task(i)} for i in range(9)]}
            )
            assert (status, answer["error"], answer["published"]) == (503, "bus_unavailable", 8), answer
            assert "buffer is full" in answer["message"]
            assert small + 8 * BIG_EVENT_PAD < await metric(a, "gateway_bus_buffered_bytes") <= BUS_BUFFER
            assert (
                await metric(a, "gateway_events_dropped_total", topic=TASKS, reason="bus_disconnected") == 1
            )

            await trio.sleep_until(stopped + NATS_OUTAGE)  # the outage lasts its 5 s
            await nats.start()
            for gw in (a, b):
                await wait_until_async(is_ready, gw)
                assert await metric(gw, "gateway_bus_reconnects_total") == 1
                await wait_until_async(buffer_empty, gw)

            # One more event through each instance after the restart ends the check of each session:
            # its own instance's buffered event came first (resubscribed before sending the buffer);
            # the other instance's came at most once (only if this one had reconnected by then).
            await publish(a, (TREE, delete("/ds/common/after-a.txt", "n-c")))
            await publish(b, (TREE, delete("/ds/common/after-b.txt", "n-d")))
            for ws, own, other in ((alice_a, "during-a", "during-b"), (alice_b, "during-b", "during-a")):
                got = await paths_until(ws, {"common-files/after-a.txt", "common-files/after-b.txt"})
                assert got.count(f"common-files/{own}.txt") == 1, got
                assert got.count(f"common-files/{other}.txt") <= 1, got
                assert set(got) <= {f"common-files/{name}.txt" for name in (own, other, "after-a", "after-b")}
            for gw in (a, b):
                assert await metric(gw, "gateway_sessions", endpoint="events") == 1
                assert await metric(gw, "gateway_session_closes_total", code="4008") == 0


async def paths_until(ws: WebSocketConnection, last: set[str]) -> list[str]:
    """Source paths of tree events until every path of ``last`` has come."""
    got: list[str] = []
    while not last <= set(got):
        got += await paths(ws, 1)
    return got


async def not_ready(gw: GatewayProcess) -> bool:
    return (await readiness(gw))[0] == 503


async def is_ready(gw: GatewayProcess) -> bool:
    return (await readiness(gw))[0] == 200


async def buffer_empty(gw: GatewayProcess) -> bool:
    return await metric(gw, "gateway_bus_buffered_bytes") == 0


async def test_multi_postgres_restart_chat_unavailable_then_recovers(
    nats: NatsServer, db_url: str, pg_cluster: PostgresCluster
) -> None:
    with trio.fail_after(45):
        async with (
            gateways(nats, db_url) as (a, b),
            chat_session(a, "alice") as alice,
            chat_session(b, "bob") as bob,
            events_session(a, "alice") as events_a,
            events_session(b, "bob") as events_b,
        ):
            room = await alice.join(GLOBAL_ROOM)
            await chat_synced([a, b], 1)
            await bob.join(GLOBAL_ROOM)
            assert await members(alice) == ["alice", "bob"]
            before = await posted(alice, room["Uuid"], "before")
            assert await bob.recv() == before

            await trio.to_thread.run_sync(pg_cluster.stop)
            try:
                for client in (alice, bob):
                    await client.send("POST", message={"RoomUuid": room["Uuid"], "Message": "lost"})
                    error = await client.recv()
                    assert error == {
                        "@type": "error",
                        "error": "store_unavailable",
                        "message": "chat history unavailable: the chat history database is unavailable; "
                        "try again later",
                        "request": "POST",
                    }
                # Events do not need the database: they keep flowing, to the same sessions.
                await publish(a, (TREE, delete("/ds/common/during.txt", "n-1")))
                for ws in (events_a, events_b):
                    assert await paths(ws, 1) == ["common-files/during.txt"]
                for gw in (a, b):
                    assert await readiness(gw) == (200, {"status": "ready"})
            finally:
                await trio.to_thread.run_sync(pg_cluster.start)

            # The first POST after the restart works: stale pooled connections are replaced.
            reply = await posted(bob, room["Uuid"], "after")
            assert await alice.recv() == reply
            for gw in (a, b):
                assert await metric(gw, "gateway_sessions", endpoint="chat") == 1
                assert await metric(gw, "gateway_sessions", endpoint="events") == 1


async def test_multi_postgres_outage_longer_than_presence_timeout_keeps_members(
    nats: NatsServer, db_url: str, pg_cluster: PostgresCluster
) -> None:
    """No PING can be recorded while the database is down: once it is back, members get a full
    presence timeout to ping again instead of being swept out at once (then put back by their PING)."""
    timeout = 3.0
    with trio.fail_after(45):
        async with (
            gateways(nats, db_url, GATEWAY_CHAT_PRESENCE_TIMEOUT=str(timeout)) as (a, b),
            chat_session(a, "alice") as alice,
            chat_session(b, "bob") as bob,
        ):
            room = await alice.join(GLOBAL_ROOM)
            await chat_synced([a, b], 1)
            await bob.join(GLOBAL_ROOM)
            assert await members(alice) == ["alice", "bob"]

            await trio.to_thread.run_sync(pg_cluster.stop)
            stopped = trio.current_time()
            try:
                for gw in (a, b):  # each instance's sweep has met the outage
                    await wait_until_async(logged, gw, "presence sweep skipped")
                await trio.sleep_until(stopped + timeout + 1.5)  # the outage outlasts the timeout
            finally:
                await trio.to_thread.run_sync(pg_cluster.start)
            for gw in (a, b):  # a sweep after the outage (the only write since) has run
                await wait_until_async(logged, gw, "writes succeed again")

            for client in (alice, bob):
                await client.send("JOIN", GLOBAL_ROOM, {"Message": "PING"})
            reply = await posted(alice, room["Uuid"], "still here")  # no ROOM_UPDATE came first
            assert await bob.recv() == reply


async def logged(gw: GatewayProcess, text: str) -> bool:
    await trio.lowlevel.checkpoint()
    return text in gw.logs()


def test_multi_start_while_postgres_is_down_fails_with_a_clear_message() -> None:
    """A gateway (re)started during a PostgreSQL outage cannot migrate its database: it must say so
    in one line and exit non-zero (systemd restarts it), not print a traceback."""
    dead = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/chat"
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
         "--db", dead],
        env=gateway_env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "gateway: configuration error: db_url: cannot prepare the chat database" in result.stderr
    assert "Connection refused" in result.stderr
    assert "Traceback" not in result.stderr, result.stderr


# --- heavier variants (make stress) -------------------------------------------------------------


@pytest.mark.slow
async def test_multi_nats_restarts_repeatedly_chat_and_events_go_on(nats: NatsServer, db_url: str) -> None:
    """Ten broker outages. Each time a chat post and an event published through each instance
    during the outage reach their own instance's sessions exactly once after it, and the post is in
    the history every instance reads; the sessions are the same throughout."""
    with trio.fail_after(120):
        async with (
            gateways(nats, db_url) as instances,
            chat_session(instances[0], "alice") as alice,
            chat_session(instances[1], "bob") as bob,
            events_session(instances[0], "alice") as events_a,
            events_session(instances[1], "alice") as events_b,
        ):
            a, b = instances
            room = await alice.join(GLOBAL_ROOM)
            await chat_synced(instances, 1)
            await bob.join(GLOBAL_ROOM)
            assert await members(alice) == ["alice", "bob"]
            for cycle in range(1, RESTARTS + 1):
                await nats.stop()
                for gw in instances:
                    await wait_until_async(not_ready, gw)
                await alice.send("POST", message={"RoomUuid": room["Uuid"], "Message": f"during {cycle}"})
                await publish(a, (TREE, delete(f"/ds/common/a-{cycle}.txt", f"a-{cycle}")))
                await publish(b, (TREE, delete(f"/ds/common/b-{cycle}.txt", f"b-{cycle}")))
                await nats.start()
                for gw in instances:
                    await wait_until_async(is_ready, gw)
                    await wait_until_async(buffer_empty, gw)

                # alice's post comes back to her once; bob (on B) saw it live only if B was back first.
                await bob.send("POST", message={"RoomUuid": room["Uuid"], "Message": f"sync {cycle}"})
                await bob.recv_until(message_is(f"sync {cycle}"))
                assert sorted(await texts_until(alice, f"sync {cycle}")) == [
                    f"during {cycle}",
                    f"sync {cycle}",
                ]
                await bob.send("HISTORY", {"Uuid": room["Uuid"]}, {"Message": '{"Offset":0,"Limit":2}'})
                page = await frames_until(bob, "MAY_HAVE_MORE")
                assert [f["Message"] for f in page[-2:]] == [f"during {cycle}", f"sync {cycle}"], page

                await publish(a, (TREE, delete("/ds/common/end-a.txt", f"end-a-{cycle}")))
                await publish(b, (TREE, delete("/ds/common/end-b.txt", f"end-b-{cycle}")))
                ends = {"common-files/end-a.txt", "common-files/end-b.txt"}
                for ws, own in ((events_a, "a"), (events_b, "b")):
                    got_paths = await paths_until(ws, ends)
                    assert got_paths.count(f"common-files/{own}-{cycle}.txt") == 1, got_paths
            for gw in instances:
                assert await metric(gw, "gateway_bus_reconnects_total") == RESTARTS
                assert await metric(gw, "gateway_sessions", endpoint="chat") == 1
                assert await metric(gw, "gateway_sessions", endpoint="events") == 1


def message_is(text: str) -> Callable[[dict[str, Any]], bool]:
    return lambda frame: frame.get("Message") == text


async def texts_until(client: ChatClient, last: str) -> list[str]:
    """Texts of the chat messages a client receives until ``last`` (other frames: none expected)."""
    texts: list[str] = []
    while last not in texts:
        frame = await client.recv()
        assert "Seq" in frame, frame
        texts.append(frame["Message"])
    return texts


async def frames_until(client: ChatClient, kind: str) -> list[dict[str, Any]]:
    """Frames up to the first of type ``kind`` (not included)."""
    frames = []
    while (frame := await client.recv()).get("@type") != kind:
        frames.append(frame)
    return frames


async def test_multi_nats_cluster_failover_to_the_next_url(tmp_path: Path, db_url: str) -> None:
    """Two clustered nats-servers; each gateway lists both, its own first. Killing A's server moves
    A to the other one (the next URL) and both instances share events again."""
    with trio.fail_after(60):
        async with nats_servers(tmp_path) as start:
            routes = [free_port(), free_port()]
            servers = [
                await start(
                    "--cluster",
                    f"nats://127.0.0.1:{routes[i]}",
                    "--cluster_name",
                    "gw",
                    "--routes",
                    f"nats://127.0.0.1:{routes[1 - i]}",
                )
                for i in range(2)
            ]
            for server in servers:
                await wait_until_async(routed, server)
            urls = [server.url for server in servers]
            async with AsyncExitStack() as stack:
                a, b = [
                    await stack.enter_async_context(
                        gateway_process("--bus", ",".join(order), "--db", db_url, env=gateway_env())
                    )
                    for order in (urls, urls[::-1])
                ]
                for server in servers:  # each server knows both gateways' interest
                    await wait_until_async(subscriptions, server, 12)
                alice_a = await stack.enter_async_context(events_session(a, "alice"))
                alice_b = await stack.enter_async_context(events_session(b, "alice"))
                await publish(b, (TREE, delete("/ds/common/one.txt", "n-1")))
                for ws in (alice_a, alice_b):
                    assert await paths(ws, 1) == ["common-files/one.txt"]

                await servers[0].stop()
                await wait_metric(a, "gateway_bus_reconnects_total", 1)
                assert await is_ready(a)
                await wait_until_async(subscriptions, servers[1], 6 + 6)
                assert await metric(a, "gateway_bus_reconnects_total") == 1
                assert await metric(b, "gateway_bus_reconnects_total") == 0
                for origin, name in ((a, "two"), (b, "three")):
                    await publish(origin, (TREE, delete(f"/ds/common/{name}.txt", name)))
                    for ws in (alice_a, alice_b):
                        assert await paths(ws, 1) == [f"common-files/{name}.txt"]


async def routed(server: NatsServer) -> bool:
    return bool((await server.monitor("/routez")).get("num_routes"))


async def subscriptions(server: NatsServer, count: int) -> bool:
    return int((await server.monitor("/subsz")).get("num_subscriptions", 0)) >= count


@pytest.mark.slow
def test_multi_bench_two_instances_tiny_run(pg_cluster: PostgresCluster) -> None:
    """``python -m bench.two_instances`` end to end in a tiny configuration (figures not asserted)."""
    argv = ["--instances", "2", "--sessions", "10", "--events", "40", "--members", "4", "--posts", "40"]
    result = subprocess.run(
        [sys.executable, "-m", "bench.two_instances", *argv, "--db", pg_cluster.url],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "every session got every event once, every member every post" in result.stdout
    assert "delivered events/s, all sessions" in result.stdout
