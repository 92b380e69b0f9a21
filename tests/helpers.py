"""Shared test helpers: settings, tokens, in-memory clients of a gateway's WebSocket server."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar, cast

import trio
import trio.testing
from trio_websocket import ConnectionClosed, ConnectionRejected, WebSocketConnection, wrap_client_stream

from gateway.app import Gateway, migrate_store
from gateway.config import Settings
from gateway.delivery.log import EventLog
from gateway.handshake import EVENTS
from gateway.hub import Hub
from gateway.identity.mint import mint_token
from gateway.metrics import Metrics
from gateway.session import Limits, RateLimiter, Session
from gateway.timers import SessionTimers

if TYPE_CHECKING:
    import hypothesis
    import pytest

E = TypeVar("E", bound=BaseException)

SECRET = "test-secret-0123456789abcdef0123456789"
ADMIN_KEY = "test-admin-key-0123456789"
COMMON = {"uuid": "ws-common", "slug": "common-files", "roots": ["/ds/common"], "permissions": "rw"}
PERSONAL_ALICE = {"uuid": "ws-alice", "slug": "my-files", "roots": ["/personal/alice"], "permissions": "rw"}
TREE = "topic.pydio.tree.nodes.changes"
META = "topic.pydio.meta.nodes.changes"
TASKS = "topic.pydio.tasks.event"
IDM = "topic.pydio.idm.event"
ACTIVITY = "topic.pydio.activity.event"


def socket_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    """A connected pair of real sockets: the server's production write path (direct non-blocking
    writes to the socket) is what the tests run, not an in-memory stand-in."""
    client, server = trio.socket.socketpair()
    return trio.SocketStream(client), trio.SocketStream(server)


def make_hub(metrics: Metrics | None = None) -> Hub:
    """A hub outside any trio run (its clock is a constant), with a roomy log."""
    return Hub(metrics or Metrics(), EventLog(max_entries=100_000, max_age=3600.0), lambda: 0.0)


def hand_session(
    hub: Hub, endpoint: str = EVENTS, *, max_lag: int = 10_000_000, remote: str = "127.0.0.1"
) -> Session:
    """A session wired to the hub the way the server wires it (a close stops delivery), no socket."""
    session = Session(
        endpoint,
        remote,
        RateLimiter(rate=100, burst=100, now=0.0),
        idle_timers(),
        log=hub.log,
        limits=Limits(max_lag=max_lag, write_stall=10.0, close_timeout=1.0),
        on_close=lambda s, _request: hub.stop_delivering(s),
    )
    hub.add(session)
    return session


def pending_frames(session: Session) -> list[bytes]:
    """Everything waiting for a session without a socket (its streams and its own frames), taken."""
    return session.feed.gather(session.log.head, session.identity, limit=1 << 62)


def idle_timers() -> SessionTimers:
    """Timers for a session built by hand (the tests that use it never run its timer task)."""
    return SessionTimers.connected(0.0, ping_interval=30, ping_timeout=10, subscribe_timeout=10)


def make_settings(**changes: Any) -> Settings:
    base = Settings(
        listen="127.0.0.1:0",
        admin_listen="127.0.0.1:0",
        jwt_secret=SECRET,
        admin_key=ADMIN_KEY,
        debounce_seconds=0.0,
        db_url="sqlite://",
    )
    return base.with_changes(**changes)


def token(user: str = "alice", *, workspaces: list[dict[str, Any]] | None = None, **claims: Any) -> str:
    return mint_token(SECRET, user=user, workspaces=workspaces if workspaces is not None else [COMMON],
                      **claims)  # fmt: skip


async def recv_json(ws: WebSocketConnection, within: float = 5) -> dict[str, Any]:
    with trio.fail_after(within):
        message = await ws.get_message()
    result = json.loads(message)
    assert isinstance(result, dict)
    return result


async def expect_nothing(ws: WebSocketConnection, wait: float = 0.5) -> None:
    """Assert that no message arrives within ``wait`` seconds (use under autojump_clock)."""
    with trio.move_on_after(wait):
        message = await ws.get_message()
        raise AssertionError(f"unexpected message: {message!r}")


def leaves(group: BaseExceptionGroup[Any], kind: type[E]) -> list[E]:
    """The exceptions of type ``kind`` in a (nested) exception group."""
    found: list[E] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found.extend(leaves(exc, kind))
        elif isinstance(exc, kind):
            found.append(exc)
    return found


class Harness:
    """A gateway's services, with clients connected through in-memory streams (no sockets)."""

    def __init__(self, nursery: trio.Nursery, settings: Settings) -> None:
        self.nursery = nursery
        self.gateway = Gateway(settings)

    async def start(self) -> Harness:
        """The gateway's services as ``gateway serve`` runs them, without the listeners."""
        await migrate_store(self.gateway.settings.db_url)
        await self.nursery.start(self.gateway.run_services)
        return self

    async def publish(self, topic: str, event: dict[str, Any]) -> None:
        await self.gateway.bus.publish(topic, json.dumps(event).encode())

    @asynccontextmanager
    async def connect(
        self,
        path: str = "/ws",
        *,
        headers: list[tuple[bytes, bytes]] | None = None,
        lockstep: bool = False,
        memory: bool = False,
        remote: str = "local",
    ) -> AsyncIterator[WebSocketConnection]:
        client_stream: trio.abc.Stream
        server_stream: trio.abc.Stream
        if lockstep:  # a client whose writes wait for the server to read: a stuck peer
            client_stream, server_stream = trio.testing.lockstep_stream_pair()
        elif memory:  # in-memory streams, which never reset a writing peer
            client_stream, server_stream = trio.testing.memory_stream_pair()
        else:
            client_stream, server_stream = socket_pair()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.gateway.websocket.serve_stream, server_stream, remote)
                # trio-websocket types its stream as a socket or TLS stream; any trio stream works.
                stream = cast(trio.SocketStream, client_stream)
                ws = await wrap_client_stream(
                    nursery, stream, "gateway.test", path, extra_headers=headers or []
                )
                try:
                    yield ws
                finally:
                    nursery.cancel_scope.cancel()
        finally:  # trio-websocket's client leaves its stream open when its connection is cancelled
            await trio.aclose_forcefully(client_stream)

    async def refusal(self, path: str = "/ws", headers: list[tuple[bytes, bytes]] | None = None,
                      remote: str = "local") -> ConnectionRejected:  # fmt: skip
        """Open a connection that the server must refuse at the handshake; return the refusal."""
        refused: list[ConnectionRejected] = []
        try:
            async with self.connect(path, headers=headers, remote=remote):
                pass
        except* ConnectionRejected as group:
            refused.extend(leaves(group, ConnectionRejected))
        assert refused, "the handshake was accepted"
        return refused[0]

    @asynccontextmanager
    async def subscribed(
        self, jwt: str, path: str = "/ws", remote: str = "local"
    ) -> AsyncIterator[WebSocketConnection]:
        async with self.connect(path, remote=remote) as ws:
            await ws.send_message(json.dumps({"@type": "subscribe", "ack": True, "jwt": jwt}))
            reply = await recv_json(ws)
            assert reply["@type"] == "subscribed", reply
            yield ws


