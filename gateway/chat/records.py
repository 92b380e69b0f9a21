"""What the chat store returns and raises. Pure: no SQL, no trio.

Exceptions::

    StoreError                 base of everything the store raises on purpose
    ├── StoreUnavailable       the database cannot be used now (locked, read-only, full, unreachable,
    │                          store stopped); try again later. The message is safe to show users.
    ├── NotFound               no such room or message (or the message is deleted)
    ├── Forbidden              this user may not edit or delete that message
    └── CreationLimited        this user created as many rooms as the last hour allows
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


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


class CreationLimited(StoreError):
    """The user created their hourly quota of rooms already."""
