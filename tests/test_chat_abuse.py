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
