"""Fuzzing the sans-IO parsers: arbitrary input raises nothing but the documented error; valid input
round-trips.

- ``gateway.protocol.decode_frame`` + ``parse_session_command``: ProtocolError / AuthError only;
- ``gateway.chat.protocol.parse_request`` + ``parse_page``: ProtocolError only;
- ``gateway.admin.requests.parse_publish_body``: PublishError only.

Inputs are raw (any bytes, any text), JSON-shaped (any JSON value, or the message shapes with any
value in any field), and mutated JSON text. Derandomized, without an example database.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from gateway.admin.requests import PublishError, parse_publish_body
from gateway.chat import protocol as chat
from gateway.chat import sanitise
from gateway.protocol import (
    AuthError,
    ErrorCode,
    ProtocolError,
    Subscribe,
    Unsubscribe,
    decode_frame,
    parse_session_command,
)
from gateway.topics import PUBLISHABLE_TOPICS
from tests.helpers import fixed_cases

Json = dict[str, Any]
LIMIT = 65536


fuzz = fixed_cases


# Text as it comes out of a UTF-8 text frame: any code point but a surrogate.
frame_text = st.text(st.characters(exclude_categories=["Cs"]))
keys = st.text(max_size=8) | st.sampled_from(["@type", "jwt", "Room", "Message", "topic", "event", "events"])
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**62, max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | frame_text
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=12,
)


def dumped(value: Any, ascii_only: bool, indent: int | None) -> str:
    return json.dumps(value, ensure_ascii=ascii_only, indent=indent)


def json_text(values: st.SearchStrategy[Any]) -> st.SearchStrategy[str]:
    """JSON text of ``values``, in several layouts (ASCII escapes or not, indented or not)."""
    return st.builds(dumped, values, st.booleans(), st.sampled_from([None, 0, 2]))


@st.composite
def mutated(draw: st.DrawFn, texts: st.SearchStrategy[str]) -> str:
    """A JSON text with a slice cut out, a fragment inserted, or an escape broken."""
    base = draw(texts)
    at = draw(st.integers(0, len(base)))
    cut = draw(st.integers(0, 8))
    fragment = draw(st.sampled_from(["", "{", "}", "[", "]", '"', "\\", "\\u", "\\ud800", "\\udc00", ",", ":",
                                     "1e999", "NaN", "-", "\x00", "9" * 5000, "[" * 3000]))  # fmt: skip
    return base[:at] + fragment + base[at + cut :]


# ---------------------------------------------------------------------------------------------
# decode_frame + parse_session_command

FRAME_ERRORS = {ErrorCode.BAD_JSON, ErrorCode.BAD_MESSAGE, ErrorCode.MESSAGE_TOO_BIG}
any_frame_text = frame_text | json_text(json_values) | mutated(json_text(json_values))


def is_unicode_text(value: Any) -> bool:
    """Every string (keys included) can be written as UTF-8: no unpaired surrogate."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, dict):
        return all(is_unicode_text(k) and is_unicode_text(v) for k, v in value.items())
    if isinstance(value, list):
        return all(is_unicode_text(v) for v in value)
    return True


E = TypeVar("E", bound=Exception)
R = TypeVar("R")


def outcome(call: Callable[[], R], documented: type[E]) -> R | E:
    """The call's result, or the documented exception it raised; anything else fails the test."""
    try:
        return call()
    except documented as err:
        return err


def decoded_or_refused(data: str, max_bytes: int) -> Json | ProtocolError:
    return outcome(lambda: decode_frame(data, max_bytes), ProtocolError)


@given(st.binary())
@fuzz(300)
def test_fuzz_decode_frame_binary_always_refused(data: bytes) -> None:
    result = decoded_or_refused(data, LIMIT)  # type: ignore[arg-type]
    assert isinstance(result, ProtocolError) and result.code == ErrorCode.BINARY_NOT_SUPPORTED


