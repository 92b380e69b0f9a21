"""The chat socket end to end (in-memory connections, real SQLite file): rooms, posts, history,
access rules, presence, limits and bad input."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, WebSocketConnection

from gateway.config import Settings
from gateway.topics import CHAT_TOPIC
from tests.helpers import COMMON, Harness, close_code, expect_nothing, make_settings, recv_json, token

READ_ONLY_WS = {"uuid": "ws-ro", "slug": "read-only", "roots": ["/ds/ro"], "permissions": "r"}
GLOBAL_ROOM = {"Type": "GLOBAL", "RoomTypeObject": "lobby"}


class ChatClient:
    def __init__(self, ws: WebSocketConnection, user: str) -> None:
        self.ws = ws
        self.user = user

    async def send(
        self, kind: str, room: dict[str, Any] | None = None, message: dict[str, Any] | None = None
    ) -> None:
        frame: dict[str, Any] = {"@type": kind}
        if room is not None:
            frame["Room"] = room
        if message is not None:
            frame["Message"] = message
        await self.ws.send_message(json.dumps(frame))

    async def recv(self, within: float = 5) -> dict[str, Any]:
        return await recv_json(self.ws, within)

    async def recv_until(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        with trio.fail_after(30):
            while True:
                frame = await self.recv(within=30)
                if predicate(frame):
                    return frame

    async def join(self, room: dict[str, Any]) -> dict[str, Any]:
        """JOIN and return the room from the ROOM_UPDATE that opens the history page."""
        await self.send("JOIN", room)
        frame = await self.recv()
        assert frame["@type"] == "ROOM_UPDATE", frame
        return dict(frame["Room"])

    async def post(self, room_uuid: str, text: str, **extra: Any) -> dict[str, Any]:
        """POST and wait for this client's own copy (its acknowledgement)."""
        await self.send("POST", message={"RoomUuid": room_uuid, "Message": text, **extra})
        return await self.recv_until(lambda f: f.get("Author") == self.user or f.get("@type") == "error")

    async def nothing_before_marker(self) -> None:
        """Assert that no frame is pending: a request answered at once (HISTORY of no room) is
        handled after every earlier request of the session, so its error must come first."""
        await self.send("HISTORY", {"Uuid": "no-such-room-marker"})
        frame = await self.recv()
        assert frame.get("error") == "not_member", f"unexpected frame before the marker: {frame}"

    async def error(self) -> dict[str, Any]:
        frame = await self.recv_until(lambda f: f.get("@type") == "error")
        return frame


@pytest.fixture
def chat_settings(tmp_path: Path) -> Callable[..., Settings]:
    def build(**changes: Any) -> Settings:
        return make_settings(db_url=f"sqlite:///{tmp_path}/chat.db", **changes)

    return build


@asynccontextmanager
async def chatter(
    harness: Harness,
    user: str = "alice",
    *,
    profile: str = "standard",
    workspaces: list[dict[str, Any]] | None = None,
) -> AsyncIterator[ChatClient]:
    jwt = token(
        user, profile=profile, workspaces=workspaces if workspaces is not None else [COMMON, READ_ONLY_WS]
    )
    async with harness.subscribed(jwt, "/chat") as ws:
        yield ChatClient(ws, user)


async def test_chat_join_post_and_broadcast(harness: Harness) -> None:
    async with chatter(harness, "alice") as alice, chatter(harness, "bob") as bob:
        room = await alice.join(GLOBAL_ROOM)
        assert room["Users"] == ["alice"] and room["Type"] == "GLOBAL"
        bob_room = await bob.join(GLOBAL_ROOM)
        assert bob_room["Uuid"] == room["Uuid"] and bob_room["Users"] == ["alice", "bob"]
        update = await alice.recv()
        assert update["@type"] == "ROOM_UPDATE" and update["Room"]["Users"] == ["alice", "bob"]
        ack = await alice.post(room["Uuid"], "hello <b>bob</b><script>alert(1)</script>")
        assert ack["Message"] == "hello <b>bob</b>"
        assert ack["Author"] == "alice" and ack["Seq"] == 1 and ack["Timestamp"].isdigit()
        assert await bob.recv() == ack


async def test_chat_author_and_timestamp_set_by_server(harness: Harness) -> None:
    async with chatter(harness) as alice:
        room = await alice.join(GLOBAL_ROOM)
        ack = await alice.post(room["Uuid"], "hi", Author="mallory", Timestamp="1")
        assert ack["Author"] == "alice" and ack["Timestamp"] != "1"


