"""Faults against real gateway processes: a crash mid-load, a database that is locked, read-only or
full, a shutdown with a thousand sessions, and a reconnect storm of two thousand clients.

The chat tests post with a ``ClientMessageId`` and count a post as acknowledged when the sender's
own copy comes back (it is sent only after the commit). Whatever happens, every acknowledged post
is in the database, and a retry with the same ``ClientMessageId`` never stores a second copy.
"""

from __future__ import annotations

import itertools
import json
import signal
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from gateway.chat.models import DEFAULT_BUSY_TIMEOUT
from loadclient.interface import Command
from tests.helpers import TREE, RawClient, admin_publish, recv_json, token, ws_client
from tests.process import GatewayProcess, gateway_env, gateway_process
from tests.reliability import (
    TIMED,
    ReadOnlyBind,
    eventually,
    fill_up,
    load_client,
    metric,
    mount_problem,
    mounted_tmpfs,
    raw_client,
    read_to_the_end,
    record,
    scrape,
)

ROOM = {"Type": "WORKSPACE", "RoomTypeObject": "ws-common"}
# Posting as fast as the clients can: lift the per-session and per-user rate limits.
UNLIMITED = {
    "GATEWAY_RATE_LIMIT": "100000",
    "GATEWAY_RATE_BURST": "100000",
    "GATEWAY_CHAT_POSTS_PER_SECOND": "100000",
    "GATEWAY_CHAT_POST_BURST": "100000",
}
POSTERS = 4
WINDOW = 16  # posts a client has in flight
KILL_AFTER = 1000  # acknowledged posts, all clients together


def chat_env(db: Path, **extra: str) -> dict[str, str]:
    return gateway_env(GATEWAY_DB_URL=f"sqlite:///{db}", **UNLIMITED, **extra)


@dataclass
class ChatClient:
    """A chat session in the workspace room, keeping track of its posts and their acknowledgements."""

    ws: WebSocketConnection
    user: str
    room: str
    history: list[dict[str, Any]]
    sent: dict[str, str] = field(default_factory=dict)  # ClientMessageId -> text
    acked: set[str] = field(default_factory=set)

    async def send_post(self, client_id: str, text: str | None = None) -> None:
        text = self.sent.setdefault(client_id, text or f"message {client_id}")
        message = {"RoomUuid": self.room, "Message": text, "ClientMessageId": client_id}
        await self.ws.send_message(json.dumps({"@type": "POST", "Message": message}))

    async def answer(self, client_id: str, within: float = 30) -> dict[str, Any]:
        """The acknowledgement of ``client_id`` or the error about it, skipping anything else."""
        with trio.fail_after(within):
            while True:
                frame = await recv_json(self.ws, within)
                if frame.get("ClientMessageId") == client_id and (
                    frame.get("Author") == self.user or frame.get("@type") == "error"
                ):
                    if frame.get("@type") != "error":
                        self.acked.add(client_id)
                    return frame

    async def post(self, client_id: str, within: float = 30) -> dict[str, Any]:
        await self.send_post(client_id)
        return await self.answer(client_id, within)


@asynccontextmanager
async def chat_client(gw: GatewayProcess, user: str) -> AsyncIterator[ChatClient]:
    """A subscribed chat session that has joined the workspace room and read its latest history page,
    as Cells' client does (JOIN, then HISTORY)."""
    async with ws_client(f"{gw.ws_url}/chat") as ws:
        await ws.send_message(json.dumps({"@type": "subscribe", "ack": True, "jwt": token(user)}))
        assert (await recv_json(ws))["@type"] == "subscribed"
        await ws.send_message(json.dumps({"@type": "JOIN", "Room": ROOM}))
        await ws.send_message(json.dumps({"@type": "HISTORY", "Room": ROOM}))
        # A request refused at once marks the end of the JOIN's answer (requests are handled in turn).
        await ws.send_message(json.dumps({"@type": "HISTORY", "Room": {"Uuid": "end-of-join"}}))
        while (update := await recv_json(ws)).get("@type") != "ROOM_UPDATE":
            pass  # others' posts may come first: the session is in the room before its page is read
        history: dict[int, dict[str, Any]] = {}  # a post may come live and in the page
        while (frame := await recv_json(ws)).get("@type") != "error":
            if "Seq" in frame:
                history[frame["Seq"]] = frame
        yield ChatClient(ws, user, update["Room"]["Uuid"], [history[seq] for seq in sorted(history)][-40:])


