"""What one user of the chat socket could do to the gateway and to others, as an adversarial test
found it: rooms without end, history pages that closed their reader, markup in fields every member
is sent. Each test reproduces its finding (it failed before the fix)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.config import Settings
from tests.helpers import Harness, make_settings
from tests.test_chat import ChatClient, cells_client, chatter


@pytest.fixture
def chat_settings(tmp_path: Path) -> Callable[..., Settings]:
    def build(**changes: Any) -> Settings:
        return make_settings(db_url=f"sqlite:///{tmp_path}/chat.db", **changes)

    return build


class WallClock:
    """The chat service's wall clock, moved by hand: an hour passes without waiting for it."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def rows(harness: Harness, query: str) -> list[tuple[Any, ...]]:
    database = harness.gateway.settings.db_url.removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(database)) as db:
        return db.execute(query).fetchall()


def global_room(name: str, **fields: Any) -> dict[str, Any]:
    return {"Type": "GLOBAL", "RoomTypeObject": name, **fields}


async def entered(
    client: ChatClient, room: dict[str, Any], message: dict[str, Any] | None = None
) -> dict[str, Any]:
    """JOIN (or heartbeat) and return the room from its ROOM_UPDATE, past other rooms' updates."""
    await client.send("JOIN", room, message)
    update = await client.recv_until(
        lambda f: (
            f.get("@type") == "error"
            or (f.get("@type") == "ROOM_UPDATE" and f["Room"]["RoomTypeObject"] == room["RoomTypeObject"])
        )
    )
    assert update["@type"] == "ROOM_UPDATE", update
    return dict(update["Room"])


async def leave(client: ChatClient, room: dict[str, Any]) -> None:
    """LEAVE and read its answer (the room as the leaver last sees it)."""
    await client.send("LEAVE", {"Uuid": room["Uuid"]})
    await client.recv_until(lambda f: f.get("@type") == "ROOM_UPDATE" and f["Room"]["Uuid"] == room["Uuid"])


# -- 2. Unbounded rooms ---------------------------------------------------------------------------


async def test_chat_room_creation_capped_per_user_the_session_stays_open(
    nursery: trio.Nursery, chat_settings: Callable[..., Settings]
) -> None:
    """JOIN + LEAVE with fresh names made thousands of permanent rooms; now a user creates a few an hour."""
    harness = await Harness(nursery, chat_settings(chat_rooms_created_per_hour=3)).start()
    clock = harness.gateway.chat.clock = WallClock()
    async with chatter(harness, "mallory") as mallory, chatter(harness, "bob") as bob:
        bobs = await entered(bob, global_room("bobs"))
        for i in range(3):
            await leave(mallory, await entered(mallory, global_room(f"fresh-{i}")))
        await mallory.send("JOIN", global_room("fresh-3"))
        refused = await mallory.error()
        assert refused["error"] == "room_creation_limited" and refused["request"] == "JOIN"
        assert len(rows(harness, "select uuid from rooms")) == 4
        # The session goes on, and rooms that exist are still open to her.
        assert (await entered(mallory, global_room("bobs")))["Uuid"] == bobs["Uuid"]
        assert (await mallory.post(bobs["Uuid"], "still here"))["Message"] == "still here"
        async with chatter(harness, "mallory") as again:  # the cap is the user's, not the session's
            await again.send("JOIN", global_room("fresh-4"))
            assert (await again.error())["error"] == "room_creation_limited"
        clock.now += 3601
        assert (await entered(mallory, global_room("fresh-3")))["Users"] == ["mallory"]


async def test_chat_empty_rooms_deleted_after_their_ttl(
    nursery: trio.Nursery, chat_settings: Callable[..., Settings], thread_autojump_clock: object
) -> None:
    """Rooms with no member and no message go; a room with history stays; a JOIN brings one back."""
    harness = await Harness(nursery, chat_settings(chat_empty_room_ttl=30.0)).start()
    clock = harness.gateway.chat.clock = WallClock()
    async with chatter(harness, "alice") as alice:
        left = await entered(alice, global_room("left"))
        talked = await entered(alice, global_room("talked"))
        await alice.post(talked["Uuid"], "history keeps a room")
        for room in (left, talked):
            await leave(alice, room)
        clock.now += 3600  # past the hour in which a room counts against its creator's cap
        await trio.sleep(29)
        assert len(rows(harness, "select uuid from rooms")) == 2  # not empty for 30 s yet
        clock.now += 2
        await trio.sleep(31)  # the sweeper's next round
        assert rows(harness, "select uuid from rooms") == [(talked["Uuid"],)]
        assert rows(harness, "select count(*) from members") == [(0,)]
        back = await entered(alice, global_room("left"))
        assert back["Uuid"] == left["Uuid"] and back["Users"] == ["alice"]  # the same uuid as before


