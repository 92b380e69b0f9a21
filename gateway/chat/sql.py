"""The chat store's SQL: statements and the operations the store runs in worker threads.

Every function takes a SQLAlchemy ``Connection`` inside a transaction the caller owns; the store's
writer applies write operations in batches (group commit), readers run read operations alone.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from typing import Any, Final, TypeAlias, cast

from sqlalchemy import (
    Double,
    Integer,
    Row,
    Select,
    Table,
    bindparam,
    case,
    delete,
    exists,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.sql.expression import BindParameter

from gateway.chat.models import Member, Message, Room
from gateway.chat.records import CreationLimited, Edit, Forbidden, MessageRecord, NotFound, RoomRecord

AnyRow: TypeAlias = Row[*tuple[Any, ...]]

# Statements are built once: building and hashing one costs more than running it on SQLite. Their
# parameters are named p_*, since SQLAlchemy reserves column names for INSERT and UPDATE values.

_rooms: Final = cast(Table, Room.__table__)
_members: Final = cast(Table, Member.__table__)
_messages: Final = cast(Table, Message.__table__)


_ROOM_COLUMNS: Final = (
    _rooms.c.uuid,
    _rooms.c.type,
    _rooms.c.type_object,
    _rooms.c.label,
    _rooms.c.last_updated,
)
_MESSAGE_COLUMNS: Final = tuple(
    _messages.c[name]
    for name in ("uuid", "seq", "author", "text", "timestamp", "client_id", "edits", "deleted_at", "info")
)
_NOW: Final[BindParameter[float]] = bindparam("p_now", type_=Double())

# Room uuids are derived from (type, type_object): a room deleted while empty comes back with the
# same uuid, on any gateway, and a client never chooses one.
ROOM_NAMESPACE: Final = uuid.UUID("318474d1-247a-4fdc-ba5a-64348e491818")
CREATION_WINDOW: Final = 3600.0  # chat_rooms_created_per_hour counts the rooms of this many seconds

_ROOM_ID: Final = select(_rooms.c.id).where(_rooms.c.uuid == bindparam("p_room"))
_ROOM_BY_UUID: Final = select(*_ROOM_COLUMNS).where(_rooms.c.uuid == bindparam("p_room"))
_ROOM_BY_KEY: Final = select(*_ROOM_COLUMNS).where(
    _rooms.c.type == bindparam("p_type"), _rooms.c.type_object == bindparam("p_type_object")
)
_ROOM_IDS: Final = select(_rooms.c.uuid, _rooms.c.id).where(
    _rooms.c.uuid.in_(bindparam("p_rooms", expanding=True))
)
_ALLOCATE_SEQS: Final = (
    update(_rooms)
    .where(_rooms.c.id == bindparam("p_room_id"))
    .values(
        next_seq=_rooms.c.next_seq + bindparam("p_count", type_=Integer()),
        last_updated=case((_rooms.c.last_updated > _NOW, _rooms.c.last_updated), else_=_NOW),
        vacant_since=None,  # a room with a message is kept
    )
    .returning(_rooms.c.next_seq)
)
_INSERT_MESSAGE: Final = insert(_messages)
_MESSAGE_FOR_UPDATE: Final = (
    select(_messages.c.id, _rooms.c.uuid.label("room_uuid"), *_MESSAGE_COLUMNS)
    .join(_rooms, _rooms.c.id == _messages.c.room_id)
    .where(_messages.c.uuid == bindparam("p_message"))
    .with_for_update(of=_messages)  # PostgreSQL: two gateways editing one message take turns
)
_UPDATE_MESSAGE: Final = update(_messages).where(_messages.c.id == bindparam("p_id"))
_LIVE_MESSAGES: Final = select(*_MESSAGE_COLUMNS).where(
    _messages.c.room_id == bindparam("p_room_id"), _messages.c.deleted_at.is_(None)
)
_LATEST: Final = (
    _LIVE_MESSAGES.order_by(_messages.c.seq.desc()).offset(bindparam("p_offset")).limit(bindparam("p_limit"))
)
_BEFORE: Final = (
    _LIVE_MESSAGES.where(_messages.c.seq < bindparam("p_seq"))
    .order_by(_messages.c.seq.desc())
    .limit(bindparam("p_limit"))
)
_AFTER: Final = (
    _LIVE_MESSAGES.where(_messages.c.seq > bindparam("p_seq"))
    .order_by(_messages.c.seq)
    .limit(bindparam("p_limit"))
)
_MEMBER: Final = (_members.c.room_id == bindparam("p_room_id"), _members.c.user == bindparam("p_user"))
_SEEN_MEMBER: Final = update(_members).where(*_MEMBER)
_REMOVE_MEMBER: Final = delete(_members).where(*_MEMBER)
_MEMBERS: Final = select(_members.c.user).where(_members.c.room_id == bindparam("p_room_id"))
# DELETE ... RETURNING: a row another gateway deleted first is not returned here.
_EXPIRE_MEMBERS: Final = (
    delete(_members)
    .where(_members.c.last_seen < bindparam("p_before"))
    .returning(_members.c.room_id, _members.c.user)
)
_ROOM_UUIDS: Final = select(_rooms.c.id, _rooms.c.uuid).where(
    _rooms.c.id.in_(bindparam("p_ids", expanding=True))
)
_CREATED_BY: Final = select(func.count()).where(
    _rooms.c.created_by == bindparam("p_user"), _rooms.c.created_at > bindparam("p_since")
)
_NO_MEMBER: Final = ~exists().where(_members.c.room_id == _rooms.c.id)
_OCCUPIED: Final = update(_rooms).where(_rooms.c.id == bindparam("p_room_id")).values(vacant_since=None)
# Rooms whose last member just left, if they hold no message: vacant from now.
_VACATED: Final = (
    update(_rooms)
    .where(_rooms.c.id.in_(bindparam("p_ids", expanding=True)), _rooms.c.next_seq == 1, _NO_MEMBER)
    .values(vacant_since=_NOW)
)
_VACANT: Final = (
    select(_rooms.c.id)
    .where(
        _rooms.c.vacant_since < bindparam("p_vacant_before", type_=Double()),
        _rooms.c.created_at < bindparam("p_created_before", type_=Double()),
        _rooms.c.next_seq == 1,
        _NO_MEMBER,
    )
    .order_by(_rooms.c.vacant_since)
    .limit(bindparam("p_limit"))
)
_DELETE_ROOMS: Final = delete(_rooms).where(
    _rooms.c.id.in_(bindparam("p_ids", expanding=True)), _rooms.c.next_seq == 1, _NO_MEMBER
)


def room_record(row: AnyRow) -> RoomRecord:
    return RoomRecord(row.uuid, row.type, row.type_object, row.label, row.last_updated)


def message_record(row: AnyRow, room_uuid: str) -> MessageRecord:
    edits = tuple(Edit(entry["text"], entry["timestamp"]) for entry in json.loads(row.edits))
    return MessageRecord(
        uuid=row.uuid,
        room_uuid=room_uuid,
        seq=row.seq,
        author=row.author,
        text=row.text,
        timestamp=row.timestamp,
        client_id=row.client_id,
        edits=edits,
        deleted=row.deleted_at is not None,
        info=json.loads(row.info),
    )


def _room_id(connection: Connection, room_uuid: str) -> int:
    room_id = connection.execute(_ROOM_ID, {"p_room": room_uuid}).scalar()
    if room_id is None:
        raise NotFound(f"no chat room {room_uuid!r}")
    return int(room_id)


def room(connection: Connection, room_uuid: str) -> RoomRecord | None:
    row = connection.execute(_ROOM_BY_UUID, {"p_room": room_uuid}).one_or_none()
    return None if row is None else room_record(row)


def find_room(connection: Connection, type: str, type_object: str) -> RoomRecord | None:
    row = connection.execute(_ROOM_BY_KEY, {"p_type": type, "p_type_object": type_object}).one_or_none()
    return None if row is None else room_record(row)


def room_uuid_for(type: str, type_object: str) -> str:
    """The uuid of the room of (type, type_object), every time it is created."""
    return str(uuid.uuid5(ROOM_NAMESPACE, f"{type}\n{type_object}"))


def create_room(
    connection: Connection,
    type: str,
    type_object: str,
    label: str,
    now: float,
    creator: str | None = None,
    hourly_cap: int | None = None,
) -> RoomRecord:
    """The room of (type, type_object), created if missing: CreationLimited if ``creator`` made
    ``hourly_cap`` rooms in the last hour already."""
    # Another request of the same batch may have created it since the caller looked.
    found = find_room(connection, type, type_object)
    if found is not None:
        return found
    if creator is not None and hourly_cap is not None:
        since = now - CREATION_WINDOW
        made = connection.execute(_CREATED_BY, {"p_user": creator, "p_since": since}).scalar_one()
        if made >= hourly_cap:
            raise CreationLimited(f"{creator} created {made} rooms in the last hour")
    room_uuid = room_uuid_for(type, type_object)
    row = {"uuid": room_uuid, "type": type, "type_object": type_object, "label": label, "created_by": creator}
    # Vacant from the start: a room whose creator never made it in is deleted like any empty one.
    times = {"created_at": now, "last_updated": now, "vacant_since": now}
    connection.execute(insert(_rooms), {**row, **times, "next_seq": 1})
    return RoomRecord(room_uuid, type, type_object, label, float(now))


def delete_vacant_rooms(
    connection: Connection, vacant_before: float, created_before: float, limit: int
) -> int:
    """Delete up to ``limit`` rooms vacant since before ``vacant_before`` (no member, no message) and
    created before ``created_before``; how many were deleted."""
    params = {"p_vacant_before": vacant_before, "p_created_before": created_before, "p_limit": limit}
    ids = list(connection.execute(_VACANT, params).scalars())
    if not ids:
        return 0
    # Checked again as it deletes: a member who arrived since the select keeps the room.
    return int(connection.execute(_DELETE_ROOMS, {"p_ids": ids}).rowcount)


def _live_message_for_update(connection: Connection, message_uuid: str) -> AnyRow:
    """The message row with its id and room uuid, locked until commit; NotFound if absent or deleted."""
    row = connection.execute(_MESSAGE_FOR_UPDATE, {"p_message": message_uuid}).one_or_none()
    if row is None or row.deleted_at is not None:
        raise NotFound(f"no chat message {message_uuid!r}")
    return row


def edit_message(
    connection: Connection, message_uuid: str, editor: str, text: str, now: float, room_uuid: str | None
) -> MessageRecord:
    row = _live_message_for_update(connection, message_uuid)
    if room_uuid is not None and row.room_uuid != room_uuid:
        raise NotFound(f"no chat message {message_uuid!r} in room {room_uuid!r}")
    if row.author != editor:
        raise Forbidden("only the author of a message may edit it")
    before = message_record(row, row.room_uuid)
    edited = replace(before, text=text, edits=(*before.edits, Edit(before.text, float(now))))
    edits = json.dumps([{"text": edit.text, "timestamp": edit.timestamp} for edit in edited.edits])
    connection.execute(_UPDATE_MESSAGE, {"p_id": row.id, "text": text, "edits": edits})
    return edited


def delete_message(
    connection: Connection, message_uuid: str, user: str, is_admin: bool, now: float
) -> MessageRecord:
    row = _live_message_for_update(connection, message_uuid)
    if row.author != user and not is_admin:
        raise Forbidden("only the author of a message or an administrator may delete it")
    # The edit history and the Info map go too: they may hold the very content being deleted.
    connection.execute(
        _UPDATE_MESSAGE, {"p_id": row.id, "text": "", "edits": "[]", "info": "{}", "deleted_at": now}
    )
    return replace(message_record(row, row.room_uuid), text="", edits=(), deleted=True, info={})


def _page(
    connection: Connection, query: Select[*tuple[Any, ...]], room_uuid: str, **params: int
) -> list[MessageRecord]:
    """The room's live messages that ``query`` selects, as records in the order it returns them."""
    rows = connection.execute(query, {"p_room_id": _room_id(connection, room_uuid), **params}).all()
    return [message_record(row, room_uuid) for row in rows]