@pytest.fixture
async def history_harness(nursery: trio.Nursery, chat_settings: Callable[..., Settings]) -> Harness:
    """A gateway that sends the latest page of history after a JOIN (off by default)."""
    return await Harness(nursery, chat_settings(chat_history_on_join=True)).start()


async def test_chat_join_sends_latest_history(history_harness: Harness) -> None:
    harness = history_harness
    async with chatter(harness, "alice") as alice:
        room = await alice.join(GLOBAL_ROOM)
        for i in range(3):
            await alice.post(room["Uuid"], f"m{i}")
        async with chatter(harness, "bob") as bob:
            await bob.join(GLOBAL_ROOM)
            assert [(await bob.recv())["Message"] for _ in range(3)] == ["m0", "m1", "m2"]
            await bob.nothing_before_marker()


async def test_chat_join_sends_no_history_by_default(harness: Harness) -> None:
    """Cells' client asks with HISTORY after its JOIN: a page sent on JOIN would show twice."""
    async with chatter(harness, "alice") as alice:
        room = await alice.join(GLOBAL_ROOM)
        await alice.post(room["Uuid"], "m0")
        async with chatter(harness, "bob") as bob:
            await bob.join(GLOBAL_ROOM)
            await bob.nothing_before_marker()


async def test_chat_history_offset_paging(harness: Harness) -> None:
    async with chatter(harness) as alice:
        room = await alice.join(GLOBAL_ROOM)
        for i in range(5):
            await alice.post(room["Uuid"], f"m{i}")
        await alice.send("HISTORY", {"Uuid": room["Uuid"]}, {"Message": '{"Offset":0,"Limit":2}'})
        assert (await alice.recv())["@type"] == "ROOM_UPDATE"
        assert [(await alice.recv())["Message"] for _ in range(2)] == ["m3", "m4"]
        more = await alice.recv()
        assert more["@type"] == "MAY_HAVE_MORE" and more["Offset"] == 2 and more["Limit"] == 2
        assert more["RoomUuid"] == room["Uuid"]
        await alice.send("HISTORY", {"Uuid": room["Uuid"]}, {"Message": '{"Offset":4,"Limit":2}'})
        assert (await alice.recv())["@type"] == "ROOM_UPDATE"
        assert (await alice.recv())["Message"] == "m0"
        await alice.nothing_before_marker()  # a short page: no MAY_HAVE_MORE


async def test_chat_history_cursor_stays_correct_while_messages_arrive(harness: Harness) -> None:
    async with chatter(harness) as alice:
        room = await alice.join(GLOBAL_ROOM)
        for i in range(5):
            await alice.post(room["Uuid"], f"m{i}")
        await alice.send("HISTORY", {"Uuid": room["Uuid"]}, {"Message": '{"Before":4,"Limit":2}'})
        await alice.recv()
        page = [await alice.recv() for _ in range(2)]
        assert [m["Message"] for m in page] == ["m1", "m2"]
        more = await alice.recv()
        assert more["Before"] == page[0]["Seq"]
        await alice.post(room["Uuid"], "late")  # would shift an Offset page, not a cursor
        await alice.send(
            "HISTORY", {"Uuid": room["Uuid"]}, {"Message": json.dumps({"Before": more["Before"]})}
        )
        await alice.recv()
        assert (await alice.recv())["Message"] == "m0"
        await alice.send("HISTORY", {"Uuid": room["Uuid"]}, {"Message": '{"After":4}'})
        await alice.recv()
        assert [(await alice.recv())["Message"] for _ in range(2)] == ["m4", "late"]


async def test_chat_edit_by_author_only(harness: Harness) -> None:
    async with chatter(harness, "alice") as alice, chatter(harness, "bob") as bob:
        room = await alice.join(GLOBAL_ROOM)
        await bob.join(GLOBAL_ROOM)
        ack = await alice.post(room["Uuid"], "helo")
        await bob.recv_until(lambda f: f.get("Uuid") == ack["Uuid"])
        await bob.send("POST", message={"RoomUuid": room["Uuid"], "Uuid": ack["Uuid"], "Message": "pwned"})
        refused = await bob.error()
        assert refused["error"] == "edit_forbidden" and refused["request"] == "POST"
        edited = await alice.post(room["Uuid"], "hello", Uuid=ack["Uuid"])
        assert edited["Uuid"] == ack["Uuid"] and edited["Message"] == "hello" and "Edited" in edited
        assert (await bob.recv_until(lambda f: f.get("Uuid") == ack["Uuid"]))["Message"] == "hello"