def stored_posts(db: Path) -> list[tuple[int, str, str]]:
    """(seq, author, ClientMessageId) of every message in the workspace room, in seq order."""
    with sqlite3.connect(db) as connection:
        rows = connection.execute(
            "SELECT m.seq, m.author, m.client_id FROM messages m JOIN rooms r ON r.id = m.room_id "
            "WHERE r.type = 'WORKSPACE' AND r.type_object = 'ws-common' ORDER BY m.seq"
        ).fetchall()
    connection.close()
    return [(int(seq), str(author), str(client_id)) for seq, author, client_id in rows]


# ---------------------------------------------------------------------------------------------
# A crash in the middle of a chat load


@dataclass
class Load:
    acks: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    enough: trio.Event = field(default_factory=trio.Event)


async def post_until_the_end(
    gw: GatewayProcess, client_of: dict[str, ChatClient], user: str, load: Load
) -> None:
    """Keep WINDOW posts in flight until the connection drops."""
    slots = trio.Semaphore(WINDOW)

    async def send(client: ChatClient) -> None:
        for n in itertools.count():
            await slots.acquire()
            await client.send_post(f"{user}-{n}")

    try:
        async with chat_client(gw, user) as client, trio.open_nursery() as nursery:
            client_of[user] = client
            nursery.start_soon(send, client)
            while True:
                frame = json.loads(await client.ws.get_message())
                client_id = frame.get("ClientMessageId")
                if frame.get("@type") == "error":
                    load.errors.append(frame)
                elif (
                    frame.get("Author") == user and client_id in client.sent and client_id not in client.acked
                ):
                    client.acked.add(client_id)
                    slots.release()
                    load.acks += 1
                    if load.acks >= KILL_AFTER:
                        load.enough.set()
    except* ConnectionClosed:
        pass  # the gateway died


async def test_faults_sigkill_mid_chat_load_loses_no_acknowledged_post(tmp_path: Path) -> None:
    db = tmp_path / "chat.db"
    clients: dict[str, ChatClient] = {}
    load = Load()
    with trio.fail_after(90):
        async with gateway_process(env=chat_env(db)) as gw, trio.open_nursery() as nursery:
            for i in range(POSTERS):
                nursery.start_soon(post_until_the_end, gw, clients, f"poster-{i}", load)
            await load.enough.wait()
            gw.process.kill()
            assert await gw.process.wait() == -signal.SIGKILL
        acked = {(c.user, client_id) for c in clients.values() for client_id in c.acked}
        sent = {(c.user, client_id) for c in clients.values() for client_id in c.sent}
        after_crash = stored_posts(db)
        # Restart on the same database; every client retries what it has no acknowledgement for.
        async with gateway_process(env=chat_env(db)) as gw:
            for user, before in clients.items():
                async with chat_client(gw, user) as client:
                    client.sent = before.sent
                    unacked = sorted(set(before.sent) - before.acked)
                    for client_id in unacked:
                        await client.send_post(client_id)
                    for client_id in unacked:
                        ack = await client.answer(client_id)
                        assert ack["Author"] == user and ack["Message"] == before.sent[client_id], ack
            async with chat_client(gw, "reader") as reader:
                latest_page = [(m["Seq"], m["Author"], m["ClientMessageId"]) for m in reader.history]
    record("sigkill mid chat load", acked=len(acked), sent=len(sent), on_disk_after_crash=len(after_crash),
           stored_after_retries=len(stored_posts(db)))  # fmt: skip
    assert load.errors == []
    assert len(acked) >= KILL_AFTER and len(sent) > len(acked)  # killed with posts in flight
    assert acked <= {(author, client_id) for _, author, client_id in after_crash}  # durable once acked
    final = stored_posts(db)
    assert sorted((author, client_id) for _, author, client_id in final) == sorted(sent)  # each once
    assert [seq for seq, _, _ in final] == list(range(1, len(final) + 1))  # no gap, no reuse
    assert latest_page == final[-len(latest_page) :] and len(latest_page) == 40


