"""Limits at the door: sessions overall and per client address, the admin API body, browser Origins.

``tests/test_server.py`` checks the status codes of the session limits and a table of Origins; this
file adds what a client relies on beyond the status (the JSON error, ``Retry-After``, slots that free
up, the same rules on ``/chat``, real sockets), the admin API's body and header limits, and handshakes
written byte for byte the way a browser writes them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import h11
import pytest
import trio
import trio.testing
from trio_websocket import ConnectionRejected

from gateway.app import Gateway
from gateway.config import Settings
from tests.helpers import (
    ADMIN_KEY,
    TREE,
    Harness,
    make_settings,
    read_response,
    recv_json,
    socket_pair,
    token,
    ws_client,
)

ENDPOINTS = pytest.mark.parametrize("path", ["/ws", "/chat"])


def refusal_body(refused: ConnectionRejected) -> dict[str, Any]:
    headers = {k.decode().lower(): v.decode() for k, v in refused.headers}
    assert headers["content-type"] == "application/json"
    body = json.loads(refused.body or b"")
    assert isinstance(body, dict) and body["message"]
    body["retry-after"] = headers.get("retry-after")
    return body


def refused_count(harness: Harness, reason: str) -> float:
    value = harness.gateway.metrics.registry.get_sample_value(
        "gateway_connections_refused_total", {"reason": reason}
    )
    return value or 0.0


@asynccontextmanager
async def open_sessions(
    harness: Harness, count: int, path: str, remote: str, *, subscribe: bool = True
) -> AsyncIterator[None]:
    """``count`` sessions from ``remote``: subscribed (as different users), or only upgraded."""
    async with AsyncExitStack() as stack:
        for n in range(count):
            if subscribe:
                await stack.enter_async_context(harness.subscribed(token(f"u{n}"), path, remote=remote))
            else:
                await stack.enter_async_context(harness.connect(path, remote=remote))
        yield


# ---------------------------------------------------------------------------------------------
# Sessions


@ENDPOINTS
async def test_limits_per_ip_refused_429_with_retry_after(nursery: trio.Nursery, path: str) -> None:
    harness = await Harness(nursery, make_settings(max_sessions=10, max_sessions_per_ip=2)).start()
    with trio.fail_after(10):
        async with open_sessions(harness, 2, path, "10.0.0.1"):
            body = refusal_body(await harness.refusal(path, remote="10.0.0.1"))
            assert body["error"] == "too_many_sessions_from_ip" and body["retry-after"] == "5"
            async with harness.connect(path, remote="10.0.0.2"):  # another address is not affected
                pass
        assert refused_count(harness, "too_many_sessions_from_ip") == 1
        # The slots free up when the sessions end: the address may connect again.
        async with harness.subscribed(token(), path), harness.connect(path, remote="10.0.0.1"):
            pass


@ENDPOINTS
async def test_limits_overall_refused_503_with_retry_after(nursery: trio.Nursery, path: str) -> None:
    harness = await Harness(nursery, make_settings(max_sessions=3, max_sessions_per_ip=100)).start()
    with trio.fail_after(10):
        async with open_sessions(harness, 3, path, "10.0.0.1"):
            for remote in ("10.0.0.1", "10.0.0.9"):
                refused = await harness.refusal(path, remote=remote)
                assert refused.status_code == 503
                body = refusal_body(refused)
                assert body["error"] == "too_many_sessions" and body["retry-after"] == "5"
            assert len(harness.gateway.hub.sessions) == 3  # refusals never became sessions
        async with harness.subscribed(token(), path):  # room again once they are gone
            pass
    assert refused_count(harness, "too_many_sessions") == 2


async def test_limits_unsubscribed_connections_have_their_own_budget(nursery: trio.Nursery) -> None:
    """The finding: two addresses holding connections that never subscribe kept a legitimate
    client at 503. They now fill the pending budget, per address first, never the sessions'."""
    settings = make_settings(max_sessions=3, max_pending_connections=5, max_pending_per_ip=2)
    harness = await Harness(nursery, settings).start()
    with trio.fail_after(10):
        async with (
            open_sessions(harness, 2, "/ws", "10.0.0.1", subscribe=False),
            open_sessions(harness, 2, "/chat", "10.0.0.2", subscribe=False),
        ):
            for attacker in ("10.0.0.1", "10.0.0.2"):
                body = refusal_body(await harness.refusal("/ws", remote=attacker))
                assert body["error"] == "too_many_pending_from_ip"
            # Sessions are another budget: a legitimate client gets in, up to max_sessions.
            async with open_sessions(harness, 3, "/ws", "10.0.0.3"):
                assert (
                    refusal_body(await harness.refusal("/ws", remote="10.0.0.4"))["error"]
                    == "too_many_sessions"
                )
            async with harness.connect("/ws", remote="10.0.0.4"):  # the fifth pending connection
                assert (
                    refusal_body(await harness.refusal("/ws", remote="10.0.0.5"))["error"]
                    == "too_many_pending"
                )


