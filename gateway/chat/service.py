"""The chat socket's behaviour: rooms, posts, history, presence, and their trip over the bus.

Every change other sessions must see (a post, an edit, a deletion, a room's member list) is
committed first, then published on the chat topic; every instance (this one included) fans it
out to its own sessions in that room. So the sender's copy of its POST, which arrives the same
way, is its acknowledgement, and one instance or many behave the same.

Presence: a JOIN or a PING JOIN refreshes the user's ``last_seen`` in the members table; every
instance sweeps members silent for ``chat_presence_timeout`` and publishes the room's new list.
An instance only knows its own sessions: when another one announces that a user left a room
(``"left"``) while a session of that user is still in the room here, this instance puts the user
back at once, rather than at the session's next PING.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

import nh3
import trio

from gateway.bus import Bus, BusError
from gateway.chat import protocol as chat
from gateway.chat.access import Grant, NodeAccess, check_room
from gateway.chat.protocol import ChatRequest, Page, RoomRef
from gateway.chat.store import ChatStore, Forbidden, MessageRecord, NotFound, RoomRecord, StoreUnavailable
from gateway.config import Settings
from gateway.identity import Identity
from gateway.metrics import Metrics
from gateway.protocol import ErrorCode, JsonObject, ProtocolError, encode
from gateway.session import RateLimiter, Session
from gateway.topics import CHAT_TOPIC
from gateway.wsconn import text_frame

log = logging.getLogger("gateway.chat")

SWEEP_INTERVAL: Final = 1.0
# Longest a chat request may wait on the database (or the node check) before it is answered
# store_unavailable: the session's reader must not stall behind a database that hangs.
REQUEST_DEADLINE: Final = 15.0
POST_LIMITERS: Final = 10000  # users whose post rate is remembered (least recently posting dropped)
DEPARTURES_QUEUE: Final = 1024
BUS_BATCH: Final = 256


@dataclass(slots=True)
class _StoreOutage:
    """The last store outage the presence sweep met. No PING could be recorded during it, so members
    seen shortly before it stay until a full presence timeout after it ends, to ping again."""

    started: float | None = None
    ended: float | None = None

    def cutoff(self, now: float, timeout: float) -> float:
        """Members last seen before this time have left."""
        if self.started is None:
            return now - timeout
        if self.ended is not None and now >= self.ended + timeout:
            self.started = self.ended = None
            return now - timeout
        return min(now - timeout, self.started - timeout)

    def down(self, now: float) -> None:
        if self.started is None:
            self.started = now
        self.ended = None  # a new outage within the grace of the last one extends it

    def up(self, now: float) -> None:
        if self.started is not None and self.ended is None:
            self.ended = now


@dataclass(slots=True)
class Joined:
    """A room one session has joined."""

    room: RoomRecord
    ref: RoomRef
    # While the JOIN's history page is read and sent, live frames wait here with the Seq of the
    # post they carry (None for anything else), so a post can't arrive both live and in the page.
    held: list[tuple[int | None, bytes]] | None = None
    # The newest Seq that page showed: a post's live copy arriving later (over a broker, say) is
    # dropped for good, not only while frames are held.
    shown: int = 0


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
        self._rooms: dict[str, set[Session]] = {}  # room uuid -> local sessions in it
        self._joined: dict[Session, dict[str, Joined]] = {}
        self._post_limits: dict[str, RateLimiter] = {}
        self._departures_in, self._departures = trio.open_memory_channel[tuple[str, str]](DEPARTURES_QUEUE)
        self._returns_in, self._returns = trio.open_memory_channel[tuple[str, str]](DEPARTURES_QUEUE)

    # -- background tasks -------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self._consume_bus)
            nursery.start_soon(self._sweep_presence)
            nursery.start_soon(self._process_departures)
            nursery.start_soon(self._process_returns)
            task_status.started()

    async def _consume_bus(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with self.bus.subscribe(CHAT_TOPIC) as subscription:
            task_status.started()
            while True:
                for data in await subscription.receive_batch(BUS_BATCH):
                    self.metrics.events_received.labels(CHAT_TOPIC).inc()
                    self._deliver_bus_event(data)

    async def _sweep_presence(self) -> None:
        outage = _StoreOutage()
        while True:
            await trio.sleep(SWEEP_INTERVAL)
            now = self.clock()
            try:
                expired = await self.store.expire_members(
                    outage.cutoff(now, self.settings.chat_presence_timeout)
                )
                outage.up(now)
                for room_uuid in expired:
                    await self._announce_members(room_uuid)
            except StoreUnavailable as exc:
                outage.down(now)
                log.warning("presence sweep skipped: %s", exc)
            except Exception:
                # A bug here must cost one sweep, not the chat service: log it and sweep again.
                log.exception("presence sweep failed")

    async def _process_departures(self) -> None:
        async for room_uuid, user in self._departures:
            if self._user_present(room_uuid, user):
                continue  # another of the user's sessions is still in the room
            try:
                if await self.store.remove_member(room_uuid, user):
                    await self._announce_members(room_uuid, left=user)
            except StoreUnavailable as exc:
                log.warning("could not record that %s left a room: %s", user, exc)
            except Exception:
                log.exception("recording that %s left a room failed", user)

    async def _process_returns(self) -> None:
        """Put back users another instance took out of a room while a session here is still in it."""
        async for room_uuid, user in self._returns:
            if not self._user_present(room_uuid, user):
                continue
            try:
                if await self.store.touch_member(room_uuid, user, now=self.clock()):
                    await self._announce_members(room_uuid)
            except StoreUnavailable as exc:
                log.warning("could not record that %s is still in a room: %s", user, exc)
            except Exception:
                log.exception("recording that %s is still in a room failed", user)

    # -- EndpointHandler --------------------------------------------------------------------

    async def on_subscribed(self, session: Session, identity: Identity) -> None:
        """On re-subscribe, keep only the rooms the new token still grants, and say which went."""
        for room_uuid, joined in list(self._joined.get(session, {}).items()):
            try:
                await check_room(identity, session.token, joined.ref, self.nodes)
            except ProtocolError as err:
                if err.code == ErrorCode.NODE_CHECK_UNAVAILABLE:
                    continue  # nobody can tell now: keep the room until someone can
                self._detach(session, room_uuid)
                self._depart(room_uuid, identity.user)
                session.fail(
                    ErrorCode.ROOM_FORBIDDEN, f"you left the room: {err.message}", RoomUuid=room_uuid
                )

    async def on_unsubscribed(self, session: Session) -> None:
        self._leave_all(session)

    async def on_closed(self, session: Session) -> None:
        self._leave_all(session)

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
        a room the session is not in (Cells' client after a reconnect) only re-attaches to it."""
        ref = await self._join_target(identity, named, missing_ok=not create)
        if ref is None:
            return None  # nothing to re-attach to
        grant = await check_room(identity, session.token, ref, self.nodes)
        rejoin = self._check_room_limit(session, grant)
        now = self.clock()
        if create:
            room = await self.store.find_or_create_room(grant.type, grant.type_object, ref.label, now=now)
        elif (found := await self.store.find_room(grant.type, grant.type_object)) is not None:
            room = found
        else:
            return None
        await self.store.touch_member(room.uuid, identity.user, now=now)
        entry = Joined(room, ref, held=[] if self.settings.chat_history_on_join else None)
        self._attach(session, entry)
        try:
            users = await self._open_room(session, entry)
        except BaseException:
            if not rejoin:  # a JOIN that failed leaves the session (and, if alone, the user) outside
                self._detach(session, room.uuid)
                self._depart(room.uuid, identity.user)
            raise
        await self._publish(
            {"kind": "room", "room": _room_dict(room), "users": users, "skip": self._session_key(session)}
        )
        return entry

    async def _member_room(self, session: Session, identity: Identity, ref: RoomRef) -> Joined:
        """The joined room ``ref`` names, re-attached first if need be; else NOT_MEMBER."""
        joined = self._joined_room(session, identity, ref)
        if joined is None:
            joined = await self._enter(session, identity, ref, create=False)
        if joined is None:
            raise ProtocolError(ErrorCode.NOT_MEMBER, "join the room first")
        return joined

    async def _join_target(
        self, identity: Identity, ref: RoomRef, *, missing_ok: bool = False
    ) -> RoomRef | None:
        """The room a JOIN names: by Type and RoomTypeObject, or by the Uuid of a stored room
        (a Uuid of no room: None with ``missing_ok``, else room_forbidden)."""
        if ref.type_object or not ref.uuid:
            return ref
        room = await self.store.room(ref.uuid)
        if room is None and missing_ok:
            return None
        if room is None:
            raise ProtocolError(ErrorCode.ROOM_FORBIDDEN, "no such room, or not yours")
        type_object = room.type_object
        if room.type == chat.USER:
            pair = json.loads(room.type_object)
            if identity.user not in pair:
                raise ProtocolError(ErrorCode.ROOM_FORBIDDEN, "no such room, or not yours")
            type_object = chat.user_room_peer(room.type_object, identity.user)
        return RoomRef(None, room.type, type_object, ref.label or room.label)

    def _check_room_limit(self, session: Session, grant: Grant) -> bool:
        """Refuse a room over the per-session limit before the store is asked (no room created);
        True if the session is already in the room."""
        joined = self._joined.setdefault(session, {})
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
        _release_held(session, entry)  # (a JOIN that fails drops them with the room)
        return users

    async def _ping(self, session: Session, identity: Identity, ref: RoomRef) -> None:
        joined = self._joined_room(session, identity, ref)
        if joined is None:  # after a reconnect or a restart: the heartbeat brings the session back
            await self._enter(session, identity, ref, create=False)
            return
        if await self.store.touch_member(joined.room.uuid, identity.user, now=self.clock()):
            await self._announce_members(joined.room.uuid)  # came back after timing out

    async def _leave(self, session: Session, identity: Identity, request: ChatRequest) -> None:
        assert request.room is not None
        joined = self._joined_room(session, identity, request.room)
        if joined is None:
            return  # leaving a room one is not in: nothing to do, nothing to say (as in Cells)
        room = joined.room
        self._detach(session, room.uuid)
        removed = not self._user_present(room.uuid, identity.user) and await self.store.remove_member(
            room.uuid, identity.user
        )
        users = await self.store.members(room.uuid)
        session.send_json(chat.room_update(room, users, identity.user))
        if removed:
            await self._publish(_room_event(room, users, left=identity.user))

    async def _post(self, session: Session, identity: Identity, request: ChatRequest) -> None:
        assert request.message is not None and request.message.text is not None
        room_uuid = request.room_uuid or ""
        await self._member_room(session, identity, RoomRef(room_uuid, chat.GLOBAL, "", ""))
        text = self._clean_text(request.message.text)
        self._check_post_rate(identity.user)
        with self._write_then_share():
            if request.message.uuid:
                record = await self._edit(identity, room_uuid, request.message.uuid, text)
                await self._publish({"kind": "edit", "message": chat.message_json(record)})
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
            await self._publish({"kind": "message", "message": chat.message_json(record)})

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
            await self._publish({"kind": "delete", "message": chat.message_json(record)})

    async def _history(self, session: Session, identity: Identity, request: ChatRequest) -> None:
        assert request.room is not None
        joined = await self._member_room(session, identity, request.room)
        page = chat.parse_page(request.message)
        users = await self.store.members(joined.room.uuid)
        await self._send_history(session, joined.room, users, page)

    async def _send_history(
        self, session: Session, room: RoomRecord, users: list[str], page: Page
    ) -> list[MessageRecord]:
        if page.before is not None:
            records = await self.store.before(room.uuid, page.before, page.limit)
        elif page.after is not None:
            records = await self.store.after(room.uuid, page.after, page.limit)
        else:
            records = await self.store.latest(room.uuid, page.offset or 0, page.limit)
        viewer = session.identity.user if session.identity else ""
        session.send_json(chat.room_update(room, users, viewer))
        for record in records:
            session.send_json(chat.message_json(record))
        if records and len(records) == page.limit:
            session.send_json(chat.may_have_more(room.uuid, page, records))
        return records

    # -- helpers ----------------------------------------------------------------------------

    def _clean_text(self, raw: str) -> str:
        if len(raw.encode("utf-8", "surrogatepass")) > self.settings.chat_max_message_bytes:
            raise ProtocolError(
                ErrorCode.MESSAGE_TOO_LONG,
                f"messages are limited to {self.settings.chat_max_message_bytes} bytes",
            )
        text = nh3.clean(raw).strip()
        if not text:
            raise ProtocolError(ErrorCode.BAD_MESSAGE, "the message is empty (after removing unsafe HTML)")
        return text

    def _check_post_rate(self, user: str) -> None:
        now = trio.current_time()
        # Kept across reconnects (a new session must not bring a fresh burst), in a bounded LRU.
        limiter = self._post_limits.pop(user, None)
        if limiter is None:
            limiter = RateLimiter(self.settings.chat_posts_per_second, self.settings.chat_post_burst, now)
        self._post_limits[user] = limiter
        while len(self._post_limits) > POST_LIMITERS:
            del self._post_limits[next(iter(self._post_limits))]
        if not limiter.allow(now):
            raise ProtocolError(ErrorCode.POST_RATE_LIMITED, "too many posts; slow down")

    def _joined_room(self, session: Session, identity: Identity, ref: RoomRef) -> Joined | None:
        rooms = self._joined.get(session, {})
        if ref.uuid:
            found = rooms.get(ref.uuid)
        else:
            wanted = (
                chat.user_room_key(identity.user, ref.type_object)
                if ref.type == chat.USER
                else ref.type_object
            )
            found = next(
                (j for j in rooms.values() if j.room.type == ref.type and j.room.type_object == wanted), None
            )
        return found

    def _attach(self, session: Session, joined: Joined) -> None:
        self._joined.setdefault(session, {})[joined.room.uuid] = joined
        self._rooms.setdefault(joined.room.uuid, set()).add(session)

    def _detach(self, session: Session, room_uuid: str) -> None:
        self._joined.get(session, {}).pop(room_uuid, None)
        sessions = self._rooms.get(room_uuid)
        if sessions is not None:
            sessions.discard(session)
            if not sessions:
                del self._rooms[room_uuid]

    def _leave_all(self, session: Session) -> None:
        rooms = self._joined.pop(session, {})
        for room_uuid in rooms:
            self._detach(session, room_uuid)
            if session.identity is not None:
                self._depart(room_uuid, session.identity.user)

    def _depart(self, room_uuid: str, user: str) -> None:
        # When the queue is full, presence expiry removes the member within the timeout anyway.
        with contextlib.suppress(trio.WouldBlock):
            self._departures_in.send_nowait((room_uuid, user))

    def _user_present(self, room_uuid: str, user: str) -> bool:
        return any(s.identity is not None and s.identity.user == user for s in self._rooms.get(room_uuid, ()))

    def _session_key(self, session: Session) -> str:
        return f"{self.instance}:{session.id}"

    async def _announce_members(self, room_uuid: str, *, left: str | None = None) -> None:
        room = await self.store.room(room_uuid)
        if room is not None:
            users = await self.store.members(room_uuid)
            await self._publish(_room_event(room, users, left=left))

    async def _publish(self, event: JsonObject) -> None:
        data = json.dumps(event).encode()
        try:
            await self.bus.publish(CHAT_TOPIC, data)
        except BusError as exc:
            # Committed but not shared: at least this instance's sessions see it.
            log.warning("chat event not published on the bus (%s); delivering locally only", exc)
            self._deliver_bus_event(data)

    # -- bus -> local sessions --------------------------------------------------------------

    def _deliver_bus_event(self, data: bytes) -> None:
        try:
            event = json.loads(data)
            kind = event["kind"]
            if kind == "message":  # a new post: a joining session may have it in its history page
                message = event["message"]
                self._fan_out(message["RoomUuid"], chat_frame(message), new_seq=int(message["Seq"]))
            elif kind == "edit":
                self._fan_out(event["message"]["RoomUuid"], chat_frame(event["message"]))
            elif kind == "delete":
                message = event["message"]
                self._fan_out(message["RoomUuid"], chat_frame(chat.delete_frame_json(message)))
            elif kind == "room":
                room, users = _room_from_event(event["room"]), [str(u) for u in event["users"]]
                self._fan_out_room(room, users, event.get("skip"))
                self._check_left(room.uuid, users, event.get("left"))
            else:
                raise ValueError(f"unknown chat event kind {kind!r}")
        except (ValueError, KeyError, TypeError) as exc:
            self.metrics.events_dropped.labels(CHAT_TOPIC, "bad_event").inc()
            log.warning("dropped a malformed chat event: %s", exc)

    def _check_left(self, room_uuid: str, users: list[str], left: object) -> None:
        """Another instance took ``left`` out of the room: queue putting them back if they are here."""
        if isinstance(left, str) and left not in users and self._user_present(room_uuid, left):
            # When the queue is full, the session's next PING puts the user back anyway.
            with contextlib.suppress(trio.WouldBlock):
                self._returns_in.send_nowait((room_uuid, left))

    def _fan_out(self, room_uuid: str, frame: bytes, *, new_seq: int | None = None) -> None:
        sessions = self._rooms.get(room_uuid, ())
        for session in list(sessions):
            self._send_or_hold(session, room_uuid, frame, new_seq)
        if sessions:
            self.metrics.events_delivered.labels(CHAT_TOPIC).inc(len(sessions))

    def _fan_out_room(self, room: RoomRecord, users: list[str], skip: str | None) -> None:
        frames: dict[str, bytes] = {}  # one encoding per distinct viewer rendering
        for session in list(self._rooms.get(room.uuid, ())):
            if skip is not None and self._session_key(session) == skip:
                continue
            viewer = session.identity.user if session.identity else ""
            key = viewer if room.type == chat.USER else ""
            if key not in frames:
                frames[key] = chat_frame(chat.room_update(room, users, viewer))
            self._send_or_hold(session, room.uuid, frames[key], None)

    def _send_or_hold(self, session: Session, room_uuid: str, frame: bytes, new_seq: int | None) -> None:
        joined = self._joined.get(session, {}).get(room_uuid)
        if joined is None:
            session.send(frame)
        elif new_seq is not None and new_seq <= joined.shown:
            pass  # the JOIN's history page already showed this post
        elif joined.held is None:
            session.send(frame)
        elif len(joined.held) < self.settings.outbox_max_frames:
            joined.held.append((new_seq, frame))
        else:  # a history page that takes this long: stop holding, a duplicate is the lesser harm
            _release_held(session, joined)
            session.send(frame)


