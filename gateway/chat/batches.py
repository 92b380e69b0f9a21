"""One write batch of the chat store, applied in its writer's thread: one transaction, one
SAVEPOINT per request (a refusal undoes only its own request), the batch's posts stored together.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Generic, TypeVar

import outcome
import trio
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from gateway.chat.faults import as_unavailable
from gateway.chat.posts import Post, post_many

T = TypeVar("T")


@dataclass(eq=False)
class Request(Generic[T]):
    """One write waiting for the writer; ``result`` is set in the writer's thread before ``done``."""

    op: Callable[[Connection], T]
    done: trio.Event = field(default_factory=trio.Event)
    result: outcome.Outcome[T] | None = None


def apply_all(connection: Connection, batch: list[Request[Any]]) -> None:
    """Apply every request of ``batch``, setting each one's result: the posts together, then the
    other writes in arrival order.

    No write in a batch can depend on a post of the same batch (a message's uuid is only known to
    anyone once its batch has committed), so the posts may go first.
    """
    batch_posts = [(request, request.op) for request in batch if isinstance(request.op, Post)]
    if batch_posts:
        apply_posts(connection, batch_posts)
    for request in batch:
        if not isinstance(request.op, Post):
            request.result = apply_one(connection, request.op)


def apply_posts(connection: Connection, posts: list[tuple[Request[Any], Post]]) -> None:
    """Store the batch's posts in one savepoint (``post_many``), or one by one if that fails."""
    if len(posts) > 1:
        together = in_savepoint(connection, partial(post_many, connection, [post for _, post in posts]))
        if isinstance(together, outcome.Value):
            for (request, _), result in zip(posts, together.value, strict=True):
                request.result = result
            return
    # One post, or posts that failed together (a client_id race with another gateway, or a bug):
    # each on its own, so that a failure stays with the post that caused it.
    for request, post in posts:
        request.result = apply_one(connection, post)


def apply_one(connection: Connection, op: Callable[[Connection], T]) -> outcome.Outcome[T]:
    """Run ``op`` in a savepoint; its failure rolls back only its own changes.

    A unique-constraint violation is retried once: it means another gateway inserted the same row
    (room, member, client_id) at the same moment, and on the second run the op finds that row.
    """
    result = in_savepoint(connection, partial(op, connection))
    if isinstance(result, outcome.Error) and isinstance(result.error, IntegrityError):
        result = in_savepoint(connection, partial(op, connection))
    return result


def in_savepoint(connection: Connection, work: Callable[[], T]) -> outcome.Outcome[T]:
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
