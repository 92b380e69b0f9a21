"""The chat history schema (rooms, members, messages) and how to connect to it.

One set of declarative models serves SQLite and PostgreSQL. ``migrations/versions`` creates the same
schema by hand; ``tests/test_chat_store.py`` checks that the two agree.

``make_engine`` is here rather than in the store because the migrations need the same connection
setup: on SQLite, transactions, savepoints and foreign keys only behave once it is applied.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, Literal

from sqlalchemy import (
    BigInteger,
    Double,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy import (
    text as sql_text,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import NullPool, StaticPool

# Explicit constraint names, so that migrations can refer to them on every backend.
NAMING_CONVENTION: Final = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

DEFAULT_BUSY_TIMEOUT: Final = 5.0
"""Seconds a write waits for a lock another connection holds before it fails (SQLite busy_timeout,
PostgreSQL lock_timeout)."""

PG_CONNECT_TIMEOUT: Final = 5
"""Seconds to reach PostgreSQL: a server that vanished fails the request, not the kernel's TCP timeout."""

# SQLite only auto-increments an INTEGER PRIMARY KEY (the rowid alias), not a BIGINT one.
BigId: Final = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Room(Base):
    """A chat room, found by (type, type_object); ``next_seq`` numbers its messages.

    ``created_by`` (None for rooms made before release 0003) counts against its creator's hourly
    cap; ``vacant_since`` is when its last member left while it held no message: the empty-room
    sweep deletes it ``chat_empty_room_ttl`` later, unless someone came back or posted meanwhile.
    """

    __tablename__ = "rooms"
    __table_args__ = (
        UniqueConstraint("type", "type_object"),
        # The creation cap counts a user's rooms of the last hour; the sweep reads the oldest vacancies.
        Index("ix_rooms_created_by", "created_by", "created_at"),
        Index("ix_rooms_vacant_since", "vacant_since"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    type: Mapped[str] = mapped_column(String(32))
    type_object: Mapped[str] = mapped_column(Text)
    label: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Double)
    last_updated: Mapped[float] = mapped_column(Double)
    next_seq: Mapped[int] = mapped_column(Integer, server_default=sql_text("1"))
    created_by: Mapped[str | None] = mapped_column(Text)
    vacant_since: Mapped[float | None] = mapped_column(Double)


class Member(Base):
    """A user present in a room; ``last_seen`` (wall-clock seconds) drives presence expiry."""

    __tablename__ = "members"
    # The presence sweep deletes by age across all rooms.
    __table_args__ = (Index("ix_members_last_seen", "last_seen"),)

    room_id: Mapped[int] = mapped_column(ForeignKey("rooms.id", ondelete="CASCADE"), primary_key=True)
    user: Mapped[str] = mapped_column(Text, primary_key=True)
    last_seen: Mapped[float] = mapped_column(Double)


class Message(Base):
    """One message. ``seq`` orders a room's history; a deleted message is a tombstone with no text."""

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("room_id", "seq"),
        UniqueConstraint("room_id", "author", "client_id"),
        # History pages read the live messages of one room in seq order.
        Index(
            "ix_messages_live",
            "room_id",
            "seq",
            sqlite_where=sql_text("deleted_at IS NULL"),
            postgresql_where=sql_text("deleted_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    room_id: Mapped[int] = mapped_column(ForeignKey("rooms.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    client_id: Mapped[str | None] = mapped_column(Text)
    author: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    timestamp: Mapped[float] = mapped_column(Double)
    edits: Mapped[str] = mapped_column(Text, server_default=sql_text("'[]'"))
    """JSON list of ``{"text", "timestamp"}``: each earlier text and when it was replaced."""
    info: Mapped[str] = mapped_column(Text, server_default=sql_text("'{}'"))
    """JSON object of strings: the client's ``Info`` map, sent back with the message."""
    deleted_at: Mapped[float | None] = mapped_column(Double)


Role = Literal["write", "read", "migrate"]
"""What an engine is for. On SQLite: writers take the write lock when they begin (``BEGIN IMMEDIATE``),
readers take a snapshot (``BEGIN``), and migrations run with foreign keys off, as SQLite requires for
table rebuilds."""


def normalise_url(url: str) -> URL:
    """Parse ``url``; plain ``postgresql://`` means psycopg 3, the driver the gateway ships."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise ValueError(f"unsupported chat database {backend!r}: use sqlite:/// or postgresql://")
    return parsed


def is_sqlite_memory(url: URL) -> bool:
    """True for an SQLite database that lives in one connection's memory."""
    database = url.database or ""
    return url.get_backend_name() == "sqlite" and (
        database in ("", ":memory:") or url.query.get("mode") == "memory"
    )


def make_engine(
    url: str | URL,
    *,
    role: Role = "write",
    pool_size: int = 1,
    busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
) -> Engine:
    """An engine for ``url`` set up for ``role``; creates an SQLite file's folder if missing.

    No connection is opened here, so a database that is down does not stop the caller from starting.
    """
    parsed = normalise_url(url) if isinstance(url, str) else url
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, role, pool_size, busy_timeout)
    return _postgresql_engine(parsed, role, pool_size, busy_timeout)


def _sqlite_engine(url: URL, role: Role, pool_size: int, busy_timeout: float) -> Engine:
    memory = is_sqlite_memory(url)
    if not memory:
        _sqlite_path(url).parent.mkdir(parents=True, exist_ok=True)
    pool: dict[str, Any]
    if memory:
        # One connection is the whole database: every thread must see it (callers serialise access).
        pool = {"poolclass": StaticPool}
    elif role == "migrate":
        pool = {"poolclass": NullPool}
    else:
        pool = {"pool_size": pool_size, "max_overflow": 0}
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": busy_timeout}, **pool)
    event.listen(engine, "connect", _sqlite_pragmas(busy_timeout, foreign_keys=role != "migrate"))
    begin = "BEGIN" if role == "read" else "BEGIN IMMEDIATE"
    event.listen(engine, "begin", lambda connection: connection.exec_driver_sql(begin))
    return engine


def _sqlite_path(url: URL) -> Path:
    """The file behind an SQLite URL, including ``file:PATH?...&uri=true`` URLs."""
    database = url.database or ""
    return Path(database.removeprefix("file:") if url.query.get("uri") == "true" else database)


def _sqlite_pragmas(busy_timeout: float, *, foreign_keys: bool) -> Callable[[Any, object], None]:
    """The "connect" listener that sets up each new SQLite connection."""

    def on_connect(dbapi_connection: Any, _record: object) -> None:
        # SQLAlchemy emits BEGIN itself (see the "begin" listener): the driver's own implicit BEGIN
        # skips SELECT and SAVEPOINT, which breaks snapshot reads and nested transactions.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            # WAL: readers never block the writer. FULL: a commit is on disk when it returns.
            _use_wal(cursor, busy_timeout)
            cursor.execute("PRAGMA synchronous = FULL")
            cursor.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
        finally:
            cursor.close()

    return on_connect


def _use_wal(cursor: Any, busy_timeout: float) -> None:
    """Put the database in WAL mode, which it keeps: in practice, once per new database file.

    Switching needs the file to itself for a moment and SQLite does not wait for that through
    busy_timeout: gateways opening a new file together would get "database is locked". So wait here.
    """
    if cursor.execute("PRAGMA journal_mode").fetchone()[0] in ("wal", "memory"):
        return
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


PG_DEAD_PEER: Final = 15


def _tcp_keepalive_args() -> dict[str, int]:
    """libpq options that bound how long a dead server can keep a query waiting."""
    return {
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 3,
        "tcp_user_timeout": PG_DEAD_PEER * 1000,
    }


def _postgresql_engine(url: URL, role: Role, pool_size: int, busy_timeout: float) -> Engine:
    connect_args: dict[str, Any] = {}
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT
    if role == "migrate":
        # An upgrade waits for another instance's upgrade as long as that takes.
        return create_engine(url, poolclass=NullPool, connect_args=connect_args)
    # Like SQLite's busy_timeout: a lock held elsewhere fails the batch instead of stalling the writer;
    # and no statement runs longer than a few of those.
    # The operator's own options come last, so their -c settings win.
    options = url.query.get("options", "")
    limits = f"-c lock_timeout={int(busy_timeout * 1000)} -c statement_timeout={int(busy_timeout * 3000)}"
    connect_args["options"] = f"{limits} {options}".strip()
    # A server that vanishes without closing the connection (a host down, a network cut) is noticed
    # in about PG_DEAD_PEER seconds, not after the kernel's retransmission timeout of minutes.
    # Query parameters of the URL are left alone: connect_args would override them.
    for name, value in _tcp_keepalive_args().items():
        if name not in url.query:
            connect_args[name] = value
    # pre_ping replaces connections the server dropped (restart, failover) before they are used.
    return create_engine(
        url, pool_size=pool_size, max_overflow=0, pool_pre_ping=True, connect_args=connect_args
    )
