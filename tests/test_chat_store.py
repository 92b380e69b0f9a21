"""The chat history store on SQLite (a temporary file) and, when it can be started, PostgreSQL.

The PostgreSQL variant starts a throwaway cluster (initdb + pg_ctl, as the ``postgres`` user when run
as root) once per session, or uses ``$GATEWAY_TEST_POSTGRES_URL`` (a server where the user may create
databases). Without either it is skipped, with the reason shown by ``pytest -ra``.
"""

from __future__ import annotations

import contextlib
import sqlite3
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy
import trio
import trio.testing
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from gateway.chat import migrate, sql
from gateway.chat.faults import as_unavailable
from gateway.chat.models import Base, make_engine
from gateway.chat.records import (
    CreationLimited,
    Edit,
    Forbidden,
    MessageRecord,
    NotFound,
    RoomRecord,
    StoreError,
    StoreUnavailable,
)
from gateway.chat.store import ChatStore
from tests.servers import free_port, new_pg_database, new_pg_schema, postgres_admin_url, psycopg_connect

BACKENDS = ["sqlite", "postgresql"]
TIMEOUT = 10


# --- PostgreSQL: a throwaway cluster for the session (tests/servers.py) ---------------------------


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """A URL to a PostgreSQL server where new databases may be created."""
    with postgres_admin_url() as url:
        yield url


@pytest.fixture(scope="session")
def pg_database_url(pg_admin_url: str) -> str:
    return new_pg_database(pg_admin_url)


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database on each backend: a file for SQLite, a fresh schema for PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/chat.db"
    return new_pg_schema(request.getfixturevalue("pg_database_url"))


async def _start(nursery: trio.Nursery, url: str, **options: Any) -> ChatStore:
    store = ChatStore(url, **options)
    await nursery.start(store.run)
    return store


@pytest.fixture
async def store(nursery: trio.Nursery, db_url: str) -> ChatStore:
    await trio.to_thread.run_sync(migrate.upgrade, db_url)
    return await _start(nursery, db_url)


@pytest.fixture
async def room(store: ChatStore) -> RoomRecord:
    return await store.find_or_create_room("WORKSPACE", "ws-1", "Common", now=100.0)