async def test_chat_delete_by_author_or_admin(harness: Harness) -> None:
    async with (
        chatter(harness, "alice") as alice,
        chatter(harness, "bob") as bob,
        chatter(harness, "root", profile="admin") as root,
    ):
        room = await alice.join(GLOBAL_ROOM)
        await bob.join(GLOBAL_ROOM)
        await root.join(GLOBAL_ROOM)
        first = await alice.post(room["Uuid"], "one")
        second = await alice.post(room["Uuid"], "two")
        await bob.send("DELETE_MSG", message=first)
        assert (await bob.error())["error"] == "delete_forbidden"
        await alice.send("DELETE_MSG", message=first)
        deleted = await bob.recv_until(lambda f: f.get("@type") == "DELETE_MSG")
        assert deleted["Message"]["Uuid"] == first["Uuid"]
        await root.send("DELETE_MSG", message={"Uuid": second["Uuid"]})
        assert (await bob.recv_until(lambda f: f.get("@type") == "DELETE_MSG"))["Message"]["Uuid"] == second[
            "Uuid"
        ]
        await alice.send("DELETE_MSG", message=first)
        assert (await alice.error())["error"] == "message_not_found"


async def test_chat_idempotent_retry_stored_once(harness: Harness) -> None:
    async with chatter(harness, "alice") as alice, chatter(harness, "bob") as bob:
        room = await alice.join(GLOBAL_ROOM)
        await bob.join(GLOBAL_ROOM)
        first = await alice.post(room["Uuid"], "once", ClientMessageId="c-42")
        again = await alice.post(room["Uuid"], "once", ClientMessageId="c-42")
        assert again == first
        assert (await bob.recv_until(lambda f: "Author" in f))["Uuid"] == first["Uuid"]
        # The retry is not broadcast again: the next post over the bus is what bob gets next.
        sentinel = await alice.post(room["Uuid"], "after")
        assert (await bob.recv_until(lambda f: "Author" in f))["Uuid"] == sentinel["Uuid"]
        assert len(await harness.gateway.store.latest(room["Uuid"], 0, 10)) == 2  # once, and "after"


async def test_chat_workspace_room_access(harness: Harness) -> None:
    async with chatter(harness, "alice") as alice, chatter(harness, "eve", workspaces=[]) as eve:
        room = await alice.join({"Type": "WORKSPACE", "RoomTypeObject": "ws-common"})
        await alice.post(room["Uuid"], "for members")
        await eve.send("JOIN", {"Type": "WORKSPACE", "RoomTypeObject": "ws-common"})
        assert (await eve.error())["error"] == "room_forbidden"
        # A request for a room the session is not in re-attaches it only when access allows.
        await eve.send("HISTORY", {"Uuid": room["Uuid"]})
        assert (await eve.error())["error"] == "room_forbidden"
        await eve.send("POST", message={"RoomUuid": room["Uuid"], "Message": "let me in"})
        assert (await eve.error())["error"] == "room_forbidden"


async def test_chat_read_only_workspace_member_may_post(harness: Harness) -> None:
    """As in Cells: every member who may read a workspace may post in its room."""
    async with chatter(harness, "alice") as alice:
        room = await alice.join({"Type": "WORKSPACE", "RoomTypeObject": "ws-ro"})
        assert (await alice.post(room["Uuid"], "hi"))["Message"] == "hi"


async def test_chat_user_room_for_the_two_users_only(harness: Harness) -> None:
    async with (
        chatter(harness, "alice") as alice,
        chatter(harness, "bob") as bob,
        chatter(harness, "carol") as carol,
    ):
        room = await alice.join({"Type": "USER", "RoomTypeObject": "bob"})
        assert room["RoomTypeObject"] == "bob"
        bob_view = await bob.join({"Type": "USER", "RoomTypeObject": "alice"})
        assert bob_view["Uuid"] == room["Uuid"] and bob_view["RoomTypeObject"] == "alice"
        assert (await alice.recv())["Room"]["RoomTypeObject"] == "bob"  # rendered for each viewer
        carol_room = await carol.join({"Type": "USER", "RoomTypeObject": "bob"})
        assert carol_room["Uuid"] != room["Uuid"]
        await carol.send("POST", message={"RoomUuid": room["Uuid"], "Message": "hi"})
        assert (await carol.error())["error"] == "room_forbidden"