def _release_held(session: Session, joined: Joined) -> None:
    """Send what arrived during the JOIN, minus the posts its history page already showed."""
    held, joined.held = joined.held or [], None
    for new_seq, frame in held:
        if new_seq is None or new_seq > joined.shown:
            session.send(frame)


def chat_frame(obj: JsonObject) -> bytes:
    return text_frame(encode(obj))


def _room_dict(room: RoomRecord) -> dict[str, Any]:
    return {
        "uuid": room.uuid,
        "type": room.type,
        "type_object": room.type_object,
        "label": room.label,
        "last_updated": room.last_updated,
    }


def _room_event(room: RoomRecord, users: list[str], *, left: str | None) -> JsonObject:
    """A room's new member list for every instance; ``left``: the user just taken out, if any."""
    return {"kind": "room", "room": _room_dict(room), "users": users, "skip": None, "left": left}


def _room_from_event(raw: dict[str, Any]) -> RoomRecord:
    return RoomRecord(
        uuid=str(raw["uuid"]),
        type=str(raw["type"]),
        type_object=str(raw["type_object"]),
        label=str(raw["label"]),
        last_updated=float(raw["last_updated"]),
    )


def _context(request: ChatRequest) -> dict[str, Any]:
    context: dict[str, Any] = {"request": request.kind}
    if request.message is not None and request.message.client_id:
        context["ClientMessageId"] = request.message.client_id
    return context