async def test_limits_count_an_ipv6_client_by_its_prefix(nursery: trio.Nursery) -> None:
    settings = make_settings(max_pending_per_ip=2, ipv6_prefix_length=64)
    harness = await Harness(nursery, settings).start()
    with trio.fail_after(10):
        async with harness.connect(remote="2001:db8:0:1::a"), harness.connect(remote="2001:db8:0:1::b"):
            # Another address of the same /64: the same budget. Another /64: its own.
            assert (await harness.refusal(remote="2001:db8:0:1::c")).status_code == 429
            async with harness.connect(remote="2001:db8:0:2::a"):
                pass
        async with harness.connect(remote="::ffff:10.0.0.1"), harness.connect(remote="10.0.0.1"):
            assert (await harness.refusal(remote="::ffff:10.0.0.1")).status_code == 429  # IPv4-mapped


async def test_limits_order_of_refusals(nursery: trio.Nursery) -> None:
    """Unknown path, then Origin, then capacity: a refused Origin is told so even when full."""
    harness = await Harness(
        nursery, make_settings(max_sessions=1, allowed_origins=("https://ok.example",))
    ).start()
    with trio.fail_after(10):
        async with harness.subscribed(token()):
            evil = [(b"Origin", b"https://evil.example")]
            assert (await harness.refusal("/nope", headers=evil)).status_code == 404
            assert (await harness.refusal("/ws", headers=evil)).status_code == 403
            assert (
                await harness.refusal("/ws", headers=[(b"Origin", b"https://ok.example")])
            ).status_code == 503


async def test_limits_draining_refused_503(harness: Harness) -> None:
    with trio.fail_after(10):
        harness.gateway.websocket.drain()
        refused = await harness.refusal()
    assert refused.status_code == 503
    body = refusal_body(refused)
    assert body["error"] == "shutting_down" and body["retry-after"] == "5"


async def test_limits_per_ip_over_real_sockets(nursery: trio.Nursery, tmp_path: Path) -> None:
    """Over TCP the address is the peer's: a third connection from 127.0.0.1 gets 429."""
    settings = make_settings(db_url=f"sqlite:///{tmp_path}/chat.db", max_sessions_per_ip=2)
    gateway: Gateway = await nursery.start(Gateway(settings).run)
    url = f"ws://127.0.0.1:{gateway.ws_port}/ws"
    with trio.fail_after(10):
        async with ws_client(url) as first, ws_client(url) as second:
            for ws in (first, second):
                await ws.send_message(json.dumps({"@type": "subscribe", "ack": True, "jwt": token()}))
                assert (await recv_json(ws))["@type"] == "subscribed"
            status, headers, body = await tcp_handshake(gateway.ws_port, "/ws")
            assert (status, json.loads(body)["error"]) == (429, "too_many_sessions_from_ip")
            assert headers["retry-after"] == "5"
        await trio.testing.wait_all_tasks_blocked()  # the server has seen both closes
        assert gateway.hub.sessions == set()
        async with ws_client(url) as ws:
            await ws.send_message(json.dumps({"@type": "subscribe", "ack": True, "jwt": token()}))
            assert (await recv_json(ws))["@type"] == "subscribed"


# ---------------------------------------------------------------------------------------------
# The admin API


@pytest.fixture
async def admin(nursery: trio.Nursery, tmp_path: Path) -> Gateway:
    settings = make_settings(db_url=f"sqlite:///{tmp_path}/chat.db", admin_max_body=4096, admin_max_batch=3)
    gateway: Gateway = await nursery.start(Gateway(settings).run)
    return gateway