async def test_chat_heartbeat_naming_a_deleted_room_brings_it_back(
    nursery: trio.Nursery, chat_settings: Callable[..., Settings], thread_autojump_clock: object
) -> None:
    """Cells' client re-attaches rooms it knows after a reconnect: a heartbeat naming a deleted
    room's Uuid, Type and RoomTypeObject recreates it with that Uuid; naming none, it creates nothing."""
    harness = await Harness(nursery, chat_settings(chat_empty_room_ttl=30.0)).start()
    clock = harness.gateway.chat.clock = WallClock()
    async with chatter(harness, "alice") as alice:
        room = await entered(alice, global_room("lobby"))
        await leave(alice, room)
    clock.now += 3700
    await harness.gateway.chat.sweeper.sweep()
    assert rows(harness, "select count(*) from rooms") == [(0,)]
    async with cells_client(harness, "alice") as alice:
        await alice.send("JOIN", global_room("lobby"), {"Message": "PING"})  # no Uuid: ignored
        back = await entered(alice, global_room("lobby", Uuid=room["Uuid"]), {"Message": "PING"})
        assert back["Uuid"] == room["Uuid"] and back["Users"] == ["alice"]
        assert rows(harness, "select uuid from rooms") == [(room["Uuid"],)]


async def test_chat_session_in_a_room_deleted_under_it_keeps_going(
    nursery: trio.Nursery, chat_settings: Callable[..., Settings], thread_autojump_clock: object
) -> None:
    """A session that stopped pinging stays attached to rooms the sweep may delete: its heartbeat
    brings the room back, a POST is refused with not_member, never a crash."""
    harness = await Harness(nursery, chat_settings(chat_empty_room_ttl=30.0)).start()
    clock = harness.gateway.chat.clock = WallClock()
    async with chatter(harness, "alice") as alice:
        quiet = await entered(alice, global_room("quiet"))
        other = await entered(alice, global_room("other"))
        clock.now += 3600  # alice's presence times out: the rooms are empty from then on
        await alice.recv_until(lambda f: f.get("@type") == "ROOM_UPDATE" and f["Room"]["Users"] == [])
        clock.now += 100
        await harness.gateway.chat.sweeper.sweep()
        assert rows(harness, "select count(*) from rooms") == [(0,)]
        await alice.send("POST", message={"RoomUuid": other["Uuid"], "Message": "anyone?"})
        assert (await alice.error())["error"] == "not_member"
        back = await entered(alice, global_room("quiet"), {"Message": "PING"})  # as Cells' client pings
        assert back["Uuid"] == quiet["Uuid"] and back["Users"] == ["alice"]
        assert (await alice.post(quiet["Uuid"], "back"))["RoomUuid"] == quiet["Uuid"]


# -- 3. Size limits after sanitising --------------------------------------------------------------


async def test_chat_message_limit_counts_the_text_as_stored_and_sent(harness: Harness) -> None:
    """8,192 '&' were accepted and stored as 40,960 bytes of '&amp;'."""
    limit = harness.gateway.settings.chat_max_message_bytes
    async with chatter(harness, "alice") as alice:
        room = await entered(alice, global_room("lobby"))
        await alice.send("POST", message={"RoomUuid": room["Uuid"], "Message": "&" * limit})
        refused = await alice.error()
        assert refused["error"] == "message_too_long" and str(5 * limit) in refused["message"]
        fits = limit // 5
        assert (await alice.post(room["Uuid"], "&" * fits))["Message"] == "&amp;" * fits
        assert rows(harness, "select length(cast(text as blob)) from messages") == [(5 * fits,)]


