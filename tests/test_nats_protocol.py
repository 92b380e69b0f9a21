"""The sans-IO NATS protocol: parser, serialisers, URL and CONNECT helpers (no sockets)."""

from __future__ import annotations

import contextlib
import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.bus.nats.protocol import (
    PING,
    PONG,
    Err,
    Event,
    Info,
    Msg,
    NatsParser,
    NatsProtocolError,
    Ok,
    Ping,
    Pong,
    check_subject,
    connect,
    pub,
    sub,
    unsub,
)
from gateway.bus.nats.servers import ServerAddress, connect_options, parse_servers

STREAM = (
    b'INFO {"server_id":"x","max_payload":1048576,"headers":true}\r\n'
    b"MSG topic.pydio.tree.nodes.changes 1 5\r\nhello\r\n"
    b"msg a.b 2 reply.to 0\r\n\r\n"
    b"HMSG a.b 3 20 25\r\nNATS/1.0\r\nX-Y: z\r\n\r\nworld\r\n"
    b"PING\r\nPONG\r\n+OK\r\n-ERR 'Authorization Violation'\r\n"
)
EXPECTED: list[Event] = [
    Info({"server_id": "x", "max_payload": 1048576, "headers": True}),
    Msg("topic.pydio.tree.nodes.changes", 1, None, b"hello"),
    Msg("a.b", 2, "reply.to", b""),
    Msg("a.b", 3, None, b"world", headers=b"NATS/1.0\r\nX-Y: z\r\n\r\n"),
    Ping(),
    Pong(),
    Ok(),
    Err("Authorization Violation"),
]


def parse(*chunks: bytes, parser: NatsParser | None = None) -> list[Event]:
    parser = parser or NatsParser()
    events: list[Event] = []
    for chunk in chunks:
        parser.receive_data(chunk)
        events.extend(parser.events())
    return events


# -- server -> client --------------------------------------------------------------------------


def test_parser_whole_stream() -> None:
    assert parse(STREAM) == EXPECTED


@pytest.mark.parametrize("cut", range(len(STREAM) + 1))
def test_parser_split_at_every_byte(cut: int) -> None:
    assert parse(STREAM[:cut], STREAM[cut:]) == EXPECTED


def test_parser_one_byte_at_a_time() -> None:
    assert parse(*(STREAM[i : i + 1] for i in range(len(STREAM)))) == EXPECTED


def test_parser_needs_more_data() -> None:
    parser = NatsParser()
    parser.receive_data(b"MSG a 1 3\r\nab")
    assert parser.next_event() is None
    parser.receive_data(b"c\r")
    assert parser.next_event() is None
    parser.receive_data(b"\n")
    assert parser.next_event() == Msg("a", 1, None, b"abc")


