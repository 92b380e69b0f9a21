"""Session registry and fan-out: who is connected, and one stream per audience they belong to.

Events are addressed to audiences (a user, a role, a workspace, ...). The hub keeps one stream
(``gateway.delivery.streams``) per audience that has a subscribed session. Fan-out appends the
event to the shared log, encodes each delivery's message once, and appends the frame to the stream
of each of its audiences: its cost does not depend on how many sessions an audience has. The
flusher then hands each member of a changed stream everything past its cursor.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from operator import attrgetter

from gateway.delivery.log import EventLog
from gateway.delivery.streams import Stream
from gateway.events.model import (
    Audience,
    Delivery,
    JsonObject,
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
from gateway.session import Session

Clock = Callable[[], float]


def audiences_of(identity: Identity) -> list[Audience]:
    """Every audience a session of ``identity`` belongs to (a workspace listed twice, once)."""
    found: list[Audience] = [ToUser(identity.user), ToSub(identity.sub)]
    found += [ToRole(role) for role in identity.roles]
    for ws in dict.fromkeys(identity.workspaces):
        found += [ToWorkspace(ws), ToWorkspaceUuid(ws.uuid)]
    if identity.is_admin:
        found.append(ToAdmins())
    return list(dict.fromkeys(found))


class Hub:
    def __init__(self, metrics: Metrics, log: EventLog, clock: Clock) -> None:
        self._metrics = metrics
        self.log = log
        self._clock = clock
        self.sessions: set[Session] = set()
        self._per_remote: Counter[str] = Counter()  # every connection, by address key
        # Subscribed sessions, by address key: the rest are pending (their own, smaller budget).
        self._subscribed: set[Session] = set()
        self._subscribed_per_remote: Counter[str] = Counter()
        self._streams: dict[Audience, Stream[Session]] = {}
        self._dirty: dict[Stream[Session], None] = {}  # streams appended to since the last flush
        self._roots: dict[str, Counter[Workspace]] = {}  # root -> workspaces with that root
        # The identity each session is indexed under. Kept here, not read back from the session:
        # Session.close() clears ``subscribed`` before the hub hears of it, and the session's
        # identity may be replaced before it is re-indexed.
        self._indexed: dict[Session, Identity] = {}
        self.on_dirty: Callable[[], None] | None = None  # wakes the flusher

    # -- registry ---------------------------------------------------------------------------

    def add(self, session: Session) -> None:
        self.sessions.add(session)
        self._per_remote[session.limit_key] += 1
        self._metrics.sessions.labels(session.endpoint).inc()

    def remove(self, session: Session) -> None:
        self.stop_delivering(session)
        if session in self.sessions:
            self.sessions.remove(session)
            _decrement(self._per_remote, session.limit_key)
            self._metrics.sessions.labels(session.endpoint).dec()

    def count_from(self, key: str) -> int:
        """Connections from one address key, subscribed or not."""
        return self._per_remote[key]

    @property
    def subscribed_count(self) -> int:
        return len(self._subscribed)

    def subscribed_from(self, key: str) -> int:
        return self._subscribed_per_remote[key]

    @property
    def pending_count(self) -> int:
        """Connections upgraded but not subscribed (yet, or since an unsubscribe)."""
        return len(self.sessions) - len(self._subscribed)

    def pending_from(self, key: str) -> int:
        return self._per_remote[key] - self._subscribed_per_remote[key]

    def start_delivering(self, session: Session, identity: Identity, *, resume: bool = False) -> None:
        """(Re-)index a session under ``identity``; events appended from now on reach it.

        ``resume``: a replay follows, which sends again what the streams still hold for the
        session, so that is dropped instead of queued.
        """
        self.stop_delivering(session, keep=not resume)
        session.identity = identity
        session.subscribed = True
        if session in self.sessions and session not in self._subscribed:
            self._subscribed.add(session)
            self._subscribed_per_remote[session.limit_key] += 1
        if session.endpoint == EVENTS:
            self._indexed[session] = identity
            self._index(session, identity)

    def stop_delivering(self, session: Session, *, keep: bool = True) -> None:
        """Take the session out of its streams; what they held for it stays queued to it
        (unless not ``keep``)."""
        if session in self._subscribed:
            self._subscribed.remove(session)
            _decrement(self._subscribed_per_remote, session.limit_key)
        identity = self._indexed.pop(session, None)
        if identity is not None:
            if keep:
                session.feed.keep_routed(self.log.head, identity, session.positions)
            else:
                session.feed.forget_routed(self.log.head)
            self._unindex(session, identity)
            if session.feed.has_own:
                session.flush_soon()
        session.subscribed = False

    def _index(self, session: Session, identity: Identity) -> None:
        feed = session.feed
        feed.cursor = max(feed.cursor, self.log.head)
        feed.streams = []
        for audience in audiences_of(identity):
            stream = self._streams.get(audience)
            if stream is None:
                stream = self._streams[audience] = Stream(audience)
                if isinstance(audience, ToWorkspace):
                    for root in audience.workspace.roots:
                        self._roots.setdefault(root, Counter())[audience.workspace] += 1
            stream.members.add(session)
            feed.streams.append(stream)

    def _unindex(self, session: Session, identity: Identity) -> None:
        for audience in audiences_of(identity):
            stream = self._streams.get(audience)
            if stream is None:
                continue
            stream.members.discard(session)
            if not stream.members:
                del self._streams[audience]
                self._dirty.pop(stream, None)
                if isinstance(audience, ToWorkspace):
                    for root in audience.workspace.roots:
                        self._forget_root(root, audience.workspace)

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
            spaces = self._roots.get(candidate)
            if not spaces:
                continue
            # Workspaces sharing a root in uuid order: a session in two of them gets the event's
            # messages in the order a replay for it makes them (their positions match).
            for ws in sorted(spaces, key=attrgetter("uuid")) if len(spaces) > 1 else spaces:
                yield ws, candidate

    def recipients(self, audiences: Iterable[Audience]) -> set[Session]:
        found: set[Session] = set()
        for audience in audiences:
            stream = self._streams.get(audience)
            if stream is not None:
                found.update(stream.members)
        return found

    def stream(self, audience: Audience) -> Stream[Session] | None:
        return self._streams.get(audience)

    # -- fan-out ------------------------------------------------------------------------------

    def fan_out(
        self,
        topic: str,
        deliveries: Iterable[Delivery],
        event: JsonObject | None = None,
        seq: int | None = None,
    ) -> int:
        """Append the event to the log (at stream sequence ``seq`` with JetStream) and its frames
        to its audiences' streams.

        Returns how many sessions the event's messages will reach.
        """
        message = event if event is not None else {}
        entry = self.log.append(topic, message, list(deliveries), self._clock(), seq)
        reached = 0
        for seq, delivery in enumerate(entry.deliveries):
            streams = [s for a in delivery.audiences if (s := self._streams.get(a)) is not None]
            if not streams:
                continue
            count = _reach(streams, delivery)
            if not count:
                continue
            item = (entry.offset, seq, entry.frame(seq), delivery.allow, entry)
            for stream in streams:
                stream.append(item)
                self._dirty[stream] = None
            reached += count
        if reached:
            self._metrics.events_delivered.labels(topic).inc(reached)
            if self.on_dirty is not None:
                self.on_dirty()
        return reached

    def take_dirty(self) -> list[Stream[Session]]:
        dirty, self._dirty = list(self._dirty), {}
        return dirty


def _reach(streams: list[Stream[Session]], delivery: Delivery) -> int:
    """How many sessions a delivery reaches: each once, if its identity passes ``allow``."""
    allow = delivery.allow
    if len(streams) == 1 and allow is None:
        return len(streams[0].members)
    sessions = set().union(*(s.members for s in streams)) if len(streams) > 1 else streams[0].members
    if allow is None:
        return len(sessions)
    return sum(1 for s in sessions if s.identity is not None and allow(s.identity))


def _decrement(counter: Counter[str], key: str) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]