# ---------------------------------------------------------------------------------------------
# The chat database locked, read-only, full: posts refused, events flowing, then recovery


@asynccontextmanager
async def events_watcher(gw: GatewayProcess) -> AsyncIterator[WebSocketConnection]:
    async with ws_client(f"{gw.ws_url}/ws") as ws:
        await ws.send_message(json.dumps({"@type": "subscribe", "ack": True, "jwt": token("watcher")}))
        assert (await recv_json(ws))["@type"] == "subscribed"
        yield ws


async def assert_events_flow(gw: GatewayProcess, ws: WebSocketConnection, count: int = 20) -> None:
    """Publish ``count`` tree events and receive each of them on ``ws``."""
    events = [
        {
            "topic": TREE,
            "event": {"Type": "DELETE", "Source": {"Uuid": f"n-{i}", "Path": f"/ds/common/{i}.txt"}},
        }
        for i in range(count)
    ]
    assert (await admin_publish(gw.admin_port, {"events": events}))[0] == 202
    for i in range(count):
        assert (await recv_json(ws))["Source"]["Uuid"] == f"n-{i}"


async def post_until_acknowledged(client: ChatClient, client_id: str, within: float = 30) -> dict[str, Any]:
    """Retry a post with the same ClientMessageId, as a client does, until it is acknowledged."""
    with trio.fail_after(within):
        while (answer := await client.post(client_id)).get("@type") == "error":
            assert answer["error"] == "store_unavailable", answer
    return answer


# The writer may be inside another batch (the presence sweep's) that waits out the busy timeout first.
REFUSAL_WITHIN = 2 * DEFAULT_BUSY_TIMEOUT + 10