class RawClient:
    """A WebSocket client over an in-memory stream that does only what the test tells it to.

    Unlike trio-websocket's client it never answers pings by itself and never reads unless
    asked, which is what keepalive and slow-consumer tests need.
    """

    def __init__(self, stream: trio.abc.Stream) -> None:
        from wsproto import ConnectionType, WSConnection

        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.events: list[object] = []

    async def handshake(self, path: str = "/ws") -> None:
        from wsproto.events import AcceptConnection, Request

        await self.stream.send_all(self.ws.send(Request(host="gateway.test", target=path)))
        while not any(isinstance(e, AcceptConnection) for e in self.events):
            await self.receive_some()

    async def send_json(self, obj: dict[str, Any]) -> None:
        from wsproto.events import TextMessage

        await self.stream.send_all(self.ws.send(TextMessage(data=json.dumps(obj))))

    async def receive_some(self) -> bool:
        """Read once from the stream; False at EOF (a reset is an end too: a server that closes a
        socket with unread input makes the kernel reset it)."""
        try:
            data = await self.stream.receive_some(65536)
        except trio.BrokenResourceError:
            data = b""
        self.ws.receive_data(bytes(data) or None)
        self.events.extend(self.ws.events())
        return bool(data)

    async def read_until_closed(self) -> None:
        while await self.receive_some():
            pass

    def texts(self) -> list[dict[str, Any]]:
        """The complete text messages received (wsproto hands a message over in pieces as its
        bytes arrive: they are joined here)."""
        from wsproto.events import TextMessage

        found, parts = [], []
        for event in self.events:
            if isinstance(event, TextMessage):
                parts.append(event.data)
                if event.message_finished:
                    found.append(json.loads("".join(parts)))
                    parts.clear()
        return found

    def close_code(self) -> int | None:
        from wsproto.events import CloseConnection

        codes = [e.code for e in self.events if isinstance(e, CloseConnection)]
        return codes[0] if codes else None


