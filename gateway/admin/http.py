"""HTTP/1.1 for the admin listener, on h11: requests read within limits, responses written.

Connections are time-boxed and bodies bounded, so the admin port cannot be used to exhaust the
process; keep-alive connections are served one request after the other, and tell their slot when
they wait for a request (and may then be closed for a new connection) and when they serve one.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import h11
import trio

from gateway.admin.slots import Slot

MAX_HEADER_BYTES: Final = 16 * 1024
REQUEST_TIMEOUT: Final = 10.0
READ_SIZE: Final = 64 * 1024
SERVER_HEADER: Final = "cells-ws-gateway"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


def json_response(status: int, obj: Any, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, json.dumps(obj).encode() + b"\n", headers=headers or [])


def error_response(status: int, error: str, message: str, **extra: Any) -> Response:
    return json_response(status, {"error": error, "message": message, **extra})


Handler = Callable[[Request], Awaitable[Response]]


def _too_large(limit: int) -> Response:
    return error_response(413, "body_too_large", f"request body over {limit} bytes")


async def serve_http(stream: trio.abc.Stream, dispatch: Handler, max_body: int, slot: Slot) -> None:
    """Serve one connection's requests, one after the other, until it closes or idles out."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
    while True:
        # Only reading the request is time-boxed: a publish is bounded by publish_timeout,
        # and must always get its answer (with the count published) once it has started.
        received: Request | Response | None = None
        slot.idle()
        with trio.move_on_after(REQUEST_TIMEOUT):
            received = await _next_request(conn, stream, max_body, slot)
        if received is None:
            return  # idle, too slow, or closed by the client
        response = received if isinstance(received, Response) else await dispatch(received)
        await _send(conn, stream, response)
        if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            return
        conn.start_next_cycle()


async def _next_request(
    conn: h11.Connection, stream: trio.abc.Stream, max_body: int, slot: Slot
) -> Request | Response | None:
    """The next request, an error response for a malformed or oversized one, or None at EOF."""
    try:
        head = await _next_event(conn, stream)
    except h11.RemoteProtocolError as exc:
        return error_response(exc.error_status_hint, "bad_request", str(exc))
    if not isinstance(head, h11.Request):
        return None  # the client closed between requests
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in head.headers}
    slot.serving(headers)
    length = headers.get("content-length", "0")
    if length.isdigit() and int(length) > max_body:
        return _too_large(max_body)
    body = await _read_body(conn, stream, max_body)
    if body is None:
        return _too_large(max_body)
    target = head.target.decode("latin-1").split("?", 1)[0]
    return Request(head.method.decode("ascii", "replace"), target, headers, body)


async def _send(conn: h11.Connection, stream: trio.abc.Stream, response: Response) -> None:
    headers = [
        ("content-type", response.content_type),
        ("content-length", str(len(response.body))),
        ("server", SERVER_HEADER),
        ("cache-control", "no-store"),
        ("x-content-type-options", "nosniff"),
        *response.headers,
    ]
    if conn.their_state is not h11.DONE:
        headers.append(("connection", "close"))
    data = conn.send(h11.Response(status_code=response.status, headers=headers))
    data += conn.send(h11.Data(data=response.body)) or b""
    data += conn.send(h11.EndOfMessage()) or b""
    with trio.move_on_after(REQUEST_TIMEOUT):
        await stream.send_all(data)


async def _next_event(conn: h11.Connection, stream: trio.abc.Stream) -> Any:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(bytes(await stream.receive_some(READ_SIZE)))


async def _read_body(conn: h11.Connection, stream: trio.abc.Stream, limit: int) -> bytes | None:
    """The request body, or None if it grows past ``limit``."""
    parts: list[bytes] = []
    size = 0
    while True:
        event = await _next_event(conn, stream)
        if isinstance(event, h11.Data):
            size += len(event.data)
            if size > limit:
                return None
            parts.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            return b"".join(parts)
        else:
            raise h11.RemoteProtocolError("unexpected event in request body")
