"""Load client of the reliability tests: many WebSocket sessions in one asyncio process.

Run by ``tests/reliability.py`` as ``python -m tests.wsload SPEC.json``. Raw RFC 6455 over
``asyncio.Protocol`` (as ``bench/loadclient.py`` does, for the same reason: a WebSocket library would
cost the client about as much CPU as the server under test spends). The spec names the URL, one
token per session, whether sessions reconnect when their connection drops, and optionally a
:class:`tests.stressplan.Plan` against which every message received is checked: exactly once, in
publish order per topic, only for the session's own workspaces and user, with the paths rewritten
as the protocol says.

Stdout, one line each: ``ready <subscribed> <failed> <first error>`` once every session has tried
to subscribe; ``progress <messages> <subscribed>`` whenever either changes; ``closed <n>`` after
``close``; ``report <json>`` after ``report``. Stdin commands: ``phase`` (start a new latency
phase), ``close`` (close every session: half with a close handshake, half by dropping the TCP
connection), ``drop`` (drop every connection at once, to reconnect), ``report``; end of input ends
the process.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from bench.loadclient import client_frame  # the same masked client frames as the benchmark
from tests.stressplan import IDM, STAMP_PREFIX, TASKS, Plan, Shape

CONNECT_CONCURRENCY: Final = 64
SUBSCRIBE_TIMEOUT: Final = 60.0
CLOSE_TIMEOUT: Final = 30.0
PROGRESS_INTERVAL: Final = 0.01
RECONNECT_FIRST_DELAY: Final = 0.02
RECONNECT_MAX_DELAY: Final = 0.25
MAX_EXAMPLES: Final = 10
WS_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x8, 0x9, 0xA
NO_STATUS, ABNORMAL = 1005, 1006


def next_frame(data: bytes, pos: int) -> tuple[int, int, int] | None:
    """(opcode, payload start, frame end) of the unmasked server frame at ``pos``, if complete."""
    if len(data) - pos < 2:
        return None
    length, header = data[pos + 1] & 0x7F, 2
    if length == 126:
        header = 4
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
    elif length == 127:
        header = 10
        length = int.from_bytes(data[pos + 2 : pos + 10], "big")
    if len(data) - pos < header + length:
        return None
    return data[pos] & 0x0F, pos + header, pos + header + length


# ---------------------------------------------------------------------------------------------
# Checking what sessions receive


@dataclass
class Totals:
    """Counts over every session of the process; the report is made of these."""

    received: int = 0  # messages that matched the plan, first copies only
    duplicates: int = 0
    disorder: int = 0
    cross_tenant: int = 0
    unexpected: int = 0
    malformed: int = 0
    other: int = 0  # text frames without a plan
    errors: Counter[str] = field(default_factory=Counter)
    closes: Counter[int] = field(default_factory=Counter)
    refused: Counter[int] = field(default_factory=Counter)
    connect_errors: int = 0
    subscriptions: int = 0  # successful subscribes, reconnections included
    examples: list[str] = field(default_factory=list)
    latencies: list[list[int]] = field(default_factory=lambda: [[]])

    def problem(self, kind: str, detail: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(f"{kind}: {detail}")


class Oracle:
    """The plan, indexed for checking messages: (topic, event number) -> what each audience gets."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.tree: dict[tuple[str, int], dict[str, Shape]] = {}
        self.users: dict[tuple[str, int], str] = {}
        self.counts: Counter[str] = Counter()  # messages per workspace uuid and per user
        self.topic_of: list[str] = []
        for j in range(plan.events):
            topic, shapes, user = plan.expected(j)
            self.topic_of.append(topic)
            if user is not None:
                self.users[topic, j] = user
                self.counts[user] += 1
            else:
                self.tree[topic, j] = shapes
                self.counts.update(shapes.keys())


