"""Which database errors are faults of the database (retry later) and which are bugs (surface)."""

from __future__ import annotations

from typing import Final

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

from gateway.chat.records import StoreUnavailable

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
UNAVAILABLE: Final = "the chat history database is unavailable"
STOPPED: Final = "the chat history store is stopped; try again later"


def as_unavailable(exc: BaseException) -> StoreUnavailable | None:
    """The ``StoreUnavailable`` that ``exc`` amounts to, or None if ``exc`` is a programming error."""
    if isinstance(exc, PoolTimeoutError):
        return StoreUnavailable("the chat history is overloaded; try again later")
    if not isinstance(exc, DBAPIError) or not _is_fault(exc):
        return None
    detail = str(exc.orig).lower()
    reason = next((text for hint, text in _FAULT_MESSAGES if hint in detail), UNAVAILABLE)
    return StoreUnavailable(f"{reason}; try again later")


def unavailable_from(fault: BaseException) -> StoreUnavailable:
    """A new ``StoreUnavailable`` for a database fault (one per caller: tracebacks are per raise)."""
    unavailable = as_unavailable(fault) or StoreUnavailable(f"{UNAVAILABLE}; try again later")
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
