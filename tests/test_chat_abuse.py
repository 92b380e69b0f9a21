"""What one user of the chat socket could do to the gateway and to others, as an adversarial test
found it: rooms without end, history pages that closed their reader, markup in fields every member
is sent. Each test reproduces its finding (it failed before the fix)."""

from __future__ import annotations

import contextlib
import sqlite3
from typing import Any

from tests.helpers import Harness
from tests.test_chat import ChatClient, chatter


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