class Checker:
    """What one session received, checked message by message against the oracle."""

    __slots__ = ("expected", "last", "oracle", "seen", "totals", "user", "workspaces")

    def __init__(self, oracle: Oracle, index: int, totals: Totals) -> None:
        plan = oracle.plan
        self.oracle = oracle
        self.totals = totals
        self.user = plan.session_user(index)
        self.workspaces = {ws.uuid for ws in plan.session_workspaces(index)}
        self.expected = plan.session_expected_count(index, oracle.counts)
        self.seen: set[tuple[str, int, str]] = set()
        self.last: dict[str, int] = {}

    def check(self, payload: bytes) -> None:
        message = json.loads(payload)
        if message.get("@type") == "error":
            self.totals.errors[str(message.get("error"))] += 1
        elif "TaskUpdated" in message:
            self._check_user(
                TASKS, message["TaskUpdated"].get("ID", ""), message["TaskUpdated"].get("TriggerOwner")
            )
        elif message.get("@type") == "idm":
            user = message.get("User", {})
            self._check_user(IDM, user.get("Uuid", ""), user.get("Login"))
        elif "Source" in message or "Target" in message:
            self._check_tree(message)
        else:
            self.totals.problem("malformed", payload[:200].decode(errors="replace"))

    def _check_user(self, topic: str, ident: str, owner: object) -> None:
        j = int(ident.split("-", 1)[1])
        if owner != self.user:
            self.totals.problem("cross_tenant", f"{self.user} got {topic} #{j} for {owner}")
        elif self.oracle.users.get((topic, j)) != self.user:
            self.totals.problem("unexpected", f"{self.user} got {topic} #{j}")
        else:
            self._count(topic, j, "")

    def _check_tree(self, message: dict[str, Any]) -> None:
        source, target = message.get("Source"), message.get("Target")
        node = target or source
        j = int(node["Uuid"].split("-", 1)[1])
        ws = json.loads(node["MetaStore"]["EventWorkspaceId"])
        shape = (message.get("Type", "CREATE"), source and source["Path"], target and target["Path"])
        topic = self.oracle.topic_of[j] if 0 <= j < len(self.oracle.topic_of) else ""
        if ws not in self.workspaces:
            self.totals.problem("cross_tenant", f"{self.user} got tree #{j} for workspace {ws}")
        elif self.oracle.tree.get((topic, j), {}).get(ws) != shape:
            self.totals.problem("unexpected", f"{self.user} got {shape} for #{j} in {ws}")
        elif any(key.startswith("pydio:") for n in (source, target) if n for key in n.get("MetaStore", {})):
            self.totals.problem("unexpected", f"{self.user} got pydio: meta in #{j}")
        else:
            self._count(topic, j, ws)
            stamp = node.get("Etag", "")
            if stamp.startswith(STAMP_PREFIX):
                latency = time.time_ns() // 1000 - int(stamp[len(STAMP_PREFIX) :])
                self.totals.latencies[-1].append(latency)

    def _count(self, topic: str, j: int, ws: str) -> None:
        key = (topic, j, ws)
        if key in self.seen:
            self.totals.problem("duplicates", f"{self.user} got {key} twice")
            return
        self.seen.add(key)
        if j < self.last.get(topic, -1):
            self.totals.problem("disorder", f"{self.user} got {topic} #{j} after #{self.last[topic]}")
        self.last[topic] = j
        self.totals.received += 1

    @property
    def missing(self) -> int:
        return self.expected - len(self.seen)


# ---------------------------------------------------------------------------------------------
# Sessions and their connections