def latest(connection: Connection, room_uuid: str, offset: int, limit: int) -> list[MessageRecord]:
    return _page(connection, _LATEST, room_uuid, p_offset=offset, p_limit=limit)[::-1]


def before(connection: Connection, room_uuid: str, seq: int, limit: int) -> list[MessageRecord]:
    return _page(connection, _BEFORE, room_uuid, p_seq=seq, p_limit=limit)[::-1]


def after(connection: Connection, room_uuid: str, seq: int, limit: int) -> list[MessageRecord]:
    return _page(connection, _AFTER, room_uuid, p_seq=seq, p_limit=limit)


def touch_member(connection: Connection, room_uuid: str, user: str, now: float) -> bool:
    member = {"p_room_id": _room_id(connection, room_uuid), "p_user": user}
    if connection.execute(_SEEN_MEMBER, {**member, "last_seen": now}).rowcount:
        return False
    connection.execute(insert(_members), {"room_id": member["p_room_id"], "user": user, "last_seen": now})
    connection.execute(_OCCUPIED, {"p_room_id": member["p_room_id"]})
    return True


def remove_member(connection: Connection, room_uuid: str, user: str, now: float) -> bool:
    member = {"p_room_id": _room_id(connection, room_uuid), "p_user": user}
    if not connection.execute(_REMOVE_MEMBER, member).rowcount:
        return False
    connection.execute(_VACATED, {"p_ids": [member["p_room_id"]], "p_now": now})
    return True


def member_list(connection: Connection, room_uuid: str) -> list[str]:
    room_id = _room_id(connection, room_uuid)
    return sorted(connection.execute(_MEMBERS, {"p_room_id": room_id}).scalars())


def expire_members(connection: Connection, older_than: float, now: float) -> dict[str, list[str]]:
    removed = connection.execute(_EXPIRE_MEMBERS, {"p_before": older_than}).all()
    if not removed:
        return {}
    room_ids = sorted({row.room_id for row in removed})
    connection.execute(_VACATED, {"p_ids": room_ids, "p_now": now})
    uuids = {row.id: row.uuid for row in connection.execute(_ROOM_UUIDS, {"p_ids": room_ids})}
    by_room: dict[str, list[str]] = {}
    for row in removed:
        by_room.setdefault(uuids[row.room_id], []).append(row.user)
    return {room: sorted(users) for room, users in by_room.items()}
