"""Sans-IO chat wire format: parse client requests, render server frames. No trio, no SQL.

Client requests are ``{"@type": JOIN|LEAVE|POST|HISTORY|DELETE_MSG, "Room": ChatRoom,
"Message": ChatMessage}`` with the platform's field names. Unknown fields and wrong types are
refused with ``bad_message`` (the platform's own parser refused unknown fields too); fields the
server owns (Author, Timestamp, Users, LastUpdated) are accepted and ignored. Fields that other
users will see are cleaned or checked here (``chat.sanitise``), the message text by the service.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from gateway.chat.records import MessageRecord, RoomRecord
from gateway.chat.sanitise import check_client_id, check_identifier, clean_label
from gateway.protocol import ErrorCode, JsonObject, ProtocolError

JOIN: Final = "JOIN"
LEAVE: Final = "LEAVE"
POST: Final = "POST"
HISTORY: Final = "HISTORY"
DELETE_MSG: Final = "DELETE_MSG"
REQUEST_TYPES: Final = frozenset({JOIN, LEAVE, POST, HISTORY, DELETE_MSG})

GLOBAL: Final = "GLOBAL"
WORKSPACE: Final = "WORKSPACE"
USER: Final = "USER"
NODE: Final = "NODE"
ANY: Final = "ANY"
ROOM_TYPES: Final = frozenset({GLOBAL, WORKSPACE, USER, NODE, ANY})
JOINABLE_TYPES: Final = frozenset({GLOBAL, WORKSPACE, USER, NODE})

PING: Final = "PING"
DEFAULT_PAGE: Final = 40
MAX_PAGE: Final = 200  # the most messages one HISTORY page may hold
MAX_CURSOR: Final = 2**63 - 1  # paging values reach SQL as 64-bit integers

_TOP_FIELDS: Final = frozenset({"@type", "Room", "Message"})
_ROOM_FIELDS: Final = {
    "Uuid": str,
    "Type": str,
    "RoomTypeObject": str,
    "RoomLabel": str,
    "Users": list,
    "LastUpdated": (int, str),
}
# Seq and Edited are this gateway's additions to the messages it sends; clients echo them back.
_MESSAGE_FIELDS: Final = {
    "Seq": int,
    "Edited": str,
    "Uuid": str,
    "RoomUuid": str,
    "Message": str,
    "Author": str,
    "Timestamp": (int, str),
    "Info": dict,
    "Activity": dict,
    "ClientMessageId": str,
}
_MAX_ID: Final = 128
# Info (Cells' ChatMessage.Info, map<string, string>): kept and sent back as data, never markup.
MAX_INFO_ENTRIES: Final = 32
MAX_INFO_KEY: Final = 128
MAX_INFO_VALUE: Final = 4096
_MAX_TYPE_OBJECT: Final = 512
_MAX_RAW_LABEL: Final = 1024  # before cleaning; the cleaned label is bounded by clean_label


@dataclass(frozen=True, slots=True)
class RoomRef:
    """A room as a client names it: by Uuid, or by (Type, RoomTypeObject)."""

    uuid: str | None
    type: str
    type_object: str
    label: str


@dataclass(frozen=True, slots=True)
class MessageIn:
    uuid: str | None
    room_uuid: str | None
    text: str | None
    client_id: str | None
    info: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class ChatRequest:
    kind: str
    room: RoomRef | None
    message: MessageIn | None

    @property
    def is_ping(self) -> bool:
        return self.kind == JOIN and self.message is not None and self.message.text == PING

    @property
    def room_uuid(self) -> str | None:
        """The room a POST/DELETE/HISTORY addresses: Message.RoomUuid, else Room.Uuid."""
        if self.message is not None and self.message.room_uuid:
            return self.message.room_uuid
        return self.room.uuid if self.room is not None else None


@dataclass(frozen=True, slots=True)
class Page:
    """One HISTORY page: the platform's Offset form, or a Before/After cursor on ``Seq``."""

    limit: int = DEFAULT_PAGE
    offset: int | None = 0
    before: int | None = None
    after: int | None = None


def bad(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_MESSAGE, message)