async def test_chat_history_page_bounded_in_bytes_never_closes_its_reader(harness: Harness) -> None:
    """A HISTORY page of 200 posts of 40,960 bytes (as stored before the fix) overflowed the reader's
    outbox: closed with 4008. Pages are now cut in bytes, and paging on shows every post once."""
    settings = harness.gateway.settings
    async with chatter(harness, "alice") as alice, chatter(harness, "bob") as bob:
        room = await entered(alice, global_room("lobby"))
        for i in range(200):
            text = f"{i:03d}" + "&amp;" * 8192
            await harness.gateway.store.post(room["Uuid"], "alice", text, client_id=None, now=1.0 + i)
        await entered(bob, global_room("lobby"))
        for _ in range(3):  # three whole-room pages asked at once, before reading any
            await ask_history(bob, room["Uuid"], 0)
        first = [await history_page(bob) for _ in range(3)]
        for messages, more in first:
            assert 0 < sum(len(m["Message"]) for m in messages) <= settings.chat_history_page_bytes
            assert more is not None and more["Offset"] == len(messages) and more["Limit"] == 200
            assert [m["Seq"] for m in messages] == list(range(201 - len(messages), 201))  # the newest
        seen, more = [m["Seq"] for m in first[0][0]], first[0][1]
        while more is not None:
            await ask_history(bob, room["Uuid"], more["Offset"])
            messages, more = await history_page(bob)
            seen = [m["Seq"] for m in messages] + seen
        assert seen == list(range(1, 201))
    assert harness.gateway.metrics.registry.get_sample_value("gateway_slow_consumer_closes_total") == 0


async def ask_history(client: ChatClient, room_uuid: str, offset: int) -> None:
    await client.send("HISTORY", {"Uuid": room_uuid}, {"Message": f'{{"Offset":{offset},"Limit":200}}'})
    await client.send("HISTORY", {"Uuid": "no-such-room-marker"})  # answered once the page is out


async def history_page(client: ChatClient) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """One HISTORY answer (up to its marker): the messages, and MAY_HAVE_MORE if one came."""
    assert (await client.recv())["@type"] == "ROOM_UPDATE"
    messages: list[dict[str, Any]] = []
    more = None
    while (frame := await client.recv()).get("error") != "not_member":
        if frame.get("@type") == "MAY_HAVE_MORE":
            more = frame
        else:
            messages.append(frame)
    return messages, more


# -- 10. Fields other members receive -------------------------------------------------------------


async def test_chat_room_label_cleaned_before_any_member_sees_it(harness: Harness) -> None:
    """A RoomLabel of '<img src=x onerror=...>' was stored raw and shown to every later member."""
    async with chatter(harness, "mallory") as mallory, chatter(harness, "bob") as bob:
        label = "<img src=x onerror=alert(document.cookie)>Lobby & friends"
        created = await entered(mallory, global_room("lobby", RoomLabel=label))
        assert created["RoomLabel"] == "Lobby &amp; friends"
        assert (await entered(bob, global_room("lobby")))["RoomLabel"] == "Lobby &amp; friends"
        assert rows(harness, "select label from rooms") == [("Lobby &amp; friends",)]
        await mallory.send("JOIN", global_room("second", RoomLabel="<b>" + "&" * 300 + "</b>"))
        assert "RoomLabel" in (await mallory.error())["message"]


async def test_chat_client_message_id_must_be_an_identifier(harness: Harness) -> None:
    """A ClientMessageId was stored raw and sent with the message to every member."""
    async with chatter(harness, "mallory") as mallory, chatter(harness, "bob") as bob:
        room = await entered(mallory, global_room("lobby"))
        await entered(bob, global_room("lobby"))
        hostile = "<img src=x onerror=alert(1)>"
        await mallory.send(
            "POST", message={"RoomUuid": room["Uuid"], "Message": "hi", "ClientMessageId": hostile}
        )
        refused = await mallory.error()
        assert refused["error"] == "bad_message" and "ClientMessageId" in refused["message"]
        await mallory.send("JOIN", global_room("<script>alert(1)</script>"))
        assert "RoomTypeObject" in (await mallory.error())["message"]
        ack = await mallory.post(room["Uuid"], "hi", ClientMessageId="c-1:2.x_y")
        assert ack["ClientMessageId"] == "c-1:2.x_y"
        assert (await bob.recv_until(lambda f: "Author" in f))["ClientMessageId"] == "c-1:2.x_y"
        assert rows(harness, "select client_id from messages") == [("c-1:2.x_y",)]
