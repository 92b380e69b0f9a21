"""The admin HTTP listener (h11 on trio): health, readiness, metrics, the publish API, the playground.

Default bind is loopback. ``POST /api/v1/publish`` and ``POST /api/v1/token`` require
``Authorization: Bearer <admin key>`` (compared in constant time); request bodies are bounded,
connections are time-boxed and their number is capped, so the admin port cannot be used to exhaust
the process. ``GET /`` serves the playground page (package data in ``gateway/playground``): it holds
no secret, so it is open; the operator pastes the admin key into it.
"""

from __future__ import annotations

import functools
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from importlib import resources
from typing import Any, Final

import h11
import trio

from gateway.bus import Bus, BusError
from gateway.config import ConfigError, Settings, parse_host_port
from gateway.identity import PROFILES
from gateway.identity.jwt import identity_from_claims
from gateway.identity.mint import mint_token
from gateway.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from gateway.metrics import Metrics
from gateway.protocol import AuthError
from gateway.topics import PUBLISHABLE_TOPICS

log = logging.getLogger("gateway.admin")

MAX_CONNECTIONS: Final = 64
MAX_HEADER_BYTES: Final = 16 * 1024
REQUEST_TIMEOUT: Final = 10.0
READ_SIZE: Final = 64 * 1024
SERVER_HEADER: Final = b"cells-ws-gateway"

TOKEN_DEFAULT_TTL: Final = 3600
TOKEN_MAX_TTL: Final = 24 * 3600
TOKEN_MAX_ITEMS: Final = 50  # roles, workspaces, roots per workspace
TOKEN_MAX_NAME: Final = 256
_TOKEN_FIELDS: Final = frozenset({"user", "profile", "roles", "workspaces", "ttl"})
_WORKSPACE_FIELDS: Final = frozenset({"uuid", "slug", "roots", "permissions"})

# The playground: URL path -> (file in gateway/playground, content type).
PLAYGROUND_FILES: Final = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/playground/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/playground/style.css": ("style.css", "text/css; charset=utf-8"),
    "/playground/favicon.svg": ("favicon.svg", "image/svg+xml"),
}


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


class PublishError(ValueError):
    """A publish body was refused; the message says what is wrong."""


