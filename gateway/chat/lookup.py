"""Which stored room a request names, and when a missing one is created.

A JOIN names a room by Type and RoomTypeObject (or by the Uuid of a stored room) and creates it if
missing; a heartbeat, POST or HISTORY never creates one, except a room deleted while empty that a
heartbeat names by its Uuid, Type and RoomTypeObject (Cells' client keeps pinging rooms it knows).
Every creation counts against its creator's hourly cap (``chat_rooms_created_per_hour``).
"""

from __future__ import annotations

import json

from gateway.chat import protocol as chat
from gateway.chat.protocol import RoomRef
from gateway.chat.records import NotFound, RoomRecord
from gateway.chat.rules import Grant
from gateway.chat.store import ChatStore
from gateway.identity import Identity
from gateway.protocol import ErrorCode, ProtocolError


async def join_target(
    store: ChatStore, identity: Identity, ref: RoomRef, *, missing_ok: bool
) -> RoomRef | None:
    """The room a JOIN names: by Type and RoomTypeObject, or by the Uuid of a stored room
    (a Uuid of no room: None with ``missing_ok``, else room_forbidden)."""
    if ref.type_object or not ref.uuid:
        return ref
    room = await store.room(ref.uuid)
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


async def find_or_create(
    store: ChatStore, identity: Identity, grant: Grant, ref: RoomRef, *, create: bool, now: float, cap: int
) -> RoomRecord | None:
    """The room of ``grant``; if missing, created when ``create``, or when ``ref`` names it by a Uuid
    no stored room has (a room deleted while empty: back with the same uuid, derived from its Type
    and RoomTypeObject). CreationLimited when the user created ``cap`` rooms in the last hour."""
    if not create:
        found = await store.find_room(grant.type, grant.type_object)
        if found is not None or ref.uuid is None or await store.room(ref.uuid) is not None:
            return found
    return await store.find_or_create_room(
        grant.type, grant.type_object, ref.label, now=now, creator=identity.user, hourly_cap=cap
    )


async def enter(
    store: ChatStore, identity: Identity, grant: Grant, ref: RoomRef, *, create: bool, now: float, cap: int
) -> RoomRecord | None:
    """The room ``find_or_create`` gives, with the user recorded in it."""
    room = await find_or_create(store, identity, grant, ref, create=create, now=now, cap=cap)
    if room is None:
        return None
    try:
        await store.touch_member(room.uuid, identity.user, now=now)
    except NotFound:  # the empty-room sweep deleted it a moment ago: the user brings it back
        room = await find_or_create(store, identity, grant, ref, create=True, now=now, cap=cap)
        assert room is not None
        await store.touch_member(room.uuid, identity.user, now=now)
    return room
