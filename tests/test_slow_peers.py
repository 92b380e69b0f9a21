"""Slow and dead peers on real TCP: a client that stops reading, stops answering, vanishes, or never
finishes its handshake costs the others nothing and is closed with its code, in time.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from wsproto.events import Ping
from wsproto.frame_protocol import FrameProtocol, Opcode

from gateway.connection.writer import Writer
from gateway.protocol import text_frame
from gateway.session import LAGGING
from loadclient.interface import Command
from loadclient.plan import Plan
from tests.helpers import TREE, RawClient, admin_publish, hand_session, make_hub, recv_json, token, ws_client
from tests.process import gateway_env, gateway_process
from tests.reliability import (
    TIMED,
    UPGRADE_REQUEST,
    cumulative_deliveries,
    eventually,
    footprint,
    load_client,
    metric,
    netns_problem,
    plan_tokens,
    publish_plan,
    raw_client,
    read_to_the_end,
    record,
    scrape,
    settle_footprint,
    veth_namespace,
)

KEEPALIVE = {"GATEWAY_PING_INTERVAL": "1", "GATEWAY_PING_TIMEOUT": "1", "GATEWAY_CLOSE_TIMEOUT": "1"}
# Ping every 1 s, 1 s to answer, timers checked every 0.5 s: a peer is declared dead within 2.5 s.
KEEPALIVE_DEADLINE = 2.5
PHASE = 2_000  # events per latency phase
READERS = Plan(sessions=30, events=2 * PHASE, users=30, workspaces=1, mixed=False)


@TIMED
async def test_slow_peers_stuck_reader_closed_4008_while_others_get_everything_in_time(
    tmp_path: Path, timed: bool
) -> None:
    env = gateway_env(GATEWAY_SLOW_CONSUMER_LAG_BYTES="150000")  # close_timeout: the default 5 s
    jwt = token("stuck", workspaces=[READERS.base_workspaces[0].claim()])
    publish: dict[str, Any] = {"batch": 100, "window": 2, "cumulative": cumulative_deliveries(READERS)}
    with trio.fail_after(120):
        async with gateway_process(env=env) as gw:
            before = await footprint(gw.admin_port, gw.process.pid)
            async with load_client(
                f"{gw.ws_url}/ws", plan_tokens(READERS), tmp_path, plan=READERS
            ) as readers:
                await publish_plan(gw.admin_port, READERS, readers, stop=PHASE, **publish)  # the baseline
                # Two clients stop reading: one resumes once the server gave up on it, one never does.
                resumes = await raw_client(gw.ws_port, jwt=jwt, rcvbuf=4096)
                never = await raw_client(gw.ws_port, jwt=jwt, rcvbuf=4096)
                await readers.command(Command.PHASE)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_resume_after_slow_consumer_close, gw.admin_port, resumes)
                    await publish_plan(gw.admin_port, READERS, readers, start=PHASE, **publish)
                report = await readers.report()
                samples = await scrape(gw.admin_port)
                # The one that never reads again is dropped close_timeout after its close began.
                await eventually(
                    _sessions_at(gw.admin_port, READERS.sessions), 5 + 5, "the stuck client dropped"
                )
                await read_to_the_end(never)
                await readers.close_sessions()
            after = await settle_footprint(gw.admin_port, gw.process.pid, before)
    closes = metric(samples, "gateway_slow_consumer_closes_total")
    record("stuck readers", latency_ms=report["latency_ms"], received=report["received"], closes_4008=closes)
    problems = [report[k] for k in ("missing", "duplicates", "disorder", "cross_tenant", "unexpected")]
    assert problems == [0] * 5 and report["received"] == READERS.sessions * READERS.events, report["examples"]
    assert report["closes"] == {}
    assert resumes.close_code() == 4008
    assert resumes.texts()[-1] == {"@type": "error", "error": "slow_consumer", "message": _SLOW}
    assert metric(samples, "gateway_slow_consumer_closes_total") == 2
    assert metric(samples, "gateway_session_closes_total", code="4008") == 2
    assert (after.sessions, after.tasks, after.fds) == (0, before.tasks, before.fds), f"{before} -> {after}"
    alone, with_stuck = report["latency_ms"]
    assert alone["count"] == with_stuck["count"] == READERS.sessions * PHASE
    if timed:  # generous (the machine is shared); a reader held up by the stuck clients would wait seconds
        assert with_stuck["p99"] <= 3 * alone["p99"] + 1000, report["latency_ms"]


_SLOW = LAGGING


async def _resume_after_slow_consumer_close(admin_port: int, client: RawClient) -> None:
    async def closed() -> bool:
        return metric(await scrape(admin_port), "gateway_slow_consumer_closes_total") >= 1

    await eventually(closed, 60, "a slow consumer closed")
    await read_to_the_end(client)


def _sessions_at(admin_port: int, count: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        samples = await scrape(admin_port)
        return metric(samples, "gateway_sessions", endpoint="events") == count

    return check


async def test_slow_peers_unanswered_pings_close_4002_and_answering_client_stays() -> None:
    with trio.fail_after(30):
        async with gateway_process(env=gateway_env(**KEEPALIVE)) as gw, ws_client(f"{gw.ws_url}/ws") as good:
            await good.send_message(json.dumps({"@type": "subscribe", "ack": True, "jwt": token()}))
            assert (await recv_json(good))["@type"] == "subscribed"
            mute = await raw_client(gw.ws_port, jwt=token("mute"))  # reads everything, answers nothing
            started = trio.current_time()
            with trio.fail_after(KEEPALIVE_DEADLINE + 10):
                await read_to_the_end(mute)
            waited = trio.current_time() - started
            # Still connected after more than one ping interval: the answering client gets events.
            event = {"Type": "DELETE", "Source": {"Uuid": "n-1", "Path": "/ds/common/x.txt"}}
            assert (await admin_publish(gw.admin_port, {"topic": TREE, "event": event}))[0] == 202
            assert (await recv_json(good))["Source"]["Path"] == "common-files/x.txt"
    record("pings unanswered", closed_after_s=waited, code=mute.close_code())
    assert any(isinstance(e, Ping) for e in mute.events)
    assert mute.close_code() == 4002
    assert mute.texts()[-1]["error"] == "ping_timeout"
    assert waited >= 1  # not before a ping was due


async def test_slow_peers_silent_peer_without_fin_closed_by_keepalive() -> None:
    """The half-open peer, simulated on loopback: it stops reading and answering and never hangs up."""
    with trio.fail_after(30):
        async with gateway_process(env=gateway_env(**KEEPALIVE)) as gw:
            baseline = await footprint(gw.admin_port, gw.process.pid)
            silent = await raw_client(gw.ws_port, jwt=token("silent"))
            after = await settle_footprint(
                gw.admin_port, gw.process.pid, baseline, within=KEEPALIVE_DEADLINE + 10
            )
            samples = await scrape(gw.admin_port)
            await trio.aclose_forcefully(silent.stream)
    assert (after.sessions, after.tasks, after.fds) == (0, baseline.tasks, baseline.fds), (
        f"{baseline} -> {after}"
    )
    assert metric(samples, "gateway_session_closes_total", code="4002") == 1


@pytest.fixture
def namespaces() -> None:
    if (problem := netns_problem()) is not None:
        pytest.skip(f"a real half-open peer needs a network namespace and a veth pair: {problem}")


@pytest.mark.usefixtures("namespaces")
async def test_slow_peers_half_open_peer_closed_by_keepalive(tmp_path: Path) -> None:
    """A real half-open connection: the client's host drops off the network (its link goes down), so
    no FIN or RST ever reaches the gateway, whose packets go unanswered."""
    with trio.fail_after(60):
        async with veth_namespace() as ns:
            env = gateway_env(**KEEPALIVE)
            async with gateway_process(env=env, listen=f"{ns.host_address}:0") as gw:
                baseline = await footprint(gw.admin_port, gw.process.pid)
                url = f"ws://{ns.host_address}:{gw.ws_port}/ws"
                async with load_client(url, [token("remote")], tmp_path, prefix=ns.exec_prefix) as peer:
                    assert peer.ready is not None and peer.ready.subscribed == 1, peer.stderr
                    await ns.cut_cable()
                    after = await settle_footprint(
                        gw.admin_port, gw.process.pid, baseline, within=KEEPALIVE_DEADLINE + 10
                    )
                    samples = await scrape(gw.admin_port)
    assert (after.sessions, after.tasks, after.fds) == (0, baseline.tasks, baseline.fds), (
        f"{baseline} -> {after}"
    )
    assert metric(samples, "gateway_session_closes_total", code="4002") == 1


async def _closed_after(stream: trio.SocketStream) -> float:
    """Read until the server hangs up; return how long that took."""
    started = trio.current_time()
    try:
        while await stream.receive_some(4096):
            pass
    except trio.BrokenResourceError:
        pass
    return trio.current_time() - started


@TIMED
async def test_slow_peers_connection_without_handshake_closed_at_handshake_timeout(timed: bool) -> None:
    with trio.fail_after(30):
        async with gateway_process(env=gateway_env(GATEWAY_HANDSHAKE_TIMEOUT="2")) as gw:
            async with await trio.open_tcp_stream("127.0.0.1", gw.ws_port) as stream:
                waited = await _closed_after(stream)
            samples = await scrape(gw.admin_port)
    record("no handshake", closed_after_s=waited, handshake_timeout_s=2)
    assert waited >= 2 * 0.8  # not before the deadline
    assert not timed or waited <= 2 + 5
    assert metric(samples, "gateway_connections_refused_total", reason="handshake_timeout") == 1


@TIMED
async def test_slow_peers_slowloris_handshake_closed_at_the_deadline_despite_activity(timed: bool) -> None:
    request = UPGRADE_REQUEST.format(path="/ws").encode()
    sent = 0

    async def drip(stream: trio.SocketStream) -> None:
        nonlocal sent
        try:
            for i in range(len(request)):
                await stream.send_all(request[i : i + 1])
                sent += 1
                await trio.sleep(1)  # the attack's pace: one byte a second
        except trio.BrokenResourceError:
            pass

    with trio.fail_after(30):
        async with gateway_process(env=gateway_env(GATEWAY_HANDSHAKE_TIMEOUT="3")) as gw:
            stream = await trio.open_tcp_stream("127.0.0.1", gw.ws_port)
            async with stream, trio.open_nursery() as nursery:
                nursery.start_soon(drip, stream)
                waited = await _closed_after(stream)
                nursery.cancel_scope.cancel()
            samples = await scrape(gw.admin_port)
    record(
        "slowloris", closed_after_s=waited, handshake_timeout_s=3, bytes_sent=sent, request_bytes=len(request)
    )
    assert waited >= 3 * 0.8  # not before the deadline
    assert not timed or waited <= 3 + 5
    assert 2 <= sent < len(request)  # it was still sending when the deadline passed
    assert metric(samples, "gateway_connections_refused_total", reason="handshake_timeout") == 1


STUCK_WS = {"uuid": "ws-stuck", "slug": "stuck", "roots": ["/ds/stuck"], "permissions": "rw"}
TRIALS = 40


async def test_slow_peers_slow_consumer_close_never_cuts_a_frame_in_two(tmp_path: Path) -> None:
    """Regression: the close of a slow consumer discarded its queue, and with it the unwritten rest of
    a frame whose first bytes a direct write had already put on the wire; the client then read the
    error and close frames as the end of that frame (wsproto: 1007) instead of getting 4008.

    The race: a batch of frames half written, the next batch putting the session past its lag
    bound before the writer task takes the rest. Two publishes at once (2, then 3 events of 30 KB
    against a 64 KiB bound) hit it in about one trial in five with the old outbox; whatever the
    interleaving, the client must read every frame whole, then the error, then 4008.
    """
    env = gateway_env(GATEWAY_SLOW_CONSUMER_LAG_BYTES="65536", GATEWAY_CLOSE_TIMEOUT="10")

    def events(first: int, count: int) -> dict[str, object]:
        return {"events": [{"topic": TREE, "event": {"Type": "DELETE", "Source": {
            "Uuid": f"n-{i}", "Path": f"/ds/stuck/{i}.txt", "Etag": "e" * 30_000}}}
            for i in range(first, first + count)]}  # fmt: skip

    codes: Counter[int | None] = Counter()
    with trio.fail_after(120):
        async with gateway_process(env=env) as gw:
            for trial in range(TRIALS):
                client = await raw_client(
                    gw.ws_port, jwt=token(f"u{trial}", workspaces=[STUCK_WS]), rcvbuf=4096
                )
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(admin_publish, gw.admin_port, events(0, 2))
                    nursery.start_soon(admin_publish, gw.admin_port, events(2, 3))
                await read_to_the_end(client)
                codes[client.close_code()] += 1
    record("slow consumer close never cuts a frame", trials=TRIALS, codes=dict(codes))
    assert codes == {4008: TRIALS}


async def test_slow_peers_overflow_keeps_the_rest_of_a_half_written_frame() -> None:
    """The same race step by step, in process: a direct write takes half of a frame, the queue
    overflows before the writer task sends the rest. The rest still goes first, then the error."""
    wire = bytearray()

    class HalfTaker:
        """Takes half of a write at once; the writer task's awaited writes go through whole."""

        direct = True

        def try_send(self, data: bytes | memoryview) -> int:
            half = len(data) // 2
            wire.extend(data[:half])
            return half

        async def send_all(self, data: bytes | memoryview, progress: object = None) -> None:
            await trio.lowlevel.checkpoint()
            wire.extend(data)

    session = hand_session(make_hub(), max_lag=10_000)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            session.writer = Writer(HalfTaker(), session.next_chunk, nursery.start_soon)  # type: ignore[arg-type]
            session.send(text_frame("x" * 3000))
            session.flush()  # half of it on the wire; the writer task has the rest
            for _ in range(4):
                session.send(text_frame("y" * 3000))  # overflow: closed as a slow consumer
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    reader = FrameProtocol(client=True, extensions=[])
    reader.receive_bytes(bytes(wire))
    frames = [(frame.opcode, frame.payload) for frame in reader.received_frames()]
    assert [opcode for opcode, _ in frames] == [Opcode.TEXT, Opcode.TEXT]
    assert frames[0][1] == "x" * 3000 and json.loads(str(frames[1][1]))["error"] == "slow_consumer"
    assert session.closing is not None and session.closing.code == 4008
