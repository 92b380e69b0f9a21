"""Chat benchmark: durable posts/s through the real gateway, with many members in one room.

    python -m bench.chat [--members 100] [--posters 100] [--posts 20000]

Starts ``gateway serve`` on a fresh SQLite file, opens ``--members`` chat sessions (picows, on
uvloop) that all join one room, and lets the first ``--posters`` of them post in a loop: each sends
its next POST as soon as its previous one is acknowledged (the sender's own copy, which the
gateway sends only after the commit). Every post is broadcast to every member. Prints acknowledged
posts/s, acknowledgement latency and deliveries/s, then checks in the database that every
acknowledged post was stored once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import sqlite3
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from bench.broadcast import gateway_argv
from bench.processes import HOST, BenchError, CpuMeter, Server, ServerSpec
from gateway.identity.mint import mint_token
from loadclient.histogram import bucket, new_histogram, percentile_ms

ROOM: Final = {"Type": "GLOBAL", "RoomTypeObject": "bench-room"}
CONNECT_CONCURRENCY: Final = 32
STEP_TIMEOUT: Final = 60.0


@dataclass(frozen=True)
class Options:
    members: int
    posters: int
    posts: int
    in_flight: int
    json: str | None = None


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="bench.chat", description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=100, help="sessions in the room")
    parser.add_argument("--posters", type=int, default=100, help="members that post")
    parser.add_argument("--posts", type=int, default=20000, help="posts in all")
    parser.add_argument("--in-flight", type=int, default=4, help="unacknowledged posts per poster")
    parser.add_argument("--json", metavar="FILE", help="also write the figures to FILE as JSON")
    args = parser.parse_args(argv)
    if not 1 <= args.posters <= args.members:
        parser.error("--posters must be between 1 and --members")
    return Options(args.members, args.posters, args.posts, max(1, args.in_flight), args.json)


class Member(WSListener):
    """One chat session on picows: join the room, count deliveries, spot its own acknowledgements."""

    def __init__(self, index: int, token: str) -> None:
        loop = asyncio.get_running_loop()
        self.index = index
        self.token = token
        self.transport: WSTransport | None = None
        self.joined: asyncio.Future[None] = loop.create_future()
        self.room_uuid = ""
        self.delivered = 0
        self.closed: int | None = None
        self._acks: dict[bytes, asyncio.Future[None]] = {}

    # -- picows callbacks (it answers pings by itself) ---------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.TEXT:
            self._text(frame.get_payload_as_bytes())
        elif frame.msg_type == WSMsgType.CLOSE:
            self.closed = frame.get_close_code().value
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        lost = ConnectionError(f"member {self.index} lost its connection (close code {self.closed})")
        for future in [self.joined, *self._acks.values()]:
            if not future.done():
                future.set_exception(lost)

    def _text(self, payload: bytes) -> None:
        self.delivered += 1
        if self._acks and (start := payload.find(b'"ClientMessageId":"')) >= 0:
            end = payload.find(b'"', start + 19)
            future = self._acks.pop(payload[start + 19 : end], None)
            if future is not None:
                future.set_result(None)
        elif not self.joined.done() and b'"ROOM_UPDATE"' in payload:
            self.room_uuid = json.loads(payload)["Room"]["Uuid"]
            self.joined.set_result(None)
        elif b'"@type":"error"' in payload and not self.joined.done():
            self.joined.set_exception(BenchError(payload.decode(errors="replace")[:300]))

    def send_json(self, obj: dict[str, Any]) -> None:
        assert self.transport is not None
        self.transport.send(WSMsgType.TEXT, json.dumps(obj).encode())

    # -- requests ----------------------------------------------------------------------------

    async def join(self) -> None:
        self.send_json({"@type": "subscribe", "ack": True, "jwt": self.token})
        self.send_json({"@type": "JOIN", "Room": ROOM})
        await asyncio.wait_for(self.joined, STEP_TIMEOUT)

    async def post(self, client_id: str) -> float:
        """POST and wait for the acknowledgement; return the latency in seconds."""
        future = asyncio.get_running_loop().create_future()
        self._acks[client_id.encode()] = future
        message = {
            "RoomUuid": self.room_uuid,
            "Message": f"bench post {client_id}",
            "ClientMessageId": client_id,
        }
        started = time.perf_counter()
        self.send_json({"@type": "POST", "Message": message})
        await asyncio.wait_for(future, STEP_TIMEOUT)
        return time.perf_counter() - started

    def close(self) -> None:
        if self.transport is not None:
            self.transport.disconnect(graceful=False)


async def open_member(index: int, secret: str, port: int, slots: asyncio.Semaphore) -> Member:
    token = mint_token(secret, user=f"member{index}", profile="standard", ttl=3600)
    async with slots:
        _, member = await ws_connect(
            lambda: Member(index, token), f"ws://{HOST}:{port}/chat", websocket_handshake_timeout=STEP_TIMEOUT
        )
        assert isinstance(member, Member)
        await member.join()
    return member


@dataclass
class Result:
    acked: int
    seconds: float
    histogram: list[int]
    delivered: int


async def run_load(options: Options, secret: str, port: int) -> tuple[Result, float]:
    slots = asyncio.Semaphore(CONNECT_CONCURRENCY)
    opened = time.perf_counter()
    members = await asyncio.gather(*(open_member(i, secret, port, slots) for i in range(options.members)))
    open_seconds = time.perf_counter() - opened
    for member in members:
        member.delivered = 0
    histogram = new_histogram()
    remaining = [options.posts]

    async def poster(member: Member, lane: int) -> None:
        n = 0
        while remaining[0] > 0:
            remaining[0] -= 1
            latency = await member.post(f"m{member.index}-{lane}-{n}")
            histogram[bucket(int(latency * 1e6))] += 1
            n += 1

    started = time.perf_counter()
    lanes = [poster(m, lane) for m in members[: options.posters] for lane in range(options.in_flight)]
    await asyncio.gather(*lanes)
    seconds = time.perf_counter() - started
    delivered = sum(m.delivered for m in members)
    for member in members:
        member.close()
    return Result(options.posts, seconds, histogram, delivered), open_seconds


def store_counters(admin_port: int) -> tuple[float, float]:
    """(commits, writes) of the gateway's chat store, from its /metrics."""
    with urllib.request.urlopen(f"http://{HOST}:{admin_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("gateway_chat_commits_total", "gateway_chat_writes_total"):
            values[name] = float(value)
    return values.get("gateway_chat_commits_total", 0.0), values.get("gateway_chat_writes_total", 0.0)


def stored_posts(database: Path) -> tuple[int, int]:
    """(messages, distinct client ids) in the gateway's database."""
    with contextlib.closing(sqlite3.connect(database)) as db:
        total, distinct = db.execute("select count(*), count(distinct client_id) from messages").fetchone()
    return int(total), int(distinct)


def store_posts_per_second(folder: Path, posters: int, posts: int) -> tuple[float, float]:
    """The chat store alone, in process: (durable posts/s, mean posts per commit).

    The same group-committing writer the gateway uses, with ``posters`` posts in flight: the
    durability cost without the WebSocket and fan-out work around it.
    """
    import trio

    from gateway.chat import migrate
    from gateway.chat.store import ChatStore

    url = f"sqlite:///{folder / 'store-only.db'}"
    migrate.upgrade(url)

    async def run() -> tuple[float, float]:
        store = ChatStore(url)
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            room = await store.find_or_create_room("GLOBAL", "bench", "", now=time.time())
            each = posts // posters

            async def poster(i: int) -> None:
                for j in range(each):
                    await store.post(room.uuid, f"u{i}", "bench post", client_id=f"{i}-{j}", now=time.time())

            commits, started = store.commits, time.perf_counter()
            async with trio.open_nursery() as load:
                for i in range(posters):
                    load.start_soon(poster, i)
            elapsed = time.perf_counter() - started
            nursery.cancel_scope.cancel()
        return each * posters / elapsed, each * posters / max(1, store.commits - commits)

    return trio.run(run)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    secret = secrets.token_urlsafe(32)
    print(
        f"bench.chat: {options.members} members in one room, {options.posters} posting with "
        f"{options.in_flight} posts in flight each, {options.posts} durable posts "
        "(SQLite, synchronous=FULL, group commit)",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="bench-chat-") as tmp:
        database = Path(tmp) / "chat.db"
        env = dict(os.environ)
        env.update(
            GATEWAY_JWT_SECRET=secret,
            GATEWAY_ADMIN_KEY=secrets.token_urlsafe(24),
            GATEWAY_DB_URL=f"sqlite:///{database}",
            GATEWAY_LOG_LEVEL="warning",
            GATEWAY_MAX_SESSIONS_PER_IP=str(options.members + 100),
            # Every load client is on loopback: one address for all of them.
            GATEWAY_MAX_PENDING_PER_IP=str(options.members + 100),
            # The bench posts as fast as acknowledgements come back: lift the per-user limits.
            GATEWAY_CHAT_POSTS_PER_SECOND="1000000",
            GATEWAY_CHAT_POST_BURST="1000000",
            GATEWAY_RATE_LIMIT="1000000",
            GATEWAY_RATE_BURST="1000000",
        )
        with open(Path(tmp) / "gateway.log", "w+b") as log:
            server = Server(ServerSpec("gateway", gateway_argv), env, log)
            try:
                server.wait_ready()
                meter = CpuMeter(server.pid, [os.getpid()])
                result, open_seconds = uvloop.run(run_load(options, secret, server.ws_port))
                commits, writes = store_counters(server.admin_port)
                used = meter.used()
                server_cpu = 100 * used.server / result.seconds
                print(
                    f"  load client CPU {100 * used.clients / result.seconds:.0f}% of one core; "
                    f"{commits:.0f} commits, {writes / max(commits, 1):.1f} writes per commit",
                    flush=True,
                )
            except (BenchError, OSError, TimeoutError) as exc:
                print(f"[chat] FAILED: {exc}\n{server.log_tail()}", file=sys.stderr)
                return 1
            finally:
                server.stop()
        total, distinct = stored_posts(database)
        store_rate, per_commit = store_posts_per_second(Path(tmp), options.posters, options.posts)
    print_report(options, result, open_seconds, server_cpu, total, distinct)
    if options.json:
        figures = {
            "posts_per_s": result.acked / result.seconds,
            "members": options.members,
            "ack_p99_ms": percentile_ms(result.histogram, 0.99),
            "server_cpu_pct": server_cpu,
            "ok": total == distinct == options.posts,
        }
        Path(options.json).write_text(json.dumps(figures, indent=1))
    print(
        f"chat store alone (same writer, {options.posters} posts in flight): "
        f"{store_rate:,.0f} durable posts/s, {per_commit:.0f} posts per commit; "
        f"goal >= 5,000: {'met' if store_rate >= 5000 else 'not met'}"
    )
    return 0 if total == distinct == options.posts else 1


def print_report(
    options: Options, result: Result, open_seconds: float, server_cpu: float, total: int, distinct: int
) -> None:
    rate = result.acked / result.seconds
    rows = [
        ("durable posts/s end to end (acknowledged after commit)", f"{rate:,.0f}"),
        ("acknowledgement latency p50 ms", f"{percentile_ms(result.histogram, 0.50):.1f}"),
        ("acknowledgement latency p99 ms", f"{percentile_ms(result.histogram, 0.99):.1f}"),
        (f"deliveries/s ({options.members} members per post)", f"{result.delivered / result.seconds:,.0f}"),
        ("open + join members s", f"{open_seconds:.2f}"),
        ("server CPU % of one core", f"{server_cpu:.0f}"),
        ("posts in the database / distinct client ids", f"{total} / {distinct}"),
    ]
    print()
    for label, value in rows:
        print(f"{label:<55}{value:>14}")
    verdict = (
        "every acknowledged post is stored exactly once"
        if total == distinct == options.posts
        else (f"MISMATCH: {options.posts} acknowledged, {total} stored, {distinct} distinct")
    )
    print(f"\n{verdict}")


if __name__ == "__main__":
    sys.exit(main())
