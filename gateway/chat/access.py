"""Who may open a NODE room, asked to the platform; and :func:`check_room`, the rules of
``gateway.chat.rules`` with that question answered.

A :class:`NodeAccess` check: the HTTP callback to the platform (Cells v5's own
``/a/n/node/{uuid}`` with ``identity = "cells"``), or, for development only, ``open``; without
either, NODE rooms are refused. The questions sent to the platform are bounded per user
(:class:`NodeCheckRates`): every JOIN of a fresh node would otherwise cost one outbound request.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Final, Protocol
from urllib.parse import quote

import trio

from gateway.chat.protocol import NODE, RoomRef
from gateway.chat.rules import Grant, forbidden, room_grant
from gateway.httpclient import HttpClient, HttpError
from gateway.identity import Identity
from gateway.protocol import ErrorCode, ProtocolError
from gateway.session import RateLimiters

log = logging.getLogger("gateway.chat")

CACHE_SIZE: Final = 10000
MAX_USERS: Final = 10000  # users whose node-check rate is remembered (least recently asking dropped)


class NodeAccess(Protocol):
    async def allowed(self, identity: Identity, token: str, node_uuid: str) -> bool:
        """True if the user may see the node; raise ProtocolError if nobody can tell now."""
        ...


class NodeRoomsDisabled:
    """The default: nobody said how to check nodes, so NODE rooms are refused."""

    async def allowed(self, identity: Identity, token: str, node_uuid: str) -> bool:
        raise ProtocolError(
            ErrorCode.NODE_ROOMS_DISABLED,
            "NODE rooms are disabled: the gateway has no node_check_url configured",
        )


class OpenNodeAccess:
    """Development only: every authenticated user may open every NODE room."""

    async def allowed(self, identity: Identity, token: str, node_uuid: str) -> bool:
        return True


class NodeCheckRates:
    """Node-access questions sent to the platform per user: ``rate`` per second sustained, ``burst``
    at once; over that, ``node_check_rate_limited`` (the session goes on). Answers from the cache
    cost nothing. One instance is shared by every check that asks the platform."""

    def __init__(self, rate: float, burst: int) -> None:
        self._rates = RateLimiters(rate, burst, MAX_USERS)

    def check(self, user: str, now: float) -> None:
        if not self._rates.allow(user, now):
            raise ProtocolError(
                ErrorCode.NODE_CHECK_RATE_LIMITED, "too many rooms of new nodes opened; slow down"
            )


class HttpNodeAccess:
    """Asks the platform: ``GET <url with {uuid}>`` with the user's own token.

    2xx means allowed; 401, 403 and 404 mean refused; anything else (or no answer in time) means
    the check is unavailable and is not cached. Answers, refusals included, are cached per (user,
    node) for ``cache_seconds``, in a bounded LRU; questions the cache cannot answer are bounded by
    ``rates``. In cells identity mode on Cells v5 the URL is Cells' own ``/a/n/node/{uuid}``.
    """

    def __init__(
        self,
        url_template: str,
        http: HttpClient,
        *,
        rates: NodeCheckRates,
        cache_seconds: float = 30.0,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        if "{uuid}" not in url_template:
            raise ValueError("node_check_url must contain {uuid}")
        self.url_template = url_template
        self._http = http
        self._rates = rates
        self._ttl = cache_seconds
        self._clock = clock
        self._cache: OrderedDict[tuple[str, str], tuple[bool, float]] = OrderedDict()

    async def allowed(self, identity: Identity, token: str, node_uuid: str) -> bool:
        key = (identity.sub, node_uuid)
        cached = self._cache.get(key)
        if cached is not None and cached[1] > self._clock():
            self._cache.move_to_end(key)
            return cached[0]
        self._rates.check(identity.sub, self._clock())
        answer = await self._ask(token, node_uuid)
        self._cache[key] = (answer, self._clock() + self._ttl)
        self._cache.move_to_end(key)
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return answer

    async def _ask(self, token: str, node_uuid: str) -> bool:
        url = self.url_template.replace("{uuid}", quote(node_uuid, safe=""))
        try:
            response = await self._http.request("GET", url, token=token)
        except HttpError as exc:
            raise _unavailable(str(exc)) from None
        if 200 <= response.status < 300:
            return True
        if response.status in (401, 403, 404):
            return False
        raise _unavailable(f"the platform answered {response.status}")


CELLS_NODE_ROUTE: Final = "/a/n/node/{uuid}"
FIRST_VERSION_WITH_NODE_ROUTE: Final = 5


class CellsNodeAccess:
    """cells identity: Cells v5 says itself whether a user may read a node (``GET /a/n/node/{uuid}``
    with their token); Cells v4 has no such route, so ``node_check_url`` if set, else refused.

    Cells' version comes from its discovery document at start; if Cells cannot tell yet, it is
    asked again at the next NODE room request.
    """

    def __init__(
        self,
        cells_url: str,
        version: Callable[[], Awaitable[str | None]],
        http: HttpClient,
        fallback: NodeAccess,
        *,
        rates: NodeCheckRates,
        cache_seconds: float,
    ) -> None:
        route = cells_url.rstrip("/") + CELLS_NODE_ROUTE
        self._rest = HttpNodeAccess(route, http, rates=rates, cache_seconds=cache_seconds)
        self._version = version
        self._fallback = fallback
        self._chosen: NodeAccess | None = None

    async def prepare(self) -> None:
        """Find out which check applies; says so in the log. Never raises for an unreachable Cells."""
        try:
            version = await self._version()
        except ProtocolError as exc:
            log.warning("cannot ask Cells its version yet (%s); NODE rooms decided at first use", exc.message)
            return
        if version is None:
            log.warning("Cells did not say its version; NODE rooms decided at first use")
            return
        if _major(version) >= FIRST_VERSION_WITH_NODE_ROUTE:
            self._chosen = self._rest
            log.info("Cells %s: NODE rooms checked with %s", version, CELLS_NODE_ROUTE)
        else:
            self._chosen = self._fallback
            what = "use node_check_url" if isinstance(self._fallback, HttpNodeAccess) else "are refused"
            log.info("Cells %s has no %s route: NODE rooms %s", version, CELLS_NODE_ROUTE, what)

    async def allowed(self, identity: Identity, token: str, node_uuid: str) -> bool:
        if self._chosen is None:
            await self.prepare()
        if self._chosen is None:
            raise _unavailable("Cells did not say its version")
        return await self._chosen.allowed(identity, token, node_uuid)


def _major(version: str) -> int:
    digits = re.match(r"v?(\d+)", version.strip())
    return int(digits.group(1)) if digits else 0


def _unavailable(detail: str) -> ProtocolError:
    return ProtocolError(ErrorCode.NODE_CHECK_UNAVAILABLE, f"cannot check node access now ({detail[:100]})")


async def check_room(identity: Identity, token: str, room: RoomRef, nodes: NodeAccess) -> Grant:
    """The grant for ``room`` (asking the node check for a NODE room), or room_forbidden naming the rule."""
    grant = room_grant(identity, room)
    if grant.type == NODE and not await nodes.allowed(identity, token, grant.type_object):
        raise forbidden("you cannot see this node")
    return grant
