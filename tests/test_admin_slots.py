"""Admin connection slots: idle keep-alive connections give way, a request with the key always gets in.

Finding 1 of the adversarial test: 64 keep-alive connections sending ``GET /healthz`` every 5 s
held every admin slot, and publish and health checks failed for everyone until they left.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import h11
import pytest
import trio
import trio.testing

from gateway.admin.slots import MAX_CONNECTIONS, ConnectionSlots, State
from gateway.app import Gateway
from tests.helpers import ADMIN_KEY, TREE, admin_publish, http_request, make_settings, read_response

HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture
async def gateway(nursery: trio.Nursery) -> Gateway:
    result: Gateway = await nursery.start(Gateway(make_settings()).run)
    return result


async def _pinger(port: int, closed: list[int], *, task_status: trio.TaskStatus[None]) -> None:
    """The attacker: a keep-alive connection asking for /healthz every 5 s; closed, it comes back."""
    while True:
        conn = h11.Connection(h11.CLIENT)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            while await _ping(conn, stream) == 200:
                if task_status is not trio.TASK_STATUS_IGNORED:
                    task_status.started()
                    task_status = trio.TASK_STATUS_IGNORED
                conn.start_next_cycle()
                await trio.sleep(5)
        closed.append(1)


async def _ping(conn: h11.Connection, stream: trio.SocketStream) -> int:
    data = conn.send(h11.Request(method="GET", target="/healthz", headers=[("host", "x")]))
    try:
        await stream.send_all(data + (conn.send(h11.EndOfMessage()) or b""))
        return (await read_response(conn, stream))[0]
    except (h11.RemoteProtocolError, trio.BrokenResourceError):
        return 0  # closed by the server while the request was on its way


async def _open_idle(port: int, prefix: bytes = b"") -> trio.SocketStream:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    if prefix:
        await stream.send_all(prefix)
    return stream


@asynccontextmanager
async def _connections(
    port: int, prefix: bytes = b"", spacing: float = 0
) -> AsyncIterator[list[trio.SocketStream]]:
    """MAX_CONNECTIONS connections that sent ``prefix``, opened ``spacing`` seconds apart."""
    streams: list[trio.SocketStream] = []
    try:
        for _ in range(MAX_CONNECTIONS):
            streams.append(await _open_idle(port, prefix))
            await trio.sleep(spacing)
        await trio.testing.wait_all_tasks_blocked()
        yield streams
    finally:
        for stream in streams:
            await stream.aclose()


async def _closed_by_server(stream: trio.SocketStream) -> bool:
    """True if the server closed ``stream`` without answering (EOF or reset)."""
    try:
        with trio.fail_after(1):
            return await stream.receive_some(4096) == b""
    except trio.BrokenResourceError:
        return True


async def test_admin_healthz_and_publish_answer_beside_64_keep_alive_pingers(
    gateway: Gateway, autojump_clock: trio.testing.MockClock
) -> None:
    closed: list[int] = []
    async with trio.open_nursery() as attackers:
        for _ in range(MAX_CONNECTIONS):
            await attackers.start(_pinger, gateway.admin_port, closed)
        assert len(gateway.admin.slots) == MAX_CONNECTIONS and not closed
        for _ in range(6):  # over 30 s, while the pingers keep pinging
            with trio.fail_after(1):
                assert (await http_request(gateway.admin_port, "GET", "/healthz"))[0] == 200
                assert await admin_publish(gateway.admin_port, {"topic": TREE, "event": {}}) == (
                    202,
                    {"published": 1},
                )
            await trio.sleep(5)
        await trio.testing.wait_all_tasks_blocked()
        assert len(gateway.admin.slots) == MAX_CONNECTIONS  # the pingers came back: still full
        attackers.cancel_scope.cancel()
    assert closed  # the requests above got in by closing idle pingers


async def test_admin_full_closes_the_connection_idle_longest(
    gateway: Gateway, autojump_clock: trio.testing.MockClock
) -> None:
    async with _connections(gateway.admin_port, spacing=0.1) as streams:
        await streams[5].send_all(HEALTHZ)  # answered: idle again, but only since now
        await streams[0].send_all(b"GET /healthz HTTP/1.1\r\n")  # half a head holds no slot either
        with trio.fail_after(1):
            assert await streams[5].receive_some(4096)
        assert (await http_request(gateway.admin_port, "GET", "/healthz"))[0] == 200
        assert await _closed_by_server(streams[0])
        streams.append(await _open_idle(gateway.admin_port))  # full again
        assert (await http_request(gateway.admin_port, "GET", "/healthz"))[0] == 200
        assert await _closed_by_server(streams[1])
        assert len(gateway.admin.slots) == MAX_CONNECTIONS - 1


async def test_admin_keyed_request_gets_in_beside_slow_unkeyed_requests(
    gateway: Gateway, autojump_clock: trio.testing.MockClock
) -> None:
    # Requests without the key whose bodies crawl in are served, but give way to a keyed one.
    slow = b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nx"
    async with _connections(gateway.admin_port, slow) as streams:
        assert set(gateway.admin.slots.states()) == {State.SERVING}
        with trio.fail_after(1):
            assert (await admin_publish(gateway.admin_port, {"topic": TREE, "event": {}}))[0] == 202
        assert await _closed_by_server(streams[0])


async def test_admin_keyed_requests_are_never_closed_for_a_new_connection(
    gateway: Gateway, autojump_clock: trio.testing.MockClock
) -> None:
    body = json.dumps({"topic": TREE, "event": {}}).encode()
    head = (
        f"POST /api/v1/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_KEY}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    async with _connections(gateway.admin_port, head) as streams:
        assert set(gateway.admin.slots.states()) == {State.KEYED}
        refused = await _open_idle(gateway.admin_port, HEALTHZ)
        async with refused:
            assert await _closed_by_server(refused)
        await streams[0].send_all(body)  # the keyed request goes on and is answered
        with trio.fail_after(1):
            assert (await streams[0].receive_some(4096)).startswith(b"HTTP/1.1 202")


async def test_connection_slots_order_of_closing() -> None:
    slots = ConnectionSlots(3, lambda headers: headers.get("authorization") == "key")
    first, second, third = (slots.open() for _ in range(3))
    assert first and second and third
    first.serving({"authorization": "key"})
    second.serving({})
    fourth = slots.open()  # third is idle: it goes first
    assert fourth and third.scope.cancel_called and not second.scope.cancel_called
    fourth.serving({"authorization": "key"})
    fifth = slots.open()
    assert fifth and second.scope.cancel_called  # then a request without the key
    assert slots.states() == [State.KEYED, State.KEYED, State.IDLE]
    fifth.serving({"authorization": "key"})
    assert slots.open() is None  # every connection serves a keyed request
    assert not first.scope.cancel_called and not fourth.scope.cancel_called
    first.release()
    assert slots.open() is not None
