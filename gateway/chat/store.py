"""Chat history store: rooms, members and messages in SQLite or PostgreSQL, used from trio.

All database work runs in worker threads. Reads share a small pool of threads. Writes go through one
writer task that takes every request already queued (up to ``max_batch``) and applies them in one
transaction, one SAVEPOINT each, so that one request's refusal does not undo the others: a commit
(and on SQLite its fsync) is paid once per batch rather than once per message (group commit). The
batch's posts share one savepoint, one seq allocation per room and one multi-row insert; should
that fail, they are applied again one by one. A caller's ``await`` returns only after its batch is
committed, so a POST can be broadcast as soon as ``post()`` returns.

Exceptions::

    StoreError                 base of everything the store raises on purpose
    ├── StoreUnavailable       the database cannot be used now (locked, read-only, full, unreachable,
    │                          store stopped); try again later. The message is safe to show users.
    ├── NotFound               no such room or message (or the message is deleted)
    └── Forbidden              this user may not edit or delete that message

Anything else (a bug, a schema that was never migrated) propagates unchanged.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Final, Generic, TypeAlias, TypeVar, cast

import outcome
import trio
from sqlalchemy import (
    Double,
    Engine,
    Integer,
    Row,
    Select,
    Table,
    and_,
    bindparam,
    case,
    delete,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import (
    DatabaseError,
    DataError,
    DBAPIError,
    IntegrityError,
    InternalError,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.sql.expression import BindParameter

from gateway.chat import migrate
from gateway.chat.models import (
    DEFAULT_BUSY_TIMEOUT,
    Member,
    Message,
    Room,
    is_sqlite_memory,
    make_engine,
    normalise_url,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
AnyRow: TypeAlias = Row[*tuple[Any, ...]]

DEFAULT_MAX_BATCH: Final = 512
"""Most write requests applied in one transaction."""
DEFAULT_QUEUE_SIZE: Final = 4096
"""Write requests waiting for the writer; beyond this, writers wait (backpressure)."""
DEFAULT_READ_THREADS: Final = 4
"""Threads (and connections) serving reads at the same time."""


# --- records and errors ------------------------------------------------------------------------


@dataclass(frozen=True)
class RoomRecord:
    uuid: str
    type: str
    type_object: str
    label: str
    last_updated: float


@dataclass(frozen=True)
class Edit:
    """An earlier text of a message and when it was replaced."""

    text: str
    timestamp: float


@dataclass(frozen=True)
class MessageRecord:
    """A stored message. ``timestamp`` is when it was posted; edits do not change it."""

    uuid: str
    room_uuid: str
    seq: int
    author: str
    text: str
    timestamp: float
    client_id: str | None
    edits: tuple[Edit, ...]
    deleted: bool
    info: Mapping[str, str] = field(default_factory=dict)


class StoreError(Exception):
    """Base of the store's errors (see the module docstring for the tree)."""


class StoreUnavailable(StoreError):
    """The database cannot be used right now; the request may succeed later."""


class NotFound(StoreError):
    """The room or message does not exist (for edit and delete: or is already deleted)."""


class Forbidden(StoreError):
    """The user may not change this message."""


# Errors that say the SQL or the data is wrong, not the database: a retry would fail the same way.
_CALLER_ERRORS: Final = (IntegrityError, ProgrammingError, DataError, NotSupportedError)
# SQLite reports some programming errors as OperationalError.
_SQLITE_BUG_HINTS: Final = ("no such table", "no such column", "has no column", "syntax error")
_FAULT_MESSAGES: Final = (
    ("locked", "the chat history is busy"),
    ("lock timeout", "the chat history is busy"),
    ("busy", "the chat history is busy"),
    ("readonly", "the chat history is read-only"),
    ("read-only", "the chat history is read-only"),
    ("full", "the chat history storage is full"),
)
_UNAVAILABLE: Final = "the chat history database is unavailable"
_STOPPED: Final = "the chat history store is stopped; try again later"