@contextlib.contextmanager
def write_lock(url: str, table: str = "rooms") -> Iterator[Callable[[], None]]:
    """Hold the database's write lock from another connection until the yielded function is called.

    SQLite: a second connection in BEGIN IMMEDIATE. PostgreSQL: LOCK TABLE rooms, which every post
    needs (reads go on). Writers wait their busy/lock timeout, then fail with "locked".
    """
    other: sqlite3.Connection | psycopg.Connection[Any]
    if url.startswith("sqlite"):
        other = sqlite3.connect(make_url(url).database or "", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
    else:
        other = psycopg_connect(url)
        other.execute("BEGIN")
        other.execute(f"LOCK TABLE {table} IN EXCLUSIVE MODE")
    try:
        yield other.rollback
    finally:
        other.rollback()
        other.close()


def count_rows(url: str, table: str) -> int:
    """Counted through a connection of its own: what another process would see."""
    engine = make_engine(url, role="migrate")
    try:
        with engine.connect() as connection:
            return int(connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
    finally:
        engine.dispose()


# --- rooms ---------------------------------------------------------------------------------------


async def test_room_find_or_create_returns_one_room(store: ChatStore) -> None:
    created = await store.find_or_create_room("NODE", "n-1", "report.txt", now=5.0)
    again = await store.find_or_create_room("NODE", "n-1", "other label", now=6.0)
    other = await store.find_or_create_room("USER", "n-1", "bob", now=6.0)
    assert created == again == RoomRecord(created.uuid, "NODE", "n-1", "report.txt", 5.0)
    assert other.uuid != created.uuid
    assert await store.room(created.uuid) == created
    assert await store.room(str(uuid.uuid4())) is None


async def test_room_concurrent_creation_makes_one_room(store: ChatStore) -> None:
    rooms: list[RoomRecord] = []

    async def join() -> None:
        rooms.append(await store.find_or_create_room("GLOBAL", "all", "Everyone", now=1.0))

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(join)
    assert len({r.uuid for r in rooms}) == 1


# --- rooms' lifetime: derived uuids, the creation cap, vacancy and the empty-room sweep -----------


async def sweep(
    store: ChatStore, *, vacant_before: float, created_before: float = 1e12, limit: int = 100
) -> int:
    return await store.delete_vacant_rooms(
        vacant_before=vacant_before, created_before=created_before, limit=limit
    )


async def test_room_uuid_derived_so_a_deleted_room_comes_back_the_same(store: ChatStore) -> None:
    room = await store.find_or_create_room("GLOBAL", "gone", "", now=1.0)
    assert room.uuid == sql.room_uuid_for("GLOBAL", "gone") != sql.room_uuid_for("NODE", "gone")
    assert await sweep(store, vacant_before=2.0) == 1
    assert await store.room(room.uuid) is None and await store.find_room("GLOBAL", "gone") is None
    assert (await store.find_or_create_room("GLOBAL", "gone", "", now=3.0)).uuid == room.uuid


async def test_room_sweep_deletes_only_rooms_without_member_or_message(store: ChatStore, db_url: str) -> None:
    empty = [await store.find_or_create_room("NODE", f"n-{i}", "", now=1.0) for i in range(5)]
    occupied = await store.find_or_create_room("NODE", "occupied", "", now=1.0)
    await store.touch_member(occupied.uuid, "alice", now=10.0)
    talked = await store.find_or_create_room("NODE", "talked", "", now=1.0)
    await store.touch_member(talked.uuid, "alice", now=1.0)
    await store.post(talked.uuid, "alice", "kept", client_id=None, now=2.0)
    await store.remove_member(talked.uuid, "alice", now=3.0)  # history keeps a room
    left = await store.find_or_create_room("NODE", "left", "", now=1.0)
    await store.touch_member(left.uuid, "alice", now=1.0)
    await store.remove_member(left.uuid, "alice", now=50.0)  # vacant since the last one left
    expired = await store.find_or_create_room("NODE", "expired", "", now=1.0)
    await store.touch_member(expired.uuid, "bob", now=1.0)
    await store.expire_members(5.0, now=60.0)  # presence timeout: vacant since the sweep
    assert [await sweep(store, vacant_before=10.0, limit=3) for _ in range(3)] == [3, 2, 0]  # in batches
    assert await sweep(store, vacant_before=55.0) == 1  # "left"
    assert await sweep(store, vacant_before=65.0) == 1  # "expired"
    assert await sweep(store, vacant_before=1e9) == 0
    for gone in [*empty, left, expired]:
        assert await store.room(gone.uuid) is None
    assert await store.room(occupied.uuid) == occupied and await store.room(talked.uuid) is not None
    assert count_rows(db_url, "rooms") == 2


async def test_room_sweep_keeps_a_room_in_its_first_hour(store: ChatStore) -> None:
    """A room counts against its creator's cap for an hour: deleting it sooner would free the cap."""
    await store.find_or_create_room("GLOBAL", "young", "", now=100.0)
    assert await sweep(store, vacant_before=1000.0, created_before=100.0) == 0
    assert await sweep(store, vacant_before=1000.0, created_before=100.5) == 1


async def test_room_creation_capped_per_user_and_hour(store: ChatStore) -> None:
    def create(name: str, now: float, user: str = "mallory") -> Any:
        return store.find_or_create_room("GLOBAL", name, "", now=now, creator=user, hourly_cap=3)

    for i in range(3):
        await create(f"r{i}", 1000.0 + i)
    with pytest.raises(CreationLimited):
        await create("r3", 1010.0)
    assert (await create("r0", 1010.0)).type_object == "r0"  # an existing room: nothing created
    await create("other", 1010.0, user="alice")  # each user has their own cap
    await store.find_or_create_room("GLOBAL", "uncounted", "", now=1010.0)  # no creator: no cap
    with pytest.raises(CreationLimited):
        await create("r3", 4599.0)
    await create("r3", 4600.0)  # an hour after the first creation
    assert await store.find_room("GLOBAL", "r3") is not None


# --- posts and group commit ----------------------------------------------------------------------


async def test_post_returns_record_and_bumps_room(store: ChatStore, room: RoomRecord) -> None:
    first, created = await store.post(room.uuid, "alice", "hello", client_id=None, now=200.0)
    second, _ = await store.post(room.uuid, "bob", "hi", client_id="c-1", now=201.0)
    assert created
    assert first == MessageRecord(first.uuid, room.uuid, 1, "alice", "hello", 200.0, None, (), deleted=False)
    assert (second.seq, second.author, second.client_id) == (2, "bob", "c-1")
    assert uuid.UUID(first.uuid).version == 4
    updated = await store.room(room.uuid)
    assert updated is not None and updated.last_updated == 201.0


async def test_post_unknown_room_not_found(store: ChatStore) -> None:
    with pytest.raises(NotFound):
        await store.post(str(uuid.uuid4()), "alice", "hello", client_id=None, now=1.0)


async def test_post_client_id_is_idempotent(store: ChatStore, room: RoomRecord, db_url: str) -> None:
    first, created = await store.post(room.uuid, "alice", "hello", client_id="c-1", now=200.0)
    again, created_again = await store.post(room.uuid, "alice", "changed", client_id="c-1", now=300.0)
    bobs, bob_created = await store.post(room.uuid, "bob", "hello", client_id="c-1", now=301.0)
    assert created and not created_again and bob_created
    assert again == first
    assert bobs.seq == 2  # the retry used no seq
    assert count_rows(db_url, "messages") == 2


async def test_post_group_commit_many_concurrent(store: ChatStore, db_url: str) -> None:
    rooms = [await store.find_or_create_room("NODE", f"n-{i}", "n", now=1.0) for i in range(3)]
    results: list[MessageRecord] = []

    async def poster(i: int) -> None:
        for j in range(4):
            record, created = await store.post(rooms[i % 3].uuid, f"u{i}", f"m{j}", client_id=None, now=2.0)
            assert created
            results.append(record)

    commits = store.commits
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            for i in range(75):
                nursery.start_soon(poster, i)
    assert len(results) == 300 == count_rows(db_url, "messages")
    for r in rooms:
        seqs = sorted(m.seq for m in results if m.room_uuid == r.uuid)
        assert seqs == list(range(1, 101))
    assert store.commits - commits < 300 / 4  # batches, not one commit per post
    assert store.written >= 300


async def test_post_same_client_id_in_flight_stored_once(store: ChatStore, room: RoomRecord) -> None:
    results: list[tuple[MessageRecord, bool]] = []

    async def post() -> None:
        results.append(await store.post(room.uuid, "alice", "hi", client_id="retry", now=2.0))

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(post)
    assert len({record.uuid for record, _ in results}) == 1
    assert sorted(created for _, created in results) == [False] * 9 + [True]


async def test_post_is_visible_to_others_when_it_returns(
    store: ChatStore, room: RoomRecord, db_url: str
) -> None:
    await store.post(room.uuid, "alice", "durable", client_id=None, now=2.0)
    assert count_rows(db_url, "messages") == 1


async def test_batch_one_failure_does_not_undo_others(
    store: ChatStore, room: RoomRecord, db_url: str
) -> None:
    """One transaction with a savepoint per write: refusals and a bad post stay with their callers."""
    own, _ = await store.post(room.uuid, "alice", "mine", client_id=None, now=2.0)
    outcomes: dict[str, object] = {}

    async def run(name: str, call: Callable[[], Any]) -> None:
        try:
            outcomes[name] = await call()
        except Exception as exc:
            outcomes[name] = exc

    commits = store.commits
    with write_lock(db_url) as release, trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            # The first write takes the writer, which waits for the lock; the rest queue up behind it.
            nursery.start_soon(
                run, "first", lambda: store.post(room.uuid, "bob", "1", client_id=None, now=3.0)
            )
            await trio.testing.wait_all_tasks_blocked()
            calls: dict[str, Callable[[], Any]] = {
                "ok": lambda: store.post(room.uuid, "bob", "2", client_id=None, now=3.0),
                "no_room": lambda: store.post("missing", "bob", "x", client_id=None, now=3.0),
                "bad": lambda: store.post(room.uuid, "bob", object(), client_id=None, now=3.0),  # type: ignore[arg-type]
                "forbidden": lambda: store.edit(own.uuid, "bob", "nope", now=3.0),
                "ok_too": lambda: store.post(room.uuid, "carol", "3", client_id=None, now=3.0),
                "member": lambda: store.touch_member(room.uuid, "bob", now=3.0),
            }
            for name, call in calls.items():
                nursery.start_soon(run, name, call)
            await trio.testing.wait_all_tasks_blocked()
            assert store.queue_depth == len(calls)
            release()
    assert store.commits - commits == 2  # the first write, then all the queued ones together
    assert isinstance(outcomes["no_room"], NotFound)
    assert isinstance(outcomes["forbidden"], Forbidden)
    assert isinstance(outcomes["bad"], sqlalchemy.exc.StatementError)  # a bug: not disguised
    assert outcomes["member"] is True
    stored = await store.latest(room.uuid, 0, 10)
    assert [m.seq for m in stored] == [1, 2, 3, 4]  # the bad post's rollback left no gap
    assert [m.text for m in stored[:2]] == ["mine", "1"]
    assert sorted(m.text for m in stored[2:]) == ["2", "3"]  # trio starts tasks in either order


# --- edit and delete -----------------------------------------------------------------------------


async def test_edit_keeps_history(store: ChatStore, room: RoomRecord) -> None:
    message, _ = await store.post(room.uuid, "alice", "v1", client_id=None, now=10.0)
    await store.edit(message.uuid, "alice", "v2", now=11.0)
    edited = await store.edit(message.uuid, "alice", "v3", now=12.0)
    assert edited.text == "v3"
    assert edited.edits == (Edit("v1", 11.0), Edit("v2", 12.0))
    assert edited.timestamp == 10.0 and edited.seq == message.seq
    assert await store.latest(room.uuid, 0, 10) == [edited]


async def test_edit_by_other_forbidden(store: ChatStore, room: RoomRecord) -> None:
    message, _ = await store.post(room.uuid, "alice", "v1", client_id=None, now=10.0)
    with pytest.raises(Forbidden):
        await store.edit(message.uuid, "bob", "mine now", now=11.0)
    assert (await store.latest(room.uuid, 0, 1))[0].text == "v1"


async def test_edit_unknown_or_deleted_not_found(store: ChatStore, room: RoomRecord) -> None:
    message, _ = await store.post(room.uuid, "alice", "v1", client_id=None, now=10.0)
    await store.delete(message.uuid, "alice", is_admin=False, now=11.0)
    for target in (message.uuid, str(uuid.uuid4())):
        with pytest.raises(NotFound):
            await store.edit(target, "alice", "again", now=12.0)


@pytest.mark.parametrize(("user", "is_admin"), [("alice", False), ("root", True)])
async def test_delete_by_author_or_admin_leaves_tombstone(
    store: ChatStore, room: RoomRecord, db_url: str, user: str, is_admin: bool
) -> None:
    message, _ = await store.post(room.uuid, "alice", "secret", client_id="c-1", now=10.0)
    await store.edit(message.uuid, "alice", "secret 2", now=11.0)
    deleted = await store.delete(message.uuid, user, is_admin=is_admin, now=12.0)
    assert deleted == MessageRecord(message.uuid, room.uuid, 1, "alice", "", 10.0, "c-1", (), deleted=True)
    assert await store.latest(room.uuid, 0, 10) == []
    engine = make_engine(db_url, role="migrate")
    with engine.connect() as connection:
        row = connection.execute(text("SELECT text, edits, deleted_at FROM messages")).one()
    engine.dispose()
    assert tuple(row) == ("", "[]", 12.0)  # no trace of the text, not even in the edit history
    again, created = await store.post(room.uuid, "alice", "retry", client_id="c-1", now=13.0)
    assert (again.uuid, again.deleted, created) == (message.uuid, True, False)


async def test_delete_by_other_forbidden(store: ChatStore, room: RoomRecord) -> None:
    message, _ = await store.post(room.uuid, "alice", "mine", client_id=None, now=10.0)
    with pytest.raises(Forbidden):
        await store.delete(message.uuid, "bob", is_admin=False, now=11.0)
    assert len(await store.latest(room.uuid, 0, 10)) == 1


async def test_delete_twice_or_unknown_not_found(store: ChatStore, room: RoomRecord) -> None:
    message, _ = await store.post(room.uuid, "alice", "mine", client_id=None, now=10.0)
    await store.delete(message.uuid, "alice", is_admin=False, now=11.0)
    for target in (message.uuid, str(uuid.uuid4())):
        with pytest.raises(NotFound):
            await store.delete(target, "alice", is_admin=True, now=12.0)


# --- paging --------------------------------------------------------------------------------------


@pytest.fixture
async def history(store: ChatStore, room: RoomRecord) -> list[MessageRecord]:
    """Messages with seq 1..10 posted; 4 and 7 deleted. Returns the 8 live ones, oldest first."""
    posted = [
        (await store.post(room.uuid, "alice", f"m{i}", client_id=None, now=float(i)))[0] for i in range(1, 11)
    ]
    for seq in (4, 7):
        await store.delete(posted[seq - 1].uuid, "alice", is_admin=False, now=20.0)
    return [m for m in posted if m.seq not in (4, 7)]


def _seqs(records: list[MessageRecord]) -> list[int]:
    return [r.seq for r in records]


@pytest.mark.parametrize(
    ("offset", "limit", "expected"),
    [
        (0, 3, [8, 9, 10]),
        (3, 3, [3, 5, 6]),
        (6, 3, [1, 2]),
        (8, 3, []),
        (0, 40, [1, 2, 3, 5, 6, 8, 9, 10]),
        (0, 0, []),
    ],
)
async def test_latest_pages_skip_deleted(
    store: ChatStore,
    room: RoomRecord,
    history: list[MessageRecord],
    offset: int,
    limit: int,
    expected: list[int],
) -> None:
    assert _seqs(await store.latest(room.uuid, offset, limit)) == expected


async def test_before_and_after_skip_deleted(
    store: ChatStore, room: RoomRecord, history: list[MessageRecord]
) -> None:
    assert _seqs(await store.before(room.uuid, 8, 3)) == [3, 5, 6]
    assert _seqs(await store.before(room.uuid, 2, 3)) == [1]
    assert _seqs(await store.before(room.uuid, 1, 3)) == []
    assert _seqs(await store.after(room.uuid, 3, 3)) == [5, 6, 8]
    assert _seqs(await store.after(room.uuid, 9, 3)) == [10]
    assert _seqs(await store.after(room.uuid, 0, 100)) == _seqs(history)
    assert await store.after(room.uuid, 0, 2) == history[:2]


async def test_paging_unknown_room_or_bad_bounds(store: ChatStore, room: RoomRecord) -> None:
    for call in (store.latest("missing", 0, 1), store.before("missing", 5, 1), store.after("missing", 0, 1)):
        with pytest.raises(NotFound):
            await call
    with pytest.raises(ValueError, match=">= 0"):
        await store.latest(room.uuid, -1, 10)
    with pytest.raises(ValueError, match=">= 0"):
        await store.after(room.uuid, 0, -1)


# --- members -------------------------------------------------------------------------------------


async def test_members_touch_remove_and_list(store: ChatStore, room: RoomRecord) -> None:
    assert await store.touch_member(room.uuid, "carol", now=1.0) is True
    assert await store.touch_member(room.uuid, "alice", now=1.0) is True
    assert await store.touch_member(room.uuid, "carol", now=2.0) is False
    assert await store.members(room.uuid) == ["alice", "carol"]
    assert await store.remove_member(room.uuid, "carol", now=3.0) is True
    assert await store.remove_member(room.uuid, "carol", now=3.0) is False
    assert await store.members(room.uuid) == ["alice"]
    for call in (
        store.members("missing"),
        store.touch_member("missing", "a", now=1.0),
        store.remove_member("missing", "a", now=1.0),
    ):
        with pytest.raises(NotFound):
            await call


async def test_members_sorted_the_same_on_every_backend(store: ChatStore, room: RoomRecord) -> None:
    for user in ("bob", "Alice", "_x", "ålice", "10", "9"):
        await store.touch_member(room.uuid, user, now=1.0)
    assert await store.members(room.uuid) == sorted(["bob", "Alice", "_x", "ålice", "10", "9"])


async def test_expire_members_removes_only_the_silent(store: ChatStore, room: RoomRecord) -> None:
    other = await store.find_or_create_room("NODE", "n-2", "n", now=1.0)
    await store.touch_member(room.uuid, "old", now=10.0)
    await store.touch_member(room.uuid, "fresh", now=10.0)
    await store.touch_member(room.uuid, "fresh", now=30.0)  # a heartbeat
    await store.touch_member(other.uuid, "old", now=5.0)
    await store.touch_member(other.uuid, "older", now=4.0)
    assert await store.expire_members(20.0, now=40.0) == {room.uuid: ["old"], other.uuid: ["old", "older"]}
    assert await store.expire_members(20.0, now=40.0) == {}
    assert await store.members(room.uuid) == ["fresh"]
    assert await store.members(other.uuid) == []


async def test_expire_members_concurrent_sweeps_report_each_once(
    nursery: trio.Nursery, store: ChatStore, room: RoomRecord, db_url: str
) -> None:
    """Two gateways sharing the database sweep at once: each removal is announced by one of them."""
    second = await _start(nursery, db_url)
    users = [f"u{i:02d}" for i in range(40)]
    for user in users:
        await store.touch_member(room.uuid, user, now=1.0)
    swept: list[dict[str, list[str]]] = []

    async def sweep(gateway: ChatStore) -> None:
        for _ in range(3):
            swept.append(await gateway.expire_members(2.0, now=3.0))

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as sweeps:
            for gateway in (store, second, store, second):
                sweeps.start_soon(sweep, gateway)
    reported = [user for result in swept for user in result.get(room.uuid, [])]
    assert sorted(reported) == users


async def test_two_gateways_post_contiguous_and_idempotent(
    nursery: trio.Nursery, store: ChatStore, room: RoomRecord, db_url: str
) -> None:
    second = await _start(nursery, db_url)
    results: list[tuple[MessageRecord, bool]] = []

    async def post(gateway: ChatStore, i: int) -> None:
        results.append(await gateway.post(room.uuid, "alice", "hi", client_id=f"c{i % 20}", now=1.0))

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as posters:
            for i in range(80):
                posters.start_soon(post, (store, second)[i % 2], i)
    created = [record for record, was_created in results if was_created]
    assert sorted(r.seq for r in created) == list(range(1, 21))
    by_client = {record.client_id: record.uuid for record in created}
    assert all(by_client[record.client_id] == record.uuid for record, _ in results)


def _wait_for_lock_waiters(url: str, count: int) -> None:
    """Block until ``count`` sessions wait for a lock in the database (polls: run it in a thread)."""
    query = (
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    deadline = time.monotonic() + TIMEOUT
    with psycopg_connect(url) as watcher:
        while watcher.execute(query).fetchone() != (count,):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{count} sessions never waited for a lock")
            time.sleep(0.01)


@pytest.mark.parametrize(("race", "table"), [("post", "rooms"), ("join", "rooms"), ("touch", "members")])
async def test_postgres_insert_race_between_gateways(
    nursery: trio.Nursery, pg_database_url: str, race: str, table: str
) -> None:
    """Two gateways check, find nothing, and insert the same row: the loser finds the winner's row.

    Both are held at their insert by a table lock until both wait, so both checks saw nothing.
    """
    url = new_pg_schema(pg_database_url)
    await trio.to_thread.run_sync(migrate.upgrade, url)
    gateways = [await _start(nursery, url) for _ in range(2)]
    room = await gateways[0].find_or_create_room("GLOBAL", "all", "All", now=1.0)
    calls = {
        "post": lambda g: g.post(room.uuid, "alice", "hi", client_id="c-1", now=2.0),
        "join": lambda g: g.find_or_create_room("NODE", "n-1", "n", now=2.0),
        "touch": lambda g: g.touch_member(room.uuid, "alice", now=2.0),
    }
    results: list[Any] = []

    async def call(gateway: ChatStore) -> None:
        results.append(await calls[race](gateway))

    with write_lock(url, table) as release, trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as callers:
            for gateway in gateways:
                callers.start_soon(call, gateway)
            await trio.to_thread.run_sync(_wait_for_lock_waiters, url, 2)
            release()
    assert sum(gateway.failed_batches for gateway in gateways) == 0
    if race == "post":
        assert sorted(created for _, created in results) == [False, True]
        assert results[0][0] == results[1][0]
    elif race == "join":
        assert results[0] == results[1]
    else:
        assert sorted(results) == [False, True]


# --- faults --------------------------------------------------------------------------------------


async def test_unavailable_when_locked_then_recovers(nursery: trio.Nursery, db_url: str) -> None:
    await trio.to_thread.run_sync(migrate.upgrade, db_url)
    store = await _start(nursery, db_url, busy_timeout=0.2)
    room = await store.find_or_create_room("GLOBAL", "all", "All", now=1.0)
    with write_lock(db_url), trio.fail_after(TIMEOUT):
        with pytest.raises(StoreUnavailable, match="busy; try again later"):
            await store.post(room.uuid, "alice", "blocked", client_id=None, now=2.0)
        assert await store.latest(room.uuid, 0, 10) == []  # reads go on meanwhile
    record, created = await store.post(room.uuid, "alice", "after", client_id=None, now=3.0)
    assert created and record.seq == 1
    assert store.failed_batches == 1


async def test_unavailable_every_write_of_a_failed_batch(nursery: trio.Nursery, db_url: str) -> None:
    await trio.to_thread.run_sync(migrate.upgrade, db_url)
    store = await _start(nursery, db_url, busy_timeout=0.3)
    room = await store.find_or_create_room("GLOBAL", "all", "All", now=1.0)
    failures: list[BaseException] = []

    async def post(i: int) -> None:
        with pytest.raises(StoreUnavailable) as caught:
            await store.post(room.uuid, "alice", f"m{i}", client_id=None, now=2.0)
        failures.append(caught.value)

    with write_lock(db_url), trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as posters:
            for i in range(10):
                posters.start_soon(post, i)
    assert len(failures) == 10
    assert all(isinstance(f.__cause__, OperationalError) for f in failures)
    assert count_rows(db_url, "messages") == 0


async def test_unavailable_when_sqlite_read_only(nursery: trio.Nursery, tmp_path: Path) -> None:
    # Tests run as root, for whom chmod does not make a file read-only; SQLite's mode=ro does.
    path = tmp_path / "chat.db"
    await trio.to_thread.run_sync(migrate.upgrade, f"sqlite:///{path}")
    writer = await _start(nursery, f"sqlite:///{path}")
    room = await writer.find_or_create_room("GLOBAL", "all", "All", now=1.0)
    await writer.post(room.uuid, "alice", "before", client_id=None, now=2.0)
    store = await _start(nursery, f"sqlite:///file:{path}?mode=ro&uri=true")
    with pytest.raises(StoreUnavailable, match="read-only; try again later"):
        await store.post(room.uuid, "alice", "refused", client_id=None, now=3.0)
    assert [m.text for m in await store.latest(room.uuid, 0, 10)] == ["before"]


async def test_unavailable_when_postgres_read_only_then_recovers(
    nursery: trio.Nursery, pg_admin_url: str
) -> None:
    """A failover to a read-only server: the failing connection is replaced once the fault clears."""
    url = new_pg_database(pg_admin_url)
    name = make_url(url).database
    await trio.to_thread.run_sync(migrate.upgrade, url)
    store = await _start(nursery, url)
    room = await store.find_or_create_room("GLOBAL", "all", "All", now=1.0)
    with psycopg_connect(pg_admin_url) as admin:
        admin.execute(f"ALTER DATABASE {name} SET default_transaction_read_only = on")
        admin.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
        with pytest.raises(StoreUnavailable, match="read-only"):
            await store.post(room.uuid, "alice", "refused", client_id=None, now=2.0)
        admin.execute(f"ALTER DATABASE {name} SET default_transaction_read_only = off")
    record, created = await store.post(room.uuid, "alice", "accepted", client_id=None, now=3.0)
    assert created and record.seq == 1


async def test_postgres_connections_killed_recovers(nursery: trio.Nursery, pg_admin_url: str) -> None:
    url = new_pg_database(pg_admin_url)
    name = make_url(url).database
    await trio.to_thread.run_sync(migrate.upgrade, url)
    store = await _start(nursery, url)
    room = await store.find_or_create_room("GLOBAL", "all", "All", now=1.0)
    await store.post(room.uuid, "alice", "one", client_id=None, now=2.0)
    with psycopg_connect(pg_admin_url) as admin:
        admin.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
    await store.post(room.uuid, "alice", "two", client_id=None, now=3.0)  # pre_ping reconnects
    assert [m.text for m in await store.latest(room.uuid, 0, 10)] == ["one", "two"]


async def test_unavailable_when_postgres_refuses(nursery: trio.Nursery) -> None:
    store = await _start(nursery, f"postgresql://nobody@127.0.0.1:{free_port()}/chat")
    with trio.fail_after(TIMEOUT):
        with pytest.raises(StoreUnavailable, match="unavailable; try again later"):
            await store.post(str(uuid.uuid4()), "alice", "x", client_id=None, now=1.0)
        with pytest.raises(StoreUnavailable):
            await store.room(str(uuid.uuid4()))


async def test_store_stopped_is_unavailable(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        stopping = await _start(nursery, f"sqlite:///{tmp_path}/chat.db")
        nursery.cancel_scope.cancel()
    with pytest.raises(StoreUnavailable, match="stopped"):
        await stopping.post("room", "a", "b", client_id=None, now=1.0)
    with pytest.raises(StoreUnavailable, match="stopped"):
        await stopping.latest("room", 0, 1)
    with pytest.raises(RuntimeError, match="once"):
        await stopping.run()


async def test_store_used_before_run_is_a_bug() -> None:
    with pytest.raises(RuntimeError, match="not started"):
        await ChatStore("sqlite://").room("room")
    with pytest.raises(RuntimeError, match="not started"):
        await ChatStore("sqlite://").post("room", "a", "b", client_id=None, now=1.0)


async def test_store_unmigrated_database_is_a_bug_not_an_outage(nursery: trio.Nursery, db_url: str) -> None:
    store = await _start(nursery, db_url)
    with pytest.raises((OperationalError, ProgrammingError), match="rooms"):
        await store.room(str(uuid.uuid4()))
    with pytest.raises((OperationalError, ProgrammingError), match="rooms"):
        await store.find_or_create_room("GLOBAL", "all", "All", now=1.0)


def _dbapi_error(kind: type[sqlalchemy.exc.DBAPIError], message: str) -> sqlalchemy.exc.DBAPIError:
    return kind("SELECT 1", {}, Exception(message))


BUSY, READ_ONLY, FULL = "is busy", "is read-only", "storage is full"
DOWN, OVERLOADED = "database is unavailable", "is overloaded"


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (_dbapi_error(OperationalError, "database is locked"), BUSY),
        (_dbapi_error(OperationalError, "attempt to write a readonly database"), READ_ONLY),
        (_dbapi_error(OperationalError, "database or disk is full"), FULL),
        (_dbapi_error(OperationalError, "disk I/O error"), DOWN),
        (_dbapi_error(OperationalError, "unable to open database file"), DOWN),
        (_dbapi_error(OperationalError, "connection refused"), DOWN),
        (_dbapi_error(OperationalError, "canceling statement due to lock timeout"), BUSY),
        (
            _dbapi_error(sqlalchemy.exc.InternalError, "cannot execute INSERT in a read-only transaction"),
            READ_ONLY,
        ),
        (_dbapi_error(sqlalchemy.exc.DatabaseError, "file is not a database"), DOWN),
        (sqlalchemy.exc.TimeoutError("QueuePool limit"), OVERLOADED),
        (_dbapi_error(OperationalError, "no such table: rooms"), None),
        (_dbapi_error(IntegrityError, "UNIQUE constraint failed"), None),
        (_dbapi_error(ProgrammingError, "syntax error"), None),
        (_dbapi_error(sqlalchemy.exc.InterfaceError, "Error binding parameter 1"), None),
        (ValueError("not a database error"), None),
    ],
)
def test_unavailable_mapping(error: BaseException, expected: str | None) -> None:
    mapped = as_unavailable(error)
    if expected is None:
        assert mapped is None
    else:
        assert isinstance(mapped, StoreError)
        assert str(mapped) == f"the chat history {expected}; try again later"


# --- SQLite specifics ----------------------------------------------------------------------------


def test_sqlite_connection_settings(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/new/folder/chat.db"
    engine = make_engine(url, busy_timeout=1.5)
    with engine.connect() as connection:
        pragma = {name: connection.exec_driver_sql(f"PRAGMA {name}").scalar() for name in
                  ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")}  # fmt: skip
    engine.dispose()
    assert pragma == {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1, "busy_timeout": 1500}
    assert (tmp_path / "new" / "folder" / "chat.db").exists()


def test_sqlite_foreign_keys_enforced(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path}/chat.db"
    migrate.upgrade(db_url)
    engine = make_engine(db_url)
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(text("INSERT INTO members (room_id, user, last_seen) VALUES (999, 'a', 1)"))
    engine.dispose()


async def test_sqlite_memory_url_serves_threads(nursery: trio.Nursery) -> None:
    store = await _start(nursery, "sqlite://")
    room = await store.find_or_create_room("GLOBAL", "all", "All", now=1.0)

    async def chat(i: int) -> None:
        await store.post(room.uuid, f"u{i}", "hi", client_id=None, now=2.0)
        await store.latest(room.uuid, 0, 5)
        await store.touch_member(room.uuid, f"u{i}", now=2.0)

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as users:
            for i in range(30):
                users.start_soon(chat, i)
    assert len(await store.latest(room.uuid, 0, 100)) == 30
    assert len(await store.members(room.uuid)) == 30


# --- migrations ----------------------------------------------------------------------------------


def test_migrate_upgrade_twice_is_noop(db_url: str) -> None:
    assert migrate.current(db_url) is None
    migrate.upgrade(db_url)
    assert migrate.current(db_url) == migrate.head() == "0003"
    engine = make_engine(db_url, role="migrate")
    with engine.begin() as connection:
        columns = "uuid, type, type_object, label, created_at, last_updated"
        connection.execute(text(f"INSERT INTO rooms ({columns}) VALUES ('r', 'GLOBAL', 'all', 'All', 1, 1)"))
    migrate.upgrade(db_url)
    assert migrate.current(db_url) == "0003"
    assert count_rows(db_url, "rooms") == 1
    with engine.connect() as connection:
        assert set(inspect(connection).get_table_names()) == {
            "alembic_version",
            "rooms",
            "members",
            "messages",
        }
        assert connection.execute(text("SELECT next_seq FROM rooms")).scalar_one() == 1
    engine.dispose()


def test_migrate_schema_matches_models(db_url: str) -> None:
    migrate.upgrade(db_url)
    engine = make_engine(db_url, role="migrate")
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert differences == []


async def test_migrate_concurrent_upgrades_agree(db_url: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(trio.to_thread.run_sync, migrate.upgrade, db_url)
    assert migrate.current(db_url) == migrate.head()


def test_migrations_dir_sources(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[1]
    monkeypatch.delenv(migrate.MIGRATIONS_DIR_ENV, raising=False)
    assert migrate.migrations_dir() == repo / "migrations"
    assert (migrate.migrations_dir() / "env.py").is_file()
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
    assert migrate.migrations_dir() == tmp_path / "migrations"
    monkeypatch.setenv(migrate.MIGRATIONS_DIR_ENV, str(tmp_path / "elsewhere"))
    assert migrate.migrations_dir() == tmp_path / "elsewhere"


async def test_migrate_0001_database_keeps_its_messages_and_gains_info(db_url: str) -> None:
    """A database made by the first release upgrades in place: old messages read back with no Info."""
    from alembic import command

    command.upgrade(migrate.alembic_config(db_url), "0001")
    engine = make_engine(db_url, role="migrate")
    with engine.begin() as connection:
        columns = "uuid, type, type_object, label, created_at, last_updated, next_seq"
        connection.execute(
            text(f"INSERT INTO rooms ({columns}) VALUES ('r', 'GLOBAL', 'all', 'All', 1, 1, 2)")
        )
        connection.execute(text(
            "INSERT INTO messages (room_id, seq, uuid, author, text, timestamp) "
            "SELECT id, 1, 'm-1', 'alice', 'from 0001', 1 FROM rooms"
        ))  # fmt: skip
    engine.dispose()
    migrate.upgrade(db_url)
    store = ChatStore(db_url)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        [message] = await store.latest("r", 0, 10)
        assert (message.text, message.info) == ("from 0001", {})
        record, _ = await store.post("r", "bob", "with info", client_id=None, now=2, info={"k": "v"})
        assert (await store.latest("r", 0, 1))[0].info == {"k": "v"} == record.info
        nursery.cancel_scope.cancel()


async def test_migrate_0002_database_cleaned_and_its_empty_rooms_made_vacant(db_url: str) -> None:
    """Labels and ClientMessageIds stored raw before 0003 stop reaching members; rooms already empty
    get swept like any other; rooms made before keep their uuids and are not counted in any cap."""
    from alembic import command

    command.upgrade(migrate.alembic_config(db_url), "0002")
    engine = make_engine(db_url, role="migrate")
    with engine.begin() as connection:
        columns = "uuid, type, type_object, label, created_at, last_updated, next_seq"
        rooms = [("r-xss", "x", "<img src=x onerror=alert(1)>Lobby", 2), ("r-empty", "e", "Empty & quiet", 1),
                 ("r-member", "m", "", 1)]  # fmt: skip
        for room_uuid, type_object, label, next_seq in rooms:
            connection.execute(
                text(f"INSERT INTO rooms ({columns}) VALUES (:u, 'GLOBAL', :o, :l, 1, 1, :n)"),
                {"u": room_uuid, "o": type_object, "l": label, "n": next_seq},
            )
        member = (
            'INSERT INTO members (room_id, "user", last_seen) SELECT id, :who, 1 FROM rooms WHERE uuid = :u'
        )
        connection.execute(text(member), {"who": "bob", "u": "r-member"})
        for seq, client_id in enumerate(["<img src=x onerror=alert(1)>", "c-1", None, "x" * 100], start=1):
            connection.execute(
                text("INSERT INTO messages (room_id, seq, uuid, client_id, author, text, timestamp) "
                     "SELECT id, :seq, :uuid, :client_id, 'alice', 'hi', 1 FROM rooms WHERE uuid = 'r-xss'"),
                {"seq": seq, "uuid": f"m-{seq}", "client_id": client_id},
            )  # fmt: skip
    engine.dispose()
    migrate.upgrade(db_url)
    store = ChatStore(db_url)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        room = await store.room("r-xss")
        assert room is not None and room.label == "Lobby"
        assert [m.client_id for m in await store.latest("r-xss", 0, 10)] == [None, "c-1", None, None]
        assert await sweep(store, vacant_before=2.0, created_before=2.0) == 1  # only the empty one
        assert await store.room("r-empty") is None and await store.room("r-member") is not None
        nursery.cancel_scope.cancel()


def test_migrate_head_constant_matches_the_scripts() -> None:
    # upgrade() skips Alembic for a database at HEAD_REVISION: a new script must move the constant.
    assert migrate.head() == migrate.HEAD_REVISION


async def test_writer_survives_a_bug_in_one_batch(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/chat.db"
    migrate.upgrade(url)
    store = ChatStore(url)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)

        def buggy(connection: object) -> None:
            raise KeyError("a bug, not a database fault")

        with pytest.raises(KeyError):
            await store._write(buggy)
        room = await store.find_or_create_room("GLOBAL", "after-the-bug", "", now=1.0)
        record, created = await store.post(room.uuid, "alice", "still writing", client_id=None, now=2.0)
        assert created and record.text == "still writing"
        nursery.cancel_scope.cancel()