def parse_publish_body(body: bytes, max_batch: int) -> list[tuple[str, dict[str, Any]]]:
    """``{"topic", "event"}`` or ``{"events": [...]}`` -> [(topic, event)]; sans-IO, fuzzed."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        raise PublishError("body is not valid JSON") from None
    if not isinstance(doc, dict):
        raise PublishError("body must be a JSON object")
    if "events" in doc:
        if set(doc) != {"events"}:
            raise PublishError('a batch body has only the "events" field')
        items = doc["events"]
        if not isinstance(items, list) or not items:
            raise PublishError('"events" must be a non-empty list')
        if len(items) > max_batch:
            raise PublishError(f"a batch holds at most {max_batch} events")
        return [_publish_item(item, f"events[{i}]") for i, item in enumerate(items)]
    return [_publish_item(doc, "body")]


class TokenRequestError(ValueError):
    """A token request body was refused; the message says what is wrong."""


@dataclass(frozen=True)
class TokenRequest:
    user: str
    profile: str
    roles: tuple[str, ...]
    workspaces: tuple[dict[str, Any], ...]
    ttl: int


def parse_token_body(body: bytes) -> TokenRequest:
    """``{"user", "profile"?, "roles"?, "workspaces", "ttl"?}`` -> TokenRequest; sans-IO.

    The claims also go through the gateway's own claim parser, so a minted token is always one
    that this gateway accepts.
    """
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        raise TokenRequestError("body is not valid JSON") from None
    if not isinstance(doc, dict):
        raise TokenRequestError("body must be a JSON object")
    unknown = set(doc) - _TOKEN_FIELDS
    if unknown:
        raise TokenRequestError(f"unknown field(s): {', '.join(sorted(unknown))[:200]}")
    if "workspaces" not in doc:
        raise TokenRequestError('"workspaces" is required (a list, possibly empty)')
    roles = _items(doc.get("roles", []), "roles")
    workspaces = _items(doc["workspaces"], "workspaces")
    request = TokenRequest(
        user=_name(doc.get("user"), "user"),
        profile=_profile(doc.get("profile", "standard")),
        roles=tuple(_role(role, f"roles[{i}]") for i, role in enumerate(roles)),
        workspaces=tuple(_token_workspace(ws, f"workspaces[{i}]") for i, ws in enumerate(workspaces)),
        ttl=_ttl(doc.get("ttl", TOKEN_DEFAULT_TTL)),
    )
    claims = {
        "name": request.user,
        "profile": request.profile,
        "roles": list(request.roles),
        "workspaces": list(request.workspaces),
    }
    try:
        identity_from_claims(claims)
    except AuthError as exc:
        raise TokenRequestError(exc.message) from None
    return request


def _name(value: object, where: str) -> str:
    if not isinstance(value, str) or not value or value != value.strip():
        raise TokenRequestError(f"{where} must be a non-empty string without surrounding spaces")
    if len(value) > TOKEN_MAX_NAME or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise TokenRequestError(f"{where} must be at most {TOKEN_MAX_NAME} printable characters")
    return value


def _role(value: object, where: str) -> str:
    role = _name(value, where)
    if "," in role:
        raise TokenRequestError(f"{where} must not contain ',' (the claim is comma-separated)")
    return role


def _profile(value: object) -> str:
    if not isinstance(value, str) or value not in PROFILES:
        raise TokenRequestError(f"profile must be one of {', '.join(PROFILES)}")
    return value


def _items(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise TokenRequestError(f"{where} must be a list")
    if len(value) > TOKEN_MAX_ITEMS:
        raise TokenRequestError(f"{where} holds at most {TOKEN_MAX_ITEMS} entries")
    return value


def _token_workspace(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TokenRequestError(f"{where} must be an object")
    if set(value) - _WORKSPACE_FIELDS or not {"uuid", "slug", "roots"} <= set(value):
        raise TokenRequestError(f'{where} needs "uuid", "slug" and "roots", and may have "permissions"')
    roots = _items(value["roots"], f"{where}.roots")
    permissions = value.get("permissions", "r")
    if permissions not in ("r", "w", "rw"):
        raise TokenRequestError(f"{where}.permissions must be r, w or rw")
    return {
        "uuid": _name(value["uuid"], f"{where}.uuid"),
        "slug": _name(value["slug"], f"{where}.slug"),
        "roots": [_name(root, f"{where}.roots[{i}]") for i, root in enumerate(roots)],
        "permissions": permissions,
    }


def _ttl(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= TOKEN_MAX_TTL:
        raise TokenRequestError(f"ttl must be an integer number of seconds from 1 to {TOKEN_MAX_TTL}")
    return value


def _publish_item(item: object, where: str) -> tuple[str, dict[str, Any]]:
    if not isinstance(item, dict):
        raise PublishError(f"{where} must be an object")
    if set(item) != {"topic", "event"}:
        raise PublishError(f'{where} must have exactly the fields "topic" and "event"')
    topic, event = item["topic"], item["event"]
    if not isinstance(topic, str) or topic not in PUBLISHABLE_TOPICS:  # a list would not even hash
        raise PublishError(f"{where}.topic must be one of: {', '.join(sorted(PUBLISHABLE_TOPICS))}")
    if not isinstance(event, dict):
        raise PublishError(f"{where}.event must be a JSON object")
    return topic, event


Handler = Callable[[Request], Awaitable[Response]]


class AdminServer:
    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        bus: Bus,
        is_ready: Callable[[], tuple[bool, str]],
        *,
        ws_ports: Callable[[], Sequence[int]] = tuple,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.bus = bus
        self.is_ready = is_ready
        self.ws_ports = ws_ports  # the WebSocket listener's bound ports, for the playground
        self.ports: list[int] = []
        self._slots = trio.Semaphore(MAX_CONNECTIONS)
        self.routes: dict[tuple[str, str], Handler] = {
            ("GET", "/healthz"): self._healthz,
            ("GET", "/readyz"): self._readyz,
            ("GET", "/metrics"): self._metrics,
            ("POST", "/api/v1/publish"): self._publish,
            ("POST", "/api/v1/token"): self._token,
            ("GET", "/api/v1/playground"): self._playground_info,
        }
        self.routes.update({("GET", path): self._playground_file for path in PLAYGROUND_FILES})

    async def run(self, *, task_status: trio.TaskStatus[list[int]] = trio.TASK_STATUS_IGNORED) -> None:
        host, port = parse_host_port(self.settings.admin_listen, "admin_listen")
        listeners = await trio.open_tcp_listeners(port, host=host or None)
        self.ports = sorted({ln.socket.getsockname()[1] for ln in listeners})
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(trio.serve_listeners, self._serve, listeners))
            task_status.started(self.ports)

    # -- HTTP plumbing ----------------------------------------------------------------------

    async def _serve(self, stream: trio.SocketStream) -> None:
        try:
            self._slots.acquire_nowait()
        except trio.WouldBlock:
            await trio.aclose_forcefully(stream)
            return
        try:
            await self._serve_http(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            pass
        except Exception:
            log.exception("admin connection failed")
        finally:
            self._slots.release()
            await trio.aclose_forcefully(stream)

    async def _serve_http(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        while True:
            # Only reading the request is time-boxed: a publish is bounded by publish_timeout,
            # and must always get its answer (with the count published) once it has started.
            received: Request | Response | None = None
            with trio.move_on_after(REQUEST_TIMEOUT):
                received = await self._next_request(conn, stream)
            if received is None:
                return  # idle, too slow, or closed by the client
            response = received if isinstance(received, Response) else await self._dispatch(received)
            await self._send(conn, stream, response)
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()

    async def _next_request(
        self, conn: h11.Connection, stream: trio.SocketStream
    ) -> Request | Response | None:
        """The next request, an error response for a malformed or oversized one, or None at EOF."""
        try:
            head = await _next_event(conn, stream)
        except h11.RemoteProtocolError as exc:
            return error_response(exc.error_status_hint, "bad_request", str(exc))
        if not isinstance(head, h11.Request):
            return None  # the client closed between requests
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in head.headers}
        length = headers.get("content-length", "0")
        if length.isdigit() and int(length) > self.settings.admin_max_body:
            return _too_large(self.settings.admin_max_body)
        body = await _read_body(conn, stream, self.settings.admin_max_body)
        if body is None:
            return _too_large(self.settings.admin_max_body)
        target = head.target.decode("latin-1").split("?", 1)[0]
        return Request(head.method.decode("ascii", "replace"), target, headers, body)

    async def _dispatch(self, request: Request) -> Response:
        handler = self.routes.get((request.method, request.path))
        if handler is not None:
            return await handler(request)
        allowed = sorted(m for m, p in self.routes if p == request.path)
        if allowed:
            return Response(
                405,
                json.dumps({"error": "method_not_allowed"}).encode(),
                headers=[("allow", ", ".join(allowed))],
            )
        return error_response(404, "not_found", f"no such admin endpoint: {request.path[:100]}")

    async def _send(self, conn: h11.Connection, stream: trio.SocketStream, response: Response) -> None:
        headers = [
            ("content-type", response.content_type),
            ("content-length", str(len(response.body))),
            ("server", SERVER_HEADER.decode()),
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

    # -- endpoints --------------------------------------------------------------------------

    async def _healthz(self, request: Request) -> Response:
        return json_response(200, {"status": "ok"})

    async def _readyz(self, request: Request) -> Response:
        ready, reason = self.is_ready()
        if ready:
            return json_response(200, {"status": "ready"})
        return json_response(503, {"status": "not_ready", "reason": reason})

    async def _metrics(self, request: Request) -> Response:
        return Response(200, self.metrics.render(), content_type=METRICS_CONTENT_TYPE)

    async def _publish(self, request: Request) -> Response:
        response = await self._publish_response(request)
        self.metrics.publish_requests.labels(str(response.status)).inc()
        return response

    async def _publish_response(self, request: Request) -> Response:
        if not self._authorized(request):
            return _unauthorized()
        if self.settings.bus_format == "cells":
            return error_response(
                409,
                "publish_unavailable",
                "bus_format = cells: events come from Cells' own services, and the gateway never "
                "publishes on Cells' subjects",
            )
        try:
            items = parse_publish_body(request.body, self.settings.admin_max_batch)
        except PublishError as exc:
            return error_response(400, "bad_request", str(exc))
        published = 0
        with trio.move_on_after(self.settings.publish_timeout):
            try:
                for topic, event in items:
                    await self.bus.publish(topic, json.dumps(event).encode())
                    published += 1
            except BusError as exc:
                return error_response(503, "bus_unavailable", str(exc), published=published)
            return json_response(202, {"published": published})
        return error_response(503, "bus_busy", "the bus did not take the events in time", published=published)

    async def _token(self, request: Request) -> Response:
        """Mint a development token (HS256, the configured secret); the token is never logged."""
        if not self._authorized(request):
            return _unauthorized()
        secret = self.settings.jwt_secret
        if not self._can_mint() or not secret:
            # Outside development the admin key must not become a way to forge user tokens that
            # the platform, which may share the secret, would accept.
            return error_response(
                409,
                "token_minting_unavailable",
                "tokens are minted only in development mode (serve --dev) with a jwt_secret: "
                "paste a token issued by the platform",
            )
        try:
            wanted = parse_token_body(request.body)
        except TokenRequestError as exc:
            return error_response(400, "bad_request", str(exc))
        now = int(time.time())
        token = mint_token(
            secret,
            user=wanted.user,
            profile=wanted.profile,
            roles=wanted.roles,
            workspaces=wanted.workspaces,
            ttl=wanted.ttl,
            audience=self.settings.jwt_audience,
            issuer=self.settings.jwt_issuer,
            now=now,
        )
        log.info(
            "minted a token through the admin API: user %r, profile %s, workspaces %d, ttl %d s",
            wanted.user,
            wanted.profile,
            len(wanted.workspaces),
            wanted.ttl,
        )
        return json_response(200, {"token": token, "user": wanted.user, "expiresAt": now + wanted.ttl})

    async def _playground_info(self, request: Request) -> Response:
        """What the playground page needs to reach the WebSocket listener; nothing secret."""
        ports = list(self.ws_ports())
        return json_response(
            200,
            {
                "ws_port": ports[0] if ports else None,
                "ws_host": _specific_host(self.settings.listen),
                "paths": {"events": "/ws", "chat": "/chat"},
                "token_minting": self._can_mint(),
                "identity": self.settings.identity,
                "publishing": self.settings.bus_format != "cells",
                "allowed_origins": list(self.settings.allowed_origins),
            },
        )

    async def _playground_file(self, request: Request) -> Response:
        name, content_type = PLAYGROUND_FILES[request.path]
        body = _playground_asset(name)
        if body is None:
            return error_response(404, "not_found", f"the playground file {name} is not packaged")
        headers = (
            [("content-security-policy", _playground_csp(self.ws_ports()))] if name.endswith(".html") else []
        )
        headers += [("referrer-policy", "no-referrer"), ("x-frame-options", "DENY")]
        return Response(200, body, content_type=content_type, headers=headers)

    def _can_mint(self) -> bool:
        """Development mode with JWT identity only: a cells gateway trusts tokens Cells issued."""
        return self.settings.dev and self.settings.identity == "jwt" and bool(self.settings.jwt_secret)

    def _authorized(self, request: Request) -> bool:
        key = self.settings.admin_key
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if not key or scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(token.strip().encode(), key.encode())


def _unauthorized() -> Response:
    return Response(
        401,
        json.dumps({"error": "unauthorized", "message": "send Authorization: Bearer <admin key>"}).encode(),
        headers=[("www-authenticate", 'Bearer realm="gateway-admin"')],
    )


@functools.cache
def _playground_asset(name: str) -> bytes | None:
    """A file of the playground, read once from the package (works from a one-file build too)."""
    try:
        return (resources.files("gateway") / "playground" / name).read_bytes()
    except OSError:
        return None


def _playground_csp(ws_ports: Sequence[int]) -> str:
    """No inline code, nothing from elsewhere; the page may only talk to this listener and the WS port."""
    sockets = " ".join(f"ws://*:{p} wss://*:{p}" for p in ws_ports) or "ws: wss:"
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self'",
            f"connect-src 'self' {sockets}",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


def _specific_host(listen: str) -> str | None:
    """The WebSocket listener's host when it is one address, or None for all interfaces."""
    try:
        host, _ = parse_host_port(listen, "listen")
    except ConfigError:
        return None
    return None if host in ("", "0.0.0.0", "::") else host


def _too_large(limit: int) -> Response:
    return error_response(413, "body_too_large", f"request body over {limit} bytes")


async def _next_event(conn: h11.Connection, stream: trio.SocketStream) -> Any:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(await stream.receive_some(READ_SIZE))


async def _read_body(conn: h11.Connection, stream: trio.SocketStream, limit: int) -> bytes | None:
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
