"""The JetStream wire API, sans-IO: subjects, request bodies, response parsing, ack subjects.

JetStream is a set of services over core NATS (https://docs.nats.io/reference/reference-protocols/
nats_api_reference): a JSON request published on ``$JS.API.<...>`` with a reply subject gets one
JSON response, ``{"error": {"code": <http-like>, "err_code": <JetStream code>, "description":
...}}`` on failure. A message published on a subject a stream captures is stored, and acknowledged
with ``{"stream": ..., "seq": ..., "duplicate": true?}`` when it had a reply subject. A push
consumer delivers each stored message with the reply subject ``$JS.ACK.<...>`` that carries its
stream and consumer sequences and its timestamp. Durations are integers in nanoseconds.

Errors::

    JetStreamError              a JetStream API error (or an answer that is not one)
    └── JetStreamUnavailable    JetStream is off, not enabled for the account, temporarily
        │                       unavailable, or did not answer (timeout, no responders, no
        │                       connection)
        └── StreamGone          the stream an ordered consumer reads is not there any more:
                                deleted, created again, or back to an earlier sequence
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

API_PREFIX: Final = "$JS.API"
NANOS: Final = 1_000_000_000
MSG_ID_HEADER: Final = "Nats-Msg-Id"
LAST_CONSUMER_HEADER: Final = "Nats-Last-Consumer"  # on idle heartbeats: last consumer seq sent
STALLED_HEADER: Final = "Nats-Consumer-Stalled"  # on heartbeats: the flow-control reply pending

# err_code values (nats-server errors.json).
STREAM_NOT_FOUND: Final = 10059
# The account or the server cannot serve JetStream now: not a bug of the request.
UNAVAILABLE_CODES: Final = frozenset(
    {
        10039,  # JSNotEnabledForAccountErr: JetStream not enabled for account
        10076,  # JSNotEnabledErr: JetStream not enabled
        10008,  # JSClusterNotAvailErr: JetStream system temporarily unavailable
        10023,  # JSInsufficientResourcesErr: insufficient resources
    }
)
_NOT_ENABLED_CODES: Final = frozenset({10039, 10076})
_NAME: Final = re.compile(r"[^\s.*>/\\\x00-\x1f\x7f]+")
_DIGITS: Final = re.compile(r"[0-9]{1,20}")


class JetStreamError(Exception):
    """A JetStream API error: the message names the cause (code, description)."""

    def __init__(self, message: str, *, code: int | None = None, err_code: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.err_code = err_code


class JetStreamUnavailable(JetStreamError):
    """JetStream is off on the server, or no answer within the timeout (503 no responders,
    timeout, not connected); also a consumer whose stream was deleted."""


class StreamGone(JetStreamUnavailable):
    """The stream a consumer reads was deleted, or is another one now (its sequences started over
    or went back): what was read from it does not continue there."""


@dataclass(frozen=True)
class StreamInfo:
    name: str
    subjects: tuple[str, ...]
    first_seq: int
    last_seq: int
    created: str  # the stream's creation time as the server gives it: identifies this incarnation
    max_msgs: int
    max_age: float  # seconds (0: no limit)
    duplicate_window: float  # seconds


@dataclass(frozen=True)
class StreamMessage:
    seq: int  # stream sequence
    subject: str
    data: bytes
    headers: Mapping[str, str]  # parsed NATS headers (may be empty)
    timestamp: float  # seconds since the epoch (stream time), from the ack reply subject


@dataclass(frozen=True, slots=True)
class AckMetadata:
    """What the ``$JS.ACK`` reply subject of a delivered message says about it."""

    stream: str
    consumer: str
    delivered: int  # delivery attempts
    stream_seq: int
    consumer_seq: int
    timestamp_ns: int
    pending: int


# -- subjects and requests -----------------------------------------------------------------------


def check_name(name: str, what: str = "stream") -> None:
    """ValueError unless ``name`` can be a stream (or consumer) name: one subject token, no path."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"invalid JetStream {what} name {name!r}")


def api_subject(*tokens: str) -> str:
    """``$JS.API.STREAM.INFO.<name>`` and the like."""
    return ".".join((API_PREFIX, *tokens))


def _nanos(seconds: float) -> int:
    return max(0, round(seconds * NANOS))


def stream_config(
    name: str, subjects: Sequence[str], *, max_msgs: int, max_age: float, duplicate_window: float
) -> bytes:
    """``$JS.API.STREAM.CREATE.<name>`` body: file storage, limits retention, discard old, R1."""
    config = {
        "name": name,
        "subjects": list(subjects),
        "retention": "limits",
        "max_consumers": -1,
        "max_msgs": max_msgs if max_msgs > 0 else -1,
        "max_bytes": -1,
        "max_age": _nanos(max_age),
        "max_msgs_per_subject": -1,
        "max_msg_size": -1,
        "storage": "file",
        "discard": "old",
        "num_replicas": 1,
        "duplicate_window": _nanos(duplicate_window),
    }
    return json.dumps(config).encode()