def as_unavailable(exc: BaseException) -> StoreUnavailable | None:
    """The ``StoreUnavailable`` that ``exc`` amounts to, or None if ``exc`` is a programming error."""
    if isinstance(exc, PoolTimeoutError):
        return StoreUnavailable("the chat history is overloaded; try again later")
    if not isinstance(exc, DBAPIError) or not _is_fault(exc):
        return None
    detail = str(exc.orig).lower()
    reason = next((text for hint, text in _FAULT_MESSAGES if hint in detail), _UNAVAILABLE)
    return StoreUnavailable(f"{reason}; try again later")


def _unavailable_from(fault: BaseException) -> StoreUnavailable:
    """A new ``StoreUnavailable`` for a database fault (one per caller: tracebacks are per raise)."""
    unavailable = as_unavailable(fault) or StoreUnavailable(f"{_UNAVAILABLE}; try again later")
    unavailable.__cause__ = fault
    return unavailable


def _is_fault(exc: DBAPIError) -> bool:
    if exc.connection_invalidated:
        return True
    if isinstance(exc, _CALLER_ERRORS):
        return False
    if isinstance(exc, OperationalError) and any(h in str(exc.orig) for h in _SQLITE_BUG_HINTS):
        return False
    # DatabaseError itself: SQLite's "file is not a database", "database disk image is malformed".
    # InternalError: PostgreSQL's "read-only transaction" (a standby after a failover).
    return isinstance(exc, OperationalError | InternalError) or type(exc) is DatabaseError


# --- the store ---------------------------------------------------------------------------------


@dataclass(eq=False)
class _Request(Generic[T]):
    """One write waiting for the writer; ``result`` is set in the writer's thread before ``done``."""

    op: Callable[[Connection], T]
    done: trio.Event = field(default_factory=trio.Event)
    result: outcome.Outcome[T] | None = None


