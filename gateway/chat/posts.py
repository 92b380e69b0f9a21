"""Posts stored in batches: one seq allocation per room, one multi-row insert, retries recognised
by (room, author, ClientMessageId). Run in the chat store's writer thread."""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeAlias

import outcome
from sqlalchemy import Select, and_, bindparam, or_, select
from sqlalchemy.engine import Connection

from gateway.chat.records import MessageRecord, NotFound
from gateway.chat.sql import (
    _ALLOCATE_SEQS,
    _INSERT_MESSAGE,
    _MESSAGE_COLUMNS,
    _ROOM_IDS,
    _messages,
    message_record,
)

PostResult: TypeAlias = outcome.Outcome[tuple[MessageRecord, bool]]
PostKey: TypeAlias = tuple[str, str, str]


@dataclass(frozen=True)
class Post:
    """A post, as a write op. The writer stores a batch's posts together (``post_many``)."""

    room_uuid: str
    author: str
    text: str
    client_id: str | None
    now: float
    info: tuple[tuple[str, str], ...] = ()

    def __call__(self, connection: Connection) -> tuple[MessageRecord, bool]:
        return post_many(connection, [self])[0].unwrap()

    @property
    def key(self) -> PostKey | None:
        """What makes a retry of this post recognisable: (room, author, client_id), given a client_id."""
        return None if self.client_id is None else (self.room_uuid, self.author, self.client_id)


def post_many(connection: Connection, posts: list[Post]) -> list[PostResult]:
    """Store posts, to any rooms: one seq allocation per room and one multi-row insert for all.

    A post whose (room, author, client_id) is already stored, or repeated earlier in ``posts``, is
    not stored again: it gets the first record, with ``created`` False.
    """
    room_ids = _room_ids(connection, {post.room_uuid for post in posts})
    known = _stored_by_client_id(connection, posts, room_ids)
    fresh = [i for i in _fresh(posts, known) if posts[i].room_uuid in room_ids]
    next_seqs = _allocate_seqs(connection, [posts[i] for i in fresh], room_ids)
    created: dict[int, MessageRecord] = {}
    rows: list[dict[str, Any]] = []
    for i in fresh:
        post = posts[i]
        seq = next_seqs[post.room_uuid]
        next_seqs[post.room_uuid] = seq + 1
        created[i] = record = _new_record(post, seq)
        rows.append(_message_row(room_ids[post.room_uuid], record))
        if post.key is not None:
            known[post.key] = record
    if rows:
        connection.execute(_INSERT_MESSAGE, rows)
    return [_post_result(post, created.get(i), known) for i, post in enumerate(posts)]


def _post_result(
    post: Post, created: MessageRecord | None, known: dict[PostKey, MessageRecord]
) -> PostResult:
    if created is not None:
        return outcome.Value((created, True))
    if post.key is not None and post.key in known:
        return outcome.Value((known[post.key], False))
    return outcome.Error(NotFound(f"no chat room {post.room_uuid!r}"))


def _fresh(posts: list[Post], known: dict[PostKey, MessageRecord]) -> list[int]:
    """Indexes of the posts that make new messages: no client_id, or one seen for the first time."""
    seen = set(known)
    fresh = []
    for i, post in enumerate(posts):
        if post.key is None or post.key not in seen:
            fresh.append(i)
            if post.key is not None:
                seen.add(post.key)
    return fresh


def _room_ids(connection: Connection, room_uuids: set[str]) -> dict[str, int]:
    """The ids of the rooms that exist among ``room_uuids``."""
    rows = connection.execute(_ROOM_IDS, {"p_rooms": sorted(room_uuids)})
    return {row.uuid: row.id for row in rows}


def _allocate_seqs(connection: Connection, posts: list[Post], room_ids: dict[str, int]) -> dict[str, int]:
    """Reserve contiguous seqs for the posts: the first seq of each room.

    The update locks each room row until commit, so seqs stay contiguous across gateways. Rooms are
    locked in uuid order: gateways sharing a PostgreSQL database cannot deadlock on them.
    """
    counts: dict[str, int] = {}
    latest: dict[str, float] = {}
    for post in posts:
        counts[post.room_uuid] = counts.get(post.room_uuid, 0) + 1
        latest[post.room_uuid] = max(latest.get(post.room_uuid, post.now), post.now)
    first_seqs = {}
    for room_uuid in sorted(counts):
        params = {"p_room_id": room_ids[room_uuid], "p_count": counts[room_uuid], "p_now": latest[room_uuid]}
        next_seq = connection.execute(_ALLOCATE_SEQS, params).scalar_one()
        first_seqs[room_uuid] = next_seq - counts[room_uuid]
    return first_seqs


def _stored_by_client_id(
    connection: Connection, posts: list[Post], room_ids: dict[str, int]
) -> dict[PostKey, MessageRecord]:
    """The stored messages that the posts' (room, author, client_id) keys refer to."""
    keys = sorted({(room_ids[room], author, client_id) for room, author, client_id in _keys(posts, room_ids)})
    if not keys:
        return {}
    # Padded to a power of two with copies of a key: a handful of statement shapes to cache.
    size = 1 << (len(keys) - 1).bit_length()
    params: dict[str, Any] = {}
    for i, (room_id, author, client_id) in enumerate(keys + keys[:1] * (size - len(keys))):
        params |= {f"p_room_id_{i}": room_id, f"p_author_{i}": author, f"p_client_id_{i}": client_id}
    room_uuids = {room_id: room_uuid for room_uuid, room_id in room_ids.items()}
    stored = {}
    for row in connection.execute(_messages_by_keys(size), params):
        record = message_record(row, room_uuids[row.room_id])
        stored[record.room_uuid, record.author, row.client_id] = record
    return stored


def _keys(posts: list[Post], room_ids: dict[str, int]) -> Iterator[PostKey]:
    """The keys of the posts that have a client_id, in rooms that exist."""
    return (post.key for post in posts if post.key is not None and post.room_uuid in room_ids)


@functools.lru_cache(maxsize=16)
def _messages_by_keys(count: int) -> Select[*tuple[Any, ...]]:
    """Messages with any of ``count`` (room id, author, client_id) keys, as p_room_id_<i>, ... params.

    One exact lookup per key in the (room_id, author, client_id) index. Other spellings are not, on
    SQLite: ``(a, b, c) IN (...)`` scans the table, an IN list per column probes every combination,
    and a join to rooms by uuid may scan the room's history when the tables have no statistics.
    """
    matches = (
        and_(
            _messages.c.room_id == bindparam(f"p_room_id_{i}"),
            _messages.c.author == bindparam(f"p_author_{i}"),
            _messages.c.client_id == bindparam(f"p_client_id_{i}"),
        )
        for i in range(count)
    )
    return select(_messages.c.room_id, *_MESSAGE_COLUMNS).where(or_(*matches))


def _new_record(post: Post, seq: int) -> MessageRecord:
    return MessageRecord(
        str(uuid.uuid4()),
        post.room_uuid,
        seq,
        post.author,
        post.text,
        float(post.now),
        post.client_id,
        (),
        deleted=False,
        info=dict(post.info),
    )


def _message_row(room_id: int, record: MessageRecord) -> dict[str, Any]:
    return {
        "room_id": room_id,
        "seq": record.seq,
        "uuid": record.uuid,
        "client_id": record.client_id,
        "author": record.author,
        "text": record.text,
        "timestamp": record.timestamp,
        "edits": "[]",
        "info": json.dumps(dict(record.info), separators=(",", ":")),
    }
