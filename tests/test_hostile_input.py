"""Hostile input on both sockets: each case gets its documented error and close code, and afterwards
the gateway still serves well-behaved clients (no crash, no leaked session).

Frames are written by hand (RFC 6455 section 5: masked client frames, fragments, control frames)
through :class:`tests.helpers.RawClient`, so that nothing on the client side repairs them. Wrong
types are generated from the message shapes of ``docs/PROTOCOL.md``: every field of every message,
with a value of every other JSON type.
"""

from __future__ import annotations

import contextlib
import gc
import json
import sqlite3
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

import pytest
import trio
import trio.testing

from gateway.config import Settings
from tests.helpers import TREE, Harness, RawClient, recv_json, socket_pair, token

Json = dict[str, Any]
ENDPOINTS = pytest.mark.parametrize("path", ["/ws", "/chat"])
UNLIMITED = {"rate_limit": 1e6, "rate_burst": 1_000_000}  # for cases that must not trip the rate limit
NO_REFILL = 1e-6  # a rate that refills nothing during a test: bursts are counted exactly

# Opcodes (RFC 6455 section 5.2)
CONTINUATION, TEXT, BINARY, CLOSE, PING = 0x0, 0x1, 0x2, 0x8, 0x9
MASK: Final = b"\x37\xfa\x21\x3d"
LIMIT: Final = 65536  # max_message_bytes default


def frame(opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True, rsv: int = 0) -> bytes:
    """One client frame, built by hand: masked (as clients must) unless told otherwise."""
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    size = len(payload)
    mask_bit = 0x80 if masked else 0
    if size < 126:
        head += bytes([mask_bit | size])
    elif size < 1 << 16:
        head += bytes([mask_bit | 126]) + size.to_bytes(2, "big")
    else:
        head += bytes([mask_bit | 127]) + size.to_bytes(8, "big")
    if not masked:
        return head + payload
    return head + MASK + bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))


def text(data: str | bytes) -> bytes:
    return frame(TEXT, data.encode() if isinstance(data, str) else data)


