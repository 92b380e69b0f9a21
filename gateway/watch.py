"""``gateway watch``: subscribe as a user and print what they receive, one JSON message per line.

An operator's way to see routing live: with a user's token, watch shows exactly the events that
user's browser would get (and the gateway's replies and errors), as the gateway sends them. It is
a plain WebSocket client (trio-websocket), so it goes through the same handshake, Origin check and
limits as a browser.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TextIO
from urllib.parse import urlsplit

import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, HandshakeError, wrap_client_stream

Stream = trio.SocketStream | trio.SSLStream[trio.SocketStream]

NORMAL_CLOSE = 1000


class WatchError(Exception):
    """The gateway could not be reached, refused the session, or closed it."""


@dataclass(frozen=True)
class WatchOptions:
    url: str
    token: str
    count: int | None = None  # stop after this many messages (None: until interrupted or closed)
    origin: str | None = None
    connect_timeout: float = 10.0
    recover: bool = False  # ask for positions (docs/PROTOCOL.md, "Resuming")
    since: str | None = None  # resume after this position


def subscribe_message(options: WatchOptions) -> str:
    message: dict[str, object] = {"@type": "subscribe", "jwt": options.token}
    if options.since is not None:
        message["since"] = options.since
    elif options.recover:
        message["recover"] = True
    return json.dumps(message)


async def watch(options: WatchOptions, out: TextIO) -> int:
    """Print each message the gateway sends; how many were printed. WatchError when refused or closed."""
    try:
        with trio.fail_after(options.connect_timeout):
            stream = await _open_stream(options.url)
    except OSError as exc:
        raise WatchError(f"cannot reach {options.url}: {exc}") from None
    except trio.TooSlowError:
        raise WatchError(f"no answer from {options.url} within {options.connect_timeout:g} s") from None
    # The stream is ours to close: trio-websocket leaves it open when the handshake is refused.
    try:
        async with stream, trio.open_nursery() as nursery:
            try:
                return await _print_messages(nursery, stream, options, out)
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # trio-websocket's reader task raises a refused handshake in our nursery.
        explained, _ = group.split(lambda exc: _explain(exc, options) is not None)
        if explained is None:
            raise
        error = _explain(_first(explained), options)
        assert error is not None
        raise error from None


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first


def _explain(exc: BaseException, options: WatchOptions) -> WatchError | None:
    """What an exception of the WebSocket client means to the operator; None when it is a bug."""
    if isinstance(exc, WatchError):
        return exc
    if isinstance(exc, ConnectionRejected):
        body = (exc.body or b"").decode(errors="replace").strip()
        return WatchError(f"the gateway refused the connection: HTTP {exc.status_code} {body}")
    if isinstance(exc, HandshakeError):
        return WatchError(f"cannot open {options.url}: {exc}")
    if isinstance(exc, trio.TooSlowError):
        return WatchError(f"no handshake from {options.url} within {options.connect_timeout:g} s")
    return None


async def _open_stream(url: str) -> Stream:
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise WatchError(f"not a ws:// or wss:// URL: {url}")
    port = parts.port or (443 if parts.scheme == "wss" else 80)
    if parts.scheme == "wss":
        return await trio.open_ssl_over_tcp_stream(parts.hostname, port)
    return await trio.open_tcp_stream(parts.hostname, port)


async def _print_messages(nursery: trio.Nursery, stream: Stream, options: WatchOptions, out: TextIO) -> int:
    parts = urlsplit(options.url)
    resource = parts.path + (f"?{parts.query}" if parts.query else "") or "/"
    headers = [(b"Origin", options.origin.encode())] if options.origin else None
    printed = 0
    try:
        with trio.fail_after(options.connect_timeout):
            ws = await wrap_client_stream(nursery, stream, parts.netloc, resource, extra_headers=headers)
        async with ws:
            await ws.send_message(subscribe_message(options))
            while options.count is None or printed < options.count:
                message = await ws.get_message()
                print(message if isinstance(message, str) else message.decode(errors="replace"), file=out)
                out.flush()
                printed += 1
    except (HandshakeError, trio.TooSlowError) as exc:
        raise _explain(exc, options) or exc from None
    except ConnectionClosed as exc:
        reason = exc.reason
        if reason is None or reason.code == NORMAL_CLOSE:
            return printed
        detail = f"{reason.code} {reason.reason or ''}".strip()
        raise WatchError(f"the gateway closed the session: {detail}") from None
    return printed