@given(any_frame_text, st.sampled_from([8, 64, 512, LIMIT]))
@fuzz(1000)
def test_fuzz_decode_frame_and_session_command(data: str, max_bytes: int) -> None:
    result = decoded_or_refused(data, max_bytes)
    too_big = len(data.encode("utf-8")) > max_bytes
    if isinstance(result, ProtocolError):
        assert result.code in FRAME_ERRORS, result.code
        assert (result.code == ErrorCode.MESSAGE_TOO_BIG) == too_big
        assert result.close_code is None or result.code == ErrorCode.MESSAGE_TOO_BIG
        return
    assert not too_big
    assert isinstance(result, dict) and isinstance(result["@type"], str) and result["@type"]
    assert is_unicode_text(result)  # nothing downstream can fail to encode it
    command = outcome(lambda: parse_session_command(result), AuthError)
    if isinstance(command, AuthError):
        assert command.code in {ErrorCode.TOKEN_MISSING, ErrorCode.TOKEN_INVALID}
        assert result["@type"] in {"subscribe", "register"}
    else:
        assert command is None or isinstance(command, Subscribe | Unsubscribe)


messages = st.dictionaries(keys, json_values, max_size=5).flatmap(
    lambda obj: st.builds(lambda kind: {**obj, "@type": kind}, frame_text.filter(bool))
)


@given(messages, st.booleans())
@fuzz(400)
def test_fuzz_decode_frame_round_trip(message: Json, ascii_only: bool) -> None:
    assert decode_frame(json.dumps(message, ensure_ascii=ascii_only), LIMIT) == message


@given(messages, st.sampled_from(["\\ud800", "\\udbff", "\\udc00", "\\udfff", "\\ud83d", "\\ude00"]))
@fuzz(300)
def test_fuzz_decode_frame_unpaired_surrogate_refused(message: Json, escape: str) -> None:
    text = json.dumps({**message, "x": "SURROGATE"}).replace('"SURROGATE"', f'"a{escape}b"')
    result = decoded_or_refused(text, LIMIT)
    assert isinstance(result, ProtocolError) and result.code == ErrorCode.BAD_JSON


@given(st.sampled_from(["subscribe", "register"]), frame_text.filter(bool))
@fuzz(300)
def test_fuzz_subscribe_round_trip(kind: str, token: str) -> None:
    assert parse_session_command({"@type": kind, "jwt": token, "extra": 1}) == Subscribe(token.strip())


# ---------------------------------------------------------------------------------------------
# parse_request + parse_page

CHAT_ERRORS = {ErrorCode.UNKNOWN_TYPE, ErrorCode.BAD_MESSAGE, ErrorCode.UNKNOWN_ROOM_TYPE}
ROOM_KEYS = ["Uuid", "Type", "RoomTypeObject", "RoomLabel", "Users", "LastUpdated"]
MESSAGE_KEYS = ["Uuid", "RoomUuid", "Message", "Author", "Timestamp", "Info", "Seq", "Edited"]
MESSAGE_KEYS += ["ClientMessageId", "Activity"]
room_types = st.sampled_from(["GLOBAL", "WORKSPACE", "USER", "NODE", "ANY", "global", ""])


def shaped(names: list[str]) -> st.SearchStrategy[Any]:
    """Mostly an object with the shape's field names (any values); sometimes anything at all."""
    values = json_values | room_types | st.sampled_from(["PING", '{"Offset": 1}', "x" * 600])
    fields = st.dictionaries(st.sampled_from(names) | keys, values, max_size=len(names) + 1)
    return fields | json_values


chat_requests = st.fixed_dictionaries(
    {"@type": st.sampled_from(sorted(chat.REQUEST_TYPES)) | frame_text.filter(bool)},
    optional={"Room": shaped(ROOM_KEYS), "Message": shaped(MESSAGE_KEYS), "Extra": json_values},
)


