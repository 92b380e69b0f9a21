"""This instance's sessions in each room, and the fan-out of chat events to them.

While a JOIN's history page is read and sent, live frames for the joining session wait (with the
Seq of the post they carry), so that a post arrives once: live or in the page, never both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from gateway.chat import protocol as chat
from gateway.chat.events import MessageEvent, RoomEvent
from gateway.chat.protocol import RoomRef
from gateway.chat.records import RoomRecord
from gateway.identity import Identity
from gateway.metrics import Metrics
from gateway.protocol import json_frame
from gateway.session import Session
from gateway.topics import CHAT_TOPIC


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


# Live frames held for one session while its JOIN's history page is read and sent.
MAX_HELD: Final = 2048


class LocalRooms:
    def __init__(
        self, metrics: Metrics, *, session_key: Callable[[Session], str], max_held: int = MAX_HELD
    ) -> None:
        self._metrics = metrics
        self._max_held = max_held
        self._session_key = session_key
        self._rooms: dict[str, set[Session]] = {}  # room uuid -> local sessions in it
        self._joined: dict[Session, dict[str, Joined]] = {}

    # -- membership of local sessions ---------------------------------------------------------

    def rooms_of(self, session: Session) -> dict[str, Joined]:
        return self._joined.get(session, {})

    def attach(self, session: Session, joined: Joined) -> None:
        self._joined.setdefault(session, {})[joined.room.uuid] = joined
        self._rooms.setdefault(joined.room.uuid, set()).add(session)

    def detach(self, session: Session, room_uuid: str) -> None:
        self._joined.get(session, {}).pop(room_uuid, None)
        sessions = self._rooms.get(room_uuid)
        if sessions is not None:
            sessions.discard(session)
            if not sessions:
                del self._rooms[room_uuid]

    def detach_all(self, session: Session) -> list[str]:
        """Take the session out of every room; the uuids of the rooms it was in."""
        rooms = list(self._joined.pop(session, {}))
        for room_uuid in rooms:
            self.detach(session, room_uuid)
        return rooms

    def joined_room(self, session: Session, identity: Identity, ref: RoomRef) -> Joined | None:
        """The room ``ref`` names among the session's: by Uuid, or by Type and RoomTypeObject."""
        rooms = self._joined.get(session, {})
        if ref.uuid:
            return rooms.get(ref.uuid)
        wanted = (
            chat.user_room_key(identity.user, ref.type_object) if ref.type == chat.USER else ref.type_object
        )
        return next(
            (j for j in rooms.values() if j.room.type == ref.type and j.room.type_object == wanted), None
        )

    def user_present(self, room_uuid: str, user: str) -> bool:
        return any(s.identity is not None and s.identity.user == user for s in self._rooms.get(room_uuid, ()))

    # -- fan-out -------------------------------------------------------------------------------

    def deliver(self, event: MessageEvent) -> None:
        sessions = self._rooms.get(event.room_uuid, ())
        frame = json_frame(event.frame)
        for session in list(sessions):
            self._send_or_hold(session, event.room_uuid, frame, event.new_seq)
        if sessions:
            self._metrics.events_delivered.labels(CHAT_TOPIC).inc(len(sessions))

    def deliver_members(self, event: RoomEvent) -> None:
        room = event.room
        frames: dict[str, bytes] = {}  # one encoding per distinct viewer rendering
        for session in list(self._rooms.get(room.uuid, ())):
            if event.skip is not None and self._session_key(session) == event.skip:
                continue
            viewer = session.identity.user if session.identity else ""
            key = viewer if room.type == chat.USER else ""
            if key not in frames:
                frames[key] = json_frame(chat.room_update(room, event.users, viewer))
            self._send_or_hold(session, room.uuid, frames[key], None)

    def _send_or_hold(self, session: Session, room_uuid: str, frame: bytes, new_seq: int | None) -> None:
        joined = self._joined.get(session, {}).get(room_uuid)
        if joined is None:
            session.send(frame)
        elif new_seq is not None and new_seq <= joined.shown:
            pass  # the JOIN's history page already showed this post
        elif joined.held is None:
            session.send(frame)
        elif len(joined.held) < self._max_held:
            joined.held.append((new_seq, frame))
        else:  # a history page that takes this long: stop holding, a duplicate is the lesser harm
            release_held(session, joined)
            session.send(frame)


def release_held(session: Session, joined: Joined) -> None:
    """Send what arrived during the JOIN, minus the posts its history page already showed."""
    held, joined.held = joined.held or [], None
    for new_seq, frame in held:
        if new_seq is None or new_seq > joined.shown:
            session.send(frame)
