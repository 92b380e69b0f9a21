"""The pure parts under JetStream: header blocks, HPUB framing, ack subjects, API requests and answers."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.bus.nats.headers import HeaderBlock, encode_headers, parse_headers
from gateway.bus.nats.jetstream_api import (
    AckMetadata,
    JetStreamError,
    JetStreamUnavailable,
    StreamGone,
    StreamInfo,
    api_error,
    api_subject,
    check_name,
    ordered_consumer_config,
    parse_ack_subject,
    parse_pub_ack,
    parse_response,
    parse_stream_info,
    stream_config,
    stream_gone,
)
from gateway.bus.nats.protocol import Msg, NatsParser, hpub, pub
from gateway.bus.nats.requests import is_no_responders

# -- header blocks --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        (b"NATS/1.0\r\nNats-Msg-Id: a1\r\n\r\n", HeaderBlock(None, "", {"Nats-Msg-Id": "a1"})),
        (b"NATS/1.0 503\r\nNats-Subject: nocap\r\n\r\n", HeaderBlock(503, "", {"Nats-Subject": "nocap"})),
        (
            b"NATS/1.0 100 Idle Heartbeat\r\nNats-Last-Consumer: 2\r\nNats-Last-Stream: 2\r\n\r\n",
            HeaderBlock(100, "Idle Heartbeat", {"Nats-Last-Consumer": "2", "Nats-Last-Stream": "2"}),
        ),
        (b"NATS/1.0 100 FlowControl Request\r\n\r\n", HeaderBlock(100, "FlowControl Request", {})),
        (b"NATS/1.0 409 Consumer Deleted\r\n\r\n", HeaderBlock(409, "Consumer Deleted", {})),
        (b"NATS/1.0\r\n\r\n", HeaderBlock()),
        (b"NATS/1.0", HeaderBlock()),
        # First value wins; blanks trimmed; a line without a colon or with a bad name is skipped.
        (
            b"NATS/1.0\r\nK: 1\r\nK: 2\r\n  X-Y :  v w  \r\ngarbage\r\nBad Name: x\r\n\r\n",
            HeaderBlock(None, "", {"K": "1", "X-Y": "v w"}),
        ),
        (b"NATS/1.0\r\nEmpty:\r\n\r\n", HeaderBlock(None, "", {"Empty": ""})),
    ],
)  # fmt: skip
def test_parse_headers(block: bytes, expected: HeaderBlock) -> None:
    assert parse_headers(block) == expected


@pytest.mark.parametrize(
    "block", [b"", b"HTTP/1.1 200 OK\r\n\r\n", b"NATS/1.0 abc\r\n\r\n", b"NATS/1.0 5030\r\n"]
)
def test_parse_headers_refuses_what_is_not_a_nats_block(block: bytes) -> None:
    with pytest.raises(ValueError, match="header block"):
        parse_headers(block)


def test_encode_headers_round_trip() -> None:
    fields = {"Nats-Msg-Id": "x-1", "X-Empty": "", "X-Utf8": "héllo"}
    block = encode_headers(fields)
    assert block == b"NATS/1.0\r\nNats-Msg-Id: x-1\r\nX-Empty: \r\nX-Utf8: h\xc3\xa9llo\r\n\r\n"
    assert parse_headers(block) == HeaderBlock(None, "", fields)


@pytest.mark.parametrize(
    "fields", [{"Bad Name": "x"}, {"K:": "x"}, {"": "x"}, {"K": "a\r\nInjected: 1"}, {"K": "\n"}]
)
def test_encode_headers_refuses_what_would_break_the_block(fields: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="header"):
        encode_headers(fields)


_names = st.from_regex(r"[A-Za-z][A-Za-z0-9\-]{0,10}", fullmatch=True)
_values = st.text(st.characters(blacklist_categories=["Cs", "Cc"]), max_size=12).map(str.strip)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_names, _values, max_size=5))
def test_fuzz_headers_round_trip(fields: dict[str, str]) -> None:
    assert parse_headers(encode_headers(fields)).fields == fields


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_fuzz_parse_headers_only_value_error(block: bytes) -> None:
    try:
        parse_headers(b"NATS/1.0" + block)
        parse_headers(block)
    except ValueError:
        pass


def test_no_responders_reply_recognised() -> None:
    assert is_no_responders(Msg("_INBOX.a.1", 1, None, b"", b"NATS/1.0 503\r\n\r\n"))
    assert not is_no_responders(Msg("_INBOX.a.1", 1, None, b"{}", b"NATS/1.0 503\r\n\r\n"))
    assert not is_no_responders(Msg("_INBOX.a.1", 1, None, b"", b"NATS/1.0\r\n\r\n"))
    assert not is_no_responders(Msg("_INBOX.a.1", 1, None, b"", None))
    assert not is_no_responders(Msg("_INBOX.a.1", 1, None, b"", b"junk"))


# -- HPUB and PUB with a reply subject ------------------------------------------------------------


def test_hpub_framing() -> None:
    block = encode_headers({"Nats-Msg-Id": "a1"})
    assert len(block) == 29
    assert hpub("ev.a", block, b"hello") == b"HPUB ev.a 29 34\r\nNATS/1.0\r\nNats-Msg-Id: a1\r\n\r\nhello\r\n"
    assert hpub("ev.a", block, b"", "_INBOX.x.1") == b"HPUB ev.a _INBOX.x.1 29 29\r\n" + block + b"\r\n"
    assert (
        pub("$JS.API.STREAM.INFO.S", b"", "_INBOX.x.2") == b"PUB $JS.API.STREAM.INFO.S _INBOX.x.2 0\r\n\r\n"
    )


def test_hpub_as_the_server_delivers_it_parses_back() -> None:
    """What we frame is what HMSG carries: header size and total size agree with the parser."""
    block = encode_headers({"A": "1"})
    frame = hpub("s.t", block, b"body", "r.1")
    size_line, rest = frame.split(b"\r\n", 1)
    parser = NatsParser()
    parser.receive_data(size_line.replace(b"HPUB s.t", b"HMSG s.t 7") + b"\r\n" + rest)
    assert list(parser.events()) == [Msg("s.t", 7, "r.1", b"body", block)]


@pytest.mark.parametrize(
    ("subject", "reply"), [("a.*", None), ("a b", None), ("a", "r.>"), ("a", "r .1"), ("", None)]
)
def test_hpub_and_pub_refuse_bad_subjects(subject: str, reply: str | None) -> None:
    with pytest.raises(ValueError, match="subject"):
        hpub(subject, b"NATS/1.0\r\n\r\n", b"", reply)
    with pytest.raises(ValueError, match="subject"):
        pub(subject, b"", reply)


# -- ack reply subjects ---------------------------------------------------------------------------


TS = 1796387160089001298


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("$JS.ACK.S.s96LS9Xo.1.2.3.1796387160089001298.0", AckMetadata("S", "s96LS9Xo", 1, 2, 3, TS, 0)),
        ("$JS.ACK._.ACCHASH.S.c.2.10.7.5.4", AckMetadata("S", "c", 2, 10, 7, 5, 4)),
        ("$JS.ACK.hub.ACCHASH.S.c.1.10.7.5.4.rAnD0m", AckMetadata("S", "c", 1, 10, 7, 5, 4)),
        ("$JS.ACK.hub.ACCHASH.S.c.1.10.7.5.4.r.future", AckMetadata("S", "c", 1, 10, 7, 5, 4)),
        ("$JS.ACK.S.c.1.2.3.4", None),  # 8 tokens
        ("$JS.ACK.d.h.S.c.1.2.3.4", None),  # 10 tokens
        ("$JS.ACK.S.c.1.x.3.4.0", None),
        ("$JS.ACK.S.c.1.².3.4.0", None),  # a digit for str.isdigit, not for int()
        ("$JS.ACK.S.c.1.-2.3.4.0", None),
        ("$JS.NAK.S.c.1.2.3.4.0", None),
        ("_INBOX.a.b.c.d.e.f.g.h", None),
        ("", None),
        (None, None),
    ],
)  # fmt: skip
def test_parse_ack_subject(subject: str | None, expected: AckMetadata | None) -> None:
    assert parse_ack_subject(subject) == expected


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(["$JS", "ACK", "S", "c", "1", "22", "x", "", "_"]), max_size=14).map(".".join)
)
def test_fuzz_parse_ack_subject_never_raises(subject: str) -> None:
    meta = parse_ack_subject(subject)
    assert meta is None or subject.startswith("$JS.ACK.")


# -- API requests ---------------------------------------------------------------------------------


def test_api_subjects_and_names() -> None:
    assert api_subject("STREAM", "INFO", "EVENTS") == "$JS.API.STREAM.INFO.EVENTS"
    assert api_subject("CONSUMER", "CREATE", "EVENTS") == "$JS.API.CONSUMER.CREATE.EVENTS"
    check_name("EVENTS_v2-a")
    for bad in ("", "a.b", "a*", "a>", "a b", "a/b", "a\\b", "a\x00"):
        with pytest.raises(ValueError, match="stream name"):
            check_name(bad)


def test_stream_config_body() -> None:
    body = json.loads(stream_config("S", ["ev.>"], max_msgs=100, max_age=3600, duplicate_window=0.5))
    assert body == {
        "name": "S", "subjects": ["ev.>"], "retention": "limits", "max_consumers": -1, "max_msgs": 100,
        "max_bytes": -1, "max_age": 3600 * 10**9, "max_msgs_per_subject": -1, "max_msg_size": -1,
        "storage": "file", "discard": "old", "num_replicas": 1, "duplicate_window": 500_000_000,
    }  # fmt: skip
    unlimited = json.loads(stream_config("S", ["a"], max_msgs=0, max_age=0, duplicate_window=-1))
    assert (unlimited["max_msgs"], unlimited["max_age"], unlimited["duplicate_window"]) == (-1, 0, 0)


@pytest.mark.parametrize(
    ("start_seq", "policy"),
    [(-5, {"deliver_policy": "all"}), (0, {"deliver_policy": "all"}), (1, {"deliver_policy": "all"}),
     (2, {"deliver_policy": "by_start_sequence", "opt_start_seq": 2})],
)  # fmt: skip
def test_ordered_consumer_config_body(start_seq: int, policy: dict[str, object]) -> None:
    body = json.loads(
        ordered_consumer_config("S", "_INBOX.d", start_seq=start_seq, heartbeat=5, inactive_threshold=30)
    )
    assert body == {
        "stream_name": "S",
        "config": {
            "deliver_subject": "_INBOX.d", "ack_policy": "none", "replay_policy": "instant",
            "flow_control": True, "idle_heartbeat": 5 * 10**9, "inactive_threshold": 30 * 10**9,
            "mem_storage": True, "num_replicas": 1, **policy,
        },
    }  # fmt: skip


# -- API answers ----------------------------------------------------------------------------------

# A real nats-server 2.15 answer to $JS.API.STREAM.CREATE (trimmed of fields we do not read).
STREAM_CREATED = (
    b'{"type":"io.nats.jetstream.api.v1.stream_create_response","config":{"name":"S","subjects":["ev.\\u003e"],'
    b'"retention":"limits","max_consumers":-1,"max_msgs":100,"max_bytes":-1,"max_age":3600000000000,'
    b'"storage":"file","discard":"old","num_replicas":1,"duplicate_window":60000000000},'
    b'"created":"2026-12-04T12:25:59.183636647Z","state":{"messages":0,"bytes":0,"first_seq":0,'
    b'"first_ts":"0001-01-01T00:00:00Z","last_seq":0,"consumer_count":0},"did_create":true}'
)


def test_parse_stream_info_from_a_real_answer() -> None:
    info = parse_stream_info(parse_response(STREAM_CREATED, "create stream S"))
    assert info == StreamInfo("S", ("ev.>",), 0, 0, "2026-12-04T12:25:59.183636647Z", 100, 3600.0, 60.0)


def test_parse_stream_info_tolerates_missing_parts() -> None:
    assert parse_stream_info({}) == StreamInfo("", (), 0, 0, "", 0, 0.0, 0.0)
    assert parse_stream_info({"config": [], "state": "x", "created": "t"}).created == "t"


def _error(code: int, err_code: int | None, description: str) -> dict[str, object]:
    return {"code": code, "err_code": err_code, "description": description}


@pytest.mark.parametrize(
    ("error", "kind", "match"),
    [
        (_error(404, 10059, "stream not found"), JetStreamError, "stream not found .*10059"),
        (
            _error(503, 10039, "jetstream not enabled for account"),
            JetStreamUnavailable,
            "JetStream is not enabled",
        ),
        (_error(503, 10076, "JetStream not enabled"), JetStreamUnavailable, "not enabled"),
        (_error(503, 10008, "temporarily unavailable"), JetStreamUnavailable, "10008"),
        ({"code": 503, "description": "something"}, JetStreamUnavailable, "something"),
        (_error(400, 10058, "stream name already in use"), JetStreamError, "10058"),
        ("not an object", JetStreamError, "unknown error"),
    ],
)
def test_api_errors_name_the_cause(error: object, kind: type[JetStreamError], match: str) -> None:
    exc = api_error(error, "stream info S")
    assert type(exc) is kind
    with pytest.raises(kind, match=match):
        raise exc
    assert str(exc).startswith("stream info S: ")


def test_api_error_keeps_codes() -> None:
    exc = api_error({"code": 404, "err_code": 10059, "description": "stream not found"}, "x")
    assert (exc.code, exc.err_code) == (404, 10059)


@pytest.mark.parametrize("payload", [b"", b"not json", b"[1]", b'"s"', b"{" * 100_000])
def test_parse_response_refuses_what_is_not_an_object(payload: bytes) -> None:
    with pytest.raises(JetStreamError, match="answer"):
        parse_response(payload, "x")


def test_parse_pub_ack() -> None:
    assert parse_pub_ack(b'{"stream":"S","seq":1}', "ev.a") == 1
    assert parse_pub_ack(b'{"stream":"S","seq":1,"duplicate": true}', "ev.a") == 1
    with pytest.raises(JetStreamError, match="no sequence"):
        parse_pub_ack(b'{"stream":"S"}', "ev.a")
    with pytest.raises(JetStreamError, match="no sequence"):
        parse_pub_ack(b'{"stream":"S","seq":true}', "ev.a")
    with pytest.raises(JetStreamError, match=r"publish on ev\.a: maximum messages exceeded"):
        parse_pub_ack(
            b'{"error":{"code":400,"err_code":10077,"description":"maximum messages exceeded"}}', "ev.a"
        )


def test_stream_gone_is_unavailable() -> None:
    exc = stream_gone("S", "was deleted")
    assert isinstance(exc, StreamGone) and isinstance(exc, JetStreamUnavailable)
    assert (str(exc), exc.err_code) == ("stream S was deleted", 10059)
    assert stream_gone("S", "went back", err_code=None).code is None