def check_request(request: chat.ChatRequest) -> None:
    """What a parsed request guarantees to the chat service."""
    assert request.kind in chat.REQUEST_TYPES
    room, message = request.room, request.message
    if room is not None:
        assert room.type in chat.ROOM_TYPES
        assert len(room.uuid or "") <= 128 and len(room.type_object) <= 512 and len(room.label) <= 256
    if message is not None:
        for value in (message.uuid, message.room_uuid, message.client_id):
            assert value is None or (isinstance(value, str) and len(value) <= 128)
        assert message.text is None or isinstance(message.text, str)
    if request.kind in (chat.JOIN, chat.LEAVE, chat.HISTORY):
        assert room is not None
    if request.kind == chat.JOIN and not request.is_ping:
        assert room is not None and room.type in chat.JOINABLE_TYPES
        assert room.type == chat.GLOBAL or room.type_object
    if request.kind == chat.POST:
        assert message is not None and message.text is not None and request.room_uuid
    if request.kind == chat.DELETE_MSG:
        assert message is not None and message.uuid


@given(chat_requests | messages)
@fuzz(1000)
def test_fuzz_parse_request(obj: Json) -> None:
    request = outcome(lambda: chat.parse_request(obj), ProtocolError)
    if isinstance(request, ProtocolError):
        assert request.code in CHAT_ERRORS, request.code
        assert request.close_code is None  # a refused request never ends the session
    else:
        check_request(request)


@given(any_frame_text.map(lambda t: t[:4000]))
@fuzz(500)
def test_fuzz_decode_then_parse_request(data: str) -> None:
    """The real pipeline: whatever decode_frame lets through, parse_request handles."""
    decoded = decoded_or_refused(data, LIMIT)
    if isinstance(decoded, ProtocolError):
        return
    request = outcome(lambda: chat.parse_request(decoded), ProtocolError)
    if isinstance(request, ProtocolError):
        assert request.code in CHAT_ERRORS
    else:
        check_request(request)


text_fields = st.text(max_size=20)
identifiers = text_fields.filter(lambda t: t and not any(c in t for c in "<>") and t.isprintable())
valid_rooms = st.fixed_dictionaries(
    {
        "Type": st.sampled_from(["GLOBAL", "WORKSPACE", "USER", "NODE"]),
        "RoomTypeObject": identifiers,
    },
    optional={
        "Uuid": text_fields,
        "RoomLabel": text_fields,
        "Users": st.lists(text_fields, max_size=2),
        "LastUpdated": st.integers(0, 2**40) | st.just("1764000000"),
    },
)
valid_messages = st.fixed_dictionaries(
    {"Message": text_fields.filter(lambda t: t != "PING"), "RoomUuid": text_fields.filter(bool)},
    optional={
        "Uuid": text_fields,
        "ClientMessageId": st.from_regex(sanitise.CLIENT_ID, fullmatch=True) | st.just(""),
        "Author": text_fields,
        "Seq": st.integers(0, 99),
        "Timestamp": st.just("1"),
        "Info": st.dictionaries(text_fields.filter(lambda t: len(t) <= 128), text_fields, max_size=3),
    },
)


@given(st.sampled_from(sorted(chat.REQUEST_TYPES)), valid_rooms, valid_messages)
@fuzz(500)
def test_fuzz_parse_request_round_trip(kind: str, room: Json, message: Json) -> None:
    if kind == chat.DELETE_MSG:
        assume(message.get("Uuid"))
    request = chat.parse_request({"@type": kind, "Room": room, "Message": message})
    assert request.kind == kind
    label = sanitise.clean_label(room["RoomLabel"]) if room.get("RoomLabel") else ""
    assert request.room == chat.RoomRef(room.get("Uuid") or None, room["Type"], room["RoomTypeObject"], label)
    assert request.message == chat.MessageIn(
        message.get("Uuid") or None,
        message["RoomUuid"],
        message["Message"],
        message.get("ClientMessageId") or None,
        message.get("Info") or None,
    )
    assert request.room_uuid == message["RoomUuid"]