async def raw_http(port: int, data: bytes, *, read_all: bool = True) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are; parse the one response that comes back."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))  # let h11 expect a response
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(data)
        return await read_response(conn, stream)


def publish_request(
    body: bytes, *, key: str = ADMIN_KEY, length: int | None = None, chunked: bool = False
) -> bytes:
    head = f"POST /api/v1/publish HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
    if chunked:
        head += "Transfer-Encoding: chunked\r\n\r\n"
        chunks = b"".join(f"{len(part):x}\r\n".encode() + part + b"\r\n" for part in _pieces(body, 1000))
        return head.encode() + chunks + b"0\r\n\r\n"
    head += f"Content-Length: {len(body) if length is None else length}\r\n\r\n"
    return head.encode() + body


def _pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def padded_publish(size: int) -> bytes:
    """A valid publish body of exactly ``size`` bytes."""
    empty = json.dumps({"topic": TREE, "event": {"pad": ""}}).encode()
    return json.dumps({"topic": TREE, "event": {"pad": "x" * (size - len(empty))}}).encode()


async def test_limits_admin_body_at_the_limit_accepted_one_over_413(admin: Gateway) -> None:
    limit = admin.settings.admin_max_body
    with trio.fail_after(10):
        status, _, body = await raw_http(admin.admin_port, publish_request(padded_publish(limit)))
        assert (status, json.loads(body)) == (202, {"published": 1})
        status, headers, body = await raw_http(admin.admin_port, publish_request(padded_publish(limit + 1)))
    assert status == 413 and json.loads(body)["error"] == "body_too_large"
    assert headers.get("connection") == "close"  # the rest of the body is not read


async def test_limits_admin_chunked_body_over_the_limit_413(admin: Gateway) -> None:
    """Without a Content-Length the server counts while reading and answers once past the limit.

    The client sends twice the limit and waits, without the last chunk: the answer cannot come from
    the end of the body. (A client that goes on sending after the 413 may see the connection reset
    instead: the server closes without draining, like any server that does not linger.)
    """
    limit = admin.settings.admin_max_body
    with trio.fail_after(10):
        status, _, body = await raw_http(
            admin.admin_port, publish_request(padded_publish(limit), chunked=True)
        )
        assert status == 202
        unfinished = publish_request(padded_publish(2 * limit), chunked=True).removesuffix(b"0\r\n\r\n")
        status, _, body = await raw_http(admin.admin_port, unfinished)
    assert status == 413 and json.loads(body)["error"] == "body_too_large"


@pytest.mark.parametrize("key", [ADMIN_KEY, "wrong"])
async def test_limits_admin_huge_declared_length_refused_before_reading(admin: Gateway, key: str) -> None:
    """A 10 GB Content-Length is refused at once (no body is sent, and none is waited for)."""
    with trio.fail_after(10):
        status, _, body = await raw_http(admin.admin_port, publish_request(b"", key=key, length=10 * 1024**3))
    assert status == 413 and json.loads(body)["error"] == "body_too_large"


async def test_limits_admin_batch_over_the_maximum_400(admin: Gateway) -> None:
    events = [{"topic": TREE, "event": {}}] * (admin.settings.admin_max_batch + 1)
    with trio.fail_after(10):
        status, _, body = await raw_http(
            admin.admin_port, publish_request(json.dumps({"events": events}).encode())
        )
    assert status == 400 and "at most" in json.loads(body)["message"]


async def test_limits_admin_oversized_headers_431(admin: Gateway) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 100_000  # and no end in sight
    with trio.fail_after(10):
        status, _, _ = await raw_http(admin.admin_port, request)
    assert status == 431
    with trio.fail_after(10):
        assert (await raw_http(admin.admin_port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))[0] == 200


# ---------------------------------------------------------------------------------------------
# Origin, from a browser-like client

# What Chrome sends to open a WebSocket (RFC 6455 section 4.1 plus its usual headers).
BROWSER_HANDSHAKE = (
    "GET {path} HTTP/1.1\r\n"
    "Host: gateway.example.com:5050\r\n"
    "Connection: Upgrade\r\n"
    "Pragma: no-cache\r\n"
    "Cache-Control: no-cache\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0\r\n"
    "Upgrade: websocket\r\n"
    "{origin}"
    "Sec-WebSocket-Version: 13\r\n"
    "Accept-Encoding: gzip, deflate, br, zstd\r\n"
    "Accept-Language: en-US,en;q=0.9\r\n"
    "Cookie: pydio_jwt=not-for-us\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    "\r\n"
)


