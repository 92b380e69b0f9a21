"""Sans-IO wire format of both sockets: close codes, error codes, client messages, server frames.

Nothing here imports trio or touches a socket. Every close code the server sends and every error
code it writes is defined in this module, and ``docs/PROTOCOL.md`` documents the same tables.

Errors form one small hierarchy::

    ProtocolError            a client message or token was refused; carries an ErrorCode
     ├── AuthError           the token was refused (always closes with 4001)
     └── PlatformUnavailable the platform could not resolve the token now (closes with 1013)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any, Final, Self

JsonObject = dict[str, Any]


class CloseCode(IntEnum):
    """WebSocket close codes the gateway sends (RFC 6455 range and the 4000-4999 private range)."""

    NORMAL = 1000
    GOING_AWAY = 1001  # the gateway is shutting down; reconnect later
    PROTOCOL_ERROR = 1002  # a frame that breaks RFC 6455 (say, an unmasked client frame)
    UNSUPPORTED_DATA = 1003  # a binary frame: the protocol is JSON text only
    INVALID_DATA = 1007  # a text frame that is not UTF-8
    POLICY_VIOLATION = 1008  # inbound rate limit exceeded
    MESSAGE_TOO_BIG = 1009  # inbound frame over the configured size limit
    INTERNAL_ERROR = 1011  # a bug on our side; the session is closed, the server goes on
    TRY_AGAIN_LATER = 1013  # the platform could not tell who the token belongs to; retry
    UNAUTHORIZED = 4001  # token missing, invalid or expired; or no subscribe in time
    PING_TIMEOUT = 4002  # no pong to the server's keepalive ping in time
    FORBIDDEN = 4003  # valid token, but this action is not allowed (e.g. another user)
    SLOW_CONSUMER = 4008  # the client did not read fast enough; its queue overflowed


class ErrorCode(StrEnum):
    """The ``error`` field of ``{"@type": "error", ...}`` frames."""

    BAD_JSON = "bad_json"
    BAD_MESSAGE = "bad_message"
    UNKNOWN_TYPE = "unknown_type"
    NOT_SUBSCRIBED = "not_subscribed"
    TOKEN_MISSING = "token_missing"
    TOKEN_INVALID = "token_invalid"
    TOKEN_EXPIRED = "token_expired"
    TOKEN_NOT_YET_VALID = "token_not_yet_valid"
    TOKEN_ALGORITHM = "token_algorithm"
    TOKEN_AUDIENCE = "token_audience"
    TOKEN_ISSUER = "token_issuer"
    TOKEN_KEY_UNKNOWN = "token_key_unknown"
    TOKEN_CLAIMS = "token_claims"
    PLATFORM_UNAVAILABLE = "platform_unavailable"
    SUBSCRIBE_TIMEOUT = "subscribe_timeout"
    IDENTITY_CHANGED = "identity_changed"
    MESSAGE_TOO_BIG = "message_too_big"
    BINARY_NOT_SUPPORTED = "binary_not_supported"
    RATE_LIMITED = "rate_limited"
    SLOW_CONSUMER = "slow_consumer"
    PING_TIMEOUT = "ping_timeout"
    SHUTTING_DOWN = "shutting_down"
    INTERNAL = "internal_error"
    # Chat socket (the session goes on after each of these)
    UNKNOWN_ROOM_TYPE = "unknown_room_type"
    ROOM_FORBIDDEN = "room_forbidden"
    NOT_MEMBER = "not_member"
    TOO_MANY_ROOMS = "too_many_rooms"
    ROOM_CREATION_LIMITED = "room_creation_limited"
    MESSAGE_TOO_LONG = "message_too_long"
    MESSAGE_NOT_FOUND = "message_not_found"
    EDIT_FORBIDDEN = "edit_forbidden"
    DELETE_FORBIDDEN = "delete_forbidden"
    POST_RATE_LIMITED = "post_rate_limited"
    NODE_ROOMS_DISABLED = "node_rooms_disabled"
    NODE_CHECK_UNAVAILABLE = "node_check_unavailable"
    NODE_CHECK_RATE_LIMITED = "node_check_rate_limited"
    STORE_UNAVAILABLE = "store_unavailable"


# Which errors end the session, and with which close code. Errors not listed leave it open.
CLOSE_CODE_FOR: Final[dict[ErrorCode, CloseCode]] = {
    ErrorCode.TOKEN_MISSING: CloseCode.UNAUTHORIZED,
    ErrorCode.TOKEN_INVALID: CloseCode.UNAUTHORIZED,
    ErrorCode.TOKEN_EXPIRED: CloseCode.UNAUTHORIZED,
    ErrorCode.TOKEN_NOT_YET_VALID: CloseCode.UNAUTHORIZED,
    ErrorCode.TOKEN_ALGORITHM: CloseCode.UNAUTHORIZED,
    ErrorCode.TOKEN_AUDIENCE: CloseCode.UNAUTHORIZED,
    ErrorCode.TOKEN_ISSUER: CloseCode.UNAUTHORIZED,
    ErrorCode.TOKEN_KEY_UNKNOWN: CloseCode.UNAUTHORIZED,
    ErrorCode.TOKEN_CLAIMS: CloseCode.UNAUTHORIZED,
    ErrorCode.PLATFORM_UNAVAILABLE: CloseCode.TRY_AGAIN_LATER,
    ErrorCode.SUBSCRIBE_TIMEOUT: CloseCode.UNAUTHORIZED,
    ErrorCode.IDENTITY_CHANGED: CloseCode.FORBIDDEN,
    ErrorCode.MESSAGE_TOO_BIG: CloseCode.MESSAGE_TOO_BIG,
    ErrorCode.BINARY_NOT_SUPPORTED: CloseCode.UNSUPPORTED_DATA,
    ErrorCode.RATE_LIMITED: CloseCode.POLICY_VIOLATION,
    ErrorCode.SLOW_CONSUMER: CloseCode.SLOW_CONSUMER,
    ErrorCode.PING_TIMEOUT: CloseCode.PING_TIMEOUT,
    ErrorCode.SHUTTING_DOWN: CloseCode.GOING_AWAY,
    ErrorCode.INTERNAL: CloseCode.INTERNAL_ERROR,
}


class ProtocolError(Exception):
    """A client message (or its token) was refused; ``code`` says why, ``str(self)`` explains."""

    def __init__(self, code: ErrorCode, message: str, **context: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.context = context  # extra fields for the error frame, e.g. which request failed

    @property
    def close_code(self) -> CloseCode | None:
        """The close code that must follow the error frame, or None if the session goes on."""
        return CLOSE_CODE_FOR.get(self.code)

    def fresh(self) -> Self:
        """A new exception like this one: one refusal shared by several waiting tasks is raised in
        each as its own object (an exception object raised in two tasks mixes their tracebacks)."""
        clone = self.__class__.__new__(self.__class__)
        Exception.__init__(clone, *self.args)
        clone.__dict__.update(self.__dict__)
        return clone


class AuthError(ProtocolError):
    """The token was refused."""


class PlatformUnavailable(ProtocolError):
    """The platform that resolves tokens did not answer usefully; the client should retry later."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.PLATFORM_UNAVAILABLE, message)