@dataclass(frozen=True)
class _Post:
    """A post, as a write op. The writer stores a batch's posts together (``_post_many``)."""

    room_uuid: str
    author: str
    text: str
    client_id: str | None
    now: float
    info: tuple[tuple[str, str], ...] = ()

    def __call__(self, connection: Connection) -> tuple[MessageRecord, bool]:
        return _post_many(connection, [self])[0].unwrap()

    @property
    def key(self) -> _PostKey | None:
        """What makes a retry of this post recognisable: (room, author, client_id), given a client_id."""
        return None if self.client_id is None else (self.room_uuid, self.author, self.client_id)


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
        self._send, self._receive = trio.open_memory_channel[_Request[Any]](queue_size)
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
        self.largest_batch = 0
        """Most requests applied in one transaction so far."""

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

    def _queued(self, most: int) -> Iterable[_Request[Any]]:
        """The requests already waiting, up to ``most``, without waiting for more."""
        for _ in range(most):
            try:
                yield self._receive.receive_nowait()
            except trio.WouldBlock:
                return

    def _fail_queued(self) -> None:
        """Wake the callers whose requests will never be applied, and refuse new ones."""
        for request in self._queued(self._send.statistics().current_buffer_used):
            request.result = outcome.Error(StoreUnavailable(_STOPPED))
            request.done.set()
        self._receive.close()  # senders waiting for room get BrokenResourceError
        self._send.close()  # later senders get ClosedResourceError

    # --- the writer --------------------------------------------------------------------------

    async def _write(self, op: Callable[[Connection], T]) -> T:
        """Queue ``op`` for the writer and return its result once its batch is committed."""
        if not self._started:
            raise RuntimeError("ChatStore.run() has not started")
        request = _Request(op)
        try:
            await self._send.send(request)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise StoreUnavailable(_STOPPED) from None
        await request.done.wait()
        if request.result is None:  # pragma: no cover - _commit always sets a result
            raise StoreUnavailable(_UNAVAILABLE)
        return request.result.unwrap()

    async def _commit(self, batch: list[_Request[Any]]) -> None:
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
            self.largest_batch = max(self.largest_batch, len(batch))
        else:
            if not self._failing:  # once per outage, not once per batch
                log.warning("chat store: writes fail: %s", _describe(fault))
            self._failing = True
            self.failed_batches += 1

    def _apply_batch(self, batch: list[_Request[Any]]) -> BaseException | None:
        """Apply ``batch`` in one transaction (worker thread); the database fault if it failed."""
        assert self._write_engine is not None
        try:
            with self._serial, _connection(self._write_engine) as connection, connection.begin():
                _apply_all(connection, batch)
            return None
        except BaseException as exc:
            # Nothing of the batch is stored: every caller gets the same verdict.
            is_fault = as_unavailable(exc) is not None
            for request in batch:
                request.result = outcome.Error(_unavailable_from(exc) if is_fault else exc)
            if not is_fault:
                raise
            return exc

    # --- reads -------------------------------------------------------------------------------

    async def _read(self, op: Callable[[Connection], T]) -> T:
        """Run ``op`` in a read transaction (a consistent snapshot) on the reader threads."""
        if self._stopped:
            raise StoreUnavailable(_STOPPED)
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
            raise _unavailable_from(exc) from exc

    # --- rooms -------------------------------------------------------------------------------

    async def find_or_create_room(self, type: str, type_object: str, label: str, *, now: float) -> RoomRecord:
        """The room for (type, type_object), created with ``label`` if there is none yet (an existing
        room keeps its label). Found rooms are read without queueing behind the writer."""
        found = await self._read(partial(_find_room, type=type, type_object=type_object))
        if found is not None:
            return found
        return await self._write(
            partial(_create_room, type=type, type_object=type_object, label=label, now=now)
        )

    async def find_room(self, type: str, type_object: str) -> RoomRecord | None:
        """The room of (Type, RoomTypeObject), or None; never creates one."""
        return await self._read(partial(_find_room, type=type, type_object=type_object))

    async def room(self, uuid: str) -> RoomRecord | None:
        """The room with this uuid, or None."""
        return await self._read(partial(_room, room_uuid=uuid))

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
        return await self._write(_Post(room_uuid, author, text, client_id, now, tuple((info or {}).items())))

    async def edit(
        self, message_uuid: str, editor: str, text: str, *, now: float, room_uuid: str | None = None
    ) -> MessageRecord:
        """Replace the text of a live message; only its author may. The old text goes to ``edits``.

        With ``room_uuid``, a message of another room is NotFound: an edit is a POST to a room,
        and must pass that room's checks.
        """
        return await self._write(
            partial(_edit, message_uuid=message_uuid, editor=editor, text=text, now=now, room_uuid=room_uuid)
        )

    async def delete(self, message_uuid: str, user: str, *, is_admin: bool, now: float) -> MessageRecord:
        """Turn a message into a tombstone (no text, no edit history); its author or an admin may."""
        return await self._write(
            partial(_delete, message_uuid=message_uuid, user=user, is_admin=is_admin, now=now)
        )

    async def latest(self, room_uuid: str, offset: int, limit: int) -> list[MessageRecord]:
        """Skip the ``offset`` newest live messages, return the ``limit`` before them, oldest first."""
        _check_page(offset, limit)
        return await self._read(partial(_latest, room_uuid=room_uuid, offset=offset, limit=limit))

    async def before(self, room_uuid: str, seq: int, limit: int) -> list[MessageRecord]:
        """The ``limit`` newest live messages with a seq below ``seq``, oldest first."""
        _check_page(0, limit)
        return await self._read(partial(_before, room_uuid=room_uuid, seq=seq, limit=limit))

    async def after(self, room_uuid: str, seq: int, limit: int) -> list[MessageRecord]:
        """The ``limit`` oldest live messages with a seq above ``seq``, oldest first."""
        _check_page(0, limit)
        return await self._read(partial(_after, room_uuid=room_uuid, seq=seq, limit=limit))

    # --- members -----------------------------------------------------------------------------

    async def touch_member(self, room_uuid: str, user: str, *, now: float) -> bool:
        """Record that ``user`` is in the room now; True if they were not a member before."""
        return await self._write(partial(_touch_member, room_uuid=room_uuid, user=user, now=now))

    async def remove_member(self, room_uuid: str, user: str) -> bool:
        """Take ``user`` out of the room; True if they were a member."""
        return await self._write(partial(_remove_member, room_uuid=room_uuid, user=user))

    async def members(self, room_uuid: str) -> list[str]:
        """The room's members, sorted (in Python: the same order on every database)."""
        return await self._read(partial(_member_list, room_uuid=room_uuid))

    async def expire_members(self, older_than: float) -> dict[str, list[str]]:
        """Remove members last seen before ``older_than``: ``{room_uuid: sorted users removed}``.

        Each removal is reported once even when several gateways sweep one database at the same time,
        so only one of them announces it.
        """
        return await self._write(partial(_expire_members, older_than=older_than))


