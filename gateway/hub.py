"""Session registry and fan-out: who is connected, indexed by what events are addressed to.

Events are addressed to audiences (a user, a role, a workspace, ...). The hub keeps one index per
kind of audience over the sessions that are subscribed, so routing an event costs a few dict
look-ups per audience instead of a filter over every session. Fan-out encodes each distinct
message once and hands the same frame to every recipient with ``Session.send``, which never waits.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from typing import TypeVar

from gateway.events.model import (
    Audience,
    Delivery,
    ToAdmins,
    ToRole,
    ToSub,
    ToUser,
    ToWorkspace,
    ToWorkspaceUuid,
)
from gateway.handshake import EVENTS
from gateway.identity import Identity, Workspace
from gateway.metrics import Metrics
from gateway.paths import ancestors_and_self
from gateway.protocol import json_frame
from gateway.session import Session

K = TypeVar("K")


class Hub:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self.sessions: set[Session] = set()
        self._per_remote: Counter[str] = Counter()
        self._by_user: dict[str, set[Session]] = {}
        self._by_sub: dict[str, set[Session]] = {}
        self._by_role: dict[str, set[Session]] = {}
        self._by_workspace: dict[Workspace, set[Session]] = {}
        self._by_workspace_uuid: dict[str, set[Session]] = {}
        self._admins: set[Session] = set()
        self._roots: dict[str, Counter[Workspace]] = {}  # root -> workspaces with that root
        # The identity each session is indexed under. Kept here, not read back from the session:
        # Session.close() clears ``subscribed`` before the hub hears of it, and the session's
        # identity may be replaced before it is re-indexed.
        self._indexed: dict[Session, Identity] = {}

    # -- registry ---------------------------------------------------------------------------

    def add(self, session: Session) -> None:
        self.sessions.add(session)
        self._per_remote[session.remote] += 1
        self._metrics.sessions.labels(session.endpoint).inc()

    def remove(self, session: Session) -> None:
        self.stop_delivering(session)
        if session in self.sessions:
            self.sessions.remove(session)
            self._per_remote[session.remote] -= 1
            if self._per_remote[session.remote] <= 0:
                del self._per_remote[session.remote]
            self._metrics.sessions.labels(session.endpoint).dec()

    def count_from(self, remote: str) -> int:
        return self._per_remote[remote]

    def start_delivering(self, session: Session, identity: Identity) -> None:
        """(Re-)index an events session under ``identity``; events published from now reach it."""
        self.stop_delivering(session)
        session.identity = identity
        session.subscribed = True
        if session.endpoint == EVENTS:
            self._indexed[session] = identity
            self._index(session, identity, add=True)

    def stop_delivering(self, session: Session) -> None:
        identity = self._indexed.pop(session, None)
        if identity is not None:
            self._index(session, identity, add=False)
        session.subscribed = False

    def _index(self, session: Session, identity: Identity, *, add: bool) -> None:
        _toggle(self._by_user, identity.user, session, add)
        _toggle(self._by_sub, identity.sub, session, add)
        for role in identity.roles:
            _toggle(self._by_role, role, session, add)
        for ws in dict.fromkeys(identity.workspaces):  # a workspace listed twice is indexed once
            _toggle(self._by_workspace_uuid, ws.uuid, session, add)
            first = ws not in self._by_workspace
            _toggle(self._by_workspace, ws, session, add)
            if add and first:
                for root in ws.roots:
                    self._roots.setdefault(root, Counter())[ws] += 1
            elif not add and ws not in self._by_workspace:
                for root in ws.roots:
                    self._forget_root(root, ws)
        if identity.is_admin:
            (self._admins.add if add else self._admins.discard)(session)

    def _forget_root(self, root: str, ws: Workspace) -> None:
        counter = self._roots[root]
        counter[ws] -= 1
        if counter[ws] <= 0:
            del counter[ws]
        if not counter:
            del self._roots[root]

    # -- routing support --------------------------------------------------------------------

    def covering(self, path: str) -> Iterator[tuple[Workspace, str]]:
        """Workspaces of subscribed sessions whose root covers ``path``, deepest root first."""
        for candidate in ancestors_and_self(path):
            for ws in self._roots.get(candidate, ()):
                yield ws, candidate

    def recipients(self, audiences: Iterable[Audience]) -> set[Session]:
        found: set[Session] = set()
        for audience in audiences:
            found.update(self._resolve(audience))
        return found

    def _snapshot(self, audiences: tuple[Audience, ...]) -> Iterable[Session]:
        """The recipients as a copy: a send may close a slow consumer, which unindexes it.

        Most deliveries have one audience: a list copy of its index, cheaper than a set union.
        """
        if len(audiences) == 1:
            return list(self._resolve(audiences[0]))
        return self.recipients(audiences)

    def _resolve(self, audience: Audience) -> Iterable[Session]:
        match audience:
            case ToUser(login):
                return self._by_user.get(login, ())
            case ToSub(sub):
                return self._by_sub.get(sub, ())
            case ToRole(role):
                return self._by_role.get(role, ())
            case ToAdmins():
                return self._admins
            case ToWorkspace(workspace):
                return self._by_workspace.get(workspace, ())
            case ToWorkspaceUuid(uuid):
                return self._by_workspace_uuid.get(uuid, ())
        raise AssertionError(audience)  # pragma: no cover

    def fan_out(self, topic: str, deliveries: Iterable[Delivery]) -> int:
        """Queue each delivery's message to its sessions; return how many messages were queued."""
        queued = 0
        for delivery in deliveries:
            frame: bytes | None = None
            for session in self._snapshot(delivery.audiences):
                identity = session.identity
                if identity is None or (delivery.allow is not None and not delivery.allow(identity)):
                    continue
                if frame is None:
                    frame = json_frame(delivery.message)
                session.send(frame)
                queued += 1
        if queued:
            self._metrics.events_delivered.labels(topic).inc(queued)
        return queued


def _toggle(index: dict[K, set[Session]], key: K, session: Session, add: bool) -> None:
    bucket = index.get(key)
    if add:
        if bucket is None:
            bucket = index[key] = set()
        bucket.add(session)
    elif bucket is not None:
        bucket.discard(session)
        if not bucket:
            del index[key]