# ---------------------------------------------------------------------------------------------
# Client -> server


@dataclass(frozen=True, slots=True)
class Subscribe:
    """``{"@type": "subscribe" | "register", "jwt": "<token>"}``: (re-)authenticate the session.

    ``"recover": true`` asks for positions (``@position`` on every event); ``"since": "<epoch>:<offset>"``
    also replays what the session missed after that position (docs/PROTOCOL.md, "Resuming").
    """

    token: str
    recover: bool = False
    since: str | None = None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """``{"@type": "unsubscribe"}``: stop delivering; the socket stays open."""


SUBSCRIBE_TYPES: Final = frozenset({"subscribe", "register"})


def decode_frame(data: str | bytes, max_bytes: int) -> JsonObject:
    """Turn one inbound frame into a JSON object with a string ``@type``, or raise ProtocolError."""
    if isinstance(data, bytes):
        raise ProtocolError(ErrorCode.BINARY_NOT_SUPPORTED, "binary frames are not supported; send JSON text")
    # A character is at most 4 bytes in UTF-8: only encode when the frame could be over.
    if len(data) * 4 > max_bytes and len(data.encode("utf-8", "surrogatepass")) > max_bytes:
        raise ProtocolError(ErrorCode.MESSAGE_TOO_BIG, f"message larger than the limit of {max_bytes} bytes")
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(ErrorCode.BAD_JSON, f"message is not valid JSON: {_short(exc)}") from None
    if _SURROGATE_ESCAPE.search(data) and has_lone_surrogate(obj):
        # "\ud800" is valid JSON, but no UTF-8 text can hold the character it makes (RFC 8259 8.2):
        # refused here, it cannot fail later when stored, hashed or sent back.
        raise ProtocolError(
            ErrorCode.BAD_JSON, "message holds an unpaired surrogate escape (\\ud800-\\udfff)"
        )
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "message must be a JSON object")
    kind = obj.get("@type")
    if not isinstance(kind, str) or not kind:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, 'message needs a string "@type" field')
    return obj


