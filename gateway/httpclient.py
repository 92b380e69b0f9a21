"""A minimal HTTP/1.1 client on trio + h11 for the gateway's few outbound calls.

One request per connection, a deadline on the whole exchange and a cap on the response body:
enough for the node-access callback, without pulling an HTTP client stack into the binary.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

import h11
import trio

MAX_BODY: Final = 64 * 1024


class HttpError(Exception):
    """The request could not be completed (connection, TLS, timeout, protocol or size)."""


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    body: bytes


async def request(
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    deadline: float = 5.0,
    ssl_context: ssl.SSLContext | None = None,
) -> HttpResponse:
    """Send one request and read the whole response, within ``deadline`` seconds."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HttpError(f"unsupported URL {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    all_headers = {
        "host": parts.netloc,
        "connection": "close",
        "user-agent": "cells-ws-gateway",
        "content-length": str(len(body)),
        **(headers or {}),
    }
    with trio.move_on_after(deadline) as scope:
        try:
            stream = await _connect(parts.hostname, port, parts.scheme == "https", ssl_context)
            async with stream:
                return await _exchange(stream, method, target, all_headers, body)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError) as exc:
            raise HttpError(f"{method} {parts.netloc}: {exc}") from None
    assert scope.cancelled_caught
    raise HttpError(f"{method} {parts.netloc}: no answer within {deadline:g} s")


async def _connect(host: str, port: int, tls: bool, context: ssl.SSLContext | None) -> trio.abc.Stream:
    stream = await trio.open_tcp_stream(host, port)
    if not tls:
        return stream
    secure = trio.SSLStream(stream, context or ssl.create_default_context(), server_hostname=host)
    await secure.do_handshake()
    return secure


async def _exchange(
    stream: trio.abc.Stream, method: str, target: str, headers: dict[str, str], body: bytes
) -> HttpResponse:
    conn = h11.Connection(h11.CLIENT)
    data = conn.send(h11.Request(method=method, target=target, headers=list(headers.items())))
    if body:
        data += conn.send(h11.Data(data=body))
    data += conn.send(h11.EndOfMessage())
    await stream.send_all(data)
    status, chunks, size = 0, [], 0
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some(16384)))
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            size += len(event.data)
            if size > MAX_BODY:
                raise HttpError(f"response body over {MAX_BODY} bytes")
            chunks.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            return HttpResponse(status, b"".join(chunks))
        elif isinstance(event, h11.ConnectionClosed):
            raise HttpError("connection closed before the response ended")
