"""Request/reply over NATS: one wildcard inbox per bus, one reply token per request.

The bus subscribes once to ``_INBOX.<random>.*``; a request is published with the reply subject
``_INBOX.<random>.<token>`` and waits for the first message on it, bounded by its timeout. With
``no_responders`` declared in CONNECT, a request that nobody listens to is answered at once by
the server with an empty message whose header block carries status 503.

Errors (both are ``BusError``, so code that handles a bus failure handles these)::

    NoResponders     nobody subscribes to the request's subject (503 status)
    RequestTimeout   no reply within the timeout, or no connection to the broker in that time
"""

from __future__ import annotations

import itertools
import secrets

import trio

from gateway.bus.base import BusError
from gateway.bus.nats.headers import STATUS_NO_RESPONDERS, parse_headers
from gateway.bus.nats.protocol import Msg


class NoResponders(BusError):
    """The server says nobody subscribes to the request's subject."""


class RequestTimeout(BusError):
    """No reply within the timeout (or no connection to the broker within it)."""


class _Waiter:
    """One request waiting for its reply."""

    __slots__ = ("done", "reply")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.reply: Msg | None = None


class Inbox:
    """The bus's reply inbox: a ``Subscriber`` that hands each reply to the request awaiting it.

    A reply for a token nobody waits for (its request timed out, or a reply to a request sent
    without waiting) is dropped.
    """

    def __init__(self, sid: int) -> None:
        self.prefix = f"_INBOX.{secrets.token_urlsafe(16)}."
        self.subject = self.prefix + "*"
        self.sid = sid
        self._tokens = itertools.count(1)
        self._waiting: dict[str, _Waiter] = {}

    def expect(self) -> tuple[str, _Waiter]:
        """A new reply subject and the waiter its reply will be handed to (``forget`` it after)."""
        token = str(next(self._tokens))
        waiter = self._waiting[token] = _Waiter()
        return self.prefix + token, waiter

    def forget(self, reply_to: str) -> None:
        self._waiting.pop(reply_to.removeprefix(self.prefix), None)

    def unanswered(self) -> str:
        """A reply subject nobody waits for: for requests whose answer does not matter."""
        return self.prefix + "0"

    def _offer(self, msg: Msg) -> None:
        waiter = self._waiting.pop(msg.subject.removeprefix(self.prefix), None)
        if waiter is not None:
            waiter.reply = msg
            waiter.done.set()

    def _reconnected(self) -> None:
        """Replies lost with the old connection are the requests' timeouts to report."""

    def _close(self) -> None:
        for waiter in self._waiting.values():
            waiter.done.set()
        self._waiting.clear()


def is_no_responders(msg: Msg) -> bool:
    """The server's "no responders" reply: no payload, a header block with status 503."""
    if msg.headers is None or msg.payload:
        return False
    try:
        return parse_headers(msg.headers).status == STATUS_NO_RESPONDERS
    except ValueError:
        return False