class Connection(asyncio.Protocol):
    """One TCP connection of a session: upgrade, subscribe, then server frames until it ends."""

    def __init__(self, session: Session) -> None:
        loop = asyncio.get_running_loop()
        self.session = session
        self.transport: asyncio.Transport | None = None
        self.subscribed: asyncio.Future[bool] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self.live = False
        self.ended_by_us = False
        self._key = base64.b64encode(os.urandom(16))
        self._upgraded = False
        self._buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        url = self.session.client.url
        request = (
            f"GET {url.path or '/'} HTTP/1.1\r\nHost: {url.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {self._key.decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        )
        transport.write(request.encode())

    def data_received(self, data: bytes) -> None:
        data = self._buffer + data if self._buffer else data
        if not self._upgraded:
            data = self._upgrade(data)
        pos = 0
        while self._upgraded and (frame := next_frame(data, pos)) is not None:
            opcode, start, pos = frame
            self._on_frame(opcode, data[start:pos])
        self._buffer = data[pos:]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.live and not self.ended_by_us:
            self.session.client.totals.closes[ABNORMAL] += 1
        self.live = False
        self._resolve(False)
        if not self.lost.done():
            self.lost.set_result(None)

    def _resolve(self, subscribed: bool) -> None:
        if not self.subscribed.done():
            self.subscribed.set_result(subscribed)

    def _upgrade(self, data: bytes) -> bytes:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            return data
        head = data[:end]
        status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else 0
        accept = base64.b64encode(hashlib.sha1(self._key + WS_GUID).digest())
        if status != 101 or accept not in head:
            self.session.client.totals.refused[status] += 1
            self.abort()
            return b""
        self._upgraded = True
        self.send(
            OP_TEXT, json.dumps({"@type": "subscribe", "ack": True, "jwt": self.session.token}).encode()
        )
        return data[end + 4 :]

    def _on_frame(self, opcode: int, payload: bytes) -> None:
        totals = self.session.client.totals
        if opcode == OP_TEXT and self.live:
            if self.session.checker is not None:
                self.session.checker.check(payload)
            else:
                message = json.loads(payload)
                if message.get("@type") == "error":
                    totals.errors[str(message.get("error"))] += 1
                else:
                    totals.other += 1
        elif opcode == OP_TEXT:
            reply = json.loads(payload)
            if reply.get("@type") == "subscribed":
                self.live = True
                totals.subscriptions += 1
                self._resolve(True)
            else:
                totals.errors[str(reply.get("error"))] += 1
        elif opcode == OP_PING and self.session.client.answer_pings:
            self.send(OP_PONG, payload)
        elif opcode == OP_CLOSE:
            self._on_close(payload)

    def _on_close(self, payload: bytes) -> None:
        if not self.ended_by_us:  # the server closed first: record its code, answer, hang up
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else NO_STATUS
            self.session.client.totals.closes[code] += 1
            self.send(OP_CLOSE, payload[:2])
            self.ended_by_us = True
        self.live = False
        self._upgraded = False
        if self.transport is not None:
            self.transport.close()

    def send(self, opcode: int, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame(opcode, payload))

    def close_handshake(self) -> None:
        """Start a normal close (1000); the connection ends when the server answers."""
        self.ended_by_us = True
        self.send(OP_CLOSE, (1000).to_bytes(2, "big"))

    def abort(self) -> None:
        self.ended_by_us = True
        self.live = False
        self._upgraded = False
        if self.transport is not None:
            self.transport.abort()


class Session:
    """One client: connects, subscribes, and (in reconnect mode) connects again whenever dropped."""

    def __init__(self, client: LoadClient, index: int, token: str) -> None:
        self.client = client
        self.token = token
        self.checker = Checker(client.oracle, index, client.totals) if client.oracle is not None else None
        self.connection: Connection | None = None
        self.stopping = False
        self.first_attempt: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    async def run(self, slots: asyncio.Semaphore) -> None:
        delay = RECONNECT_FIRST_DELAY
        while not self.stopping:
            subscribed = False
            if not self.first_attempt.done():
                async with slots:  # the first connections ramp up; reconnections all go at once
                    subscribed = await self._connect()
                self.first_attempt.set_result(subscribed)
            else:
                subscribed = await self._connect()
            if subscribed:
                delay = RECONNECT_FIRST_DELAY
                assert self.connection is not None
                await self.connection.lost
            if not self.client.reconnect or self.stopping:
                return
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, RECONNECT_MAX_DELAY)

    async def _connect(self) -> bool:
        url = self.client.url
        loop = asyncio.get_running_loop()
        connection = self.connection = Connection(self)
        try:
            await loop.create_connection(lambda: connection, url.hostname, url.port)
        except OSError:
            self.client.totals.connect_errors += 1
            return False
        try:
            return await asyncio.wait_for(asyncio.shield(connection.subscribed), SUBSCRIBE_TIMEOUT)
        except TimeoutError:
            connection.abort()
            return False

    async def close(self, graceful: bool) -> None:
        self.stopping = True
        connection = self.connection
        if connection is None or connection.lost.done():
            return
        if graceful and connection.live:
            connection.close_handshake()
        else:
            connection.abort()
        try:
            await asyncio.wait_for(asyncio.shield(connection.lost), CLOSE_TIMEOUT)
        except TimeoutError:
            self.client.totals.problem("unexpected", "the server did not answer a close in time")
            connection.abort()