# --- applying a batch, in the writer's thread --------------------------------------------------


def _apply_all(connection: Connection, batch: list[_Request[Any]]) -> None:
    """Apply every request of ``batch``, setting each one's result: the posts together, then the
    other writes in arrival order.

    No write in a batch can depend on a post of the same batch (a message's uuid is only known to
    anyone once its batch has committed), so the posts may go first.
    """
    posts = [(request, request.op) for request in batch if isinstance(request.op, _Post)]
    if posts:
        _apply_posts(connection, posts)
    for request in batch:
        if not isinstance(request.op, _Post):
            request.result = _apply_one(connection, request.op)


def _apply_posts(connection: Connection, posts: list[tuple[_Request[Any], _Post]]) -> None:
    """Store the batch's posts in one savepoint (``_post_many``), or one by one if that fails."""
    if len(posts) > 1:
        together = _in_savepoint(connection, partial(_post_many, connection, [post for _, post in posts]))
        if isinstance(together, outcome.Value):
            for (request, _), result in zip(posts, together.value, strict=True):
                request.result = result
            return
    # One post, or posts that failed together (a client_id race with another gateway, or a bug):
    # each on its own, so that a failure stays with the post that caused it.
    for request, post in posts:
        request.result = _apply_one(connection, post)


def _apply_one(connection: Connection, op: Callable[[Connection], T]) -> outcome.Outcome[T]:
    """Run ``op`` in a savepoint; its failure rolls back only its own changes.

    A unique-constraint violation is retried once: it means another gateway inserted the same row
    (room, member, client_id) at the same moment, and on the second run the op finds that row.
    """
    result = _in_savepoint(connection, partial(op, connection))
    if isinstance(result, outcome.Error) and isinstance(result.error, IntegrityError):
        result = _in_savepoint(connection, partial(op, connection))
    return result


def _in_savepoint(connection: Connection, work: Callable[[], T]) -> outcome.Outcome[T]:
    """Run ``work`` in a savepoint: its error comes back as the outcome, its changes rolled back.

    A fault of the database itself (see ``as_unavailable``) propagates instead: the batch fails.
    """
    # Plain SQL rather than Connection.begin_nested(), which compiles a new, uniquely named SAVEPOINT
    # per call and costs more than a post. One fixed name will do: these savepoints never nest.
    connection.exec_driver_sql("SAVEPOINT chat_op")
    try:
        value = work()
    except Exception as exc:
        if as_unavailable(exc) is not None:
            raise
        # NotFound, Forbidden, or a bug: this caller's error alone.
        connection.exec_driver_sql("ROLLBACK TO SAVEPOINT chat_op")
        connection.exec_driver_sql("RELEASE SAVEPOINT chat_op")
        return outcome.Error(exc)
    connection.exec_driver_sql("RELEASE SAVEPOINT chat_op")
    return outcome.Value(value)


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