def fragments(data: bytes, pieces: int, *, opcode: int = TEXT) -> bytes:
    """``data`` as one message in ``pieces`` frames (a text or binary frame, then continuations)."""
    step = max(1, -(-len(data) // pieces))
    chunks = [data[i : i + step] for i in range(0, len(data), step)] or [b""]
    return b"".join(
        frame(opcode if i == 0 else CONTINUATION, chunk, fin=i == len(chunks) - 1)
        for i, chunk in enumerate(chunks)
    )


def subscribe_frame(user: str = "mallory") -> bytes:
    return text(json.dumps({"@type": "subscribe", "ack": True, "jwt": token(user)}))


# ---------------------------------------------------------------------------------------------
# Raw connections and the health check that follows every case


@asynccontextmanager
async def raw_client(harness: Harness, path: str, *, remote: str = "local") -> AsyncIterator[RawClient]:
    client_stream, server_stream = socket_pair()
    async with client_stream, trio.open_nursery() as nursery:
        nursery.start_soon(harness.gateway.websocket.serve_stream, server_stream, remote)
        client = RawClient(client_stream)
        await client.handshake(path)
        try:
            yield client
        finally:
            nursery.cancel_scope.cancel()


async def replies(client: RawClient, count: int) -> list[Json]:
    """Read until ``count`` text frames have arrived (or the connection ends)."""
    while len(client.texts()) < count and await client.receive_some():
        pass
    return client.texts()


async def until_closed(client: RawClient) -> None:
    """Read to the end, answering the server's close frame as a browser does (no close_timeout wait)."""
    from wsproto.connection import ConnectionState
    from wsproto.events import CloseConnection

    while await client.receive_some():
        closing = [e for e in client.events if isinstance(e, CloseConnection)]
        if closing and client.ws.state is ConnectionState.REMOTE_CLOSING:
            reply = client.ws.send(closing[0].response())
            with contextlib.suppress(trio.BrokenResourceError):  # the server may have hung up already
                await client.stream.send_all(reply)


async def subscribed(client: RawClient, user: str = "mallory") -> None:
    """Subscribe and wait for the reply; earlier events are dropped, so replies() counts anew."""
    client.events.clear()
    await client.stream.send_all(subscribe_frame(user))
    assert (await replies(client, 1))[-1]["@type"] == "subscribed"


_probes = iter(range(1_000_000))


async def assert_serves_well_behaved_clients(harness: Harness) -> None:
    """A fresh session on each socket works, and no session of the hostile cases is left behind."""
    probe = next(_probes)
    async with harness.subscribed(token("probe")) as ws:
        await harness.publish(TREE, {"Target": {"Uuid": f"n-probe-{probe}", "Path": f"/ds/common/p{probe}"}})
        assert (await recv_json(ws))["Target"]["Path"] == f"common-files/p{probe}"
    async with harness.subscribed(token("probe"), "/chat") as ws:
        await ws.send_message(
            json.dumps({"@type": "JOIN", "Room": {"Type": "GLOBAL", "RoomTypeObject": "probe"}})
        )
        room = await recv_json(ws)
        assert room["@type"] == "ROOM_UPDATE", room
        post = {"RoomUuid": room["Room"]["Uuid"], "Message": f"still here {probe}"}
        await ws.send_message(json.dumps({"@type": "POST", "Message": post}))
        with trio.fail_after(10):
            while (frame := await recv_json(ws)).get("Message") != post["Message"]:
                assert frame.get("@type") != "error", frame
    assert harness.gateway.hub.sessions == set()


# ---------------------------------------------------------------------------------------------
# The corpus: frames -> (error codes in order, close code or None when the session goes on)

Case = tuple[bytes, list[str], int | None]
NESTED = "[" * 30_000 + "]" * 30_000  # fits in 64 KiB, deeper than any parser allows
OVERSIZED = json.dumps({"@type": "x", "pad": "a" * LIMIT}).encode()  # over 64 KiB, under 4 x 64 KiB
CORPUS: dict[str, Case] = {
    # The WebSocket layer: not UTF-8, not JSON text, not RFC 6455
    "invalid_utf8": (text(b'{"@type": "subscribe", "ack": true, "jwt": "\xc0\xaf"}'), [], 1007),
    "invalid_utf8_across_fragments": (
        frame(TEXT, b'{"@type": "x", "a": "\xe2\x82', fin=False) + frame(CONTINUATION, b'\x28"}'),
        [],
        1007,
    ),
    "utf8_encoded_surrogate": (text(b'{"@type": "\xed\xa0\x80"}'), [], 1007),
    "truncated_utf8": (text(b'{"@type": "\xe2\x82'), [], 1007),
    "binary": (frame(BINARY, b"\x00\x01{}"), ["binary_not_supported"], 1003),
    "binary_fragmented": (
        fragments(b'{"@type": "subscribe"}', 3, opcode=BINARY),
        ["binary_not_supported"],
        1003,
    ),
    "unmasked_frame": (frame(TEXT, b'{"@type": "x"}', masked=False), [], 1002),
    "reserved_opcode": (frame(0x3, b"x"), [], 1002),
    "reserved_bits": (frame(TEXT, b'{"@type": "x"}', rsv=0b100), [], 1002),
    "fragmented_ping": (frame(PING, b"x", fin=False), [], 1002),
    "continuation_without_start": (frame(CONTINUATION, b"x"), [], 1002),
    "close_with_invalid_code": (frame(CLOSE, (999).to_bytes(2, "big")), [], 1002),
    # Size
    "oversized_frame": (text(OVERSIZED), ["message_too_big"], 1009),
    "oversized_fragmented": (fragments(OVERSIZED, 9), ["message_too_big"], 1009),
    "huge_frame": (text(b"a" * (5 * LIMIT)), [], 1009),
    "huge_fragmented": (fragments(b"a" * (5 * LIMIT), 40), [], 1009),
    # JSON
    "empty": (text(""), ["bad_json"], None),
    "not_json": (text("{'@type': 'subscribe'}"), ["bad_json"], None),
    "deep_nesting": (text(NESTED), ["bad_json"], None),
    "deep_nesting_in_a_field": (
        text('{"@type": "subscribe", "ack": true, "jwt": ' + NESTED + "}"),
        ["bad_json"],
        None,
    ),
    "huge_integer": (text('{"@type": "subscribe", "n": ' + "7" * 5000 + "}"), ["bad_json"], None),
    "unpaired_surrogate_escape": (
        text('{"@type": "subscribe", "ack": true, "jwt": "\\ud800"}'),
        ["bad_json"],
        None,
    ),
    "unpaired_low_surrogate_escape": (text('{"@type": "\\udfff"}'), ["bad_json"], None),
    "array": (text("[]"), ["bad_message"], None),
    "null": (text("null"), ["bad_message"], None),
    "string": (text('"subscribe"'), ["bad_message"], None),
    "number": (text("1e999999"), ["bad_message"], None),
    "no_type": (text('{"jwt": "x"}'), ["bad_message"], None),
    "nan_type": (text('{"@type": NaN}'), ["bad_message"], None),
    "empty_type": (text('{"@type": ""}'), ["bad_message"], None),
    "huge_float_field": (text('{"@type": "x", "n": 1e999999}'), ["not_subscribed"], None),
    "nul_type": (text('{"@type": "\\u0000"}'), ["not_subscribed"], None),
    "paired_surrogates_are_fine": (text('{"@type": "\\ud83d\\ude00"}'), ["not_subscribed"], None),
    # Session commands
    "subscribe_without_jwt": (text('{"@type": "subscribe", "ack": true}'), ["token_missing"], 4001),
    "subscribe_jwt_not_a_string": (
        text('{"@type": "register", "ack": true, "jwt": {"alg": "none"}}'),
        ["token_invalid"],
        4001,
    ),
    "subscribe_garbage_jwt": (
        text('{"@type": "subscribe", "ack": true, "jwt": "a.b.c"}'),
        ["token_invalid"],
        4001,
    ),
    "fragmented_subscribe_with_ping_between": (
        frame(TEXT, json.dumps({"@type": "subscribe", "ack": True, "jwt": token()})[:10].encode(), fin=False)
        + frame(PING, b"keepalive")
        + frame(CONTINUATION, json.dumps({"@type": "subscribe", "ack": True, "jwt": token()})[10:].encode()),
        ["subscribed"],
        None,
    ),
    "subscribe_with_unknown_fields": (
        text(
            json.dumps({"@type": "subscribe", "ack": True, "jwt": token(), "x": [1, {"y": None}], "Room": 5})
        ),
        ["subscribed"],
        None,
    ),
}


async def run_case(client: RawClient, case: Case) -> tuple[list[str], int | None]:
    data, expected_errors, close = case
    await client.stream.send_all(data)
    if close is None:
        got = await replies(client, len(expected_errors))
    else:
        await until_closed(client)
        got = client.texts()
    return [str(m.get("error", m["@type"])) for m in got], client.close_code()


@ENDPOINTS
@pytest.mark.parametrize("name", sorted(CORPUS))
async def test_hostile_frame_corpus(harness: Harness, path: str, name: str) -> None:
    with trio.fail_after(20):
        async with raw_client(harness, path) as client:
            errors, close = await run_case(client, CORPUS[name])
        assert errors == CORPUS[name][1]
        assert close == CORPUS[name][2]
        await assert_serves_well_behaved_clients(harness)


SUBSCRIBED_CORPUS = [
    "invalid_utf8",
    "binary",
    "unmasked_frame",
    "oversized_frame",
    "oversized_fragmented",
    "huge_frame",
    "deep_nesting",
    "huge_integer",
    "unpaired_surrogate_escape",
    "array",
]


@ENDPOINTS
@pytest.mark.parametrize("name", SUBSCRIBED_CORPUS)
async def test_hostile_frames_after_subscribe(harness: Harness, path: str, name: str) -> None:
    with trio.fail_after(20):
        async with raw_client(harness, path) as client:
            await subscribed(client)
            client.events.clear()
            errors, close = await run_case(client, CORPUS[name])
        assert errors == CORPUS[name][1]
        assert close == CORPUS[name][2]
        await assert_serves_well_behaved_clients(harness)


@ENDPOINTS
async def test_hostile_ping_with_payload_answered_and_session_goes_on(harness: Harness, path: str) -> None:
    from wsproto.events import Pong

    with trio.fail_after(10):
        async with raw_client(harness, path) as client:
            await client.stream.send_all(frame(PING, b"x" * 125))
            while not any(isinstance(e, Pong) for e in client.events):
                assert await client.receive_some()
            await subscribed(client)
        await assert_serves_well_behaved_clients(harness)


# ---------------------------------------------------------------------------------------------
# Wrong types in every field of every message (generated from the shapes in docs/PROTOCOL.md)

# A value of each JSON type; null is left out: it is the zero value, read as "field absent".
JSON_VALUES: Final[dict[str, list[Any]]] = {
    "boolean": [True, False],
    "integer": [0, -1, 2**70],
    "number": [1.5, -0.0, 1e300],
    "string": ["", "x", "é" * 3],
    "array": [[], [1], ["x"], [{}]],
    "object": [{}, {"a": 1}, {"Uuid": "r-1"}],
}
ROOM: Final = {  # ChatRoom: field -> (a valid value, the JSON types it accepts)
    "Uuid": ("r-1", {"string"}),
    "Type": ("GLOBAL", {"string"}),
    "RoomTypeObject": ("lobby", {"string"}),
    "RoomLabel": ("Lobby", {"string"}),
    "Users": (["alice"], {"array"}),
    "LastUpdated": (1764000000, {"integer", "string"}),
}
MESSAGE: Final = {  # ChatMessage
    "Uuid": ("m-1", {"string"}),
    "RoomUuid": ("r-1", {"string"}),
    "Message": ("hello", {"string"}),
    "Author": ("alice", {"string"}),
    "Timestamp": ("1764000000", {"integer", "string"}),
    "Info": ({"k": "v"}, {"object"}),
    "Seq": (1, {"integer"}),
    "Edited": ("1764000001", {"string"}),
    "ClientMessageId": ("c-1", {"string"}),
    "Activity": ({}, {"object"}),
}
CHAT_REQUESTS: Final = ["JOIN", "LEAVE", "POST", "HISTORY", "DELETE_MSG"]


def full_request(kind: str) -> Json:
    """A request of ``kind`` with every field present and of the right type."""
    return {
        "@type": kind,
        "Room": {name: value for name, (value, _) in ROOM.items()},
        "Message": {name: value for name, (value, _) in MESSAGE.items()},
    }


def wrong_values(accepted: set[str]) -> list[Any]:
    return [v for json_type, values in JSON_VALUES.items() if json_type not in accepted for v in values]


def wrongly_typed_chat_requests() -> list[tuple[str, Json]]:
    """(what was substituted, the request) for every field of every chat request; unknown fields too."""
    cases = []
    for kind in CHAT_REQUESTS:
        fields: list[tuple[tuple[str, ...], set[str]]] = [(("@type",), {"string"}), (("Room",), {"object"}),
                                                          (("Message",), {"object"})]  # fmt: skip
        fields += [(("Room", name), accepted) for name, (_, accepted) in ROOM.items()]
        fields += [(("Message", name), accepted) for name, (_, accepted) in MESSAGE.items()]
        for where, accepted in fields:
            for value in wrong_values(accepted):
                request = full_request(kind)
                target = request
                for key in where[:-1]:
                    target = target[key]
                target[where[-1]] = value
                cases.append((f"{kind} {'.'.join(where)}={json.dumps(value)[:20]}", request))
        for level in ((), ("Room",), ("Message",)):  # and an unknown field at each level
            request = full_request(kind)
            target = request
            for key in level:
                target = target[key]
            target["Colour"] = "red"
            cases.append((f"{kind} {'.'.join((*level, 'Colour'))}", request))
    return cases


def test_hostile_full_requests_are_valid() -> None:
    """The base of the generated cases is accepted: each refusal comes from the substituted field."""
    from gateway.chat.protocol import parse_request

    for kind in CHAT_REQUESTS:
        assert parse_request(full_request(kind)).kind == kind


async def test_hostile_wrong_types_in_every_chat_field(nursery: trio.Nursery, settings: Settings) -> None:
    cases = wrongly_typed_chat_requests()
    assert len(cases) > 500
    harness = await Harness(nursery, settings.with_changes(**UNLIMITED)).start()
    with trio.fail_after(60):
        async with raw_client(harness, "/chat") as client:
            await subscribed(client)
            client.events.clear()
            await client.stream.send_all(b"".join(text(json.dumps(request)) for _, request in cases))
            got = await replies(client, len(cases))
        assert len(got) == len(cases)
        for (what, _), reply in zip(cases, got, strict=True):
            assert reply.get("error") == "bad_message", (what, reply)
        await assert_serves_well_behaved_clients(harness)


def wrongly_typed_session_commands() -> list[tuple[str, Json, str, int | None]]:
    """(what, message, error, close) for subscribe/register/unsubscribe on either socket."""
    cases: list[tuple[str, Json, str, int | None]] = [
        (f"@type={value!r}", {"@type": value, "jwt": token()}, "bad_message", None)
        for value in wrong_values({"string"})
    ]
    for kind in ("subscribe", "register"):
        for value in wrong_values({"string"}):
            cases.append(
                (f"{kind} jwt={value!r}", {"@type": kind, "ack": True, "jwt": value}, "token_invalid", 4001)
            )
        cases.append((f"{kind} jwt=null", {"@type": kind, "ack": True, "jwt": None}, "token_missing", 4001))
    return cases


@ENDPOINTS
@pytest.mark.parametrize(("what", "message", "error", "close"), wrongly_typed_session_commands())
async def test_hostile_wrong_types_in_session_commands(
    harness: Harness, path: str, what: str, message: Json, error: str, close: int | None
) -> None:
    with trio.fail_after(10):
        async with raw_client(harness, path) as client:
            errors, code = await run_case(client, (text(json.dumps(message)), [error], close))
            assert (errors, code) == ([error], close), what
            if close is None:  # the session goes on: it can still subscribe
                await subscribed(client)
        await assert_serves_well_behaved_clients(harness)


async def test_hostile_events_socket_ignores_unknown_fields_of_unsubscribe(harness: Harness) -> None:
    with trio.fail_after(10):
        async with raw_client(harness, "/ws") as client:
            await subscribed(client)
            await client.stream.send_all(text(json.dumps({"@type": "unsubscribe", "jwt": 5, "x": [{}]})))
            assert (await replies(client, 2))[-1] == {"@type": "unsubscribed"}


# ---------------------------------------------------------------------------------------------
# Values with the right type but hostile content, on the chat socket


def history(paging: str) -> Json:
    return {"@type": "HISTORY", "Room": {"Uuid": "R"}, "Message": {"Message": paging}}


def post(message: str) -> Json:
    return {"@type": "POST", "Message": {"RoomUuid": "R", "Message": message}}


def join(kind: str, type_object: str | None = None) -> Json:
    room = {"Type": kind} if type_object is None else {"Type": kind, "RoomTypeObject": type_object}
    return {"@type": "JOIN", "Room": room}


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        (history(json.dumps({"Offset": 10**30})), "bad_message"),
        (history(json.dumps({"Before": 2**63})), "bad_message"),
        (history(json.dumps({"After": 2**64})), "bad_message"),
        (history('{"Limit": ' + "9" * 5000 + "}"), "bad_message"),
        (history("[" * 5000 + "]" * 5000), "bad_message"),
        (history('{"Offset": 1e999}'), "bad_message"),
        (history('{"Offset": -1}'), "bad_message"),
        (post("\u0000"), "bad_message"),
        (post("<script>x</script><style>y</style>"), "bad_message"),
        (post("x" * 9000), "message_too_long"),
        (join("GLOBAL", "x" * 513), "bad_message"),
        (join("global", "x"), "unknown_room_type"),
        (join("ANY", "x"), "unknown_room_type"),
        (join("USER"), "bad_message"),
        (join("WORKSPACE", "ws-common\u200b"), "room_forbidden"),
        (join("WORKSPACE", "WS-COMMON"), "room_forbidden"),
        (join("NODE", "../../etc"), "node_rooms_disabled"),
        ({"@type": "HISTORY", "Room": {"Uuid": "nope"}}, "not_member"),
        ({"@type": "DELETE_MSG", "Message": {"Uuid": "nope"}}, "message_not_found"),
    ],
)
async def test_hostile_chat_values(harness: Harness, request_: Json, error: str) -> None:
    with trio.fail_after(10):
        async with raw_client(harness, "/chat") as client:
            await subscribed(client)
            join = {"@type": "JOIN", "Room": {"Type": "GLOBAL", "RoomTypeObject": "hostile"}}
            await client.stream.send_all(text(json.dumps(join)))
            room = (await replies(client, 2))[-1]["Room"]["Uuid"]
            client.events.clear()
            data = json.dumps(request_).replace('"R"', json.dumps(room))
            await client.stream.send_all(text(data))
            [reply] = await replies(client, 1)
            assert reply["@type"] == "error" and reply["error"] == error, reply
            assert client.close_code() is None
        await assert_serves_well_behaved_clients(harness)


