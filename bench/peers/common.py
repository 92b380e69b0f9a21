"""What the peers do alike: the subscribe check and the HTTP publish API (asyncio streams).

A session sends ``{"@type": "subscribe", "jwt": ...}``; the token is verified with PyJWT (HS256,
``exp`` required, as the gateway does). ``POST /api/v1/publish`` takes the gateway's bearer key
and its ``{"topic", "event"}`` or ``{"events": [...]}`` bodies; ``GET /readyz`` answers 200.
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
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Final

import jwt

SUBSCRIBE_TIMEOUT: Final = 10.0
BACKLOG: Final = 4096  # trio listens with the system maximum; asyncio's default is 100
MAX_BODY: Final = 1 << 20
TOKEN_INVALID: Final = 4001

REASONS: Final = {
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    413: "Content Too Large",
}


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


def verify_subscribe(raw: str | bytes, secret: str) -> dict[str, Any]:
    """The claims of a subscribe message's token; Refused or jwt.InvalidTokenError otherwise."""
    try:
        message = json.loads(raw)
    except ValueError:
        raise Refused("not JSON") from None
    if not isinstance(message, dict) or message.get("@type") not in ("subscribe", "register"):
        raise Refused("expected a subscribe message")
    token = message.get("jwt")
    if not isinstance(token, str):
        raise Refused("subscribe without a token")
    claims: dict[str, Any] = jwt.decode(token, secret, algorithms=["HS256"], options={"require": ["exp"]})
    return claims


def subscribed_reply(claims: dict[str, Any]) -> bytes:
    return json.dumps({"@type": "subscribed", "user": claims.get("name"), "endpoint": "events"}).encode()


class PublishApi:
    """The HTTP side: each accepted event, serialised once, goes to ``broadcast``."""

    def __init__(self, admin_key: str, broadcast: Callable[[bytes], None]) -> None:
        self.admin_key = admin_key
        self.broadcast = broadcast

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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
            self.broadcast(json.dumps(event).encode())
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


def host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


@dataclass(frozen=True)
class PeerArgs:
    listen: str
    admin_listen: str
    secret: str
    admin_key: str


def parse_args(prog: str, description: str, argv: Sequence[str] | None) -> PeerArgs:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--listen", required=True, help="WebSocket HOST:PORT")
    parser.add_argument("--admin-listen", required=True, help="HTTP publish API HOST:PORT")
    args = parser.parse_args(argv)
    secret, admin_key = os.environ.get("GATEWAY_JWT_SECRET"), os.environ.get("GATEWAY_ADMIN_KEY")
    if not secret or not admin_key:
        print(f"{prog}: set GATEWAY_JWT_SECRET and GATEWAY_ADMIN_KEY", file=sys.stderr)
        raise SystemExit(2)
    return PeerArgs(args.listen, args.admin_listen, secret, admin_key)


async def until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


async def serve_publish_api(args: PeerArgs, broadcast: Callable[[bytes], None]) -> asyncio.Server:
    """The HTTP publish API on ``--admin-listen``, handing each event's bytes to ``broadcast``."""
    host, port = host_port(args.admin_listen)
    handle = PublishApi(args.admin_key, broadcast).handle
    return await asyncio.start_server(handle, host, port, backlog=BACKLOG)


def peer_main(
    prog: str,
    doc: str,
    argv: Sequence[str] | None,
    run: Callable[[PeerArgs], Coroutine[Any, Any, None]],
    runner: Callable[[Coroutine[Any, Any, None]], None],
) -> int:
    """Parse the arguments, then ``run`` them on ``runner`` (``asyncio.run`` or ``uvloop.run``)."""
    args = parse_args(prog, doc.split("\n")[0], argv)
    with contextlib.suppress(KeyboardInterrupt):
        runner(run(args))
    return 0
