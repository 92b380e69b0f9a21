"""The admin listener: health, readiness, metrics, the publish API, the token endpoint, the playground.

Default bind is loopback. ``POST /api/v1/publish`` and ``POST /api/v1/token`` require
``Authorization: Bearer <admin key>`` (compared in constant time). Open connections are capped, and
idle ones give way to new ones (``slots``), so a request with the key always finds a slot.
``GET /`` serves the playground page: it holds no secret, so it is open; the operator pastes the
admin key into it.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial

import h11
import trio

from gateway.admin.http import Handler, Request, Response, error_response, json_response, serve_http
from gateway.admin.playground import PLAYGROUND_FILES, playground_asset, playground_csp, specific_host
from gateway.admin.requests import PublishError, TokenRequestError, parse_publish_body, parse_token_body
from gateway.admin.slots import MAX_CONNECTIONS, ConnectionSlots
from gateway.bus.base import Bus, BusError
from gateway.config import Settings, parse_host_port
from gateway.edge.front import Front
from gateway.edge.tls import ServerTls
from gateway.identity.mint import mint_token
from gateway.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from gateway.metrics import Metrics

log = logging.getLogger("gateway.admin")


class AdminServer:
    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        bus: Bus,
        is_ready: Callable[[], tuple[bool, str]],
        *,
        ws_ports: Callable[[], Sequence[int]] = tuple,
        tls: ServerTls | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.bus = bus
        self.is_ready = is_ready
        self.ws_ports = ws_ports  # the WebSocket listener's bound ports, for the playground
        self.ports: list[int] = []
        self.slots = ConnectionSlots(MAX_CONNECTIONS, self._keyed)
        self._front = Front(tls=tls)  # admin_tls: HTTPS with the listener's certificate
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
        slot = self.slots.open()
        if slot is None:  # every connection serves a request with the admin key
            await trio.aclose_forcefully(stream)
            return
        try:
            with slot.scope:  # a TLS handshake in progress is waiting too: closed first if need be
                deadline = trio.current_time() + self.settings.handshake_timeout
                opened = await self._front.open(stream, _peer(stream), deadline)
                if opened is not None:
                    await serve_http(opened.stream, self._dispatch, self.settings.admin_max_body, slot)
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            pass
        except Exception:
            log.exception("admin connection failed")
        finally:
            slot.release()
            await trio.aclose_forcefully(stream)

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
                "ws_host": specific_host(self.settings.listen),
                "ws_tls": bool(self.settings.tls_cert_file),
                "paths": {"events": "/ws", "chat": "/chat"},
                "token_minting": self._can_mint(),
                "identity": self.settings.identity,
                "publishing": self.settings.bus_format != "cells",
                "allowed_origins": list(self.settings.allowed_origins),
            },
        )

    async def _playground_file(self, request: Request) -> Response:
        name, content_type = PLAYGROUND_FILES[request.path]
        body = playground_asset(name)
        if body is None:
            return error_response(404, "not_found", f"the playground file {name} is not packaged")
        headers = (
            [("content-security-policy", playground_csp(self.ws_ports()))] if name.endswith(".html") else []
        )
        headers += [("referrer-policy", "no-referrer"), ("x-frame-options", "DENY")]
        return Response(200, body, content_type=content_type, headers=headers)

    def _can_mint(self) -> bool:
        """Development mode with JWT identity only: a cells gateway trusts tokens Cells issued."""
        return self.settings.dev and self.settings.identity == "jwt" and bool(self.settings.jwt_secret)

    def _authorized(self, request: Request) -> bool:
        return self._keyed(request.headers)

    def _keyed(self, headers: Mapping[str, str]) -> bool:
        key = self.settings.admin_key
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if not key or scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(token.strip().encode(), key.encode())


def _peer(stream: trio.SocketStream) -> str:
    try:
        return str(stream.socket.getpeername()[0])
    except OSError:
        return "?"


def _unauthorized() -> Response:
    return Response(
        401,
        json.dumps({"error": "unauthorized", "message": "send Authorization: Bearer <admin key>"}).encode(),
        headers=[("www-authenticate", 'Bearer realm="gateway-admin"')],
    )
