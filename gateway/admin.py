"""The admin HTTP listener (h11 on trio): health, readiness, metrics and the publish API.

Default bind is loopback. ``POST /api/v1/publish`` requires ``Authorization: Bearer <admin key>``
(compared in constant time); request bodies are bounded, connections are time-boxed and their
number is capped, so the admin port cannot be used to exhaust the process.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final

import h11
import trio

from gateway.bus import PUBLISHABLE_TOPICS, Bus, BusError
from gateway.config import Settings, parse_host_port
from gateway.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from gateway.metrics import Metrics

log = logging.getLogger("gateway.admin")

MAX_CONNECTIONS: Final = 64
MAX_HEADER_BYTES: Final = 16 * 1024
REQUEST_TIMEOUT: Final = 10.0
READ_SIZE: Final = 64 * 1024
SERVER_HEADER: Final = b"cells-ws-gateway"


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


def _publish_item(item: object, where: str) -> tuple[str, dict[str, Any]]:
    if not isinstance(item, dict):
        raise PublishError(f"{where} must be an object")
    if set(item) != {"topic", "event"}:
        raise PublishError(f'{where} must have exactly the fields "topic" and "event"')
    topic, event = item["topic"], item["event"]
    if topic not in PUBLISHABLE_TOPICS:
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
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.bus = bus
        self.is_ready = is_ready
        self.ports: list[int] = []
        self._slots = trio.Semaphore(MAX_CONNECTIONS)
        self.routes: dict[tuple[str, str], Handler] = {
            ("GET", "/healthz"): self._healthz,
            ("GET", "/readyz"): self._readyz,
            ("GET", "/metrics"): self._metrics,
            ("POST", "/api/v1/publish"): self._publish,
        }

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
            with trio.move_on_after(REQUEST_TIMEOUT):
                response = await self._next_response(conn, stream)
            if response is None:
                return
            await self._send(conn, stream, response)
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()

    async def _next_response(self, conn: h11.Connection, stream: trio.SocketStream) -> Response | None:
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
        request = Request(head.method.decode("ascii", "replace"), target, headers, body)
        return await self._dispatch(request)

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
            return Response(
                401,
                json.dumps(
                    {"error": "unauthorized", "message": "send Authorization: Bearer <admin key>"}
                ).encode(),
                headers=[("www-authenticate", 'Bearer realm="gateway-admin"')],
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

    def _authorized(self, request: Request) -> bool:
        key = self.settings.admin_key
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if not key or scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(token.strip().encode(), key.encode())


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
