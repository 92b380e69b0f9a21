"""The chat service's events on the bus, between instances: encoded and decoded here. Pure.

Every change other sessions must see travels as one of these, published on the chat topic after
its commit; every instance (the publishing one included) fans it out to its own sessions:

- ``{"kind": "message", "message": ChatMessage}``: a new post (its ``Seq`` lets a joining session
  drop the live copy of a post its history page already showed);
- ``{"kind": "edit", "message": ChatMessage}`` and ``{"kind": "delete", "message": ChatMessage}``;
- ``{"kind": "room", "room": {...}, "users": [...], "skip": key | null, "left": login | null}``: a
  room's member list; ``skip`` names the session that already got it, ``left`` the user just taken
  out (another instance with a session of that user in the room puts them back).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from gateway.chat import protocol as chat
from gateway.chat.records import MessageRecord, RoomRecord

JsonObject = dict[str, Any]


class BadChatEvent(ValueError):
    """A chat bus payload that is not one of the events above; the message says why."""


@dataclass(frozen=True, slots=True)
class MessageEvent:
    """A post, an edit or a deletion: ``frame`` is what the room's sessions receive."""

    room_uuid: str
    frame: JsonObject
    new_seq: int | None = None  # a new post's Seq (None for edits and deletions)


@dataclass(frozen=True, slots=True)
class RoomEvent:
    room: RoomRecord
    users: list[str]
    skip: str | None = None
    left: str | None = None


ChatEvent = MessageEvent | RoomEvent


def posted(record: MessageRecord) -> bytes:
    return _encode({"kind": "message", "message": chat.message_json(record)})


def edited(record: MessageRecord) -> bytes:
    return _encode({"kind": "edit", "message": chat.message_json(record)})


def deleted(record: MessageRecord) -> bytes:
    return _encode({"kind": "delete", "message": chat.message_json(record)})


def members(room: RoomRecord, users: list[str], *, skip: str | None = None, left: str | None = None) -> bytes:
    raw = {"uuid": room.uuid, "type": room.type, "type_object": room.type_object, "label": room.label,
           "last_updated": room.last_updated}  # fmt: skip
    return _encode({"kind": "room", "room": raw, "users": users, "skip": skip, "left": left})


def _encode(event: JsonObject) -> bytes:
    return json.dumps(event).encode()


def decode(data: bytes) -> ChatEvent:
    """The event a payload carries, or BadChatEvent."""
    try:
        event = json.loads(data)
        return _decode(event)
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise BadChatEvent(f"{exc.__class__.__name__}: {exc}"[:200]) from None


def _decode(event: Any) -> ChatEvent:
    kind = event["kind"]
    if kind == "room":
        room = _room(event["room"])
        users = [str(u) for u in event["users"]]
        return RoomEvent(room, users, _optional(event.get("skip")), _optional(event.get("left")))
    message = event["message"]
    room_uuid = str(message["RoomUuid"])
    if kind == "message":
        return MessageEvent(room_uuid, message, new_seq=int(message["Seq"]))
    if kind == "edit":
        return MessageEvent(room_uuid, message)
    if kind == "delete":
        return MessageEvent(room_uuid, chat.delete_frame_json(message))
    raise ValueError(f"unknown chat event kind {kind!r}")


def _room(raw: dict[str, Any]) -> RoomRecord:
    return RoomRecord(
        uuid=str(raw["uuid"]),
        type=str(raw["type"]),
        type_object=str(raw["type_object"]),
        label=str(raw["label"]),
        last_updated=float(raw["last_updated"]),
    )


def _optional(value: object) -> str | None:
    return value if isinstance(value, str) else None
