"""Access that follows the platform: identity events re-resolve the sessions they touch.

Cells' browser client re-sends ``subscribe`` only when its workspace list reloads, and Cells' own
service never re-checks a session. With ``identity = "cells"`` the gateway does: the dispatcher
hands every idm event here right after routing it. What the event certainly takes away (a deleted
workspace; a workspace whose ACL was deleted from one of the session's roles) is taken at once,
before the next event is routed; then every session the event concerns is recomputed in the
background (``Resolver.refresh``) and re-indexed, or closed with 4001 when its user is gone.
With ``identity = "jwt"`` the token's claims are the whole truth and nothing happens here.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Final

import trio

from gateway.events.codec import JsonObject
from gateway.events.idm import IdmChange, change_of
from gateway.hub import Hub
from gateway.identity import Identity
from gateway.identity.resolver import Resolver
from gateway.metrics import Metrics
from gateway.protocol import AuthError, ProtocolError
from gateway.session import Session

log = logging.getLogger("gateway.refresh")

WORKERS: Final = 8  # recomputations in flight at once (each a few calls to the platform)

AfterChange = Callable[[Session, Identity], Awaitable[None]]


class AccessRefresher:
    def __init__(self, resolver: Resolver, hub: Hub, metrics: Metrics) -> None:
        self._resolver = resolver
        self._hub = hub
        self._metrics = metrics
        self._pending: dict[Session, None] = {}  # insertion-ordered set; bounded by the sessions
        self._ready = trio.Event()
        self.after_change: AfterChange | None = None  # the endpoint's hook (chat re-checks rooms)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(WORKERS):
                nursery.start_soon(self._work)
            task_status.started()

    def on_idm_event(self, event: JsonObject) -> None:
        """Called for every idm event, without awaiting: forget, revoke what is certain, queue."""
        change = change_of(event)
        if change is None:
            return
        self._resolver.forget(change.concerns)
        if not self._resolver.refreshes:
            return
        for session in list(self._hub.sessions):
            identity = session.identity
            if identity is not None and session.subscribed and change.concerns(identity):
                self._revoke_now(session, identity, change)
                self._pending[session] = None
        if self._pending:
            self._ready.set()

    def _revoke_now(self, session: Session, identity: Identity, change: IdmChange) -> None:
        lost = change.certain_losses(identity)
        if lost:
            kept = tuple(ws for ws in identity.workspaces if ws.uuid not in lost)
            self._hub.start_delivering(session, dataclasses.replace(identity, workspaces=kept))

    async def _work(self) -> None:
        while True:
            while not self._pending:
                await self._ready.wait()
            session = next(iter(self._pending))
            del self._pending[session]
            if not self._pending:
                self._ready = trio.Event()
            await self._refresh(session)

    async def _refresh(self, session: Session) -> None:
        identity = session.identity
        if identity is None or not session.subscribed or session.closing is not None:
            return
        try:
            fresh = await self._resolver.refresh(identity, session.token)
        except AuthError as err:
            self._metrics.access_refreshes.labels("closed").inc()
            session.fail(err.code, err.message)
            return
        except ProtocolError as err:
            self._metrics.access_refreshes.labels("unavailable").inc()
            log.warning("access of %s not recomputed (%s); kept as it was", identity.user, err.message)
            return
        current = session.identity
        if (
            current is None
            or not session.subscribed
            or session.closing is not None
            or current.sub != fresh.sub
        ):
            return  # the session ended or subscribed again meanwhile
        self._metrics.access_refreshes.labels("changed" if fresh != current else "unchanged").inc()
        if fresh != current:
            self._hub.start_delivering(session, fresh)
            if self.after_change is not None:
                await self.after_change(session, fresh)
