"""Sans-IO chat requests: what is accepted, what is refused and why; paging; rendering."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.chat import protocol as chat
from gateway.chat import sanitise
from gateway.chat.history import _within
from gateway.chat.records import Edit, MessageRecord, RoomRecord
from gateway.protocol import ErrorCode, ProtocolError


def request(kind: str, **fields: Any) -> dict[str, Any]:
    return {"@type": kind, **fields}


@pytest.mark.parametrize(
    ("message", "code", "fragment"),
    [
        (request("DANCE"), ErrorCode.UNKNOWN_TYPE, "unknown @type"),
        (request("JOIN"), ErrorCode.BAD_MESSAGE, "JOIN needs a Room"),
        (request("JOIN", Room={"Type": "MOON", "RoomTypeObject": "x"}), ErrorCode.UNKNOWN_ROOM_TYPE, "MOON"),
        (request("JOIN", Room={"Type": "ANY", "RoomTypeObject": "x"}), ErrorCode.UNKNOWN_ROOM_TYPE, "ANY"),
        (request("JOIN", Room={"Type": "NODE"}), ErrorCode.BAD_MESSAGE, "RoomTypeObject"),
        (request("JOIN", Room={"Type": 3}), ErrorCode.BAD_MESSAGE, "wrong type"),
        (request("JOIN", Room={"Type": "GLOBAL", "Colour": "red"}), ErrorCode.BAD_MESSAGE, "Room.Colour"),
        (request("JOIN", Room=[]), ErrorCode.BAD_MESSAGE, "Room must be an object"),
        (request("JOIN", Room={}, Extra=1), ErrorCode.BAD_MESSAGE, "unknown field"),
        (request("POST"), ErrorCode.BAD_MESSAGE, "POST needs Message.Message"),
        (request("POST", Message={"RoomUuid": "r"}), ErrorCode.BAD_MESSAGE, "POST needs Message.Message"),
        (request("POST", Message={"Message": "hi"}), ErrorCode.BAD_MESSAGE, "RoomUuid"),
        (request("POST", Message={"Message": 5, "RoomUuid": "r"}), ErrorCode.BAD_MESSAGE, "wrong type"),
        (request("POST", Message={"Message": True, "RoomUuid": "r"}), ErrorCode.BAD_MESSAGE, "wrong type"),
        (request("POST", Message={"Message": "x", "RoomUuid": "r" * 200}), ErrorCode.BAD_MESSAGE, "longer"),
        (request("DELETE_MSG", Message={"RoomUuid": "r"}), ErrorCode.BAD_MESSAGE, "Message.Uuid"),
        (request("HISTORY", Room={"Type": "GLOBAL"}), ErrorCode.BAD_MESSAGE, "Room.Uuid or"),
        (request("LEAVE"), ErrorCode.BAD_MESSAGE, "LEAVE needs a Room"),
        # Fields other members are sent: identifiers are checked, never cleaned.
        (request("POST", Message={"Message": "x", "RoomUuid": "r", "ClientMessageId": "<img src=x>"}),
         ErrorCode.BAD_MESSAGE, "ClientMessageId"),
        (request("POST", Message={"Message": "x", "RoomUuid": "r", "ClientMessageId": "c" * 65}),
         ErrorCode.BAD_MESSAGE, "ClientMessageId"),
        (request("POST", Message={"Message": "x", "RoomUuid": "r", "ClientMessageId": "c 1"}),
         ErrorCode.BAD_MESSAGE, "ClientMessageId"),
        (request("JOIN", Room={"Type": "GLOBAL", "RoomTypeObject": "<script>x</script>"}),
         ErrorCode.BAD_MESSAGE, "RoomTypeObject"),
        (request("JOIN", Room={"Type": "GLOBAL", "RoomTypeObject": "a\u0000b"}),
         ErrorCode.BAD_MESSAGE, "RoomTypeObject"),
        (request("JOIN", Room={"Type": "GLOBAL", "RoomTypeObject": "x", "RoomLabel": "&" * 60}),
         ErrorCode.BAD_MESSAGE, "RoomLabel is longer than 256 characters once cleaned"),
    ],
)  # fmt: skip
def test_chat_request_refused(message: dict[str, Any], code: ErrorCode, fragment: str) -> None:
    with pytest.raises(ProtocolError) as info:
        chat.parse_request(message)
    assert info.value.code == code
    assert fragment in info.value.message


def test_chat_request_platform_shapes_accepted() -> None:
    join = chat.parse_request(request("JOIN", Room={"Type": "NODE", "RoomTypeObject": "n-1"}))
    assert join.room == chat.RoomRef(None, "NODE", "n-1", "")
    assert not join.is_ping
    ping = chat.parse_request(
        request("JOIN", Room={"Type": "NODE", "RoomTypeObject": "n-1"}, Message={"Message": "PING"})
    )
    assert ping.is_ping
    post = chat.parse_request(request("POST", Message={"RoomUuid": "r-1", "Message": "hello"}))
    assert post.room_uuid == "r-1" and post.message is not None and post.message.text == "hello"
    server_fields = {"Uuid": "m", "RoomUuid": "r", "Message": "x", "Author": "eve", "Timestamp": "1"}
    delete = chat.parse_request(request("DELETE_MSG", Message=server_fields))
    assert delete.message is not None and delete.message.uuid == "m"
    room = {"Uuid": "r", "Type": "GLOBAL", "RoomTypeObject": "", "Users": ["a"], "LastUpdated": 5}
    assert chat.parse_request(request("HISTORY", Room=room)).room_uuid == "r"


def test_chat_room_without_type_is_global() -> None:
    # GLOBAL is the enum's zero value: the platform's JSON omits it.
    join = chat.parse_request(request("JOIN", Room={"RoomTypeObject": ""}))
    assert join.room is not None and join.room.type == "GLOBAL"


@pytest.mark.parametrize(
    ("text", "page"),
    [
        (None, chat.Page(40, 0)),
        ('{"Offset":0,"Limit":40}', chat.Page(40, 0)),
        ('{"Offset":80,"Limit":20}', chat.Page(20, 80)),
        ('{"Limit":5000}', chat.Page(200, 0)),
        ('{"Before":17,"Limit":10}', chat.Page(10, None, before=17)),
        ('{"After":3}', chat.Page(40, None, after=3)),
    ],
)
def test_chat_page_parsing(text: str | None, page: chat.Page) -> None:
    assert chat.parse_page(chat.MessageIn(None, None, text, None)) == page


@pytest.mark.parametrize(
    "text",
    [
        "nope",
        "[1]",
        '{"Offset":-1}',
        '{"Offset":"1"}',
        '{"Offset":1,"Before":2}',
        '{"Page":1}',
        '{"Limit":true}',
    ],
)
def test_chat_page_refused(text: str) -> None:
    with pytest.raises(ProtocolError) as info:
        chat.parse_page(chat.MessageIn(None, None, text, None))
    assert info.value.code == ErrorCode.BAD_MESSAGE


def test_chat_user_room_is_shared_and_shown_per_viewer() -> None:
    key = chat.user_room_key("alice", "bob")
    assert key == chat.user_room_key("bob", "alice")
    room = RoomRecord("r", "USER", key, "", 10.0)
    assert chat.room_json(room, ["alice"], "alice")["RoomTypeObject"] == "bob"
    assert chat.room_json(room, ["alice"], "bob")["RoomTypeObject"] == "alice"


def test_chat_message_rendering_matches_platform() -> None:
    record = MessageRecord(
        "m", "r", 7, "alice", "hi", 1764000000.7, "c-1", (Edit("old", 1764000001.0),), False
    )
    assert chat.message_json(record) == {
        "Uuid": "m",
        "RoomUuid": "r",
        "Message": "hi",
        "Author": "alice",
        "Timestamp": "1764000000",
        "Seq": 7,
        "ClientMessageId": "c-1",
        "Edited": "1764000001",
    }
    assert json.dumps(chat.delete_frame_json(chat.message_json(record))).startswith('{"@type": "DELETE_MSG"')


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("Team <b>A</b>", "Team A"),
        ("<img src=x onerror=alert(1)>Lobby", "Lobby"),
        ("<script>alert(1)</script>Lobby", "Lobby"),
        ("R&D", "R&amp;D"),
        ("tab\there\x00\x1b", "tab\there"),
    ],
)
def test_chat_room_label_cleaned_like_text_without_tags(raw: str, stored: str) -> None:
    join = chat.parse_request(
        request("JOIN", Room={"Type": "GLOBAL", "RoomTypeObject": "x", "RoomLabel": raw})
    )
    assert join.room is not None and join.room.label == stored


@pytest.mark.parametrize("client_id", ["c-1", "0f8e:1.2_x", "a" * 64])
def test_chat_client_message_id_identifiers_accepted(client_id: str) -> None:
    post = chat.parse_request(
        request("POST", Message={"Message": "x", "RoomUuid": "r", "ClientMessageId": client_id})
    )
    assert post.message is not None and post.message.client_id == client_id


@pytest.mark.parametrize(
    ("raw", "limit", "stored"),
    [
        ("&" * 1638, 8190, "&amp;" * 1638),  # escaped by cleaning: counted as stored and sent
        ("<b>x</b>", 8, "<b>x</b>"),
        ('say "hi"', 10, 'say "hi"'),  # a quote takes two bytes once JSON-escaped
        ("é" * 4, 8, "é" * 4),  # UTF-8 bytes, not characters
        ("a\x00b\x07c\nd", 6, "abc\nd"),  # control characters dropped (newline kept: two bytes)
    ],
)
def test_chat_text_limit_applies_to_what_is_stored_and_sent(raw: str, limit: int, stored: str) -> None:
    assert sanitise.clean_text(raw, limit) == stored
    assert sanitise.sent_size(stored) == limit
    with pytest.raises(ProtocolError) as info:
        sanitise.clean_text(raw, limit - 1)
    assert info.value.code == ErrorCode.MESSAGE_TOO_LONG


def test_chat_text_of_8192_ampersands_refused() -> None:
    """The finding: 8,192 '&' passed the 8,192-byte limit, then were stored as 40,960 bytes."""
    with pytest.raises(ProtocolError) as info:
        sanitise.clean_text("&" * 8192, 8192)
    assert info.value.code == ErrorCode.MESSAGE_TOO_LONG and "40960" in info.value.message


@pytest.mark.parametrize(
    ("sizes", "budget", "newest", "kept"),
    [
        ([10, 10, 10], 30, True, slice(0, None)),
        ([10, 10, 10], 25, True, slice(1, None)),  # Offset/Before pages keep the newest (the end)
        ([10, 10, 10], 25, False, slice(0, 2)),  # After pages keep the oldest
        ([50, 10], 5, True, slice(1, None)),  # always one message: paging moves on
        ([50, 10], 5, False, slice(0, 1)),
        ([], 5, True, slice(0, None)),
    ],
)
def test_chat_history_page_cut_to_its_budget(
    sizes: list[int], budget: int, newest: bool, kept: slice
) -> None:
    assert _within(sizes, budget, newest=newest) == kept


def test_chat_may_have_more_after_a_page_cut_short() -> None:
    records = [MessageRecord(f"m{i}", "r", i, "a", "x", 10.0 + i, None, (), False) for i in (5, 6)]
    more = chat.may_have_more("r", chat.Page(40, 80), records)  # 2 of 40 shown
    assert more["Offset"] == 82 and more["Limit"] == 40 and more["Timestamp"] == 15
    assert chat.may_have_more("r", chat.Page(40, None, before=9), records)["Before"] == 5
    assert chat.may_have_more("r", chat.Page(40, None, after=1), records)["After"] == 6
