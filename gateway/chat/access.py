"""Who may join which room, and whether they may post there.

- ``GLOBAL``: authenticated users of profile *standard* or above.
- ``WORKSPACE`` (RoomTypeObject = workspace uuid): members of that workspace; posting needs
  the workspace's ``w`` permission, so read-only members can read but not post.
- ``USER`` (RoomTypeObject = the other user's login): only the two users; both open the same room.
- ``NODE`` (RoomTypeObject = node uuid): only when a :class:`NodeAccess` check allows: the HTTP
  callback to the platform, or, for development only, ``open``. Without either they are refused.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol
from urllib.parse import quote

from gateway import httpclient
from gateway.chat.protocol import GLOBAL, NODE, USER, WORKSPACE, RoomRef, user_room_key
from gateway.identity import Identity
from gateway.protocol import ErrorCode, ProtocolError

CACHE_SIZE: Final = 10000


@dataclass(frozen=True, slots=True)
class Grant:
    """What a successful access check yields: where the room is stored, and posting rights."""

    type: str
    type_object: str
    can_post: bool


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


class HttpNodeAccess:
    """Asks the platform: ``GET <url with {uuid}>`` with the user's own token.

    2xx means allowed; 401, 403 and 404 mean refused; anything else (or no answer in time) means
    the check is unavailable and is not cached. Answers are cached per (user, node) for
    ``cache_seconds``, in a bounded LRU.
    """

    def __init__(
        self,
        url_template: str,
        *,
        cache_seconds: float = 30.0,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if "{uuid}" not in url_template:
            raise ValueError("node_check_url must contain {uuid}")
        self._template = url_template
        self._ttl = cache_seconds
        self._timeout = timeout
        self._clock = clock
        self._cache: OrderedDict[tuple[str, str], tuple[bool, float]] = OrderedDict()

    async def allowed(self, identity: Identity, token: str, node_uuid: str) -> bool:
        key = (identity.sub, node_uuid)
        cached = self._cache.get(key)
        if cached is not None and cached[1] > self._clock():
            self._cache.move_to_end(key)
            return cached[0]
        answer = await self._ask(token, node_uuid)
        self._cache[key] = (answer, self._clock() + self._ttl)
        self._cache.move_to_end(key)
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return answer

    async def _ask(self, token: str, node_uuid: str) -> bool:
        url = self._template.replace("{uuid}", quote(node_uuid, safe=""))
        try:
            response = await httpclient.request(
                "GET", url, headers={"authorization": f"Bearer {token}"}, deadline=self._timeout
            )
        except httpclient.HttpError as exc:
            raise _unavailable(str(exc)) from None
        if 200 <= response.status < 300:
            return True
        if response.status in (401, 403, 404):
            return False
        raise _unavailable(f"the platform answered {response.status}")


def _unavailable(detail: str) -> ProtocolError:
    return ProtocolError(ErrorCode.NODE_CHECK_UNAVAILABLE, f"cannot check node access now ({detail[:100]})")


async def check_room(identity: Identity, token: str, room: RoomRef, nodes: NodeAccess) -> Grant:
    """The grant for ``room``, or ProtocolError(room_forbidden, ...) naming the rule."""
    if room.type == GLOBAL:
        if not identity.has_profile("standard"):
            raise _forbidden("the global room is for users of profile standard or above")
        return Grant(GLOBAL, room.type_object, can_post=True)
    if room.type == WORKSPACE:
        workspace = identity.workspace(room.type_object)
        if workspace is None:
            raise _forbidden("you are not a member of this workspace")
        return Grant(WORKSPACE, workspace.uuid, can_post=workspace.can_write)
    if room.type == USER:
        return Grant(USER, user_room_key(identity.user, room.type_object), can_post=True)
    if room.type == NODE:
        if not await nodes.allowed(identity, token, room.type_object):
            raise _forbidden("you cannot see this node")
        return Grant(NODE, room.type_object, can_post=True)
    raise ProtocolError(ErrorCode.UNKNOWN_ROOM_TYPE, f"rooms of type {room.type} cannot be joined")


def _forbidden(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.ROOM_FORBIDDEN, message)