def parse_request(obj: JsonObject) -> ChatRequest:
    """Validate one chat request; raise ProtocolError with a message naming the faulty field."""
    kind = obj["@type"]
    if kind not in REQUEST_TYPES:
        raise ProtocolError(
            ErrorCode.UNKNOWN_TYPE,
            f"unknown @type {str(kind)[:40]!r} on the chat socket; expected one of "
            + ", ".join(sorted(REQUEST_TYPES)),
        )
    unknown = set(obj) - _TOP_FIELDS
    if unknown:
        raise bad(f"unknown field(s): {', '.join(sorted(unknown))[:200]}")
    room = _room(obj["Room"]) if obj.get("Room") is not None else None
    message = _message(obj["Message"]) if obj.get("Message") is not None else None
    request = ChatRequest(kind, room, message)
    _require(request)
    return request


def _require(request: ChatRequest) -> None:
    kind, room, message = request.kind, request.room, request.message
    if kind in (JOIN, LEAVE, HISTORY) and room is None:
        raise bad(f"{kind} needs a Room")
    if kind == JOIN and room is not None and not request.is_ping:
        if room.type not in JOINABLE_TYPES:
            raise ProtocolError(ErrorCode.UNKNOWN_ROOM_TYPE, f"rooms of type {room.type} cannot be joined")
        if room.type != GLOBAL and not room.type_object:
            raise bad(f"a {room.type} room needs a RoomTypeObject")
    if kind in (LEAVE, HISTORY) and room is not None and not room.uuid and not room.type_object:
        raise bad(f"{kind} needs Room.Uuid or Room.Type and Room.RoomTypeObject")
    if kind == POST:
        if message is None or message.text is None:
            raise bad("POST needs Message.Message (the text)")
        if not request.room_uuid:
            raise bad("POST needs Message.RoomUuid")
    if kind == DELETE_MSG and (message is None or not message.uuid):
        raise bad("DELETE_MSG needs Message.Uuid")


def _room(raw: object) -> RoomRef:
    fields = _checked(raw, "Room", _ROOM_FIELDS)
    kind = fields.get("Type") or GLOBAL  # GLOBAL is the enum's zero value: omitted by the platform
    if kind not in ROOM_TYPES:
        raise ProtocolError(ErrorCode.UNKNOWN_ROOM_TYPE, f"unknown room type {str(kind)[:40]!r}")
    type_object = _bounded(fields.get("RoomTypeObject"), "Room.RoomTypeObject", _MAX_TYPE_OBJECT) or ""
    label = _bounded(fields.get("RoomLabel"), "Room.RoomLabel", _MAX_RAW_LABEL) or ""
    return RoomRef(
        uuid=_bounded(fields.get("Uuid"), "Room.Uuid", _MAX_ID) or None,
        type=kind,
        type_object=check_identifier(type_object, "Room.RoomTypeObject"),
        label=clean_label(label) if label else "",
    )


def _message(raw: object) -> MessageIn:
    fields = _checked(raw, "Message", _MESSAGE_FIELDS)
    return MessageIn(
        uuid=_bounded(fields.get("Uuid"), "Message.Uuid", _MAX_ID) or None,
        room_uuid=_bounded(fields.get("RoomUuid"), "Message.RoomUuid", _MAX_ID) or None,
        text=fields.get("Message"),
        client_id=check_client_id(client_id) if (client_id := fields.get("ClientMessageId")) else None,
        info=_info(fields.get("Info")),
    )


def _info(raw: dict[str, Any] | None) -> dict[str, str] | None:
    """``Message.Info``: a map of strings, bounded in entries and sizes."""
    if not raw:
        return None
    if len(raw) > MAX_INFO_ENTRIES:
        raise bad(f"Message.Info holds at most {MAX_INFO_ENTRIES} entries")
    for key, value in raw.items():
        if not isinstance(value, str):
            raise bad("Message.Info values must be strings")
        if len(key) > MAX_INFO_KEY or len(value) > MAX_INFO_VALUE:
            raise bad(f"Message.Info keys are at most {MAX_INFO_KEY} and values {MAX_INFO_VALUE} characters")
    return dict(raw)