@pytest.mark.parametrize("profile", ["anon", "shared"])
async def test_chat_global_room_needs_standard_profile(harness: Harness, profile: str) -> None:
    async with chatter(harness, "guest", profile=profile) as guest:
        await guest.send("JOIN", GLOBAL_ROOM)
        assert (await guest.error())["error"] == "room_forbidden"


async def test_chat_node_rooms_refused_without_a_check(harness: Harness) -> None:
    async with chatter(harness) as alice:
        await alice.send("JOIN", {"Type": "NODE", "RoomTypeObject": "n-1"})
        assert (await alice.error())["error"] == "node_rooms_disabled"


async def test_chat_node_rooms_open_in_development(
    nursery: trio.Nursery, chat_settings: Callable[..., Settings]
) -> None:
    harness = await Harness(nursery, chat_settings(node_check_open=True)).start()
    async with chatter(harness) as alice:
        assert (await alice.join({"Type": "NODE", "RoomTypeObject": "n-1"}))["Type"] == "NODE"


async def test_chat_node_rooms_http_check(
    nursery: trio.Nursery, chat_settings: Callable[..., Settings]
) -> None:
    seen: list[tuple[str, str]] = []
    port = await nursery.start(_node_check_server, seen)
    url = f"http://127.0.0.1:{port}/a/node/{{uuid}}"
    harness = await Harness(nursery, chat_settings(node_check_url=url)).start()
    async with chatter(harness) as alice:
        assert (await alice.join({"Type": "NODE", "RoomTypeObject": "n-ok"}))["Type"] == "NODE"
        await alice.send("JOIN", {"Type": "NODE", "RoomTypeObject": "n-no"})
        assert (await alice.error())["error"] == "room_forbidden"
        await alice.send("JOIN", {"Type": "NODE", "RoomTypeObject": "n-broken"})
        assert (await alice.error())["error"] == "node_check_unavailable"
        await alice.join({"Type": "NODE", "RoomTypeObject": "n-ok"})  # answered from the cache
    assert [path for path, _ in seen] == ["/a/node/n-ok", "/a/node/n-no", "/a/node/n-broken"]
    assert all(auth.startswith("Bearer ey") for _, auth in seen)  # the user's own token


async def _node_check_server(seen: list[tuple[str, str]], task_status: trio.TaskStatus[int]) -> None:
    import h11

    async def handle(stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        while (event := conn.next_event()) is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(65536))
        assert isinstance(event, h11.Request)
        path = event.target.decode()
        headers = dict(event.headers)
        seen.append((path, headers.get(b"authorization", b"").decode()))
        status = 200 if path.endswith("n-ok") else 403 if path.endswith("n-no") else 500
        await stream.send_all(conn.send(h11.Response(status_code=status, headers=[("content-length", "0")])))
        await stream.send_all(conn.send(h11.EndOfMessage()))
        await stream.aclose()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)


async def test_chat_presence_timeout_removes_silent_user(
    harness: Harness, thread_autojump_clock: object
) -> None:
    harness.gateway.chat.clock = trio.current_time
    async with chatter(harness, "alice") as alice, chatter(harness, "bob") as bob:
        await alice.join(GLOBAL_ROOM)
        await bob.join(GLOBAL_ROOM)
        assert (await alice.recv())["Room"]["Users"] == ["alice", "bob"]
        start = trio.current_time()
        async with trio.open_nursery() as pinger:

            async def keep_alice_present() -> None:
                while True:
                    await trio.sleep(15)
                    await alice.send("JOIN", GLOBAL_ROOM, {"Message": "PING"})

            pinger.start_soon(keep_alice_present)
            update = await alice.recv_until(lambda f: f.get("@type") == "ROOM_UPDATE")
            assert update["Room"]["Users"] == ["alice"]
            assert 20 <= trio.current_time() - start <= 23
            await expect_nothing(alice.ws, 60)  # alice's pings keep her in the room
            pinger.cancel_scope.cancel()
        await bob.send("JOIN", GLOBAL_ROOM, {"Message": "PING"})  # bob comes back
        assert (await alice.recv())["Room"]["Users"] == ["alice", "bob"]


async def test_chat_ping_does_not_create_rooms(harness: Harness) -> None:
    async with chatter(harness) as alice:
        await alice.send("JOIN", {"Type": "GLOBAL", "RoomTypeObject": "nowhere"}, {"Message": "PING"})
        await alice.nothing_before_marker()  # as in Cells: a heartbeat for no room is ignored
    database = harness.gateway.settings.db_url.removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(database)) as db:
        assert db.execute("select count(*) from rooms").fetchone() == (0,)


