"""What each socket path adds on top of the shared session machinery.

``/ws`` and ``/ws/event``: :class:`EventsEndpoint` (after subscribe the client only listens).
``/chat`` and ``/ws/chat``: ``gateway.chat.service.ChatService``.
"""

from __future__ import annotations

from typing import Protocol

from gateway.identity import Identity
from gateway.protocol import ErrorCode, JsonObject, ProtocolError
from gateway.session import Session


class EndpointHandler(Protocol):
    """What one socket path adds on top of the shared session machinery."""

    async def on_subscribed(self, session: Session, identity: Identity) -> None: ...

    async def on_unsubscribed(self, session: Session) -> None: ...

    async def handle(self, session: Session, message: JsonObject) -> None:
        """Handle one message of a subscribed session; raise ProtocolError to refuse it."""
        ...

    async def on_closed(self, session: Session) -> None: ...


class EventsEndpoint:
    """The events socket: after subscribe, the client only listens."""

    async def on_subscribed(self, session: Session, identity: Identity) -> None:
        pass

    async def on_unsubscribed(self, session: Session) -> None:
        pass

    async def handle(self, session: Session, message: JsonObject) -> None:
        kind = str(message["@type"])[:40]
        raise ProtocolError(
            ErrorCode.UNKNOWN_TYPE,
            f"unknown @type {kind!r} on the events socket; send subscribe or unsubscribe",
        )

    async def on_closed(self, session: Session) -> None:
        pass
