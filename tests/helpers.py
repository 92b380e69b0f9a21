"""Shared test helpers: settings, tokens, in-memory clients of a gateway's WebSocket server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import trio
import trio.testing
from trio_websocket import ConnectionRejected, WebSocketConnection, wrap_client_stream

from gateway.app import Gateway
from gateway.auth import mint_token
from gateway.config import Settings

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


def make_settings(**changes: Any) -> Settings:
    base = Settings(
        listen="127.0.0.1:0",
        admin_listen="127.0.0.1:0",
        jwt_secret=SECRET,
        admin_key=ADMIN_KEY,
        debounce_seconds=0.0,
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


def _leaves(group: BaseExceptionGroup[Any], kind: type[E]) -> list[E]:
    found: list[E] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found.extend(_leaves(exc, kind))
        elif isinstance(exc, kind):
            found.append(exc)
    return found


class Harness:
    """A gateway's services, with clients connected through in-memory streams (no sockets)."""

    def __init__(self, nursery: trio.Nursery, settings: Settings) -> None:
        self.nursery = nursery
        self.gateway = Gateway(settings)

    async def start(self) -> Harness:
        await self.nursery.start(self.gateway.bus.run)
        await self.nursery.start(self.gateway.dispatcher.run)
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
        remote: str = "local",
    ) -> AsyncIterator[WebSocketConnection]:
        if lockstep:
            client_stream, server_stream = trio.testing.lockstep_stream_pair()
        else:
            client_stream, server_stream = trio.testing.memory_stream_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.gateway.websocket.serve_stream, server_stream, remote)
            ws = await wrap_client_stream(nursery, client_stream, "gateway.test", path,
                                          extra_headers=headers or [])  # fmt: skip
            try:
                yield ws
            finally:
                nursery.cancel_scope.cancel()

    async def refusal(self, path: str = "/ws", headers: list[tuple[bytes, bytes]] | None = None,
                      remote: str = "local") -> ConnectionRejected:  # fmt: skip
        """Open a connection that the server must refuse at the handshake; return the refusal."""
        refused: list[ConnectionRejected] = []
        try:
            async with self.connect(path, headers=headers, remote=remote):
                pass
        except* ConnectionRejected as group:
            refused.extend(_leaves(group, ConnectionRejected))
        assert refused, "the handshake was accepted"
        return refused[0]

    @asynccontextmanager
    async def subscribed(self, jwt: str, path: str = "/ws") -> AsyncIterator[WebSocketConnection]:
        async with self.connect(path) as ws:
            await ws.send_message(json.dumps({"@type": "subscribe", "jwt": jwt}))
            reply = await recv_json(ws)
            assert reply["@type"] == "subscribed", reply
            yield ws