# ---------------------------------------------------------------------------------------------
# Floods


@ENDPOINTS
@pytest.mark.parametrize("subscribe_first", [False, True])
async def test_hostile_flood_rate_limited_1008(
    nursery: trio.Nursery, settings: Settings, path: str, subscribe_first: bool
) -> None:
    harness = await Harness(nursery, settings.with_changes(rate_limit=NO_REFILL)).start()
    burst = settings.rate_burst
    with trio.fail_after(30):
        async with raw_client(harness, path) as client:
            if subscribe_first:
                await subscribed(client)
                client.events.clear()
            await client.stream.send_all(text('{"@type": "dance"}') * 1000)
            await until_closed(client)
        errors = [m["error"] for m in client.texts()]
        expected = "unknown_type" if subscribe_first else "not_subscribed"
        # The subscribe used one message of the burst.
        assert errors == [expected] * (burst - subscribe_first) + ["rate_limited"]
        assert client.close_code() == 1008
        await assert_serves_well_behaved_clients(harness)


async def test_hostile_post_flood_limited_per_user(nursery: trio.Nursery, settings: Settings) -> None:
    harness = await Harness(
        nursery, settings.with_changes(**UNLIMITED, chat_post_burst=5, chat_posts_per_second=NO_REFILL)
    ).start()
    with trio.fail_after(30):
        async with raw_client(harness, "/chat") as client:
            await subscribed(client)
            await client.stream.send_all(text(json.dumps({"@type": "JOIN", "Room": {"Type": "GLOBAL"}})))
            room = (await replies(client, 2))[-1]["Room"]["Uuid"]
            client.events.clear()
            post = text(json.dumps({"@type": "POST", "Message": {"RoomUuid": room, "Message": "spam"}}))
            await client.stream.send_all(post * 200)
            got = await replies(client, 200)
        acks = [m for m in got if m.get("Author") == "mallory"]
        limited = [m for m in got if m.get("error") == "post_rate_limited"]
        assert len(acks) == 5 and len(limited) == 195  # the session goes on; only the posts are refused
        assert client.close_code() is None
        await assert_serves_well_behaved_clients(harness)


