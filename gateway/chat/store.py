"""Chat history store: rooms, members and messages in SQLite or PostgreSQL, used from trio.

All database work runs in worker threads. Reads share a small pool of threads. Writes go through one
writer task that takes every request already queued (up to ``max_batch``) and applies them in one
transaction, one SAVEPOINT each, so that one request's refusal does not undo the others: a commit
(and on SQLite its fsync) is paid once per batch rather than once per message (group commit). The
batch's posts share one savepoint, one seq allocation per room and one multi-row insert; should
that fail, they are applied again one by one. A caller's ``await`` returns only after its batch is
committed, so a POST can be broadcast as soon as ``post()`` returns.

What it returns and raises: ``gateway.chat.records``; its SQL: ``gateway.chat.sql``.
Anything else (a bug, a schema that was never migrated) propagates unchanged.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import partial
from typing import Any, Final, TypeVar

import outcome
import trio
from sqlalchemy import Engine
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from gateway.chat import batches, migrate, posts, sql
from gateway.chat.faults import STOPPED, UNAVAILABLE, as_unavailable, unavailable_from
from gateway.chat.models import DEFAULT_BUSY_TIMEOUT, is_sqlite_memory, make_engine, normalise_url
from gateway.chat.records import MessageRecord, RoomRecord, StoreUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_MAX_BATCH: Final = 512
"""Most write requests applied in one transaction."""
DEFAULT_QUEUE_SIZE: Final = 4096
"""Write requests waiting for the writer; beyond this, writers wait (backpressure)."""
DEFAULT_READ_THREADS: Final = 4
"""Threads (and connections) serving reads at the same time."""


class ChatStore:
    """Chat rooms, members and messages. Start ``run()`` in a nursery, then call the methods.

    Every method that takes a ``room_uuid`` raises ``NotFound`` if there is no such room. A cancelled
    caller does not cancel its write: it may still be committed.
    """

    def __init__(
        self,
        url: str,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        read_threads: int = DEFAULT_READ_THREADS,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
    ) -> None:
        if max_batch < 1 or queue_size < 1 or read_threads < 1:
            raise ValueError("max_batch, queue_size and read_threads must be >= 1")
        self._url = normalise_url(url)
        self._max_batch = max_batch
        self._read_threads = read_threads
        self._busy_timeout = busy_timeout
        self._send, self._receive = trio.open_memory_channel[batches.Request[Any]](queue_size)
        self._read_limiter = trio.CapacityLimiter(read_threads)
        # An in-memory SQLite database is a single connection: every thread must take turns on it.
        self._memory = is_sqlite_memory(self._url)
        self._serial: AbstractContextManager[object] = threading.Lock() if self._memory else nullcontext()
        self._write_engine: Engine | None = None
        self._read_engine: Engine | None = None
        self._started = False
        self._stopped = False
        self._failing = False
        self.commits = 0
        """Transactions committed by the writer."""
        self.written = 0
        """Write requests applied in those transactions (``written / commits`` = mean batch size)."""
        self.failed_batches = 0
        """Batches whose transaction failed (each of their requests raised ``StoreUnavailable``)."""

    @property
    def queue_depth(self) -> int:
        """Write requests waiting for the writer."""
        return self._send.statistics().current_buffer_used

    # --- lifecycle -----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the engines and run the writer until cancelled. Does not run migrations, except that
        an in-memory SQLite database (which nothing else can reach) gets its schema here."""
        if self._started:
            raise RuntimeError("ChatStore.run() can only be called once")
        self._started = True
        try:
            await trio.to_thread.run_sync(self._open)
            task_status.started()
            async for first in self._receive:
                await self._commit([first, *self._queued(self._max_batch - 1)])
        finally:
            self._stopped = True
            self._fail_queued()
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._close)

    def _open(self) -> None:
        if self._url.get_backend_name() == "postgresql":
            # One pool for both: the writer holds one connection, the readers the rest.
            pool_size = self._read_threads + 1
            self._write_engine = self._read_engine = make_engine(
                self._url, pool_size=pool_size, busy_timeout=self._busy_timeout
            )
        elif self._memory:
            self._write_engine = self._read_engine = make_engine(self._url, busy_timeout=self._busy_timeout)
            with self._write_engine.begin() as connection:
                migrate.upgrade_connection(connection)
        else:
            self._write_engine = make_engine(self._url, busy_timeout=self._busy_timeout)
            self._read_engine = make_engine(
                self._url, role="read", pool_size=self._read_threads, busy_timeout=self._busy_timeout
            )

    def _close(self) -> None:
        for engine in {self._write_engine, self._read_engine}:
            if engine is not None:
                engine.dispose()

    def _queued(self, most: int) -> Iterable[batches.Request[Any]]:
        """The requests already waiting, up to ``most``, without waiting for more."""
        for _ in range(most):
            try:
                yield self._receive.receive_nowait()
            except trio.WouldBlock:
                return

    def _fail_queued(self) -> None:
        """Wake the callers whose requests will never be applied, and refuse new ones."""
        for request in self._queued(self._send.statistics().current_buffer_used):
            request.result = outcome.Error(StoreUnavailable(STOPPED))
            request.done.set()
        self._receive.close()  # senders waiting for room get BrokenResourceError
        self._send.close()  # later senders get ClosedResourceError

    # --- the writer --------------------------------------------------------------------------

    async def _write(self, op: Callable[[Connection], T]) -> T:
        """Queue ``op`` for the writer and return its result once its batch is committed."""
        if not self._started:
            raise RuntimeError("ChatStore.run() has not started")
        request = batches.Request(op)
        try:
            await self._send.send(request)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise StoreUnavailable(STOPPED) from None
        await request.done.wait()
        if request.result is None:  # pragma: no cover - _commit always sets a result
            raise StoreUnavailable(UNAVAILABLE)
        return request.result.unwrap()

    async def _commit(self, batch: list[batches.Request[Any]]) -> None:
        try:
            # Not abandoned on cancel: the callers must learn whether their batch committed.
            fault = await trio.to_thread.run_sync(self._apply_batch, batch)
        except Exception:
            # A bug, not a database fault: each caller already holds the error, and the writer
            # goes on (ending it would take every chat write, and the process, down with it).
            log.exception("chat store: a batch failed with an unexpected error")
            self.failed_batches += 1
            return
        finally:
            for request in batch:
                request.done.set()
        if fault is None:
            if self._failing:
                log.info("chat store: writes succeed again")
            self._failing = False
            self.commits += 1
            self.written += len(batch)
        else:
            if not self._failing:  # once per outage, not once per batch
                log.warning("chat store: writes fail: %s", _describe(fault))
            self._failing = True
            self.failed_batches += 1

    def _apply_batch(self, batch: list[batches.Request[Any]]) -> BaseException | None:
        """Apply ``batch`` in one transaction (worker thread); the database fault if it failed."""
        assert self._write_engine is not None
        try:
            with self._serial, _connection(self._write_engine) as connection, connection.begin():
                batches.apply_all(connection, batch)
            return None
        except BaseException as exc:
            # Nothing of the batch is stored: every caller gets the same verdict.
            is_fault = as_unavailable(exc) is not None
            for request in batch:
                request.result = outcome.Error(unavailable_from(exc) if is_fault else exc)
            if not is_fault:
                raise
            return exc

    # --- reads -------------------------------------------------------------------------------

    async def _read(self, op: Callable[[Connection], T]) -> T:
        """Run ``op`` in a read transaction (a consistent snapshot) on the reader threads."""
        if self._stopped:
            raise StoreUnavailable(STOPPED)
        if self._read_engine is None:
            raise RuntimeError("ChatStore.run() has not started")
        return await trio.to_thread.run_sync(
            self._apply_read, self._read_engine, op, limiter=self._read_limiter, abandon_on_cancel=True
        )

    def _apply_read(self, engine: Engine, op: Callable[[Connection], T]) -> T:
        try:
            with self._serial, _connection(engine) as connection, connection.begin():
                return op(connection)
        except (DBAPIError, PoolTimeoutError) as exc:
            if as_unavailable(exc) is None:
                raise
            raise unavailable_from(exc) from exc

    # --- rooms -------------------------------------------------------------------------------

    async def find_or_create_room(
        self,
        type: str,
        type_object: str,
        label: str,
        *,
        now: float,
        creator: str | None = None,
        hourly_cap: int | None = None,
    ) -> RoomRecord:
        """The room for (type, type_object), created with ``label`` if there is none yet (an existing
        room keeps its label); its uuid is the same every time it is created. Found rooms are read
        without queueing behind the writer. With ``creator`` and ``hourly_cap``: CreationLimited
        when the creator made that many rooms in the last hour."""
        found = await self._read(partial(sql.find_room, type=type, type_object=type_object))
        if found is not None:
            return found
        create = partial(sql.create_room, type=type, type_object=type_object, label=label, now=now)
        return await self._write(partial(create, creator=creator, hourly_cap=hourly_cap))

    async def delete_vacant_rooms(self, *, vacant_before: float, created_before: float, limit: int) -> int:
        """Delete up to ``limit`` rooms with no member and no message, vacant since before
        ``vacant_before`` and created before ``created_before``; how many were deleted."""
        return await self._write(
            partial(
                sql.delete_vacant_rooms,
                vacant_before=vacant_before,
                created_before=created_before,
                limit=limit,
            )
        )

    async def find_room(self, type: str, type_object: str) -> RoomRecord | None:
        """The room of (Type, RoomTypeObject), or None; never creates one."""
        return await self._read(partial(sql.find_room, type=type, type_object=type_object))

    async def room(self, uuid: str) -> RoomRecord | None:
        """The room with this uuid, or None."""
        return await self._read(partial(sql.room, room_uuid=uuid))

    # --- messages ----------------------------------------------------------------------------

    async def post(
        self,
        room_uuid: str,
        author: str,
        text: str,
        *,
        client_id: str | None,
        now: float,
        info: Mapping[str, str] | None = None,
    ) -> tuple[MessageRecord, bool]:
        """Store a new message; ``created`` is False when (room, author, client_id) was already stored,
        and the stored record comes back unchanged (a client's retry is not a second message)."""
        return await self._write(
            posts.Post(room_uuid, author, text, client_id, now, tuple((info or {}).items()))
        )

    async def edit(
        self, message_uuid: str, editor: str, text: str, *, now: float, room_uuid: str | None = None
    ) -> MessageRecord:
        """Replace the text of a live message; only its author may. The old text goes to ``edits``.

        With ``room_uuid``, a message of another room is NotFound: an edit is a POST to a room,
        and must pass that room's checks.
        """
        return await self._write(
            partial(
                sql.edit_message,
                message_uuid=message_uuid,
                editor=editor,
                text=text,
                now=now,
                room_uuid=room_uuid,
            )
        )

    async def delete(self, message_uuid: str, user: str, *, is_admin: bool, now: float) -> MessageRecord:
        """Turn a message into a tombstone (no text, no edit history); its author or an admin may."""
        return await self._write(
            partial(sql.delete_message, message_uuid=message_uuid, user=user, is_admin=is_admin, now=now)
        )

    async def latest(self, room_uuid: str, offset: int, limit: int) -> list[MessageRecord]:
        """Skip the ``offset`` newest live messages, return the ``limit`` before them, oldest first."""
        _check_page(offset, limit)
        return await self._read(partial(sql.latest, room_uuid=room_uuid, offset=offset, limit=limit))

    async def before(self, room_uuid: str, seq: int, limit: int) -> list[MessageRecord]:
        """The ``limit`` newest live messages with a seq below ``seq``, oldest first."""
        _check_page(0, limit)
        return await self._read(partial(sql.before, room_uuid=room_uuid, seq=seq, limit=limit))

    async def after(self, room_uuid: str, seq: int, limit: int) -> list[MessageRecord]:
        """The ``limit`` oldest live messages with a seq above ``seq``, oldest first."""
        _check_page(0, limit)
        return await self._read(partial(sql.after, room_uuid=room_uuid, seq=seq, limit=limit))

    # --- members -----------------------------------------------------------------------------

    async def touch_member(self, room_uuid: str, user: str, *, now: float) -> bool:
        """Record that ``user`` is in the room now; True if they were not a member before."""
        return await self._write(partial(sql.touch_member, room_uuid=room_uuid, user=user, now=now))

    async def remove_member(self, room_uuid: str, user: str, *, now: float) -> bool:
        """Take ``user`` out of the room; True if they were a member. The last one out of a room
        with no message leaves it vacant since ``now``."""
        return await self._write(partial(sql.remove_member, room_uuid=room_uuid, user=user, now=now))

    async def members(self, room_uuid: str) -> list[str]:
        """The room's members, sorted (in Python: the same order on every database)."""
        return await self._read(partial(sql.member_list, room_uuid=room_uuid))

    async def expire_members(self, older_than: float, *, now: float) -> dict[str, list[str]]:
        """Remove members last seen before ``older_than``: ``{room_uuid: sorted users removed}``;
        rooms with no message left without members are vacant since ``now``.

        Each removal is reported once even when several gateways sweep one database at the same time,
        so only one of them announces it.
        """
        return await self._write(partial(sql.expire_members, older_than=older_than, now=now))


@contextmanager
def _connection(engine: Engine) -> Iterator[Connection]:
    """A pooled connection, dropped from the pool if a database fault happens while it is used.

    A connection can outlive the fault that broke it: a PostgreSQL session opened against a server
    that has since turned read-only stays read-only. Its replacement starts clean.
    """
    with engine.connect() as connection:
        try:
            yield connection
        except Exception as exc:
            if as_unavailable(exc) is not None and not connection.invalidated:
                connection.invalidate()
            raise


def _describe(exc: BaseException) -> str:
    """The driver's message without the SQL and its parameters (which hold users' text)."""
    return str(exc.orig) if isinstance(exc, DBAPIError) else str(exc)


def _check_page(offset: int, limit: int) -> None:
    if offset < 0 or limit < 0:
        raise ValueError(f"offset and limit must be >= 0, not {offset} and {limit}")