async def http_request(
    port: int,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request to 127.0.0.1:port with h11; returns (status, headers, body)."""
    import h11

    conn = h11.Connection(h11.CLIENT)
    all_headers = {"host": "127.0.0.1", "content-length": str(len(body)), **(headers or {})}
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        data = conn.send(h11.Request(method=method, target=path, headers=list(all_headers.items())))
        data += conn.send(h11.Data(data=body)) if body else b""
        data += conn.send(h11.EndOfMessage())
        await stream.send_all(data)
        return await read_response(conn, stream)


async def read_response(conn: Any, stream: trio.abc.Stream) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP response with the h11 client connection ``conn``."""
    import h11

    status, headers, parts = 0, {}, []
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(65536))
        elif isinstance(event, h11.Response):
            status = event.status_code
            headers = {k.decode(): v.decode() for k, v in event.headers}
        elif isinstance(event, h11.Data):
            parts.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            return status, headers, b"".join(parts)


async def admin_publish(port: int, body: Any, key: str = ADMIN_KEY) -> tuple[int, dict[str, Any]]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    status, _, response = await http_request(
        port, "POST", "/api/v1/publish", raw, {"authorization": f"Bearer {key}"}
    )
    return status, json.loads(response)


@asynccontextmanager
async def ws_client(
    url: str, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[WebSocketConnection]:
    """``open_websocket_url`` (``wss://`` with ``ssl_context``) that also closes its socket when the
    server closed first.

    trio-websocket's client waits for the server's TCP close and then never closes its own
    socket, which Python reports as an unclosed-socket ResourceWarning.
    """
    from trio_websocket import open_websocket_url

    connection: WebSocketConnection | None = None
    try:
        async with open_websocket_url(url, ssl_context=ssl_context) as ws:
            connection = ws
            yield ws
    finally:
        if connection is not None:
            await trio.aclose_forcefully(connection._stream)


def fixed_cases(examples: int) -> hypothesis.settings:
    """Hypothesis settings for deterministic CI: fixed cases, no example database, no deadline."""
    from hypothesis import HealthCheck, settings

    return settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


def close_code(closed: pytest.ExceptionInfo[ConnectionClosed]) -> int:
    """The close code of a ``pytest.raises(ConnectionClosed)`` (trio-websocket's reason is optional)."""
    reason = closed.value.reason
    assert reason is not None, "closed without a reason"
    return reason.code


def close_text(closed: pytest.ExceptionInfo[ConnectionClosed]) -> str | None:
    reason = closed.value.reason
    assert reason is not None, "closed without a reason"
    return reason.reason