def stored_rooms(settings: Settings) -> int:
    database = settings.db_url.removeprefix("sqlite:///")
    connection = sqlite3.connect(database)
    try:
        return int(connection.execute("select count(*) from rooms").fetchone()[0])
    finally:
        connection.close()


def joins(count: int, prefix: str) -> bytes:
    """``count`` JOIN frames, for rooms ``<prefix>0``, ``<prefix>1``..."""
    return b"".join(
        text(json.dumps({"@type": "JOIN", "Room": {"Type": "GLOBAL", "RoomTypeObject": f"{prefix}{i}"}}))
        for i in range(count)
    )


async def test_hostile_join_flood_default_limits(harness: Harness) -> None:
    """Thousands of JOINs of fresh rooms at once: the rate limit closes the session; the user's room
    creation cap holds meanwhile (before it, rooms were never deleted: one user made thousands)."""
    settings = harness.gateway.settings
    with trio.fail_after(60):
        async with raw_client(harness, "/chat") as client:
            await subscribed(client)
            client.events.clear()
            await client.stream.send_all(joins(3000, "flood-"))
            await until_closed(client)
        errors = [m["error"] for m in client.texts() if m["@type"] == "error"]
        joined = [m for m in client.texts() if m["@type"] == "ROOM_UPDATE"]
        assert len(joined) == settings.chat_rooms_created_per_hour < settings.chat_max_rooms_per_session
        assert errors[-1] == "rate_limited" and client.close_code() == 1008
        assert set(errors[:-1]) == {"room_creation_limited"}
        assert stored_rooms(settings) == settings.chat_rooms_created_per_hour  # refused JOINs create nothing
        await assert_serves_well_behaved_clients(harness)