class LoadClient:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.url = urlsplit(spec["url"])
        self.reconnect = bool(spec.get("reconnect", False))
        self.answer_pings = bool(spec.get("answer_pings", True))
        self.totals = Totals()
        plan = spec.get("plan")
        self.oracle = Oracle(Plan.from_json(plan)) if plan else None
        self.sessions = [Session(self, i, token) for i, token in enumerate(spec["tokens"])]
        self.tasks: list[asyncio.Task[None]] = []

    def live(self) -> int:
        return sum(1 for s in self.sessions if s.connection is not None and s.connection.live)

    async def start(self) -> None:
        slots = asyncio.Semaphore(CONNECT_CONCURRENCY)
        started = time.monotonic()
        self.tasks = [asyncio.create_task(s.run(slots)) for s in self.sessions]
        results = await asyncio.gather(*(s.first_attempt for s in self.sessions))
        ok = sum(results)
        first_error = next(iter(self.totals.refused or self.totals.errors), "-")
        emit(f"progress {self.totals.received} {self.live()}")  # the state as of "ready"
        emit(f"ready {ok} {len(results) - ok} {first_error} {time.monotonic() - started:.3f}")

    async def close_all(self) -> None:
        await asyncio.gather(*(s.close(graceful=i % 2 == 0) for i, s in enumerate(self.sessions)))
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        emit(f"closed {len(self.sessions)}")

    def report(self) -> dict[str, Any]:
        t = self.totals
        checkers = [s.checker for s in self.sessions if s.checker is not None]
        return {
            "sessions": len(self.sessions),
            "live": self.live(),
            "expected": sum(c.expected for c in checkers),
            "received": t.received,
            "missing": sum(max(0, c.missing) for c in checkers),
            "duplicates": t.duplicates,
            "disorder": t.disorder,
            "cross_tenant": t.cross_tenant,
            "unexpected": t.unexpected,
            "malformed": t.malformed,
            "other": t.other,
            "errors": dict(t.errors),
            "closes": {str(code): n for code, n in t.closes.items()},
            "refused": {str(status): n for status, n in t.refused.items()},
            "connect_errors": t.connect_errors,
            "subscriptions": t.subscriptions,
            "examples": t.examples,
            "latency_ms": [_latency_summary(phase) for phase in t.latencies],
        }


def _latency_summary(values: list[int]) -> dict[str, float]:
    if not values:
        return {"count": 0, "p50": 0.0, "p99": 0.0, "max": 0.0}
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000

    return {"count": len(ordered), "p50": at(0.50), "p99": at(0.99), "max": ordered[-1] / 1000}


def emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def report_progress(client: LoadClient) -> None:
    last = (-1, -1)
    while True:
        now = (client.totals.received, client.live())
        if now != last:
            emit(f"progress {now[0]} {now[1]}")
            last = now
        await asyncio.sleep(PROGRESS_INTERVAL)


async def run(spec: dict[str, Any]) -> None:
    client = LoadClient(spec)
    loop = asyncio.get_running_loop()
    commands = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
    await client.start()
    progress = asyncio.create_task(report_progress(client))
    while line := (await commands.readline()).decode().strip():
        if line == "phase":
            client.totals.latencies.append([])
        elif line == "close":
            await client.close_all()
        elif line == "drop":  # a network blip: every connection lost at once (they reconnect)
            for session in client.sessions:
                if session.connection is not None:
                    session.connection.abort()
        elif line == "report":
            emit("report " + json.dumps(client.report()))
    progress.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await progress
    for session in client.sessions:
        session.stopping = True
        if session.connection is not None:
            session.connection.abort()


def main() -> int:
    with open(sys.argv[1]) as spec:
        asyncio.run(run(json.load(spec)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
