"""The peer the gateway is compared with: a broadcast server on asyncio and ``websockets``.

    GATEWAY_JWT_SECRET=... GATEWAY_ADMIN_KEY=... python -m bench.peer \\
        --listen 127.0.0.1:PORT --admin-listen 127.0.0.1:PORT2

It offers the gateway's interface for this workload and does the least a fair competitor must:
a session sends ``{"@type": "subscribe", "jwt": ...}``, the token is verified with PyJWT (HS256,
``exp`` required, as the gateway does) and the session gets ``{"@type": "subscribed", ...}``;
``POST /api/v1/publish`` (same bearer key, same ``{"topic", "event"}`` or ``{"events": [...]}``
bodies) serialises each event once and hands it to ``websockets.broadcast()``. No per-workspace
routing or path rewriting: every subscribed session gets every event as it was published.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import json
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import jwt
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

SUBSCRIBE_TIMEOUT: Final = 10.0
BACKLOG: Final = 4096  # trio listens with the system maximum; asyncio's default is 100
MAX_BODY: Final = 1 << 20
TOKEN_INVALID: Final = 4001


class Refused(Exception):
    """The first message is not a subscribe with a valid token."""


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Response:
    status: int
    body: dict[str, Any]


REASONS: Final = {
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    413: "Content Too Large",
}


class Peer:
    def __init__(self, secret: str, admin_key: str) -> None:
        self.secret = secret
        self.admin_key = admin_key
        self.subscribers: set[ServerConnection] = set()

    # -- WebSocket --------------------------------------------------------------------------

    async def handle_websocket(self, ws: ServerConnection) -> None:
        try:
            claims = self.verify(await asyncio.wait_for(ws.recv(), SUBSCRIBE_TIMEOUT))
        except (TimeoutError, ValueError, Refused, jwt.InvalidTokenError):
            await ws.close(TOKEN_INVALID, "token invalid")
            return
        except ConnectionClosed:
            return
        await ws.send(json.dumps({"@type": "subscribed", "user": claims.get("name"), "endpoint": "events"}))
        self.subscribers.add(ws)
        try:
            async for _ in ws:  # later client messages are read and ignored
                pass
        except ConnectionClosed:
            pass
        finally:
            self.subscribers.discard(ws)

    def verify(self, raw: str | bytes) -> dict[str, Any]:
        message = json.loads(raw)
        if not isinstance(message, dict) or message.get("@type") not in ("subscribe", "register"):
            raise Refused("expected a subscribe message")
        token = message.get("jwt")
        if not isinstance(token, str):
            raise Refused("subscribe without a token")
        claims: dict[str, Any] = jwt.decode(
            token, self.secret, algorithms=["HS256"], options={"require": ["exp"]}
        )
        return claims

    # -- HTTP -------------------------------------------------------------------------------

    async def handle_http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while (request := await read_request(reader)) is not None:
                writer.write(encode_response(self.respond(request)))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()

    def respond(self, request: Request) -> Response:
        if (request.method, request.path) == ("GET", "/readyz"):
            return Response(200, {"status": "ready"})
        if (request.method, request.path) != ("POST", "/api/v1/publish"):
            return Response(404, {"error": "not_found"})
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            key.strip().encode(), self.admin_key.encode()
        ):
            return Response(401, {"error": "unauthorized"})
        try:
            events = publish_events(request.body)
        except ValueError as exc:
            return Response(400, {"error": "bad_request", "message": str(exc)})
        for event in events:
            broadcast(self.subscribers, json.dumps(event))
        return Response(202, {"published": len(events)})


def publish_events(body: bytes) -> list[dict[str, Any]]:
    """The events of a ``{"topic", "event"}`` or ``{"events": [...]}`` body."""
    doc = json.loads(body)
    items = doc.get("events", [doc]) if isinstance(doc, dict) else None
    if not isinstance(items, list) or not items:
        raise ValueError('expected {"topic", "event"} or {"events": [...]}')
    events = [item.get("event") if isinstance(item, dict) else None for item in items]
    if not all(isinstance(event, dict) for event in events):
        raise ValueError("every item needs an event object")
    return [event for event in events if isinstance(event, dict)]


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """One HTTP/1.1 request with a Content-Length body; None when the client closed between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    if length > MAX_BODY:
        raise ValueError("body too large")
    body = await reader.readexactly(length) if length else b""
    return Request(method, target.split("?", 1)[0], headers, body)


def encode_response(response: Response) -> bytes:
    body = json.dumps(response.body).encode() + b"\n"
    reason = REASONS.get(response.status, "")
    head = (
        f"HTTP/1.1 {response.status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


# ---------------------------------------------------------------------------------------------
# The process


def host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


async def run(listen: str, admin_listen: str, peer: Peer) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    ws_host, ws_port = host_port(listen)
    http_host, http_port = host_port(admin_listen)
    async with serve(peer.handle_websocket, ws_host, ws_port, compression=None, backlog=BACKLOG):
        http = await asyncio.start_server(peer.handle_http, http_host, http_port, backlog=BACKLOG)
        async with http:
            await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peer", description=__doc__.split("\n")[0])
    parser.add_argument("--listen", required=True, help="WebSocket HOST:PORT")
    parser.add_argument("--admin-listen", required=True, help="HTTP publish API HOST:PORT")
    args = parser.parse_args(argv)
    secret, admin_key = os.environ.get("GATEWAY_JWT_SECRET"), os.environ.get("GATEWAY_ADMIN_KEY")
    if not secret or not admin_key:
        print("bench.peer: set GATEWAY_JWT_SECRET and GATEWAY_ADMIN_KEY", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(args.listen, args.admin_listen, Peer(secret, admin_key)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