# --- SQL, run in worker threads ----------------------------------------------------------------
# Statements are built once: building and hashing one costs more than running it on SQLite. Their
# parameters are named p_*, since SQLAlchemy reserves column names for INSERT and UPDATE values.

_rooms: Final = cast(Table, Room.__table__)
_members: Final = cast(Table, Member.__table__)
_messages: Final = cast(Table, Message.__table__)

_ROOM_COLUMNS: Final = (
    _rooms.c.uuid,
    _rooms.c.type,
    _rooms.c.type_object,
    _rooms.c.label,
    _rooms.c.last_updated,
)
_MESSAGE_COLUMNS: Final = tuple(
    _messages.c[name]
    for name in ("uuid", "seq", "author", "text", "timestamp", "client_id", "edits", "deleted_at", "info")
)
_NOW: Final[BindParameter[float]] = bindparam("p_now", type_=Double())

_ROOM_ID: Final = select(_rooms.c.id).where(_rooms.c.uuid == bindparam("p_room"))
_ROOM_BY_UUID: Final = select(*_ROOM_COLUMNS).where(_rooms.c.uuid == bindparam("p_room"))
_ROOM_BY_KEY: Final = select(*_ROOM_COLUMNS).where(
    _rooms.c.type == bindparam("p_type"), _rooms.c.type_object == bindparam("p_type_object")
)
_ROOM_IDS: Final = select(_rooms.c.uuid, _rooms.c.id).where(
    _rooms.c.uuid.in_(bindparam("p_rooms", expanding=True))
)
_ALLOCATE_SEQS: Final = (
    update(_rooms)
    .where(_rooms.c.id == bindparam("p_room_id"))
    .values(
        next_seq=_rooms.c.next_seq + bindparam("p_count", type_=Integer()),
        last_updated=case((_rooms.c.last_updated > _NOW, _rooms.c.last_updated), else_=_NOW),
    )
    .returning(_rooms.c.next_seq)
)
_INSERT_MESSAGE: Final = insert(_messages)
_MESSAGE_FOR_UPDATE: Final = (
    select(_messages.c.id, _rooms.c.uuid.label("room_uuid"), *_MESSAGE_COLUMNS)
    .join(_rooms, _rooms.c.id == _messages.c.room_id)
    .where(_messages.c.uuid == bindparam("p_message"))
    .with_for_update(of=_messages)  # PostgreSQL: two gateways editing one message take turns
)
_UPDATE_MESSAGE: Final = update(_messages).where(_messages.c.id == bindparam("p_id"))
_LIVE_MESSAGES: Final = select(*_MESSAGE_COLUMNS).where(
    _messages.c.room_id == bindparam("p_room_id"), _messages.c.deleted_at.is_(None)
)
_LATEST: Final = (
    _LIVE_MESSAGES.order_by(_messages.c.seq.desc()).offset(bindparam("p_offset")).limit(bindparam("p_limit"))
)
_BEFORE: Final = (
    _LIVE_MESSAGES.where(_messages.c.seq < bindparam("p_seq"))
    .order_by(_messages.c.seq.desc())
    .limit(bindparam("p_limit"))
)
_AFTER: Final = (
    _LIVE_MESSAGES.where(_messages.c.seq > bindparam("p_seq"))
    .order_by(_messages.c.seq)
    .limit(bindparam("p_limit"))
)
_MEMBER: Final = (_members.c.room_id == bindparam("p_room_id"), _members.c.user == bindparam("p_user"))
_SEEN_MEMBER: Final = update(_members).where(*_MEMBER)
_REMOVE_MEMBER: Final = delete(_members).where(*_MEMBER)
_MEMBERS: Final = select(_members.c.user).where(_members.c.room_id == bindparam("p_room_id"))
# DELETE ... RETURNING: a row another gateway deleted first is not returned here.
_EXPIRE_MEMBERS: Final = (
    delete(_members)
    .where(_members.c.last_seen < bindparam("p_before"))
    .returning(_members.c.room_id, _members.c.user)
)
_ROOM_UUIDS: Final = select(_rooms.c.id, _rooms.c.uuid).where(
    _rooms.c.id.in_(bindparam("p_ids", expanding=True))
)


