"""Release records: how instances sharing a JetStream history agree on what a debounce released.

The stream holds the platform's raw messages. A debounced tree event is released by a quiet period,
which each instance measures with its own clock; left at that, two instances would merge different
messages and give different positions. So the release itself goes through the stream: when an
instance's quiet period ends it publishes a record (the merged event, what it merged up to) with a
deduplication id every instance derives alike, the stream keeps the first of them, and every
instance, and every replay, delivers the event where the record lies in the stream.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Final

from gateway.events.model import JsonObject

# The subject of release records, after the stream's name: one stream, one subject of records.
RECORD_SUBJECT: Final = "gateway.history.{stream}.released"


class BadRecord(Exception):
    """A message on the records subject that is not a release record (counted and skipped)."""


@dataclass(frozen=True, slots=True)
class Release:
    """One released event: ``key`` is a debounce batch's key (the node), or ``@<seq>.<n>`` for
    the n-th event that a raw message at ``seq`` released out of turn; ``last`` is the newest raw
    sequence the event stands for."""

    topic: str
    key: str
    last: int
    event: JsonObject

    @property
    def msg_id(self) -> str:
        """The same on every instance: the stream keeps one record per release. Hashed: a node
        uuid is the platform's data, and a header value must not hold a line break."""
        return hashlib.sha256(f"{self.topic}|{self.key}|{self.last}".encode()).hexdigest()[:32]


def record_subject(stream: str) -> str:
    return RECORD_SUBJECT.format(stream=stream)


def encode(release: Release) -> bytes:
    record = {"topic": release.topic, "key": release.key, "last": release.last, "event": release.event}
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode()


def decode(data: bytes) -> Release:
    try:
        record = json.loads(data)
    except ValueError as exc:
        raise BadRecord(f"not JSON: {exc}") from None
    if not isinstance(record, dict):
        raise BadRecord("not a JSON object")
    topic, key, last, event = (record.get(k) for k in ("topic", "key", "last", "event"))
    if not isinstance(topic, str) or not isinstance(key, str) or not isinstance(event, dict):
        raise BadRecord("topic, key and event must be a string, a string and an object")
    if not isinstance(last, int) or isinstance(last, bool) or last < 0:
        raise BadRecord("last must be a sequence number")
    return Release(topic, key, last, event)
