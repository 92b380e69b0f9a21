"""The three framings of a Cells bus payload, unwrapped to (metadata, body). Pure.

1. Queue form (Cells' persistent queues, ``common/broker/encode.go``): ``uint32 LE length`` + a
   JSON object of string metadata, then ``uint32 LE length`` + the body. In v5 the metadata says
   ``"broker_encoding": "any"`` (the body is a ``google.protobuf.Any``) or ``"raw"``; v4 versions
   may wrap in an Any without saying so, hence :attr:`Envelope.may_be_any`.
2. Gob form (topic publishes with metadata): see :mod:`gateway.cells.gob`.
3. Bare body (topic publishes without metadata).

Tried in that order; like Cells, whatever is neither of the first two is taken as a bare body.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Final

from gateway.cells import gob

_LENGTH: Final = 4
ENCODING_KEY: Final = "broker_encoding"


@dataclass(frozen=True, slots=True)
class Envelope:
    body: bytes
    metadata: dict[str, str] = field(default_factory=dict)
    may_be_any: bool = False  # the body may be a google.protobuf.Any around the message
    framing: str = "bare"  # "queue", "gob" or "bare", for metrics and logs


def unwrap(payload: bytes) -> Envelope:
    """Split a payload into metadata and protobuf body, whichever framing it uses."""
    queued = _queue_form(payload)
    if queued is not None:
        return queued
    try:
        metadata, body = gob.decode(payload)
    except gob.GobError:
        return Envelope(payload)
    return Envelope(body, metadata, framing="gob")


def _queue_form(payload: bytes) -> Envelope | None:
    if len(payload) < 2 * _LENGTH:
        return None
    meta_length = int.from_bytes(payload[:_LENGTH], "little")
    body_at = 2 * _LENGTH + meta_length
    if body_at > len(payload) or (meta_length and payload[_LENGTH] != ord("{")):
        return None
    body_length = int.from_bytes(payload[body_at - _LENGTH : body_at], "little")
    if body_at + body_length != len(payload):
        return None
    metadata = _metadata(payload[_LENGTH : _LENGTH + meta_length]) if meta_length else {}
    if metadata is None:
        return None
    encoding = metadata.get(ENCODING_KEY)
    return Envelope(payload[body_at:], metadata, may_be_any=encoding != "raw", framing="queue")


def _metadata(raw: bytes) -> dict[str, str] | None:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        return None
    return value