class Locker:
    """Another program's connection to the database, taking its write lock (BEGIN EXCLUSIVE)."""

    def __init__(self, db: Path) -> None:
        self.connection: sqlite3.Connection | None = sqlite3.connect(
            db, timeout=30, isolation_level=None, check_same_thread=False
        )

    async def lock(self) -> None:
        assert self.connection is not None
        await trio.to_thread.run_sync(self.connection.execute, "BEGIN EXCLUSIVE")

    async def release(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            await trio.to_thread.run_sync(connection.rollback)
            connection.close()


@TIMED
async def test_faults_locked_database_refuses_posts_while_events_flow(tmp_path: Path, timed: bool) -> None:
    db = tmp_path / "chat.db"
    with trio.fail_after(90):
        async with (
            gateway_process(env=chat_env(db)) as gw,
            chat_client(gw, "alice") as alice,
            events_watcher(gw) as watcher,
        ):
            assert (await alice.post("c-0"))["Author"] == "alice"
            locker = Locker(db)
            await locker.lock()
            try:
                started = trio.current_time()
                await alice.send_post("c-1")
                await assert_events_flow(gw, watcher)  # while the post waits for the lock
                refused = await alice.answer("c-1", within=3 * REFUSAL_WITHIN)
                waited = trio.current_time() - started
                await assert_events_flow(gw, watcher)
            finally:
                await locker.release()
            assert (await post_until_acknowledged(alice, "c-1"))["Author"] == "alice"
    assert refused["error"] == "store_unavailable" and refused["request"] == "POST", refused
    assert refused["ClientMessageId"] == "c-1" and "busy" in refused["message"]
    record("database locked", refused_after_s=waited, message=refused["message"])
    assert not timed or waited <= REFUSAL_WITHIN
    assert [client_id for _, _, client_id in stored_posts(db)] == ["c-0", "c-1"]


@pytest.fixture
def mounts(tmp_path: Path) -> None:
    """Skip unless this process may mount file systems (root with CAP_SYS_ADMIN)."""
    if (problem := mount_problem(tmp_path)) is not None:
        pytest.skip(f"the database faults need tmpfs and bind mounts: {problem}")


@pytest.mark.usefixtures("mounts")
async def test_faults_read_only_database_refuses_posts_while_events_flow(tmp_path: Path) -> None:
    """Read-only for real: a read-only bind mount over the database's folder.

    Linux refuses to remount a file system read-only while a process has a file on it open for
    writing (EBUSY), and an open descriptor keeps writing whatever the mount says. So the fault is
    what the gateway meets when it opens the database again: a lock held past the busy timeout makes
    it drop its write connection, and the next one it opens is read-only.
    """
    folder = tmp_path / "db"
    folder.mkdir()
    db = folder / "chat.db"
    read_only = ReadOnlyBind(folder)
    with trio.fail_after(90):
        async with (
            gateway_process(env=chat_env(db)) as gw,
            chat_client(gw, "alice") as alice,
            events_watcher(gw) as watcher,
        ):
            assert (await alice.post("c-0"))["Author"] == "alice"
            locker = Locker(db)
            await locker.lock()
            try:
                await read_only.mount()
                assert (await alice.post("c-1", within=REFUSAL_WITHIN))["error"] == "store_unavailable"
                await locker.release()
                refused = await alice.post("c-1")
                await assert_events_flow(gw, watcher)
                await read_only.unmount()
                assert (await post_until_acknowledged(alice, "c-1"))["Author"] == "alice"
            finally:
                await locker.release()
                await read_only.unmount()
    assert refused["error"] == "store_unavailable" and "read-only" in refused["message"], refused
    record("database read-only", message=refused["message"])
    assert [client_id for _, _, client_id in stored_posts(db)] == ["c-0", "c-1"]


@pytest.mark.usefixtures("mounts")
async def test_faults_full_disk_refuses_posts_while_events_flow(tmp_path: Path) -> None:
    """Full for real: the database on a 4 MiB tmpfs that the test fills to the last byte."""
    with trio.fail_after(90):
        async with mounted_tmpfs(tmp_path / "db", "4m") as folder:
            db = folder / "chat.db"
            async with (
                gateway_process(env=chat_env(db)) as gw,
                chat_client(gw, "alice") as alice,
                events_watcher(gw) as watcher,
            ):
                assert (await alice.post("c-0"))["Author"] == "alice"
                await trio.to_thread.run_sync(empty_wal, db)  # so that the next commit needs new space
                filler = await trio.to_thread.run_sync(fill_up, folder)
                refused = await alice.post("c-1", within=REFUSAL_WITHIN)
                await assert_events_flow(gw, watcher)
                await trio.Path(filler).unlink()
                assert (await post_until_acknowledged(alice, "c-1"))["Author"] == "alice"
            stored = [client_id for _, _, client_id in stored_posts(db)]
    assert refused["error"] == "store_unavailable" and "full" in refused["message"], refused
    record("disk full", message=refused["message"])
    assert stored == ["c-0", "c-1"]


def empty_wal(db: Path) -> None:
    """Checkpoint the write-ahead log and truncate it to nothing (retried while readers hold it)."""
    connection = sqlite3.connect(db, timeout=10, isolation_level=None)
    try:
        for _ in range(100):
            busy, _, _ = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if busy == 0 and db.with_name(db.name + "-wal").stat().st_size == 0:
                return
        raise AssertionError("could not truncate the write-ahead log")
    finally:
        connection.close()


# ---------------------------------------------------------------------------------------------
# Many sessions at once: a shutdown, a reconnect storm


STUCK_WS = {"uuid": "ws-stuck", "slug": "stuck", "roots": ["/ds/stuck"], "permissions": "rw"}


@TIMED
async def test_faults_sigterm_with_1000_sessions_closes_all_1001_and_exits_0(
    tmp_path: Path, timed: bool
) -> None:
    """Also with one more client that stopped reading, its socket full: it cannot delay the exit."""
    env = gateway_env(GATEWAY_MAX_SESSIONS_PER_IP="2000")
    drain_timeout = 10  # the default
    with trio.fail_after(120):
        async with (
            gateway_process(env=env) as gw,
            load_client(f"{gw.ws_url}/ws", [token()] * 1000, tmp_path) as clients,
        ):
            assert clients.ready is not None and clients.ready.subscribed == 1000
            stuck = await raw_client(gw.ws_port, jwt=token("stuck", workspaces=[STUCK_WS]), rcvbuf=4096)
            await fill_the_socket_of(gw, stuck)
            gw.process.send_signal(signal.SIGTERM)
            started = trio.current_time()
            with trio.fail_after(drain_timeout + 10):
                exit_code = await gw.process.wait()
            stopped_after = trio.current_time() - started
            await clients.wait_for(lambda: clients.live == 0, "every session to end")
            report = await clients.report()
            await read_to_the_end(stuck)
    record(
        "sigterm", sessions=1000, exit_code=exit_code, stopped_after_s=stopped_after, closes=report["closes"]
    )
    assert exit_code == 0
    assert report["closes"] == {"1001": 1000} and report["errors"] == {"shutting_down": 1000}, report
    assert not timed or stopped_after <= drain_timeout + 5
    assert "gateway stopped" in gw.logs()


async def fill_the_socket_of(gw: GatewayProcess, client: RawClient, count: int = 1000) -> None:
    """Send ``count`` events (~400 KB) to the STUCK_WS client alone, which does not read them."""
    events = [
        {
            "topic": TREE,
            "event": {"Type": "DELETE", "Source": {"Uuid": f"s-{i}", "Path": f"/ds/stuck/{i}.txt"}},
        }
        for i in range(count)
    ]
    assert (await admin_publish(gw.admin_port, {"events": events}))[0] == 202

    async def delivered() -> bool:
        return metric(await scrape(gw.admin_port), "gateway_events_delivered_total", topic=TREE) == count

    await eventually(delivered, 30, "the events queued for the stuck client")


async def test_faults_reconnect_storm_of_2000_clients_all_subscribed_again(tmp_path: Path) -> None:
    """Two storms: a network blip (every connection dropped at once, the gateway still holding the
    dead sessions for a moment) and a crash and restart of the gateway."""
    # 2,000 clients behind one address, all reconnecting at once: both budgets must hold them.
    env = gateway_env(
        GATEWAY_MAX_SESSIONS_PER_IP="2500",
        GATEWAY_MAX_PENDING_PER_IP="2500",
        GATEWAY_MAX_PENDING_CONNECTIONS="2500",
    )
    with trio.fail_after(180):
        async with gateway_process(env=env) as first:
            port = first.ws_port
            url = f"ws://127.0.0.1:{port}/ws"
            async with load_client(url, [token()] * 2000, tmp_path, reconnect=True) as clients:
                assert clients.ready is not None and clients.ready.subscribed == 2000
                started = trio.current_time()
                await clients.command(Command.DROP)
                await clients.wait_for(lambda: clients.live < 2000, "the connections to drop")
                await clients.wait_for(lambda: clients.live == 2000, "every client to subscribe again")
                blip_s = trio.current_time() - started
                after_blip = await clients.report()
                first.process.kill()
                await clients.wait_for(lambda: clients.live == 0, "every connection to drop")
                async with gateway_process(env=env, listen=f"127.0.0.1:{port}") as second:
                    started = trio.current_time()
                    await clients.wait_for(lambda: clients.live == 2000, "every client to subscribe again")
                    restart_s = trio.current_time() - started
                    samples = await scrape(second.admin_port)
                    report = await clients.report()
    record("reconnect storm", clients=2000, blip_s=blip_s, restart_s=restart_s,
           subscriptions=report["subscriptions"], refused=report["refused"])  # fmt: skip
    assert after_blip["subscriptions"] == 4000 and after_blip["refused"] == {}, after_blip
    assert report["refused"] == {} and report["errors"] == {}, report
    assert report["subscriptions"] == 6000
    assert metric(samples, "gateway_sessions", endpoint="events") == 2000
    refusals = {k: v for (name, k), v in samples.items() if name == "gateway_connections_refused_total" and v}
    assert refusals == {}
