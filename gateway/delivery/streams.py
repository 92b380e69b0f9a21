"""A stream: the frames one audience receives, in log order, shared by that audience's sessions.

The hub keeps one stream per audience that has a subscribed session (a workspace, a user, a role,
the admins...). Fan-out appends each delivery's frame once to the stream of each of its audiences;
a session reads the streams it belongs to from its own cursor (``feed``). Items stay until every
member has read past them, or until a member lagging too far behind is closed.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Generic, TypeVar

from gateway.identity import Identity

if TYPE_CHECKING:
    from gateway.delivery.log import Entry

Allow = Callable[[Identity], bool] | None
# (log offset, delivery number within that event, frame, per-identity check, the log entry)
Item = tuple[int, int, bytes, Allow, "Entry"]

M = TypeVar("M")


def _offset(item: Item) -> int:
    return item[0]


class Stream(Generic[M]):
    __slots__ = ("_ends", "items", "key", "members", "total")

    def __init__(self, key: Hashable) -> None:
        self.key = key
        self.members: set[M] = set()
        self.items: list[Item] = []
        self._ends: list[int] = []  # bytes appended up to and including each item
        self.total = 0  # bytes ever appended

    def __repr__(self) -> str:
        return f"<Stream {self.key!r}: {len(self.members)} members, {len(self.items)} items>"

    @property
    def last_offset(self) -> int:
        return self.items[-1][0] if self.items else 0

    def append(self, item: Item) -> None:
        self.items.append(item)
        self.total += len(item[2])
        self._ends.append(self.total)

    def index_after(self, cursor: int) -> int:
        """The index of the first item past ``cursor``."""
        items = self.items
        if not items or items[0][0] > cursor:
            return 0
        return bisect_right(items, cursor, key=_offset)

    def bytes_after(self, cursor: int) -> int:
        """The bytes of the items past ``cursor``: how far a member at ``cursor`` lags here."""
        i = self.index_after(cursor)
        if i >= len(self.items):
            return 0
        before = self._ends[i - 1] if i else self._ends[0] - len(self.items[0][2])
        return self.total - before

    def trim(self, cursor: int) -> None:
        """Forget the items every member has read (those up to ``cursor``)."""
        if self.items and self.items[-1][0] <= cursor:
            self.items.clear()
            self._ends.clear()
            return
        i = self.index_after(cursor)
        if i:
            del self.items[:i]
            del self._ends[:i]