@pytest.mark.parametrize(
    ("line", "event"),
    [
        (b"ping\r\n", Ping()),
        (b"Pong\r\n", Pong()),
        (b"PING \r\n", Ping()),
        (b"MSG\ta.b\t7\t2\r\nhi\r\n", Msg("a.b", 7, None, b"hi")),
        (b"MSG  a.b   7  2 \r\nhi\r\n", Msg("a.b", 7, None, b"hi")),
        (b"MSG a 1 3\r\na\r\n\r\n", Msg("a", 1, None, b"a\r\n")),
        (b"HMSG a 1 r 12 12\r\nNATS/1.0\r\n\r\n\r\n", Msg("a", 1, "r", b"", headers=b"NATS/1.0\r\n\r\n")),
        (b"-ERR 'Invalid Subject'\r\n", Err("Invalid Subject")),
        (b"-ERR\r\n", Err("")),
        (b'INFO {"a": [1, 2], "b": "c d"}\r\n', Info({"a": [1, 2], "b": "c d"})),
        ("MSG sujet.été 1 0\r\n\r\n".encode(), Msg("sujet.été", 1, None, b"")),
    ],
)
def test_parser_accepts(line: bytes, event: Event) -> None:
    assert parse(line) == [event]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"HELLO\r\n", "unknown operation"),
        (b"\r\n", "unknown operation"),
        (b"MSG a 1\r\n", "takes 3 or 4 arguments"),
        (b"MSG a b c d e\r\n", "takes 3 or 4 arguments"),
        (b"MSG a x 1\r\n", "invalid sid"),
        (b"MSG a 1 -1\r\n", "invalid size"),
        (b"MSG a 1 +1\r\n", "invalid size"),
        (b"MSG a 1 99999999999999999999\r\n", "invalid size"),
        (b"MSG a 1 2\r\nabcd\r\n", "not followed by CRLF"),
        (b"HMSG a 1 5 4\r\n", "header size larger"),
        (b"HMSG a 1 4\r\n", "takes 4 or 5 arguments"),
        (b"INFO {bad\r\n", "not valid JSON"),
        (b"INFO [1]\r\n", "not a JSON object"),
        (b"INFO " + b"[" * 5000 + b"\r\n", "not valid JSON"),
        (b"PING x\r\n", "unexpected arguments"),
        (b"MSG \xff 1 0\r\n\r\n", "not UTF-8"),
    ],
)
def test_parser_rejects(data: bytes, message: str) -> None:
    with pytest.raises(NatsProtocolError, match=message):
        parse(data)


def test_parser_control_line_limit() -> None:
    parser = NatsParser(max_control_line=16)
    assert parse(b"-ERR '012345678'\r\n", parser=parser) == [Err("012345678")]  # exactly 16
    parser.receive_data(b"-ERR '01234567890")
    assert parser.next_event() is None  # 17 bytes: the CRLF may still come
    with pytest.raises(NatsProtocolError, match="control line longer"):
        parse(b"1", parser=parser)


def test_parser_payload_limit() -> None:
    parser = NatsParser(max_payload=4)
    assert parse(b"MSG a 1 4\r\nabcd\r\n", parser=parser) == [Msg("a", 1, None, b"abcd")]
    with pytest.raises(NatsProtocolError, match="over the 4 bytes limit"):
        parse(b"MSG a 1 5\r\n", parser=parser)


@pytest.mark.parametrize(
    ("fields", "max_payload"),
    [({"max_payload": 1024}, 1024), ({}, None), ({"max_payload": True}, None), ({"max_payload": -1}, None)],
)
def test_info_max_payload(fields: dict[str, object], max_payload: int | None) -> None:
    assert Info(fields).max_payload == max_payload


@pytest.mark.parametrize(
    ("message", "fatal"),
    [
        ("Authorization Violation", True),
        ("Stale Connection", True),
        ("Maximum Payload Violation", True),
        ("Invalid Subject", False),
        ("Permissions Violation for Publish to a.b", False),
    ],
)
def test_err_fatal(message: str, fatal: bool) -> None:
    assert Err(message).is_fatal is fatal


# -- client -> server --------------------------------------------------------------------------


def test_serialise_commands() -> None:
    assert pub("a.b", b"hi") == b"PUB a.b 2\r\nhi\r\n"
    assert pub("a.b", b"", reply_to="r") == b"PUB a.b r 0\r\n\r\n"
    assert sub("a.*", 3) == b"SUB a.* 3\r\n"
    assert sub("a.>", 4, queue_group="q") == b"SUB a.> q 4\r\n"
    assert unsub(3) == b"UNSUB 3\r\n"
    assert unsub(3, max_msgs=10) == b"UNSUB 3 10\r\n"
    assert PING == b"PING\r\n"
    assert PONG == b"PONG\r\n"
    assert connect({"verbose": False, "name": "x"}) == b'CONNECT {"verbose":false,"name":"x"}\r\n'