async def read_handshake_answer(stream: trio.abc.Stream, path: str) -> tuple[int, dict[str, str], bytes]:
    """The server's answer to an upgrade request already sent on ``stream``: status, headers, body."""
    conn = h11.Connection(h11.CLIENT)
    upgrade = [("host", "x"), ("connection", "Upgrade"), ("upgrade", "websocket")]
    conn.send(h11.Request(method="GET", target=path, headers=upgrade))  # so that h11 expects a 101
    status, headers, body = 0, {}, b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some(65536)))
        elif isinstance(event, h11.InformationalResponse | h11.Response):
            status = event.status_code
            headers = {k.decode(): v.decode() for k, v in event.headers}
            if status == 101:
                return status, headers, body
        elif isinstance(event, h11.Data):
            body += bytes(event.data)
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            return status, headers, body


def browser_request(path: str, origin: str | None) -> bytes:
    return BROWSER_HANDSHAKE.format(
        path=path, origin="" if origin is None else f"Origin: {origin}\r\n"
    ).encode()


async def browser_handshake(
    harness: Harness, path: str, origin: str | None
) -> tuple[int, dict[str, str], bytes]:
    """Open a connection the way a browser does; the server's HTTP answer."""
    client, server = socket_pair()
    async with client, trio.open_nursery() as nursery:
        nursery.start_soon(harness.gateway.websocket.serve_stream, server, "203.0.113.7")
        await client.send_all(browser_request(path, origin))
        answer = await read_handshake_answer(client, path)
        nursery.cancel_scope.cancel()
    return answer


async def tcp_handshake(port: int, path: str, origin: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """The same over a real socket."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(browser_request(path, origin))
        return await read_handshake_answer(stream, path)


CELLS = "https://cells.example.com"


@ENDPOINTS
@pytest.mark.parametrize(
    ("allowed", "origin", "accepted"),
    [
        pytest.param((CELLS,), CELLS, True, id="allowed"),
        pytest.param((CELLS,), None, True, id="no_origin_non_browser"),
        pytest.param(
            (CELLS, "https://admin.example.com"), "https://admin.example.com", True, id="second_of_two"
        ),
        pytest.param((CELLS,), "HTTPS://Cells.Example.COM", True, id="case_insensitive"),
        pytest.param((CELLS,), "http://cells.example.com", False, id="other_scheme"),
        pytest.param((CELLS,), "https://cells.example.com:8443", False, id="other_port"),
        pytest.param((CELLS,), "https://evil.cells.example.com", False, id="subdomain"),
        pytest.param((CELLS,), "https://cells.example.com.evil.example", False, id="suffix"),
        pytest.param((CELLS,), "https://xcells.example.com", False, id="prefix"),
        pytest.param((CELLS,), "null", False, id="opaque_origin_sandbox_or_file"),
        pytest.param((CELLS,), "", False, id="empty_origin"),
        pytest.param((), CELLS, False, id="nothing_allowed"),
        pytest.param((), None, True, id="nothing_allowed_no_origin"),
        pytest.param(("*",), "https://anything.example", True, id="wildcard"),
    ],
)
async def test_limits_origin_from_a_browser(
    nursery: trio.Nursery,
    settings: Settings,
    path: str,
    allowed: tuple[str, ...],
    origin: str | None,
    accepted: bool,
) -> None:
    harness = await Harness(nursery, settings.with_changes(allowed_origins=allowed)).start()
    with trio.fail_after(10):
        status, headers, body = await browser_handshake(harness, path, origin)
    if accepted:
        assert status == 101
        assert headers["upgrade"].lower() == "websocket"
        assert headers["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 section 1.3
        assert "sec-websocket-extensions" not in headers  # no permessage-deflate
        assert "sec-websocket-protocol" not in headers
    else:
        assert status == 403
        assert json.loads(body)["error"] == "origin_forbidden"
    assert harness.gateway.hub.sessions == set()