async def test_chat_leave_and_disconnect_update_members(harness: Harness) -> None:
    async with chatter(harness, "alice") as alice:
        room = await alice.join(GLOBAL_ROOM)
        async with chatter(harness, "bob") as bob:
            await bob.join(GLOBAL_ROOM)
            await alice.recv()
            await bob.send("LEAVE", {"Uuid": room["Uuid"]})
            assert (await bob.recv())["Room"]["Users"] == ["alice"]
            assert (await alice.recv())["Room"]["Users"] == ["alice"]
            await bob.send("LEAVE", {"Uuid": room["Uuid"]})  # not in it: nothing happens, nothing said
            await bob.join(GLOBAL_ROOM)
            assert (await alice.recv())["Room"]["Users"] == ["alice", "bob"]
        assert (await alice.recv())["Room"]["Users"] == ["alice"]  # bob disconnected


async def test_chat_limits(nursery: trio.Nursery, chat_settings: Callable[..., Settings]) -> None:
    settings = chat_settings(
        chat_max_message_bytes=100,
        chat_max_rooms_per_session=2,
        chat_post_burst=3,
        chat_posts_per_second=0.001,
    )
    harness = await Harness(nursery, settings).start()
    async with chatter(harness) as alice:
        room = await alice.join(GLOBAL_ROOM)
        await alice.send("POST", message={"RoomUuid": room["Uuid"], "Message": "é" * 51})
        assert (await alice.error())["error"] == "message_too_long"
        await alice.send("POST", message={"RoomUuid": room["Uuid"], "Message": "<script>x</script>"})
        assert (await alice.error())["error"] == "bad_message"
        await alice.join({"Type": "GLOBAL", "RoomTypeObject": "second"})
        await alice.send("JOIN", {"Type": "GLOBAL", "RoomTypeObject": "third"})
        assert (await alice.error())["error"] == "too_many_rooms"
        for i in range(3):
            await alice.post(room["Uuid"], f"m{i}")
        await alice.send("POST", message={"RoomUuid": room["Uuid"], "Message": "one too many"})
        assert (await alice.error())["error"] == "post_rate_limited"


async def test_chat_bad_input_keeps_session(harness: Harness) -> None:
    async with chatter(harness) as alice:
        frames: list[dict[str, Any]] = [
            {"@type": "JOIN"},
            {"@type": "JOIN", "Room": {"Type": "PLANET", "RoomTypeObject": "x"}},
            {"@type": "POST", "Room": {"Type": "GLOBAL"}},
            {"@type": "POST", "Message": {"RoomUuid": "r", "Message": ["x"]}},
            {"@type": "HISTORY", "Room": {"Uuid": "r"}, "Message": {"Message": "{oops"}},
            {"@type": "JOIN", "Room": GLOBAL_ROOM, "Colour": "red"},
            {"@type": "subscribe", "ack": True},
        ]
        for frame in frames:
            await alice.ws.send_message(json.dumps(frame))
            error = await alice.recv()
            assert error["@type"] == "error", frame
            if frame["@type"] == "subscribe":
                break  # a subscribe without token ends the session (4001), the rest does not
        else:
            raise AssertionError("unreachable")


async def test_chat_events_travel_over_the_bus(harness: Harness) -> None:
    async with harness.gateway.bus.subscribe(CHAT_TOPIC) as tap, chatter(harness) as alice:
        room = await alice.join(GLOBAL_ROOM)
        await alice.post(room["Uuid"], "over the bus")
        kinds = []
        with trio.fail_after(5):
            while "message" not in kinds:
                kinds += [json.loads(data)["kind"] for data in await tap.receive_batch(10)]
    assert kinds == ["room", "message"]


async def test_chat_post_from_another_instance_reaches_local_members(harness: Harness) -> None:
    async with chatter(harness) as alice:
        room = await alice.join(GLOBAL_ROOM)
        remote = {
            "RoomUuid": room["Uuid"],
            "Uuid": "m-remote",
            "Message": "from afar",
            "Author": "zed",
            "Timestamp": "1",
            "Seq": 9,
        }
        await harness.gateway.bus.publish(
            CHAT_TOPIC, json.dumps({"kind": "message", "message": remote}).encode()
        )
        assert await alice.recv() == remote
        await harness.gateway.bus.publish(CHAT_TOPIC, b'{"kind": "nonsense"}')
        await harness.gateway.bus.publish(CHAT_TOPIC, b"not json")
        await alice.post(room["Uuid"], "still fine")