def test_parse_hmsg_with_headers() -> None:
    headers = b"NATS/1.0\r\nNats-Msg-Id: 42\r\n\r\n"
    frame = b"HMSG a.b 9 %d %d\r\n" % (len(headers), len(headers) + 4) + headers + b"body\r\n"
    assert parse(frame) == [Msg("a.b", 9, None, b"body", headers=headers)]


@pytest.mark.parametrize(
    "subject", ["", "a b", "a.", ".a", "a..b", "a\tb", "a\r\nPUB x 1", "a.*", "a.>", "\x00"]
)
def test_subject_invalid_for_publish(subject: str) -> None:
    with pytest.raises(ValueError, match="subject"):
        pub(subject, b"")


@pytest.mark.parametrize("subject", ["a.>.b", "a b", ""])
def test_subject_invalid_for_subscribe(subject: str) -> None:
    with pytest.raises(ValueError, match=r"subject|token"):
        sub(subject, 1)


@pytest.mark.parametrize("subject", ["topic.pydio.tree.nodes.changes", "a", "a.*.c", "a.>", "*", "é.b"])
def test_subject_valid_for_subscribe(subject: str) -> None:
    check_subject(subject, wildcards=True)


def test_serialise_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="sid"):
        sub("a", 0)
    with pytest.raises(ValueError, match="sid"):
        unsub(-1)


# -- URLs and CONNECT --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "servers"),
    [
        ("nats://127.0.0.1:4333", [ServerAddress("127.0.0.1", 4333)]),
        ("nats://broker", [ServerAddress("broker", 4222)]),
        ("tls://broker:4443", [ServerAddress("broker", 4443, tls=True)]),
        ("nats://al%40ce:p%3Ass@h:1", [ServerAddress("h", 1, user="al@ce", password="p:ss")]),
        ("nats://s3cret@h:1", [ServerAddress("h", 1, token="s3cret")]),
        ("nats://[::1]:4222/", [ServerAddress("::1", 4222)]),
        (
            "nats://a:1, tls://b:2,",
            [ServerAddress("a", 1), ServerAddress("b", 2, tls=True)],
        ),
    ],
)
def test_parse_servers(url: str, servers: list[ServerAddress]) -> None:
    assert parse_servers(url) == servers


@pytest.mark.parametrize(
    "url", ["", " , ", "http://h:1", "nats://:1", "nats://h:x", "nats://h:1/path", "nats://h?x=1", "h:4222"]
)
def test_parse_servers_rejects(url: str) -> None:
    with pytest.raises(ValueError, match="NATS"):
        parse_servers(url)


def test_parse_servers_error_hides_password() -> None:
    with pytest.raises(ValueError, match=r"\*\*\*") as info:
        parse_servers("http://user:hunter2@h:1")
    assert "hunter2" not in str(info.value)


def test_server_address_str_hides_credentials() -> None:
    (server,) = parse_servers("nats://user:hunter2@h:1")
    assert str(server) == "nats://h:1"
    assert "hunter2" not in repr(server)
    assert str(ServerAddress("::1", 5, tls=True)) == "tls://[::1]:5"


@pytest.mark.parametrize(
    ("url", "auth"),
    [
        ("nats://h", {}),
        ("nats://u:p@h", {"user": "u", "pass": "p"}),
        ("nats://tok@h", {"auth_token": "tok"}),
    ],
)
def test_connect_options(url: str, auth: dict[str, str]) -> None:
    (server,) = parse_servers(url)
    options = connect_options(Info({"headers": True}), server, name="gw", version="1.2", tls=False)
    assert options == {
        "verbose": False,
        "pedantic": False,
        "tls_required": False,
        "name": "gw",
        "lang": "python-trio",
        "version": "1.2",
        "protocol": 1,
        "headers": True,
        "no_responders": True,
        **auth,
    }


def test_connect_options_headers_only_if_supported() -> None:
    options = connect_options(Info({}), ServerAddress("h", 1), name="gw", version="1", tls=True)
    assert options["headers"] is False
    assert options["no_responders"] is False  # the 503 status needs headers
    assert options["tls_required"] is True