def _checked(raw: object, name: str, schema: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise bad(f"{name} must be an object")
    for key, value in raw.items():
        expected = schema.get(key)
        if expected is None:
            raise bad(f"unknown field {name}.{str(key)[:40]}")
        if value is not None and (not isinstance(value, expected) or isinstance(value, bool)):
            raise bad(f"{name}.{key} has the wrong type")
    return raw


def _bounded(value: str | None, name: str, limit: int) -> str | None:
    if value is not None and len(value) > limit:
        raise bad(f"{name} is longer than {limit} characters")
    return value


def parse_page(message: MessageIn | None) -> Page:
    """HISTORY paging from Message.Message: a JSON string such as ``{"Offset":0,"Limit":40}``."""
    if message is None or not message.text:
        return Page()
    try:
        raw = json.loads(message.text)
    except (ValueError, RecursionError):
        raise bad('HISTORY paging must be a JSON object such as {"Offset":0,"Limit":40}') from None
    if not isinstance(raw, dict) or set(raw) - {"Offset", "Limit", "Before", "After"}:
        raise bad("HISTORY paging takes Offset, Limit, Before or After")
    values = {}
    for key, value in raw.items():
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_CURSOR:
            raise bad(f"HISTORY {key} must be an integer from 0 to {MAX_CURSOR}")
        values[key] = value
    if sum(k in values for k in ("Offset", "Before", "After")) > 1:
        raise bad("HISTORY takes one of Offset, Before or After")
    limit = min(values.get("Limit") or DEFAULT_PAGE, MAX_PAGE)
    if "Before" in values:
        return Page(limit, offset=None, before=values["Before"])
    if "After" in values:
        return Page(limit, offset=None, after=values["After"])
    return Page(limit, offset=values.get("Offset", 0))


# ---------------------------------------------------------------------------------------------
# Rooms between two users: one room whichever of them opens it


def user_room_key(user: str, other: str) -> str:
    """The stored RoomTypeObject of the USER room of two logins (order-independent)."""
    return json.dumps(sorted([user, other]), separators=(",", ":"))


def user_room_peer(key: str, user: str) -> str:
    """What ``user`` sees as RoomTypeObject of a USER room: the other participant's login."""
    pair = json.loads(key)
    return str(pair[1] if pair[0] == user else pair[0])


def shown_type_object(room: RoomRecord, user: str) -> str:
    return user_room_peer(room.type_object, user) if room.type == USER else room.type_object


# ---------------------------------------------------------------------------------------------
# Server -> client


def room_json(room: RoomRecord, users: Sequence[str], viewer: str) -> JsonObject:
    return {
        "Uuid": room.uuid,
        "Type": room.type,
        "RoomTypeObject": shown_type_object(room, viewer),
        "RoomLabel": room.label,
        "Users": list(users),
        "LastUpdated": int(room.last_updated),
    }


def room_update(room: RoomRecord, users: Sequence[str], viewer: str) -> JsonObject:
    return {"@type": "ROOM_UPDATE", "Room": room_json(room, users, viewer)}


def message_json(record: MessageRecord) -> JsonObject:
    """A ChatMessage as the platform sends it (Timestamp: int64 seconds as a string), plus Seq."""
    out: JsonObject = {
        "Uuid": record.uuid,
        "RoomUuid": record.room_uuid,
        "Message": record.text,
        "Author": record.author,
        "Timestamp": str(int(record.timestamp)),
        "Seq": record.seq,
    }
    if record.client_id:
        out["ClientMessageId"] = record.client_id
    if record.info:
        out["Info"] = dict(record.info)
    if record.edits:
        out["Edited"] = str(int(record.edits[-1].timestamp))
    return out


def delete_frame_json(message: JsonObject) -> JsonObject:
    """``{"@type": "DELETE_MSG", "Message": ChatMessage}``, the deleted message as sent."""
    return {"@type": "DELETE_MSG", "Message": message}


def may_have_more(room_uuid: str, page: Page, messages: Sequence[MessageRecord]) -> JsonObject:
    """Sent after a full page (or one cut short by its size in bytes): where the next page starts,
    in the form that was asked.

    Offset and Before pages walk back in time (the next page is older); After pages walk forward.
    """
    frame: JsonObject = {
        "@type": "MAY_HAVE_MORE",
        "RoomUuid": room_uuid,
        "Timestamp": int(messages[0].timestamp),
        "Limit": page.limit,
    }
    if page.offset is not None:
        frame["Offset"] = page.offset + len(messages)
    elif page.after is not None:
        frame["After"] = messages[-1].seq
    else:
        frame["Before"] = messages[0].seq
    return frame