async def test_chat_store_unavailable_answers_error(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.chat.records import StoreUnavailable

    async def broken(*args: object, **kwargs: object) -> None:
        raise StoreUnavailable("database is locked")

    async with chatter(harness) as alice:
        room = await alice.join(GLOBAL_ROOM)
        monkeypatch.setattr(harness.gateway.store, "post", broken)
        await alice.send(
            "POST", message={"RoomUuid": room["Uuid"], "Message": "hi", "ClientMessageId": "c-1"}
        )
        error = await alice.error()
        assert error["error"] == "store_unavailable" and error["ClientMessageId"] == "c-1"
        monkeypatch.undo()
        assert (await alice.post(room["Uuid"], "hi", ClientMessageId="c-1"))["Message"] == "hi"


@pytest.mark.parametrize("post_lands", ["before_history_read", "after_history_read"])
async def test_chat_post_during_join_arrives_exactly_once(
    history_harness: Harness, monkeypatch: pytest.MonkeyPatch, post_lands: str
) -> None:
    harness = history_harness
    store = harness.gateway.store
    original_latest = store.latest
    async with chatter(harness, "alice") as alice, chatter(harness, "bob") as bob:
        room = await alice.join(GLOBAL_ROOM)
        await alice.post(room["Uuid"], "old")

        async def latest_with_a_post_racing(room_uuid: str, offset: int, limit: int) -> list[Any]:
            # Bob is already attached to the room: alice's post is fanned out to him while his
            # history page is being read, on one side of the read or the other.
            if post_lands == "before_history_read":
                await alice.post(room["Uuid"], "racing")
            records = await original_latest(room_uuid, offset, limit)
            if post_lands == "after_history_read":
                await alice.post(room["Uuid"], "racing")
            return records

        monkeypatch.setattr(store, "latest", latest_with_a_post_racing)
        await bob.join(GLOBAL_ROOM)
        texts = []
        with trio.move_on_after(1):
            while True:
                frame = await bob.recv()
                if "Message" in frame and "Author" in frame:
                    texts.append(frame["Message"])
    assert texts == ["old", "racing"]


async def test_chat_edit_must_name_the_messages_own_room(harness: Harness) -> None:
    # An edit is a POST: it passes the checks of the room it names, so naming another room (one
    # where the author may post) must not reach a message of a room where they may not.
    async with chatter(harness, "alice") as alice:
        lobby = await alice.join(GLOBAL_ROOM)
        original = await alice.post(lobby["Uuid"], "first words")
        other = await alice.join({"Type": "GLOBAL", "RoomTypeObject": "elsewhere"})
        await alice.send(
            "POST", message={"RoomUuid": other["Uuid"], "Uuid": original["Uuid"], "Message": "moved?"}
        )
        assert (await alice.error())["error"] == "message_not_found"
    history = await harness.gateway.store.latest(lobby["Uuid"], 0, 10)
    assert [m.text for m in history] == ["first words"]


async def test_chat_post_committed_after_its_session_ended_still_reaches_the_room(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = harness.gateway.store
    original_post = store.post
    release = trio.Event()

    async def slow_post(*args: Any, **kwargs: Any) -> Any:
        await release.wait()
        return await original_post(*args, **kwargs)

    async with chatter(harness, "bob") as bob:
        async with chatter(harness, "alice") as alice:
            room = await alice.join(GLOBAL_ROOM)
            await bob.join(GLOBAL_ROOM)
            await alice.recv()  # bob joined
            monkeypatch.setattr(store, "post", slow_post)
            await alice.send("POST", message={"RoomUuid": room["Uuid"], "Message": "important"})
            await trio.testing.wait_all_tasks_blocked()
            (session,) = [
                s for s in harness.gateway.hub.sessions if s.identity and s.identity.user == "alice"
            ]
            assert session.cancel_scope is not None
            session.cancel_scope.cancel()  # the session ends while its POST waits for the commit
            await trio.testing.wait_all_tasks_blocked()
            release.set()
        message = await bob.recv_until(lambda f: f.get("Author") == "alice")
    assert message["Message"] == "important"


async def test_chat_late_copy_of_a_post_shown_in_the_join_page_is_dropped(history_harness: Harness) -> None:
    harness = history_harness
    async with chatter(harness, "alice") as alice, chatter(harness, "bob") as bob:
        room = await alice.join(GLOBAL_ROOM)
        shown = await alice.post(room["Uuid"], "in the page")
        await bob.join(GLOBAL_ROOM)
        assert (await bob.recv())["Uuid"] == shown["Uuid"]  # from the history page
        # The same post's bus copy arrives only now (a broker round trip): not shown twice.
        late = {"kind": "message", "message": shown}
        await harness.gateway.bus.publish(CHAT_TOPIC, json.dumps(late).encode())
        await alice.send("POST", message={"RoomUuid": room["Uuid"], "Message": "after"})
        assert (await bob.recv_until(lambda f: "Author" in f))["Message"] == "after"


async def test_chat_resubscribe_without_the_workspace_leaves_its_room_and_says_so(harness: Harness) -> None:
    async with chatter(harness, "alice") as alice:
        room = await alice.join({"Type": "WORKSPACE", "RoomTypeObject": "ws-common"})
        await alice.ws.send_message(
            json.dumps({"@type": "subscribe", "ack": True, "jwt": token("alice", workspaces=[])})
        )
        notice = await alice.recv_until(lambda f: f.get("@type") == "error")
        assert notice["error"] == "room_forbidden" and notice["RoomUuid"] == room["Uuid"]
        await alice.send("POST", message={"RoomUuid": room["Uuid"], "Message": "still here?"})
        assert (await alice.error())["error"] == "room_forbidden"


async def test_chat_join_by_room_uuid(harness: Harness) -> None:
    async with (
        chatter(harness, "alice") as alice,
        chatter(harness, "bob") as bob,
        chatter(harness, "carol") as carol,
    ):
        lobby = await alice.join(GLOBAL_ROOM)
        assert (await bob.join({"Uuid": lobby["Uuid"]}))["Uuid"] == lobby["Uuid"]
        assert (await alice.recv())["Room"]["Users"] == ["alice", "bob"]
        private = await alice.join({"Type": "USER", "RoomTypeObject": "bob"})
        assert (await bob.join({"Uuid": private["Uuid"]}))["RoomTypeObject"] == "alice"
        await carol.send("JOIN", {"Uuid": private["Uuid"]})
        assert (await carol.error())["error"] == "room_forbidden"
        await carol.send("JOIN", {"Uuid": "no-such-room"})
        assert (await carol.error())["error"] == "room_forbidden"


async def test_chat_failed_join_leaves_the_session_outside(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.chat.records import StoreUnavailable

    async def broken(*args: object, **kwargs: object) -> None:
        raise StoreUnavailable("database is locked")

    async with chatter(harness) as alice:
        monkeypatch.setattr(harness.gateway.store, "members", broken)
        await alice.send("JOIN", GLOBAL_ROOM)
        assert (await alice.error())["error"] == "store_unavailable"
        monkeypatch.undo()
        room = await harness.gateway.store.find_or_create_room("GLOBAL", "lobby", "", now=0)
        assert not any(harness.gateway.chat.rooms._joined.values())  # the session is in no room
        with trio.fail_after(5):  # nor is she listed as a member of it
            while await harness.gateway.store.members(room.uuid) != []:
                await trio.testing.wait_all_tasks_blocked()


async def test_chat_post_rate_survives_a_reconnect(
    nursery: trio.Nursery, chat_settings: Callable[..., Settings]
) -> None:
    harness = await Harness(nursery, chat_settings(chat_post_burst=2, chat_posts_per_second=0.001)).start()
    async with chatter(harness) as alice:
        room = await alice.join(GLOBAL_ROOM)
        for i in range(2):
            await alice.post(room["Uuid"], f"m{i}")
    async with chatter(harness) as alice:
        await alice.join(GLOBAL_ROOM)
        await alice.send("POST", message={"RoomUuid": room["Uuid"], "Message": "fresh burst?"})
        assert (await alice.error())["error"] == "post_rate_limited"


# -- Cells' chat client: heartbeats, no acknowledgements, Info ----------------------------------


@asynccontextmanager
async def cells_client(harness: Harness, user: str = "alice") -> AsyncIterator[ChatClient]:
    """A chat session subscribed as Cells' client does: no ``ack``, so no subscribed frame."""
    async with harness.connect("/ws/chat") as ws:
        await ws.send_message(json.dumps({"@type": "subscribe", "jwt": token(user, workspaces=[COMMON])}))
        yield ChatClient(ws, user)


async def test_chat_without_ack_sends_only_chat_frames(harness: Harness) -> None:
    async with cells_client(harness) as alice:
        await alice.send("JOIN", {"Type": "WORKSPACE", "RoomTypeObject": "ws-unknown"})  # refused
        await alice.send("LEAVE", {"Type": "GLOBAL", "RoomTypeObject": "never-joined"})  # nothing to do
        await alice.send("POST", message={"RoomUuid": "no-such-room", "Message": "hi"})  # refused
        room = await alice.join(GLOBAL_ROOM)  # the first frame this client gets is a ROOM_UPDATE
        assert room["Users"] == ["alice"]
    refusals = harness.gateway.metrics.registry.get_sample_value
    assert refusals("gateway_chat_refusals_total", {"error": "room_forbidden"}) == 1
    assert refusals("gateway_chat_refusals_total", {"error": "not_member"}) == 1


async def test_chat_without_ack_an_error_that_ends_the_session_still_closes(harness: Harness) -> None:
    async with harness.connect("/chat") as ws:
        await ws.send_message(json.dumps({"@type": "subscribe", "jwt": "not-a-token"}))
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()  # no error frame: the close code says it
        assert close_code(closed) == 4001


async def test_chat_heartbeat_reattaches_after_a_gateway_restart(
    nursery: trio.Nursery, chat_settings: Callable[..., Settings]
) -> None:
    """Cells' client does not JOIN again after a reconnect: its heartbeat (JOIN + PING) must work."""
    settings = chat_settings()
    first = await Harness(nursery, settings).start()
    async with cells_client(first) as alice:
        room = await alice.join(GLOBAL_ROOM)
        await alice.post(room["Uuid"], "before the restart")
    second = await Harness(nursery, settings).start()  # a new process on the same database
    async with cells_client(second) as alice, chatter(second, "bob") as bob:
        await bob.join(GLOBAL_ROOM)
        await alice.send("JOIN", {"Type": "GLOBAL", "RoomTypeObject": "lobby"}, {"Message": "PING"})
        update = await alice.recv()
        assert update["@type"] == "ROOM_UPDATE" and update["Room"]["Uuid"] == room["Uuid"]
        assert (await bob.recv())["Room"]["Users"] == ["alice", "bob"]
        ack = await alice.post(room["Uuid"], "after the restart")
        assert (await bob.recv())["Uuid"] == ack["Uuid"]


async def test_chat_post_reattaches_a_room_of_a_reconnected_session(harness: Harness) -> None:
    """A post sent before the first heartbeat after a reconnect is not lost (Cells drops it)."""
    async with cells_client(harness) as alice:
        room = await alice.join(GLOBAL_ROOM)
    async with cells_client(harness) as alice:
        await alice.send("POST", message={"RoomUuid": room["Uuid"], "Message": "right away"})
        assert (await alice.recv())["@type"] == "ROOM_UPDATE"
        assert (await alice.recv_until(lambda f: "Author" in f))["Message"] == "right away"


async def test_chat_info_is_stored_and_sent_back(harness: Harness) -> None:
    async with chatter(harness, "alice") as alice, chatter(harness, "bob") as bob:
        room = await alice.join(GLOBAL_ROOM)
        await bob.join(GLOBAL_ROOM)
        await alice.recv()  # bob joined
        ack = await alice.post(room["Uuid"], "with info", Info={"kind": "note", "ref": "n-1"})
        assert ack["Info"] == {"kind": "note", "ref": "n-1"}
        assert (await bob.recv())["Info"] == {"kind": "note", "ref": "n-1"}
        await alice.send("HISTORY", {"Uuid": room["Uuid"]})
        assert (await alice.recv())["@type"] == "ROOM_UPDATE"
        assert (await alice.recv())["Info"] == {"kind": "note", "ref": "n-1"}
        await alice.send("POST", message={"RoomUuid": room["Uuid"], "Message": "x", "Info": {"k": 1}})
        assert (await alice.error())["error"] == "bad_message"


async def test_chat_edit_as_cells_client_sends_it(harness: Harness) -> None:
    """Cells' client edits by posting back the whole message it received, text changed."""
    async with chatter(harness, "alice") as alice:
        room = await alice.join(GLOBAL_ROOM)
        original = await alice.post(room["Uuid"], "first")
        edited = await alice.post(
            room["Uuid"], "second", **{k: v for k, v in original.items() if k != "Message"}
        )
        assert edited["Uuid"] == original["Uuid"] and edited["Message"] == "second" and "Edited" in edited
