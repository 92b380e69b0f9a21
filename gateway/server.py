"""The WebSocket listener: upgrade checks, then one reader task per session, and the closing handshake.

Each TCP connection runs in its own task under a catch-all boundary, so no error in one connection
can take the listener down. Handshakes are time-boxed; refused ones get an HTTP status and a body.
After the upgrade the connection's task is its reader: it parses frames (``connection.frames``),
answers pings, hands complete messages to ``commands``, and sees the closing handshake through.
Writing is the session's ``Writer``'s, which starts a task only when the socket is full; one task
checks every session's timers. An idle session therefore costs one task.
"""

from __future__ import annotations

import logging
import socket
from functools import partial
from typing import Final

import trio

from gateway.admission import Admission
from gateway.commands import Commands
from gateway.config import Settings, parse_host_port
from gateway.connection.frames import (
    FrameConnection,
    Inbound,
    Malformed,
    Message,
    PeerClosed,
    PingReceived,
    PongReceived,
    TooBig,
)
from gateway.connection.transport import SocketTransport, StreamTransport, Transport, TransportClosed
from gateway.connection.upgrade import BAD_REQUEST, BadRequest, Handshake, UpgradeRequest
from gateway.connection.writer import Writer
from gateway.delivery.log import EventLog
from gateway.edge.front import Front
from gateway.edge.proxies import canonical
from gateway.edge.tls import ServerTls
from gateway.flusher import Flusher
from gateway.handshake import ENDPOINT_PATHS, Refusal, allowed_origins, refusal
from gateway.hub import Hub
from gateway.logs import Throttle
from gateway.metrics import Metrics
from gateway.protocol import CloseCode, ErrorCode
from gateway.session import CloseRequest, Limits, RateLimiter, Session
from gateway.timers import SessionTimers

log = logging.getLogger("gateway.server")
PROXY_LOG_INTERVAL = 60.0  # seconds between two log lines about requests a proxy stripped

RECEIVE_BYTES: Final = 65536
# What a closing session still reads from its peer (looking for its close frame) before it stops.
CLOSING_READ_LIMIT: Final = 1 << 20
# Frames up to this multiple of the limit are read whole, so they get a JSON error before 1009;
# a larger message is cut off as soon as it passes it (close 1009, no error frame).
HARD_SIZE_FACTOR: Final = 4
# How often session timers are checked: their precision, in seconds.
TIMER_TICK: Final = 0.5
# How long a closed connection keeps reading (and dropping) what the peer still sends, so that
# closing does not reset the connection under the close frame in flight.
LINGER: Final = 2.0


