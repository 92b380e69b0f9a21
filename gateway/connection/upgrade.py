"""The HTTP/1.1 upgrade request (read with h11) and its answers: 101, or a refusal with a body.

wsproto's own handshake class refuses a malformed upgrade before the application sees its path;
reading the request with h11 here lets the gateway answer each case as it documents: 404 for a
path that is no socket, 426 naming the headers a proxy dropped, the refusals of ``handshake``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

import h11
from wsproto.utilities import generate_accept_token, split_comma_header

from gateway.handshake import Refusal

MAX_HEAD_BYTES: Final = 16384  # request line and headers
WEBSOCKET_VERSION: Final = b"13"


class BadRequest(Exception):
    """Not HTTP/1.1, or a request head too large: answered with BAD_REQUEST and closed."""


BAD_REQUEST: Final = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: 63\r\n"
    b"Connection: close\r\n\r\n"
    b'{"error": "bad_request", "message": "not a valid HTTP request"}'
)


@dataclass(frozen=True, slots=True)
class UpgradeRequest:
    method: bytes
    target: str
    headers: list[tuple[bytes, bytes]]

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    def header(self, name: bytes) -> str | None:
        """The first value of header ``name`` (lower case), as latin-1 text."""
        for key, value in self.headers:
            if key == name:
                return value.decode("latin-1")
        return None

    def not_websocket(self) -> Refusal | None:
        """Why this is no WebSocket upgrade (RFC 6455 4.2.1), or None when it is one."""
        if self.method != b"GET":
            return Refusal(405, "method_not_allowed", "a WebSocket upgrade is a GET request")
        connection = [t.lower() for t in split_comma_header(self._raw(b"connection"))]
        upgrade = self._raw(b"upgrade").strip().lower()
        if "upgrade" not in connection or upgrade != b"websocket":
            present = {
                "Upgrade: websocket": upgrade == b"websocket",
                "Connection: Upgrade": "upgrade" in connection,
            }
            missing = [name for name, ok in present.items() if not ok]
            return Refusal(
                426,
                "upgrade_required",
                f"this is a WebSocket endpoint, but the request arrived without {' and '.join(missing)}. "
                "A reverse proxy in front of the gateway must pass these headers on (nginx: "
                "proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade; proxy_set_header "
                'Connection "upgrade"; see docs/OPERATIONS.md)',
            )
        if self._raw(b"sec-websocket-version").strip() != WEBSOCKET_VERSION:
            return Refusal(426, "unsupported_version", "this server speaks WebSocket version 13")
        if not self._raw(b"sec-websocket-key").strip():
            return Refusal(400, "bad_handshake", "missing Sec-WebSocket-Key")
        return None

    def _raw(self, name: bytes) -> bytes:
        return b", ".join(value for key, value in self.headers if key == name)


class Handshake:
    """One connection's HTTP exchange until it becomes a WebSocket (or is refused)."""

    def __init__(self) -> None:
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        self._request: UpgradeRequest | None = None

    def receive(self, data: bytes) -> UpgradeRequest | None:
        """Feed bytes (b"" at the end of the stream); the request once its head is complete."""
        self._h11.receive_data(data)
        try:
            while True:
                event = self._h11.next_event()
                if event is h11.NEED_DATA:
                    if data == b"":
                        raise BadRequest("the connection ended before the request did")
                    return None
                if isinstance(event, h11.Request):
                    headers = [(k.lower(), v) for k, v in event.headers]
                    self._request = UpgradeRequest(event.method, event.target.decode("latin-1"), headers)
                elif isinstance(event, h11.EndOfMessage) or event is h11.PAUSED:
                    if self._request is None:
                        raise BadRequest("no request")
                    return self._request
                elif isinstance(event, h11.ConnectionClosed):
                    raise BadRequest("the connection ended before the request did")
                # h11.Data: a request body, read and dropped
        except h11.RemoteProtocolError as exc:
            raise BadRequest(str(exc)) from None

    def accept(self) -> tuple[bytes, bytes]:
        """The 101 response, and the bytes the client sent after its request (early frames)."""
        assert self._request is not None
        key = self._request._raw(b"sec-websocket-key").strip()
        headers = [
            (b"Upgrade", b"websocket"),
            (b"Connection", b"Upgrade"),
            (b"Sec-WebSocket-Accept", generate_accept_token(key)),
        ]
        response = self._h11.send(h11.InformationalResponse(status_code=101, headers=headers))
        assert response is not None
        trailing, _ = self._h11.trailing_data
        return response, bytes(trailing)

    def refuse(self, refusal: Refusal) -> bytes:
        """A complete refusal response, JSON or (426, for whoever reads it in a terminal) text."""
        if refusal.status == 426:
            body = refusal.message.encode() + b"\n"
            headers = [(b"Content-Type", b"text/plain; charset=utf-8"), (b"Upgrade", b"websocket"),
                       (b"Sec-WebSocket-Version", WEBSOCKET_VERSION)]  # fmt: skip
        else:
            body = json.dumps({"error": refusal.error, "message": refusal.message}).encode()
            headers = [(b"Content-Type", b"application/json")]
        if refusal.status in (429, 503):
            headers.append((b"Retry-After", b"5"))
        headers += [(b"Content-Length", str(len(body)).encode()), (b"Connection", b"close")]
        try:
            head = self._h11.send(h11.Response(status_code=refusal.status, headers=headers))
            data = self._h11.send(h11.Data(data=body))
            end = self._h11.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            return b""  # the request was not readable enough to answer
        return (head or b"") + (data or b"") + (end or b"")
