"""The WebSocket listener: handshake checks, then one reader and one writer task per session.

Each TCP connection runs in its own nursery under a catch-all boundary, so no error in one
connection can take the listener down (an unhandled error in a trio-websocket handler otherwise
tears down the whole server). Handshakes are time-boxed; refused handshakes get an HTTP status
and a JSON body. One task checks every session's timers (subscribe deadline, token expiry,
keepalive), so a session costs two tasks of ours (reader, writer) plus trio-websocket's reader.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from functools import partial
from typing import Final
from urllib.parse import urlsplit

import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    wrap_server_stream,
)

from gateway import wsconn
from gateway.config import Settings, parse_host_port
from gateway.endpoints import EndpointHandler
from gateway.handshake import CHAT, ENDPOINT_PATHS, Refusal, allowed_origins, refusal
from gateway.hub import Hub
from gateway.identity import Identity
from gateway.identity.resolver import Resolver
from gateway.metrics import Metrics
from gateway.protocol import (
    SUBSCRIBE_TYPES,
    AuthError,
    CloseCode,
    ErrorCode,
    PlatformUnavailable,
    ProtocolError,
    Subscribe,
    Unsubscribe,
    decode_frame,
    parse_session_command,
    subscribed_frame,
    unsubscribed_frame,
    wants_acknowledgements,
)
from gateway.session import CloseRequest, Flusher, Outbox, RateLimiter, Session
from gateway.timers import SessionTimers, deadline_of

log = logging.getLogger("gateway.server")

# trio-websocket buffers this many complete inbound messages per connection before its reader
# waits for ours; a few keep pongs and close frames flowing while a message is being handled.
INBOUND_QUEUE: Final = 4
# Frames up to this multiple of the limit are read whole, so they get a JSON error before 1009;
# anything larger is cut off by trio-websocket after its first chunk (close 1009, no error frame).
HARD_SIZE_FACTOR: Final = 4
# How often session timers are checked: their precision, in seconds.
TIMER_TICK: Final = 0.5


class WebSocketServer:
    def __init__(
        self,
        settings: Settings,
        hub: Hub,
        resolver: Resolver,
        handlers: dict[str, EndpointHandler],
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.hub = hub
        self.resolver = resolver
        self.handlers = handlers
        self.metrics = metrics
        self.ports: list[int] = []
        self.draining = False
        self._origins = allowed_origins(settings.allowed_origins)
        self._accepting: trio.CancelScope | None = None
        self._connections: trio.Nursery | None = None
        self._pending_handshakes = 0
        self._pending_by_remote: Counter[str] = Counter()
        self.flusher = Flusher()

    # -- lifecycle --------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[list[int]] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen until :meth:`drain` is called and every session has gone, or until cancelled."""
        host, port = parse_host_port(self.settings.listen, "listen")
        listeners = await trio.open_tcp_listeners(port, host=_bind_host(host))
        self.ports = sorted({ln.socket.getsockname()[1] for ln in listeners})
        async with trio.open_nursery() as connections:
            self._connections = connections
            async with trio.open_nursery() as accepting:
                self._accepting = accepting.cancel_scope
                serve = partial(
                    trio.serve_listeners, self.serve_stream, listeners, handler_nursery=connections
                )
                await accepting.start(serve)
                task_status.started(self.ports)
            # drain() cancelled accepting (listeners closed); leaving this block waits for sessions.

    async def run_housekeeping(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Every session's timers, and the Flusher that writes their queued frames; until cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.run_timers)
            nursery.start_soon(self.flusher.run)
            task_status.started()

    def drain(self) -> None:
        """Stop accepting, ask every session to close with 1001, abort stragglers at the deadline."""
        if self.draining:
            return
        self.draining = True
        if self._accepting is not None:
            self._accepting.cancel()
        for session in list(self.hub.sessions):
            session.close(CloseCode.GOING_AWAY, "server shutting down", error=ErrorCode.SHUTTING_DOWN)
        if self._connections is not None:
            self._connections.cancel_scope.deadline = trio.current_time() + self.settings.drain_timeout

    # -- one TCP connection -----------------------------------------------------------------

    async def serve_stream(self, stream: trio.abc.Stream, remote: str | None = None) -> None:
        """Serve one connection from handshake to close. Never raises (but Cancelled)."""
        remote = remote or _remote_ip(stream)
        try:
            async with trio.open_nursery() as nursery:
                request = await self._handshake(nursery, stream, remote)
                if request is not None:
                    await self._accept_or_refuse(request, remote, stream)
                nursery.cancel_scope.cancel()  # stop trio-websocket's reader task
        except* (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the peer went away mid-handshake or mid-close: nothing to report
        except* Exception as group:
            self.metrics.handler_errors.inc()
            log.error("connection from %s failed", remote, exc_info=group)
        finally:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)

    async def _handshake(
        self, nursery: trio.Nursery, stream: trio.abc.Stream, remote: str
    ) -> WebSocketRequest | None:
        # Connections still in their handshake are capped too, in all and per address, so one
        # address cannot hold the listener with half-open handshakes.
        if (
            self._pending_handshakes >= self.settings.max_sessions
            or self._pending_by_remote[remote] >= self.settings.max_sessions_per_ip
        ):
            self.metrics.connections_refused.labels("handshake_backlog").inc()
            return None
        self._pending_handshakes += 1
        self._pending_by_remote[remote] += 1
        try:
            with trio.move_on_after(self.settings.handshake_timeout):
                return await wrap_server_stream(
                    nursery,
                    stream,
                    message_queue_size=INBOUND_QUEUE,
                    max_message_size=self.settings.max_message_bytes * HARD_SIZE_FACTOR,
                )
            self.metrics.connections_refused.labels("handshake_timeout").inc()
            return None
        finally:
            self._pending_handshakes -= 1
            self._pending_by_remote[remote] -= 1
            if self._pending_by_remote[remote] <= 0:
                del self._pending_by_remote[remote]

    def _refusal(self, request: WebSocketRequest, remote: str) -> Refusal | None:
        s = self.settings
        return refusal(
            urlsplit(request.path).path,
            _header(request, b"origin"),
            allowed=self._origins,
            draining=self.draining,
            at_capacity=len(self.hub.sessions) >= s.max_sessions,
            address_at_capacity=self.hub.count_from(remote) >= s.max_sessions_per_ip,
        )

    async def _accept_or_refuse(
        self, request: WebSocketRequest, remote: str, stream: trio.abc.Stream
    ) -> None:
        refused = self._refusal(request, remote)
        if refused is not None:
            self.metrics.connections_refused.labels(refused.error).inc()
            body = json.dumps({"error": refused.error, "message": refused.message}).encode()
            headers = [(b"content-type", b"application/json")]
            if refused.status in (429, 503):
                headers.append((b"retry-after", b"5"))
            await request.reject(refused.status, extra_headers=headers, body=body)
            return
        endpoint = ENDPOINT_PATHS[urlsplit(request.path).path]
        session = self._new_session(endpoint, remote)
        # The session counts against the limits from now, before the accept's await: handshakes
        # completing together cannot all pass the checks above.
        self.hub.add(session)
        try:
            conn = await request.accept()
            wsconn.answer_parse_failures(conn)
            session.direct_write = wsconn.direct_writer(conn, stream)
            session.flusher = self.flusher
            await self._run_session(conn, session, self.handlers[endpoint])
        finally:
            self.hub.remove(session)

    def _new_session(self, endpoint: str, remote: str) -> Session:
        s = self.settings
        now = trio.current_time()
        timers = SessionTimers.connected(
            now,
            ping_interval=s.ping_interval,
            ping_timeout=s.ping_timeout,
            subscribe_timeout=s.subscribe_timeout,
        )
        session = Session(
            endpoint,
            remote,
            Outbox(s.outbox_max_frames, s.outbox_max_bytes),
            RateLimiter(s.rate_limit, s.rate_burst, now),
            timers,
            close_timeout=s.close_timeout,
            on_close=self._on_session_close,
        )
        session.on_quiet_refusal = self._quiet_refusal
        return session

    def _quiet_refusal(self, session: Session, code: ErrorCode, message: str) -> None:
        self.metrics.chat_refusals.labels(str(code)).inc()
        log.debug("refused a request of %r without an error frame (no ack): %s: %s", session, code, message)

    def _on_session_close(self, session: Session, request: CloseRequest) -> None:
        self.hub.stop_delivering(session)
        self.metrics.session_closes.labels(str(int(request.code))).inc()
        if request.code == CloseCode.SLOW_CONSUMER:
            self.metrics.slow_consumer_closes.inc()
        log.info("closing %r: %d %s", session, request.code, request.reason)

    # -- one session ------------------------------------------------------------------------

    async def _run_session(
        self, conn: WebSocketConnection, session: Session, handler: EndpointHandler
    ) -> None:
        try:
            with trio.CancelScope() as scope:
                session.attach_scope(scope)
                if self.draining:  # accepted while the drain began
                    session.close(CloseCode.GOING_AWAY, "server shutting down", error=ErrorCode.SHUTTING_DOWN)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._write_loop, conn, session)
                    await self._read_loop(conn, session, handler)
                    if session.closing is None:  # the peer closed or vanished
                        nursery.cancel_scope.cancel()
        finally:
            self.hub.remove(session)
            with trio.CancelScope(shield=True), trio.move_on_after(self.settings.close_timeout):
                await handler.on_closed(session)
            if conn.closed is None:
                await wsconn.abort(conn)

    async def _read_loop(self, conn: WebSocketConnection, session: Session, handler: EndpointHandler) -> None:
        while session.closing is None:
            try:
                data = await conn.get_message()
            except ConnectionClosed:
                return
            if session.closing is not None:
                return
            try:
                await self._on_message(session, handler, data)
            except Exception:
                self.metrics.handler_errors.inc()
                log.exception("error handling a message of %r", session)
                session.fail(ErrorCode.INTERNAL, "internal error; the session is closed")

    async def _on_message(self, session: Session, handler: EndpointHandler, data: str | bytes) -> None:
        if not session.limiter.allow(trio.current_time()):
            session.fail(ErrorCode.RATE_LIMITED, "too many messages; slow down")
            return
        try:
            message = decode_frame(data, self.settings.max_message_bytes)
            if session.endpoint == CHAT and message["@type"] in SUBSCRIBE_TYPES:
                session.errors_visible = wants_acknowledgements(message)
            command = parse_session_command(message)
            if isinstance(command, Subscribe):
                await self._subscribe(session, handler, command)
            elif isinstance(command, Unsubscribe):
                await self._unsubscribe(session, handler)
            elif not session.subscribed:
                raise ProtocolError(ErrorCode.NOT_SUBSCRIBED, "send a subscribe message with a token first")
            else:
                await handler.handle(session, message)
        except (AuthError, PlatformUnavailable) as err:
            self.metrics.auth_failures.labels(str(err.code)).inc()
            session.fail(err.code, err.message)
        except ProtocolError as err:
            session.fail(err.code, err.message, **err.context)

    async def _subscribe(self, session: Session, handler: EndpointHandler, command: Subscribe) -> None:
        identity = await self.resolver.resolve(command.token)
        if session.identity is not None and identity.sub != session.identity.sub:
            raise ProtocolError(ErrorCode.IDENTITY_CHANGED, "a session cannot change user; reconnect instead")
        session.token = command.token
        expiry = identity.expires_at if self.settings.close_at_token_expiry else None
        session.timers.subscribed(
            deadline_of(expiry, self.settings.jwt_leeway, trio.current_time(), time.time())
        )
        self.hub.start_delivering(session, identity)
        # Queued right after indexing, with no checkpoint between: every event published after
        # this reply reaches the session.
        if session.errors_visible:
            session.send_json(subscribed_frame(identity.user, session.endpoint, expiry))
        await handler.on_subscribed(session, identity)

    async def identity_changed(self, session: Session, identity: Identity) -> None:
        """The platform changed what the session may see (already re-indexed): tell its endpoint."""
        await self.handlers[session.endpoint].on_subscribed(session, identity)

    async def _unsubscribe(self, session: Session, handler: EndpointHandler) -> None:
        self.hub.stop_delivering(session)
        # An unsubscribed socket is like a new one: it must subscribe again in time, or go.
        session.timers.unsubscribed(trio.current_time())
        await handler.on_unsubscribed(session)
        if session.errors_visible:
            session.send_json(unsubscribed_frame())

    async def _write_loop(self, conn: WebSocketConnection, session: Session) -> None:
        """Send whatever the session has queued, in one write per wake-up; then close if asked."""
        outbox = session.outbox
        direct = session.direct_write
        try:
            while True:
                await outbox.wait()
                if outbox.ping_wanted:
                    session.pong = await wsconn.send_ping(conn)
                    # Cleared only now: while the ping itself cannot be written, the keepalive
                    # deadline keeps running (a peer that stopped reading is found in time).
                    outbox.ping_wanted = False
                frames = outbox.take()
                if frames:
                    await wsconn.send_frames(conn, frames[0] if len(frames) == 1 else b"".join(frames))
                elif direct is not None and direct.tail_pending:
                    await wsconn.send_frames(conn, b"")  # the rest of a partial direct write
                elif (closing := session.closing) is not None:
                    await conn.aclose(closing.code, closing.reason)
                    return
        except ConnectionClosed:
            return

    # -- timers of every session, in one task ----------------------------------------------

    async def run_timers(self) -> None:
        """Check every session's deadlines each TIMER_TICK; a sweep costs microseconds per session."""
        while True:
            await trio.sleep(TIMER_TICK)
            now = trio.current_time()
            for session in list(self.hub.sessions):
                session.check_timers(now)


def _bind_host(host: str) -> str | None:
    """``[::]`` (like an empty host) means every interface, IPv4 and IPv6, as in the old service."""
    return None if host in ("", "::", "*") else host


def _remote_ip(stream: trio.abc.Stream) -> str:
    if not isinstance(stream, trio.SocketStream):
        return "local"
    try:
        peer = stream.socket.getpeername()
    except OSError:
        return "?"
    return str(peer[0]) if isinstance(peer, tuple) else str(peer)


def _header(request: WebSocketRequest, name: bytes) -> str | None:
    for key, value in request.headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None