@pytest.mark.parametrize(
    "floods", [pytest.param(2, id="2000_joins"), pytest.param(20, id="20000_joins", marks=pytest.mark.slow)]
)
async def test_hostile_join_flood_memory_and_rooms_bounded(
    nursery: trio.Nursery, settings: Settings, floods: int
) -> None:
    """Thousands of JOINs with the rate limits lifted: the room limit holds, memory stays flat."""
    quiet = {"chat_history_on_join": False, "ping_interval": 3600.0, "chat_presence_timeout": 3600.0,
             "chat_rooms_created_per_hour": 1_000_000}  # fmt: skip
    harness = await Harness(nursery, settings.with_changes(**UNLIMITED, **quiet)).start()
    limit = settings.chat_max_rooms_per_session
    with trio.fail_after(60 * floods):
        async with raw_client(harness, "/chat") as client:
            await subscribed(client)
            await client.stream.send_all(joins(limit, "room-"))
            await replies(client, 1 + limit)
            client.events.clear()
            gc.collect()
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                for batch in range(floods):  # a thousand refused JOINs each, then re-JOINs of joined rooms
                    await client.stream.send_all(joins(1000, f"flood-{batch}-"))
                    assert {m.get("error") for m in await replies(client, 1000)} == {"too_many_rooms"}
                    client.events.clear()
                await client.stream.send_all(joins(limit, "room-"))  # already joined: fine
                assert {m["@type"] for m in await replies(client, limit)} == {"ROOM_UPDATE"}
                client.events.clear()
                gc.collect()
                grown = tracemalloc.get_traced_memory()[0] - before
            finally:
                tracemalloc.stop()
        assert grown < 500_000, f"{grown} bytes kept after {floods * 1000} refused JOINs"
        assert stored_rooms(settings) == limit
        await assert_serves_well_behaved_clients(harness)


async def test_hostile_many_sessions_each_at_the_room_limit(
    nursery: trio.Nursery, settings: Settings
) -> None:
    """Rooms scale with sessions x limit, never with the number of JOINs sent."""
    harness = await Harness(nursery, settings.with_changes(**UNLIMITED, chat_max_rooms_per_session=3,
                                                          chat_history_on_join=False)).start()  # fmt: skip
    with trio.fail_after(60):
        for session in range(10):
            async with raw_client(harness, "/chat") as client:
                await subscribed(client, f"user-{session}")
                await client.stream.send_all(joins(200, f"s{session}-"))
                got = await replies(client, 201)
                assert sum(m["@type"] == "ROOM_UPDATE" for m in got) == 3
        assert stored_rooms(settings) == 30
        await assert_serves_well_behaved_clients(harness)
