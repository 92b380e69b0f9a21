"""What a session's inbound messages do: subscribe, unsubscribe, or the endpoint's own requests.

Shared by both socket paths; what is particular to one is its ``EndpointHandler``
(``gateway.endpoints``). A refused message gets an error frame (or closes the session when its
error requires it); a bug while handling one closes that session with 1011, nothing else.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import trio

from gateway.config import Settings
from gateway.delivery.replay import Gap, replay
from gateway.endpoints import EndpointHandler
from gateway.handshake import CHAT, EVENTS
from gateway.hub import Hub, audiences_of
from gateway.identity import Identity
from gateway.identity.resolver import Resolver
from gateway.metrics import Metrics
from gateway.protocol import (
    SUBSCRIBE_TYPES,
    AuthError,
    ErrorCode,
    PlatformUnavailable,
    ProtocolError,
    Subscribe,
    Unsubscribe,
    decode_frame,
    gap_frame,
    parse_session_command,
    recovered_frame,
    subscribed_frame,
    unsubscribed_frame,
    wants_acknowledgements,
)
from gateway.session import Session
from gateway.timers import deadline_of

log = logging.getLogger("gateway.server")


class Commands:
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
        # A shared history (JetStream): waits until this instance has read as far as a position
        # another instance gave, before a resume from it.
        self.history_reached: Callable[[str], Awaitable[None]] | None = None

    async def on_message(self, session: Session, data: str | bytes) -> None:
        """Handle one complete inbound message. Never raises (but Cancelled)."""
        try:
            await self._on_message(session, data)
        except Exception:
            self.metrics.handler_errors.inc()
            log.exception("error handling a message of %r", session)
            session.fail(ErrorCode.INTERNAL, "internal error; the session is closed")

    async def _on_message(self, session: Session, data: str | bytes) -> None:
        if not session.limiter.allow(trio.current_time()):
            session.fail(ErrorCode.RATE_LIMITED, "too many messages; slow down")
            return
        handler = self.handlers[session.endpoint]
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
        if command.since is not None and self.history_reached is not None:
            await self.history_reached(command.since)
        if session.closing is not None:
            return  # closed while the platform answered
        if session.identity is not None and identity.sub != session.identity.sub:
            raise ProtocolError(ErrorCode.IDENTITY_CHANGED, "a session cannot change user; reconnect instead")
        session.token = command.token
        expiry = identity.expires_at if self.settings.close_at_token_expiry else None
        session.timers.subscribed(
            deadline_of(expiry, self.settings.jwt_leeway, trio.current_time(), time.time())
        )
        session.positions = command.recover and session.endpoint == EVENTS
        # A resume replays what was queued but not sent yet: drop it rather than send it twice.
        self.hub.start_delivering(session, identity, resume=command.since is not None)
        # Queued right after indexing, with no checkpoint between: every event appended after
        # this reply (and after the replay) reaches the session, and after them.
        position = self.hub.log.current_position if session.positions else None
        if session.errors_visible:
            session.send_json(subscribed_frame(identity.user, session.endpoint, expiry, position))
        if command.since is not None and session.positions:
            self._resume(session, identity, command.since)
        await handler.on_subscribed(session, identity)

    def _resume(self, session: Session, identity: Identity, since: str) -> None:
        """Queue what the session missed after ``since`` and ``recovered``, or one ``gap``."""
        self.hub.log.expire(trio.current_time())  # the age bound holds when no event came lately
        found = replay(self.hub.log, since, identity, audiences_of(identity))
        if isinstance(found, Gap):
            self.metrics.history_gaps.labels(found.cause).inc()
            session.send_json(gap_frame(since, self.hub.log.current_position, found.cause))
            return
        self.metrics.history_replays.inc()
        self.metrics.history_replayed_events.inc(len(found.messages))
        for message in found.messages:
            session.send_json(message)
        session.send_json(recovered_frame(found.position, len(found.messages)))

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

    async def on_closed(self, session: Session) -> None:
        await self.handlers[session.endpoint].on_closed(session)
