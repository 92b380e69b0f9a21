"""The chat socket's requests: JOIN, LEAVE, POST (and edits), HISTORY, DELETE_MSG.

Every change other sessions must see (a post, an edit, a deletion, a room's member list) is
committed first, then published on the chat topic (``chat.events``); every instance (this one
included) fans it out to its own sessions in that room (``chat.rooms``). So the sender's copy of
its POST, which arrives the same way, is its acknowledgement, and one instance or many behave the
same. Who is in a room over time is ``chat.presence``'s; who may enter it, ``chat.access``'s.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Final

import trio

from gateway.bus.base import Bus, BusError
from gateway.chat import events, history, lookup
from gateway.chat import protocol as chat
from gateway.chat.access import NodeAccess, check_room
from gateway.chat.posting import PostRates
from gateway.chat.presence import Presence
from gateway.chat.protocol import ChatRequest, Page, RoomRef
from gateway.chat.records import (
    CreationLimited,
    Forbidden,
    MessageRecord,
    NotFound,
    RoomRecord,
    StoreUnavailable,
)
from gateway.chat.rooms import Joined, LocalRooms, release_held
from gateway.chat.rules import Grant
from gateway.chat.sanitise import clean_text
from gateway.chat.store import ChatStore
from gateway.chat.sweeper import RoomSweeper
from gateway.config import Settings
from gateway.identity import Identity
from gateway.metrics import Metrics
from gateway.protocol import ErrorCode, JsonObject, ProtocolError
from gateway.session import Session
from gateway.topics import CHAT_TOPIC

log = logging.getLogger("gateway.chat")

# Longest a chat request may wait on the database (or the node check) before it is answered
# store_unavailable: the session's reader must not stall behind a database that hangs.
REQUEST_DEADLINE: Final = 15.0
BUS_BATCH: Final = 256


class ChatService:
    """Implements the chat endpoint (``EndpointHandler``) and its background tasks."""

    def __init__(
        self,
        settings: Settings,
        store: ChatStore,
        bus: Bus,
        nodes: NodeAccess,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.bus = bus
        self.nodes = nodes
        self.metrics = metrics
        self.clock = clock
        self.instance = uuid.uuid4().hex[:12]
        self.rooms = LocalRooms(metrics, session_key=self._session_key)
        self.presence = Presence(
            store,
            metrics,
            timeout=settings.chat_presence_timeout,
            clock=lambda: self.clock(),  # the service's clock, whatever it is set to later
            present=self.rooms.user_present,
            announce=self._announce_members,
        )
        self._post_rates = PostRates(settings.chat_posts_per_second, settings.chat_post_burst)
        self.sweeper = RoomSweeper(store, ttl=settings.chat_empty_room_ttl, clock=lambda: self.clock())

    # -- background tasks -------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self._consume_bus)
            await nursery.start(self.presence.run)
            await nursery.start(self.sweeper.run)
            task_status.started()

    async def _consume_bus(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with self.bus.subscribe(CHAT_TOPIC) as subscription:
            task_status.started()
            while True:
                for data in await subscription.receive_batch(BUS_BATCH):
                    self.metrics.events_received.labels(CHAT_TOPIC).inc()
                    self._deliver_bus_event(data)

    # -- EndpointHandler --------------------------------------------------------------------

    async def on_subscribed(self, session: Session, identity: Identity) -> None:
        """On re-subscribe, keep only the rooms the new token still grants, and say which went."""
        for room_uuid, joined in list(self.rooms.rooms_of(session).items()):
            try:
                await check_room(identity, session.token, joined.ref, self.nodes)
            except ProtocolError as err:
                if err.code in (ErrorCode.NODE_CHECK_UNAVAILABLE, ErrorCode.NODE_CHECK_RATE_LIMITED):
                    continue  # nobody can tell now: keep the room until someone can
                self.rooms.detach(session, room_uuid)
                self.presence.depart(room_uuid, identity.user)
                session.fail(
                    ErrorCode.ROOM_FORBIDDEN, f"you left the room: {err.message}", RoomUuid=room_uuid
                )

    async def on_unsubscribed(self, session: Session) -> None:
        self._leave_all(session)

    async def on_closed(self, session: Session) -> None:
        self._leave_all(session)

    def _leave_all(self, session: Session) -> None:
        for room_uuid in self.rooms.detach_all(session):
            if session.identity is not None:
                self.presence.depart(room_uuid, session.identity.user)

    async def handle(self, session: Session, message: JsonObject) -> None:
        request = chat.parse_request(message)
        identity = session.identity
        assert identity is not None
        handler = {
            chat.JOIN: self._join,
            chat.LEAVE: self._leave,
            chat.POST: self._post,
            chat.HISTORY: self._history,
            chat.DELETE_MSG: self._delete,
        }[request.kind]
        try:
            with trio.fail_after(REQUEST_DEADLINE):
                await handler(session, identity, request)
        except trio.TooSlowError:
            raise ProtocolError(
                ErrorCode.STORE_UNAVAILABLE, "the chat database did not answer in time", **_context(request)
            ) from None
        except StoreUnavailable as exc:
            raise ProtocolError(
                ErrorCode.STORE_UNAVAILABLE, f"chat history unavailable: {exc}", **_context(request)
            ) from None
        except CreationLimited:
            cap = self.settings.chat_rooms_created_per_hour
            raise ProtocolError(
                ErrorCode.ROOM_CREATION_LIMITED,
                f"a user may create {cap} rooms an hour; join an existing room or try later",
                **_context(request),
            ) from None
        except NotFound:  # deleted by the empty-room sweep while this session was in it
            named = request.room or RoomRef(request.room_uuid, chat.GLOBAL, "", "")
            if (gone := self.rooms.joined_room(session, identity, named)) is not None:
                self.rooms.detach(session, gone.room.uuid)
            raise ProtocolError(
                ErrorCode.NOT_MEMBER, "the room was deleted while empty; JOIN it again", **_context(request)
            ) from None
        except ProtocolError as err:
            err.context.update(_context(request))
            raise

    # -- requests ---------------------------------------------------------------------------

    async def _join(self, session: Session, identity: Identity, request: ChatRequest) -> None:
        assert request.room is not None
        if request.is_ping:
            await self._ping(session, identity, request.room)
            return
        await self._enter(session, identity, request.room, create=True)

    async def _enter(
        self, session: Session, identity: Identity, named: RoomRef, *, create: bool
    ) -> Joined | None:
        """Join a room when access allows: a JOIN creates it if missing; a heartbeat or a request for
        a room the session is not in (Cells' client after a reconnect) only re-attaches to it, or
        brings back a room deleted while empty that it names by Uuid, Type and RoomTypeObject."""
        ref = await lookup.join_target(self.store, identity, named, missing_ok=not create)
        if ref is None:
            return None  # nothing to re-attach to
        grant = await check_room(identity, session.token, ref, self.nodes)
        rejoin = self._check_room_limit(session, grant)
        cap = self.settings.chat_rooms_created_per_hour
        room = await lookup.enter(self.store, identity, grant, ref, create=create, now=self.clock(), cap=cap)
        if room is None:
            return None
        entry = Joined(room, ref, held=[] if self.settings.chat_history_on_join else None)
        self.rooms.attach(session, entry)
        try:
            users = await self._open_room(session, entry)
        except BaseException:
            if not rejoin:  # a JOIN that failed leaves the session (and, if alone, the user) outside
                self.rooms.detach(session, room.uuid)
                self.presence.depart(room.uuid, identity.user)
            raise
        await self._publish(events.members(room, users, skip=self._session_key(session)))
        return entry

    async def _member_room(self, session: Session, identity: Identity, ref: RoomRef) -> Joined:
        """The joined room ``ref`` names, re-attached first if need be; else NOT_MEMBER."""
        joined = self.rooms.joined_room(session, identity, ref)
        if joined is None:
            joined = await self._enter(session, identity, ref, create=False)
        if joined is None:
            raise ProtocolError(ErrorCode.NOT_MEMBER, "join the room first")
        return joined

    def _check_room_limit(self, session: Session, grant: Grant) -> bool:
        """Refuse a room over the per-session limit before the store is asked (no room created);
        True if the session is already in the room."""
        joined = self.rooms.rooms_of(session)
        rejoin = any(
            j.room.type == grant.type and j.room.type_object == grant.type_object for j in joined.values()
        )
        if not rejoin and len(joined) >= self.settings.chat_max_rooms_per_session:
            raise ProtocolError(
                ErrorCode.TOO_MANY_ROOMS,
                f"a session may join at most {self.settings.chat_max_rooms_per_session} rooms",
            )
        return rejoin

    async def _open_room(self, session: Session, entry: Joined) -> list[str]:
        """Send the joiner the ROOM_UPDATE (and the history page), then what arrived meanwhile."""
        room, viewer = entry.room, session.identity.user if session.identity else ""
        users = await self.store.members(room.uuid)
        if entry.held is not None:
            page = Page(limit=self.settings.chat_history_page)
            records = await self._send_history(session, room, users, page)
            entry.shown = max((r.seq for r in records), default=0)
        else:
            session.send_json(chat.room_update(room, users, viewer))
        release_held(session, entry)  # (a JOIN that fails drops them with the room)
        return users

    async def _ping(self, session: Session, identity: Identity, ref: RoomRef) -> None:
        joined = self.rooms.joined_room(session, identity, ref)
        if joined is None:  # after a reconnect or a restart: the heartbeat brings the session back
            await self._enter(session, identity, ref, create=False)
            return
        try:
            if await self.store.touch_member(joined.room.uuid, identity.user, now=self.clock()):
                await self._announce_members(joined.room.uuid)  # came back after timing out
        except NotFound:  # silent long enough for the room to be deleted while empty: bring it back
            self.rooms.detach(session, joined.room.uuid)
            known = RoomRef(joined.room.uuid, joined.ref.type, joined.ref.type_object, "")
            await self._enter(session, identity, known, create=False)

    async def _leave(self, session: Session, identity: Identity, request: ChatRequest) -> None:
        assert request.room is not None
        joined = self.rooms.joined_room(session, identity, request.room)
        if joined is None:
            return  # leaving a room one is not in: nothing to do, nothing to say (as in Cells)
        room = joined.room
        self.rooms.detach(session, room.uuid)
        try:
            removed = not self.rooms.user_present(room.uuid, identity.user) and (
                await self.store.remove_member(room.uuid, identity.user, now=self.clock())
            )
            users = await self.store.members(room.uuid)
        except NotFound:
            return  # deleted while empty: the session has left it all the same
        session.send_json(chat.room_update(room, users, identity.user))
        if removed:
            await self._publish(events.members(room, users, left=identity.user))

    async def _post(self, session: Session, identity: Identity, request: ChatRequest) -> None:
        assert request.message is not None and request.message.text is not None
        room_uuid = request.room_uuid or ""
        await self._member_room(session, identity, RoomRef(room_uuid, chat.GLOBAL, "", ""))
        text = clean_text(request.message.text, self.settings.chat_max_message_bytes)
        self._post_rates.check(identity.user, trio.current_time())
        with self._write_then_share():
            if request.message.uuid:
                record = await self._edit(identity, room_uuid, request.message.uuid, text)
                await self._publish(events.edited(record))
                return
            record, created = await self.store.post(
                room_uuid,
                identity.user,
                text,
                client_id=request.message.client_id,
                now=self.clock(),
                info=request.message.info,
            )
            if not created:  # a retry of a POST already stored: acknowledge it to the sender only
                session.send_json(chat.message_json(record))
                return
            await self._publish(events.posted(record))

    @contextlib.contextmanager
    def _write_then_share(self) -> Iterator[None]:
        """A write and the publish that shares it, shielded from the session's own end.

        A session closed while its write waits for the commit (shutdown, a slow-consumer close)
        must not leave a committed change unannounced to the room. Bounded all the same.
        """
        with trio.CancelScope(shield=True, deadline=trio.current_time() + REQUEST_DEADLINE) as scope:
            yield
        if scope.cancelled_caught:
            raise ProtocolError(
                ErrorCode.STORE_UNAVAILABLE,
                "the chat database did not answer in time; the change may still be stored "
                "(a POST retried with its ClientMessageId is stored once)",
            )

    async def _edit(self, identity: Identity, room_uuid: str, message_uuid: str, text: str) -> MessageRecord:
        """Edit a message of ``room_uuid`` (the room whose membership and rights were checked)."""
        try:
            return await self.store.edit(
                message_uuid, identity.user, text, now=self.clock(), room_uuid=room_uuid
            )
        except NotFound:
            raise ProtocolError(ErrorCode.MESSAGE_NOT_FOUND, "no such message to edit") from None
        except Forbidden:
            raise ProtocolError(ErrorCode.EDIT_FORBIDDEN, "only the author may edit a message") from None

    async def _delete(self, session: Session, identity: Identity, request: ChatRequest) -> None:
        assert request.message is not None and request.message.uuid is not None
        with self._write_then_share():
            try:
                record = await self.store.delete(
                    request.message.uuid, identity.user, is_admin=identity.is_admin, now=self.clock()
                )
            except NotFound:
                raise ProtocolError(ErrorCode.MESSAGE_NOT_FOUND, "no such message to delete") from None
            except Forbidden:
                raise ProtocolError(
                    ErrorCode.DELETE_FORBIDDEN, "only the author or an admin may delete a message"
                ) from None
            await self._publish(events.deleted(record))

    async def _history(self, session: Session, identity: Identity, request: ChatRequest) -> None:
        assert request.room is not None
        joined = await self._member_room(session, identity, request.room)
        page = chat.parse_page(request.message)
        users = await self.store.members(joined.room.uuid)
        await self._send_history(session, joined.room, users, page)

    async def _send_history(
        self, session: Session, room: RoomRecord, users: list[str], page: Page
    ) -> list[MessageRecord]:
        records = await history.read(self.store, room.uuid, page)
        return history.send(session, room, users, page, records, self.settings.chat_history_page_bytes)

    # -- helpers ----------------------------------------------------------------------------

    def _session_key(self, session: Session) -> str:
        return f"{self.instance}:{session.id}"

    async def _announce_members(self, room_uuid: str, *, left: str | None = None) -> None:
        try:
            room = await self.store.room(room_uuid)
            users = await self.store.members(room_uuid) if room is not None else []
        except NotFound:
            return  # deleted while empty meanwhile: nobody is left to tell
        if room is not None:
            await self._publish(events.members(room, users, left=left))

    async def _publish(self, data: bytes) -> None:
        try:
            await self.bus.publish(CHAT_TOPIC, data)
        except BusError as exc:
            # Committed but not shared: at least this instance's sessions see it.
            log.warning("chat event not published on the bus (%s); delivering locally only", exc)
            self._deliver_bus_event(data)

    # -- bus -> local sessions --------------------------------------------------------------

    def _deliver_bus_event(self, data: bytes) -> None:
        try:
            event = events.decode(data)
        except events.BadChatEvent as exc:
            self.metrics.events_dropped.labels(CHAT_TOPIC, "bad_event").inc()
            log.warning("dropped a malformed chat event: %s", exc)
            return
        if isinstance(event, events.RoomEvent):
            self.rooms.deliver_members(event)
            self.presence.left_elsewhere(event.room.uuid, event.users, event.left)
        else:
            self.rooms.deliver(event)


def _context(request: ChatRequest) -> dict[str, Any]:
    context: dict[str, Any] = {"request": request.kind}
    if request.message is not None and request.message.client_id:
        context["ClientMessageId"] = request.message.client_id
    return context