paging_objects = st.dictionaries(
    st.sampled_from(["Offset", "Limit", "Before", "After", "Page"]),
    st.integers(-5, 2**64) | st.integers(0, 300) | scalars,
    max_size=3,
)
paging_texts = (
    json_text(paging_objects) | mutated(json_text(paging_objects)) | frame_text | json_text(json_values)
)


@given(paging_texts | st.none())
@fuzz(1000)
def test_fuzz_parse_page(text: str | None) -> None:
    page = outcome(lambda: chat.parse_page(chat.MessageIn(None, "r", text, None)), ProtocolError)
    if isinstance(page, ProtocolError):
        assert page.code == ErrorCode.BAD_MESSAGE
        return
    assert 1 <= page.limit <= chat.MAX_PAGE
    cursors = [v for v in (page.offset, page.before, page.after) if v is not None]
    assert len(cursors) == 1
    assert all(isinstance(v, int) and 0 <= v < 2**63 for v in cursors)  # fits a SQL BIGINT


@given(st.integers(0, 2**63 - 1), st.integers(0, 10_000), st.sampled_from(["Offset", "Before", "After"]))
@fuzz(300)
def test_fuzz_parse_page_round_trip(position: int, limit: int, cursor: str) -> None:
    page = chat.parse_page(chat.MessageIn(None, "r", json.dumps({cursor: position, "Limit": limit}), None))
    assert page.limit == min(limit or chat.DEFAULT_PAGE, chat.MAX_PAGE)
    assert {"Offset": page.offset, "Before": page.before, "After": page.after}[cursor] == position


# ---------------------------------------------------------------------------------------------
# parse_publish_body

topics = st.sampled_from(sorted(PUBLISHABLE_TOPICS)) | json_values
items = st.fixed_dictionaries(
    {}, optional={"topic": topics, "event": json_values | st.just({}), "x": scalars}
)
batches = st.fixed_dictionaries(
    {"events": st.lists(items | json_values, max_size=4)}, optional={"topic": topics}
)
bodies = (
    st.binary()
    | json_text(json_values).map(str.encode)
    | json_text(items).map(str.encode)
    | json_text(batches).map(str.encode)
    | mutated(json_text(items)).map(lambda t: t.encode("utf-8", "surrogatepass"))
)


@given(bodies, st.integers(1, 3))
@fuzz(1000)
def test_fuzz_parse_publish_body(body: bytes, max_batch: int) -> None:
    published = outcome(lambda: parse_publish_body(body, max_batch), PublishError)
    if isinstance(published, PublishError):
        assert str(published)  # the 400 answer says what is wrong
        return
    assert 1 <= len(published) <= max_batch
    for topic, event in published:
        assert topic in PUBLISHABLE_TOPICS and isinstance(event, dict)


@pytest.mark.parametrize(
    "topic", [[], {}, [TOPIC := "topic.pydio.tree.nodes.changes"], {"t": TOPIC}, 7, None, True]
)
def test_fuzz_publish_topic_of_any_type_refused(topic: object) -> None:
    """Found by the fuzzer: an unhashable topic raised TypeError (the admin API answered nothing)."""
    with pytest.raises(PublishError, match="topic must be one of"):
        parse_publish_body(json.dumps({"topic": topic, "event": {}}).encode(), 10)
    with pytest.raises(PublishError, match="topic must be one of"):
        parse_publish_body(json.dumps({"events": [{"topic": topic, "event": {}}]}).encode(), 10)


publishable = st.fixed_dictionaries(
    {
        "topic": st.sampled_from(sorted(PUBLISHABLE_TOPICS)),
        "event": st.dictionaries(keys, json_values, max_size=4),
    }
)


@given(st.lists(publishable, min_size=1, max_size=5), st.booleans())
@fuzz(200)
def test_fuzz_parse_publish_body_round_trip(events: list[Json], batch: bool) -> None:
    body = {"events": events} if batch else events[0]
    expected = [(e["topic"], e["event"]) for e in (events if batch else events[:1])]
    assert parse_publish_body(json.dumps(body).encode(), 5) == expected