def ordered_consumer_config(
    stream: str, deliver_subject: str, *, start_seq: int, heartbeat: float, inactive_threshold: float
) -> bytes:
    """``$JS.API.CONSUMER.CREATE.<stream>`` body for one incarnation of an ordered consumer.

    As the official clients make it: ephemeral push consumer, no acks, flow control and idle
    heartbeats, state in memory on one replica; removed by the server once nobody has listened
    on its deliver subject for ``inactive_threshold``. ``start_seq <= 1`` delivers all.
    """
    config: dict[str, object] = {
        "deliver_subject": deliver_subject,
        "deliver_policy": "all",
        "ack_policy": "none",
        "replay_policy": "instant",
        "flow_control": True,
        "idle_heartbeat": _nanos(heartbeat),
        "inactive_threshold": _nanos(inactive_threshold),
        "mem_storage": True,
        "num_replicas": 1,
    }
    if start_seq > 1:
        config |= {"deliver_policy": "by_start_sequence", "opt_start_seq": start_seq}
    return json.dumps({"stream_name": stream, "config": config}).encode()


# -- responses -----------------------------------------------------------------------------------


def parse_response(payload: bytes, what: str) -> dict[str, object]:
    """The JSON object of an API response; JetStreamError (or Unavailable) when it is an error."""
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError):
        raise JetStreamError(f"{what}: the answer is not JSON: {payload[:80]!r}") from None
    if not isinstance(doc, dict):
        raise JetStreamError(f"{what}: the answer is not a JSON object")
    error = doc.get("error")
    if error is not None:
        raise api_error(error, what)
    return doc


def api_error(error: object, what: str) -> JetStreamError:
    """The exception for an API ``error`` object: Unavailable when JetStream cannot serve now."""
    fields = error if isinstance(error, dict) else {}
    code, err_code = _int(fields.get("code")), _int(fields.get("err_code"))
    description = str(fields.get("description") or "unknown error")
    message = f"{what}: {description} (code {code}, err_code {err_code})"
    if err_code in _NOT_ENABLED_CODES:
        message = f"{what}: JetStream is not enabled ({description}, err_code {err_code})"
    unavailable = err_code in UNAVAILABLE_CODES or (code == 503 and err_code is None)
    kind = JetStreamUnavailable if unavailable else JetStreamError
    return kind(message, code=code, err_code=err_code)


def stream_gone(stream: str, how: str, *, err_code: int | None = STREAM_NOT_FOUND) -> StreamGone:
    """The error of a consumer whose stream is gone."""
    return StreamGone(f"stream {stream} {how}", code=404 if err_code else None, err_code=err_code)


def parse_stream_info(doc: Mapping[str, object]) -> StreamInfo:
    """A stream info (or create) response -> ``StreamInfo``."""
    config, state = _object(doc, "config"), _object(doc, "state")
    subjects = config.get("subjects")
    return StreamInfo(
        name=str(config.get("name", "")),
        subjects=tuple(str(s) for s in subjects) if isinstance(subjects, list) else (),
        first_seq=_int(state.get("first_seq")) or 0,
        last_seq=_int(state.get("last_seq")) or 0,
        created=str(doc.get("created", "")),
        max_msgs=_int(config.get("max_msgs")) or 0,
        max_age=(_int(config.get("max_age")) or 0) / NANOS,
        duplicate_window=(_int(config.get("duplicate_window")) or 0) / NANOS,
    )


def parse_pub_ack(payload: bytes, subject: str) -> int:
    """The stream sequence of a PubAck (also for a duplicate, which has its original's)."""
    doc = parse_response(payload, f"publish on {subject}")
    seq = _int(doc.get("seq"))
    if seq is None or seq < 1:
        raise JetStreamError(f"publish on {subject}: the acknowledgement has no sequence: {payload[:80]!r}")
    return seq


def consumer_name(doc: Mapping[str, object]) -> str:
    return str(doc.get("name", ""))


def _object(doc: Mapping[str, object], key: str) -> Mapping[str, object]:
    value = doc.get(key)
    return value if isinstance(value, dict) else {}


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# -- ack reply subjects --------------------------------------------------------------------------


def parse_ack_subject(subject: str | None) -> AckMetadata | None:
    """The metadata of a delivered message from its reply subject; None if it is not one.

    Two forms (nats.go ``GetMetadataFields``)::

        $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>            (9 tokens)
        $JS.ACK.<domain>.<acc hash>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
            [.<random>]                                                          (11 or more)
    """
    if not subject:
        return None
    tokens = subject.split(".")
    if len(tokens) < 9 or tokens[0] != "$JS" or tokens[1] != "ACK":
        return None
    if len(tokens) == 9:
        tokens = [*tokens[:2], "", "", *tokens[2:]]  # the old form, without domain and hash
    elif len(tokens) < 11:
        return None
    numbers = tokens[6:11]
    if not all(_DIGITS.fullmatch(n) for n in numbers):
        return None
    delivered, sseq, cseq, ts, pending = (int(n) for n in numbers)
    return AckMetadata(tokens[4], tokens[5], delivered, sseq, cseq, ts, pending)
