"""Sans-IO wire format: frame decoding, session commands, the error and close tables."""

from __future__ import annotations

import json

import pytest

from gateway.protocol import (
    CLOSE_CODE_FOR,
    AuthError,
    CloseCode,
    ErrorCode,
    ProtocolError,
    Subscribe,
    Unsubscribe,
    close_reason,
    decode_frame,
    encode,
    error_frame,
    parse_session_command,
    text_frame,
)

LIMIT = 65536


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"\x00", ErrorCode.BINARY_NOT_SUPPORTED),
        ("", ErrorCode.BAD_JSON),
        ("{", ErrorCode.BAD_JSON),
        ("[" * 100_000 + "]" * 100_000, ErrorCode.MESSAGE_TOO_BIG),
        ("[" * 20_000 + "]" * 20_000, ErrorCode.BAD_JSON),  # nesting deeper than the parser allows
        ("1" * 5000, ErrorCode.BAD_JSON),  # an integer longer than Python's digit limit
        ("null", ErrorCode.BAD_MESSAGE),
        ('"subscribe"', ErrorCode.BAD_MESSAGE),
        ("{}", ErrorCode.BAD_MESSAGE),
        ('{"@type": 3}', ErrorCode.BAD_MESSAGE),
        ('{"@type": ""}', ErrorCode.BAD_MESSAGE),
        ("é" * 40_000, ErrorCode.MESSAGE_TOO_BIG),  # 40k characters, 80k bytes
    ],
)
def test_decode_frame_refuses(frame: str | bytes, code: ErrorCode) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_frame(frame, LIMIT)
    assert info.value.code == code


def test_decode_frame_accepts_object_with_type() -> None:
    assert decode_frame('{"@type": "subscribe", "ack": true, "jwt": "x", "extra": 1}', LIMIT)["jwt"] == "x"


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ({"@type": "subscribe", "ack": True, "jwt": " tok "}, Subscribe("tok")),
        ({"@type": "register", "jwt": "tok"}, Subscribe("tok")),
        ({"@type": "unsubscribe"}, Unsubscribe()),
        ({"@type": "JOIN"}, None),
    ],
)
def test_parse_session_command(message: dict[str, object], expected: object) -> None:
    assert parse_session_command(message) == expected


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ({"@type": "subscribe"}, ErrorCode.TOKEN_MISSING),
        ({"@type": "subscribe", "ack": True, "jwt": ""}, ErrorCode.TOKEN_MISSING),
        ({"@type": "subscribe", "ack": True, "jwt": None}, ErrorCode.TOKEN_MISSING),
        ({"@type": "subscribe", "ack": True, "jwt": 12}, ErrorCode.TOKEN_INVALID),
        ({"@type": "subscribe", "ack": True, "jwt": ["a"]}, ErrorCode.TOKEN_INVALID),
    ],
)
def test_parse_subscribe_without_usable_token(message: dict[str, object], code: ErrorCode) -> None:
    with pytest.raises(AuthError) as info:
        parse_session_command(message)
    assert info.value.code == code
    assert info.value.close_code == CloseCode.UNAUTHORIZED


def test_every_token_error_closes_4001() -> None:
    token_errors = [c for c in ErrorCode if c.value.startswith("token_")]
    assert token_errors
    assert all(CLOSE_CODE_FOR[c] == CloseCode.UNAUTHORIZED for c in token_errors)


def test_close_codes_in_documented_ranges() -> None:
    for code in CloseCode:
        assert 1000 <= code <= 1015 or 4000 <= code <= 4999  # RFC 6455's and the private range


def test_error_frame_shape() -> None:
    frame = json.loads(encode(error_frame(ErrorCode.BAD_JSON, "nope")))
    assert frame == {"@type": "error", "error": "bad_json", "message": "nope"}


def test_close_reason_fits_a_control_frame() -> None:
    assert close_reason("short") == "short"
    trimmed = close_reason("é" * 200)
    assert len(trimmed.encode()) <= 123
    assert trimmed == "é" * 61


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_text_frame_is_what_wsproto_encodes(size: int) -> None:
    from wsproto.frame_protocol import FrameProtocol

    payload = ("é" * size)[: size // 2] + "x" * (size - size // 2)
    expected = bytes(FrameProtocol(client=False, extensions=[]).send_data(payload, fin=True))
    assert text_frame(payload) == expected