# -- fuzz --------------------------------------------------------------------------------------

_subjects = st.from_regex(r"[A-Za-z0-9_\-]{1,8}(\.[A-Za-z0-9_\-]{1,8}){0,3}", fullmatch=True)
_payloads = st.binary(max_size=64)


def _server_frame(event: Event) -> bytes:
    """What a NATS server sends for ``event`` (the test's own serialiser, server side)."""
    if isinstance(event, Msg):
        reply = f" {event.reply_to}" if event.reply_to else ""
        if event.headers is None:
            return f"MSG {event.subject} {event.sid}{reply} {len(event.payload)}\r\n".encode() + (
                event.payload + b"\r\n"
            )
        total = len(event.headers) + len(event.payload)
        head = f"HMSG {event.subject} {event.sid}{reply} {len(event.headers)} {total}\r\n".encode()
        return head + event.headers + event.payload + b"\r\n"
    if isinstance(event, Info):
        return b"INFO " + json.dumps(dict(event.fields)).encode() + b"\r\n"
    if isinstance(event, Err):
        return f"-ERR '{event.message}'\r\n".encode()
    return {Ping: b"PING\r\n", Pong: b"PONG\r\n", Ok: b"+OK\r\n"}[type(event)]


_events: st.SearchStrategy[Event] = st.one_of(
    st.builds(
        Msg,
        _subjects,
        st.integers(1, 10**6),
        st.one_of(st.none(), _subjects),
        _payloads,
        st.one_of(st.none(), _payloads.map(lambda b: b"NATS/1.0\r\n" + b)),
    ),
    st.builds(Info, st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3)),
    st.builds(Err, st.from_regex(r"[A-Za-z ]{0,20}", fullmatch=True).map(str.strip)),
    st.sampled_from([Ping(), Pong(), Ok()]),
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=256), st.lists(st.integers(0, 256), max_size=8))
def test_fuzz_parser_arbitrary_bytes(data: bytes, cuts: list[int]) -> None:
    edges = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    with contextlib.suppress(NatsProtocolError):
        parse(*(data[a:b] for a, b in itertools.pairwise(edges)))


@settings(max_examples=300, deadline=None)
@given(st.lists(_events, max_size=8), st.data())
def test_fuzz_parser_valid_stream_any_split(events: list[Event], data: st.DataObject) -> None:
    stream = b"".join(_server_frame(e) for e in events)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))
    edges = sorted({0, len(stream), *cuts})
    assert parse(*(stream[a:b] for a, b in itertools.pairwise(edges))) == events


_pieces = st.sampled_from(
    [b"MSG ", b"HMSG ", b"INFO ", b"PING", b"PONG", b"+OK", b"-ERR ", b"a.b", b" ", b"\t", b"\r\n", b"\r",
     b"\n", b"0", b"1", b"12", b"99999999999999999999", b"{", b"}", b"[", b'"', b"\xff", b"'"]
)  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(st.lists(_pieces, max_size=40).map(b"".join), st.lists(st.integers(0, 400), max_size=6))
def test_fuzz_parser_protocol_like_bytes(data: bytes, cuts: list[int]) -> None:
    edges = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    with contextlib.suppress(NatsProtocolError):
        parse(*(data[a:b] for a, b in itertools.pairwise(edges)))


@settings(max_examples=300, deadline=None)
@given(st.lists(_events, min_size=1, max_size=6), st.data())
def test_fuzz_parser_mutated_stream(events: list[Event], data: st.DataObject) -> None:
    stream = bytearray(b"".join(_server_frame(e) for e in events))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(stream)))
        stream[at : at + data.draw(st.integers(0, 2))] = data.draw(st.binary(max_size=3))
    with contextlib.suppress(NatsProtocolError):
        parse(bytes(stream))