class WebSocketServer:
    def __init__(
        self, settings: Settings, hub: Hub, commands: Commands, metrics: Metrics, tls: ServerTls | None = None
    ) -> None:
        self.settings = settings
        self.hub = hub
        self.commands = commands
        self.metrics = metrics
        self.log: EventLog = hub.log
        self.ports: list[int] = []
        self.draining = False
        self.flusher = Flusher(hub)
        self._limits = Limits(
            settings.slow_consumer_lag_bytes, settings.write_stall_seconds, settings.close_timeout
        )
        self._origins = allowed_origins(settings.allowed_origins)
        self._accepting: trio.CancelScope | None = None
        self._connections: trio.Nursery | None = None
        self.admission = Admission(settings, hub)
        self._proxy_log = Throttle(PROXY_LOG_INTERVAL)
        # PROXY header, TLS, and the client address behind trusted proxies (gateway.edge).
        self.front = Front.for_listener(
            settings, tls, lambda reason: metrics.connections_refused.labels(reason).inc()
        )

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
        """Every session's timers, and the flusher that writes what fan-out queued; until cancelled."""
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
        peer = remote or _remote_ip(stream)
        # One deadline for the whole handshake: PROXY header, TLS, HTTP request.
        deadline = trio.current_time() + self.settings.handshake_timeout
        transport: Transport = StreamTransport(stream)  # closes the stream until the front is through
        try:
            # The whole handshake counts as pending, in all and per address; past the bounds the
            # connection is dropped unanswered (one address cannot hold the listener with
            # half-open or slow TLS handshakes). A trusted proxy's are its clients': total only.
            key = None if self.front.trusted.trusts(canonical(peer)) else self.admission.key(peer)
            with self.admission.handshake(key) as admitted:
                if not admitted:
                    self.metrics.connections_refused.labels("handshake_backlog").inc()
                    return
                opened = await self.front.open(stream, peer, deadline)
                if opened is None:
                    return
                transport = _transport(opened.stream)
                handshake = Handshake()
                request = await self._read_upgrade(transport, handshake, deadline)
            if request is not None:
                await self._serve(transport, handshake, request, opened.address)
        except Exception:
            self.metrics.handler_errors.inc()
            log.exception("connection from %s failed", peer)
        finally:
            with trio.CancelScope(shield=True):
                await transport.aclose()

    async def _serve(
        self, transport: Transport, handshake: Handshake, request: UpgradeRequest, remote: str
    ) -> None:
        remote = self.front.client(remote, request.headers)  # behind a trusted proxy: its client
        key = self.admission.key(remote)
        refused = self._refusal(request, key)
        if refused is not None:
            self.metrics.connections_refused.labels(refused.error).inc()
            if refused.error == "upgrade_required" and self._proxy_log.allow(
                refused.error, trio.current_time()
            ):
                # What users see as "websocket disconnected" behind a proxy: say it where operators look.
                log.warning(
                    "a request to %s from %s came without the WebSocket upgrade headers (answered 426): "
                    "%s. At most one such line a minute; "
                    'gateway_connections_refused_total{reason="upgrade_required"} counts them all',
                    request.path,
                    remote,
                    refused.message,
                )
            await self._answer(transport, handshake.refuse(refused))
            return
        session = self._new_session(ENDPOINT_PATHS[request.path], remote)
        session.limit_key = key
        # The session counts against the limits from now, before the accept's write: handshakes
        # completing together cannot all pass the checks above.
        self.hub.add(session)
        try:
            response, trailing = handshake.accept()
            # The request and the HTTP parser are not needed any more: an idle session must not
            # keep them (about 1 KiB each) for hours.
            del handshake, request
            await self._answer(transport, response, linger=False)
            await self._run_session(session, transport, trailing)
        finally:
            self.hub.remove(session)

    async def _read_upgrade(
        self, transport: Transport, handshake: Handshake, deadline: float
    ) -> UpgradeRequest | None:
        with trio.move_on_at(deadline):
            try:
                while (request := handshake.receive(await transport.receive_some(RECEIVE_BYTES))) is None:
                    pass
                return request
            except BadRequest:
                self.metrics.connections_refused.labels("bad_request").inc()
                await self._answer(transport, BAD_REQUEST)
                return None
        self.metrics.connections_refused.labels("handshake_timeout").inc()
        return None

    def _refusal(self, request: UpgradeRequest, key: str) -> Refusal | None:
        if request.path in ENDPOINT_PATHS and (problem := request.not_websocket()) is not None:
            return problem
        return refusal(
            request.path,
            request.header(b"origin"),
            allowed=self._origins,
            draining=self.draining,
            **self.admission.capacity(key),
        )

    async def _answer(self, transport: Transport, data: bytes, *, linger: bool = True) -> None:
        """Write an HTTP answer within the handshake timeout; after a refusal, close gracefully."""
        if not linger and transport.direct:
            # The usual case, a 101 into an empty socket buffer: one system call, no timer.
            try:
                written = transport.try_send(data)
            except TransportClosed:
                return
            data = data[written:]
            if not data:
                return
        with trio.move_on_after(self.settings.handshake_timeout):
            await transport.send_all(data)
            if linger:
                await transport.linger_close(LINGER)

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
            RateLimiter(s.rate_limit, s.rate_burst, now),
            timers,
            log=self.log,
            limits=self._limits,
            on_close=self._on_session_close,
        )
        session.on_quiet_refusal = self._quiet_refusal
        session.on_flush_wanted = self.flusher.mark
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

    async def _run_session(self, session: Session, transport: Transport, trailing: bytes) -> None:
        frames = FrameConnection(trailing, self.settings.max_message_bytes * HARD_SIZE_FACTOR)
        session.frames = frames
        linger = False  # cut short (the close deadline passed): no more time for the peer
        try:
            async with trio.open_nursery() as nursery:
                session.attach_scope(nursery.cancel_scope)
                session.writer = Writer(transport, session.next_chunk, nursery.start_soon)
                if self.draining:  # accepted while the drain began
                    session.close(CloseCode.GOING_AWAY, "server shutting down", error=ErrorCode.SHUTTING_DOWN)
                try:
                    linger = await self._read(session, transport, frames)
                finally:
                    session.writer.stop()
        finally:
            self.hub.remove(session)
            with trio.CancelScope(shield=True), trio.move_on_after(self.settings.close_timeout):
                await self.commands.on_closed(session)
        if linger:  # not when cancelled (shutdown, an outer deadline): the transport is then closed at once
            await transport.linger_close(LINGER)

    async def _read(self, session: Session, transport: Transport, frames: FrameConnection) -> bool:
        """Read until the closing handshake is over; False when the connection just ended."""
        pending = frames.pending()  # frames the client sent right behind its upgrade request
        began: float | None = None  # when the message being reassembled began
        after_close = 0  # bytes read since the session began closing

        async def read() -> list[Inbound]:
            nonlocal after_close
            data = await transport.receive_some(RECEIVE_BYTES)
            if session.closing is not None:
                after_close += len(data)
                if after_close > CLOSING_READ_LIMIT:
                    # A peer still flooding after our close frame is parsed no more: the close
                    # deadline ends the connection (without it, a flood costs a core until then).
                    await trio.sleep_forever()
            return frames.receive(data)

        while True:
            outcome = await self._on_inbound(session, pending)
            if outcome is not None:
                return outcome
            if any(isinstance(inbound, Message) for inbound in pending):
                began = None  # a message ended: one still assembling began in this read
            # Hold nothing of the last read while waiting for the next: most sessions are idle.
            pending.clear()
            if not frames.assembling:
                began = None
                pending = await read()
                continue
            # A fragmented message must end in time (pings or not): its parts are held meanwhile.
            began = began if began is not None else trio.current_time()
            with trio.move_on_at(began + self.settings.fragment_timeout):
                pending = await read()
                continue
            self.metrics.fragment_timeouts.inc()
            session.close(CloseCode.POLICY_VIOLATION, "message not finished within fragment_timeout")
            await session.wait_close_written()
            return True

    async def _on_inbound(self, session: Session, pending: list[Inbound]) -> bool | None:
        """Act on what one read brought; whether to linger once the connection is over, or None to go on."""
        for inbound in pending:
            if isinstance(inbound, Message):
                if session.closing is None:
                    await self.commands.on_message(session, inbound.data)
            elif isinstance(inbound, PingReceived | PongReceived):
                # Control frames count against the inbound rate limit like messages: a ping flood
                # costs the flooder its connection, not everyone a core.
                if not session.limiter.allow(trio.current_time()):
                    session.fail(ErrorCode.RATE_LIMITED, "too many frames (pings count); slow down")
                elif isinstance(inbound, PingReceived):
                    session.send_control(inbound.pong)
                else:
                    session.timers.pong_received()
            elif isinstance(inbound, PeerClosed):
                if not inbound.reply:  # the end of the stream, or the answer to our close
                    return bool(session.closing)
                session.closed_by_peer(inbound.reply)
                await session.wait_close_written()
                return True
            elif isinstance(inbound, TooBig | Malformed):
                # Nothing more is parsed: the rest of what the peer sends is read and dropped.
                session.close(*_refused(inbound))
                await session.wait_close_written()
                return True
        return None

    # -- timers of every session, in one task ----------------------------------------------

    async def run_timers(self) -> None:
        """Check every session's deadlines each TIMER_TICK; a sweep costs microseconds per session."""
        while True:
            await trio.sleep(TIMER_TICK)
            now = trio.current_time()
            for session in list(self.hub.sessions):
                session.check_timers(now)


def _refused(inbound: TooBig | Malformed) -> tuple[CloseCode, str]:
    if isinstance(inbound, TooBig):
        return CloseCode.MESSAGE_TOO_BIG, "message too big"
    known = inbound.code in (CloseCode.PROTOCOL_ERROR, CloseCode.INVALID_DATA)
    return (CloseCode(inbound.code) if known else CloseCode.PROTOCOL_ERROR), inbound.reason


def _transport(stream: trio.abc.Stream) -> Transport:
    """A real TCP socket is written without waiting; any other stream (TLS, memory) through a task."""
    if isinstance(stream, trio.SocketStream):
        return SocketTransport(socket.socket(fileno=stream.socket.detach()))
    return StreamTransport(stream)


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