_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F]")


def has_lone_surrogate(obj: object) -> bool:
    """True when a string (key or value) anywhere in a decoded JSON value is not valid Unicode text.

    JSON may spell one (``"\\ud800"``), but no UTF-8 text can carry it: whatever holds one must be
    refused where it enters (a frame, a token's claims, a published event), or it fails later.
    """
    pending = [obj]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    return True
        elif isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def wants_acknowledgements(obj: JsonObject) -> bool:
    """A subscribe with ``"ack": true``: on the chat socket, reply ``subscribed`` and error frames.

    Cells' chat client takes any frame it does not know for a room message, so by default the chat
    socket sends only chat frames (and the close code of an error that ends the session).
    """
    return obj.get("@type") in SUBSCRIBE_TYPES and obj.get("ack") is True


def parse_session_command(obj: JsonObject) -> Subscribe | Unsubscribe | None:
    """Recognise the messages both sockets share; None means "for the endpoint to handle"."""
    kind = obj["@type"]
    if kind in SUBSCRIBE_TYPES:
        token = obj.get("jwt")
        if token is None or token == "":
            raise AuthError(ErrorCode.TOKEN_MISSING, 'subscribe needs a non-empty "jwt" field')
        if not isinstance(token, str):
            raise AuthError(ErrorCode.TOKEN_INVALID, '"jwt" must be a string')
        recover, since = obj.get("recover", False), obj.get("since")
        if not isinstance(recover, bool):
            raise ProtocolError(ErrorCode.BAD_MESSAGE, '"recover" must be true or false')
        if since is not None and not isinstance(since, str):
            raise ProtocolError(
                ErrorCode.BAD_MESSAGE, '"since" must be a position string, "<epoch>:<offset>"'
            )
        return Subscribe(token.strip(), recover or since is not None, since)
    if kind == "unsubscribe":
        return Unsubscribe()
    return None


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


# ---------------------------------------------------------------------------------------------
# Server -> client


def encode(obj: JsonObject) -> str:
    """Serialise one server frame: compact JSON, UTF-8 kept as is."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


_TEXT_FIN: Final = 0x81  # FIN + opcode 1 (text)


def text_frame(payload: str) -> bytes:
    """One complete, unmasked WebSocket text frame carrying ``payload`` (RFC 6455 section 5.2).

    Server frames are not masked, so one encoding serves every recipient. Written here rather than
    with wsproto's encoder, whose import loads h11 into this sans-IO module; tests check both agree.
    """
    data = payload.encode("utf-8")
    size = len(data)
    if size < 126:
        header = bytes((_TEXT_FIN, size))
    elif size < 1 << 16:
        header = bytes((_TEXT_FIN, 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((_TEXT_FIN, 127)) + size.to_bytes(8, "big")
    return header + data


def json_frame(obj: JsonObject) -> bytes:
    """``text_frame(encode(obj))``."""
    return text_frame(encode(obj))


def error_frame(code: ErrorCode, message: str, **context: Any) -> JsonObject:
    """``{"@type": "error", "error", "message"}``, plus optional context (e.g. the request type)."""
    return {"@type": "error", "error": str(code), "message": message, **context}


def subscribed_frame(
    user: str, endpoint: str, expires_at: float | None, position: str | None = None
) -> JsonObject:
    frame: JsonObject = {"@type": "subscribed", "user": user, "endpoint": endpoint}
    if expires_at is not None:
        frame["expiresAt"] = int(expires_at)
    if position is not None:
        frame["position"] = position
    return frame


def recovered_frame(position: str, replayed: int) -> JsonObject:
    """After the replayed events: the session is up to date through ``position``; live events follow."""
    return {"@type": "recovered", "position": position, "replayed": replayed}


def gap_frame(since: str, position: str | None, cause: str) -> JsonObject:
    """What was asked cannot be replayed: the client must reload its state; live events follow.
    ``position`` is null while the history is unavailable."""
    return {"@type": "gap", "since": since, "position": position, "reason": cause}


def unsubscribed_frame() -> JsonObject:
    return {"@type": "unsubscribed"}


# Close reasons must fit in a control frame (125 bytes minus the 2-byte code).
MAX_CLOSE_REASON: Final = 123


def close_reason(text: str) -> str:
    """Trim a human close reason to what a close frame can carry (the old service overflowed it)."""
    raw = text.encode("utf-8")
    if len(raw) <= MAX_CLOSE_REASON:
        return text
    return raw[:MAX_CLOSE_REASON].decode("utf-8", "ignore")
