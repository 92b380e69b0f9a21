"""One HISTORY page sent to a session: ``ROOM_UPDATE``, the messages oldest first, ``MAY_HAVE_MORE``.

A page is bounded in bytes as well as in messages: by ``chat_history_page_bytes``, and by what
keeps the session within half its slow-consumer bound (``slow_consumer_lag_bytes``) counting what
it has not read yet. A page cut short keeps the messages nearest to where the client asked from
and says where the next page starts, so no message is skipped, and it holds at least one message,
so paging always moves on. Asking for history, however large the messages, never gets a reader
that reads what it asked for closed with 4008.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.chat import protocol as chat
from gateway.chat.protocol import Page
from gateway.chat.records import MessageRecord, RoomRecord
from gateway.chat.store import ChatStore
from gateway.protocol import json_frame
from gateway.session import Session


async def read(store: ChatStore, room_uuid: str, page: Page) -> list[MessageRecord]:
    """The page's messages, oldest first."""
    if page.before is not None:
        return await store.before(room_uuid, page.before, page.limit)
    if page.after is not None:
        return await store.after(room_uuid, page.after, page.limit)
    return await store.latest(room_uuid, page.offset or 0, page.limit)


def send(
    session: Session,
    room: RoomRecord,
    users: list[str],
    page: Page,
    records: list[MessageRecord],
    max_bytes: int,
) -> list[MessageRecord]:
    """Queue the page for the session, within ``max_bytes``; the messages it holds."""
    viewer = session.identity.user if session.identity else ""
    update = json_frame(chat.room_update(room, users, viewer))
    frames = [json_frame(chat.message_json(record)) for record in records]
    budget = min(max_bytes, _room(session)) - len(update)
    kept = _within([len(frame) for frame in frames], budget, newest=page.after is None)
    session.send(update)
    for frame in frames[kept]:
        session.send(frame)
    shown = records[kept]
    if shown and (len(records) == page.limit or len(shown) < len(records)):
        session.send_json(chat.may_have_more(room.uuid, page, shown))
    return shown


def _within(sizes: Sequence[int], budget: int, *, newest: bool) -> slice:
    """The messages that fit in ``budget`` bytes (at least one, so paging always moves on): the
    newest of an Offset or Before page, which walks back in time; the oldest of an After page."""
    order = range(len(sizes) - 1, -1, -1) if newest else range(len(sizes))
    used = count = 0
    for i in order:
        if count and used + sizes[i] > budget:
            break
        used += sizes[i]
        count += 1
    return slice(len(sizes) - count, None) if newest else slice(0, count)


def _room(session: Session) -> int:
    """Bytes the session may still be sent while staying within half its slow-consumer bound."""
    return session.limits.max_lag // 2 - session.unsent()