def _room_record(row: AnyRow) -> RoomRecord:
    return RoomRecord(row.uuid, row.type, row.type_object, row.label, row.last_updated)


def _message_record(row: AnyRow, room_uuid: str) -> MessageRecord:
    edits = tuple(Edit(entry["text"], entry["timestamp"]) for entry in json.loads(row.edits))
    return MessageRecord(
        uuid=row.uuid,
        room_uuid=room_uuid,
        seq=row.seq,
        author=row.author,
        text=row.text,
        timestamp=row.timestamp,
        client_id=row.client_id,
        edits=edits,
        deleted=row.deleted_at is not None,
        info=json.loads(row.info),
    )


def _room_id(connection: Connection, room_uuid: str) -> int:
    room_id = connection.execute(_ROOM_ID, {"p_room": room_uuid}).scalar()
    if room_id is None:
        raise NotFound(f"no chat room {room_uuid!r}")
    return int(room_id)


def _room(connection: Connection, room_uuid: str) -> RoomRecord | None:
    row = connection.execute(_ROOM_BY_UUID, {"p_room": room_uuid}).one_or_none()
    return None if row is None else _room_record(row)


def _find_room(connection: Connection, type: str, type_object: str) -> RoomRecord | None:
    row = connection.execute(_ROOM_BY_KEY, {"p_type": type, "p_type_object": type_object}).one_or_none()
    return None if row is None else _room_record(row)


def _create_room(connection: Connection, type: str, type_object: str, label: str, now: float) -> RoomRecord:
    # Another request of the same batch may have created it since the caller looked.
    found = _find_room(connection, type, type_object)
    if found is not None:
        return found
    row = {"uuid": str(uuid.uuid4()), "type": type, "type_object": type_object, "label": label}
    connection.execute(insert(_rooms), {**row, "created_at": now, "last_updated": now, "next_seq": 1})
    return RoomRecord(row["uuid"], type, type_object, label, float(now))


PostResult: TypeAlias = outcome.Outcome[tuple[MessageRecord, bool]]
_PostKey: TypeAlias = tuple[str, str, str]


def _post_many(connection: Connection, posts: list[_Post]) -> list[PostResult]:
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
    post: _Post, created: MessageRecord | None, known: dict[_PostKey, MessageRecord]
) -> PostResult:
    if created is not None:
        return outcome.Value((created, True))
    if post.key is not None and post.key in known:
        return outcome.Value((known[post.key], False))
    return outcome.Error(NotFound(f"no chat room {post.room_uuid!r}"))


def _fresh(posts: list[_Post], known: dict[_PostKey, MessageRecord]) -> list[int]:
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


def _allocate_seqs(connection: Connection, posts: list[_Post], room_ids: dict[str, int]) -> dict[str, int]:
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
    connection: Connection, posts: list[_Post], room_ids: dict[str, int]
) -> dict[_PostKey, MessageRecord]:
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
        record = _message_record(row, room_uuids[row.room_id])
        stored[record.room_uuid, record.author, row.client_id] = record
    return stored


def _keys(posts: list[_Post], room_ids: dict[str, int]) -> Iterator[_PostKey]:
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


def _new_record(post: _Post, seq: int) -> MessageRecord:
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


def _live_message_for_update(connection: Connection, message_uuid: str) -> AnyRow:
    """The message row with its id and room uuid, locked until commit; NotFound if absent or deleted."""
    row = connection.execute(_MESSAGE_FOR_UPDATE, {"p_message": message_uuid}).one_or_none()
    if row is None or row.deleted_at is not None:
        raise NotFound(f"no chat message {message_uuid!r}")
    return row


def _edit(
    connection: Connection, message_uuid: str, editor: str, text: str, now: float, room_uuid: str | None
) -> MessageRecord:
    row = _live_message_for_update(connection, message_uuid)
    if room_uuid is not None and row.room_uuid != room_uuid:
        raise NotFound(f"no chat message {message_uuid!r} in room {room_uuid!r}")
    if row.author != editor:
        raise Forbidden("only the author of a message may edit it")
    before = _message_record(row, row.room_uuid)
    edited = replace(before, text=text, edits=(*before.edits, Edit(before.text, float(now))))
    edits = json.dumps([{"text": edit.text, "timestamp": edit.timestamp} for edit in edited.edits])
    connection.execute(_UPDATE_MESSAGE, {"p_id": row.id, "text": text, "edits": edits})
    return edited


def _delete(
    connection: Connection, message_uuid: str, user: str, is_admin: bool, now: float
) -> MessageRecord:
    row = _live_message_for_update(connection, message_uuid)
    if row.author != user and not is_admin:
        raise Forbidden("only the author of a message or an administrator may delete it")
    # The edit history and the Info map go too: they may hold the very content being deleted.
    connection.execute(
        _UPDATE_MESSAGE, {"p_id": row.id, "text": "", "edits": "[]", "info": "{}", "deleted_at": now}
    )
    return replace(_message_record(row, row.room_uuid), text="", edits=(), deleted=True, info={})


def _page(
    connection: Connection, query: Select[*tuple[Any, ...]], room_uuid: str, **params: int
) -> list[MessageRecord]:
    """The room's live messages that ``query`` selects, as records in the order it returns them."""
    rows = connection.execute(query, {"p_room_id": _room_id(connection, room_uuid), **params}).all()
    return [_message_record(row, room_uuid) for row in rows]


def _latest(connection: Connection, room_uuid: str, offset: int, limit: int) -> list[MessageRecord]:
    return _page(connection, _LATEST, room_uuid, p_offset=offset, p_limit=limit)[::-1]


def _before(connection: Connection, room_uuid: str, seq: int, limit: int) -> list[MessageRecord]:
    return _page(connection, _BEFORE, room_uuid, p_seq=seq, p_limit=limit)[::-1]


def _after(connection: Connection, room_uuid: str, seq: int, limit: int) -> list[MessageRecord]:
    return _page(connection, _AFTER, room_uuid, p_seq=seq, p_limit=limit)


def _touch_member(connection: Connection, room_uuid: str, user: str, now: float) -> bool:
    member = {"p_room_id": _room_id(connection, room_uuid), "p_user": user}
    if connection.execute(_SEEN_MEMBER, {**member, "last_seen": now}).rowcount:
        return False
    connection.execute(insert(_members), {"room_id": member["p_room_id"], "user": user, "last_seen": now})
    return True


def _remove_member(connection: Connection, room_uuid: str, user: str) -> bool:
    member = {"p_room_id": _room_id(connection, room_uuid), "p_user": user}
    return bool(connection.execute(_REMOVE_MEMBER, member).rowcount)


def _member_list(connection: Connection, room_uuid: str) -> list[str]:
    room_id = _room_id(connection, room_uuid)
    return sorted(connection.execute(_MEMBERS, {"p_room_id": room_id}).scalars())


def _expire_members(connection: Connection, older_than: float) -> dict[str, list[str]]:
    removed = connection.execute(_EXPIRE_MEMBERS, {"p_before": older_than}).all()
    if not removed:
        return {}
    room_ids = sorted({row.room_id for row in removed})
    uuids = {row.id: row.uuid for row in connection.execute(_ROOM_UUIDS, {"p_ids": room_ids})}
    by_room: dict[str, list[str]] = {}
    for row in removed:
        by_room.setdefault(uuids[row.room_id], []).append(row.user)
    return {room: sorted(users) for room, users in by_room.items()}
