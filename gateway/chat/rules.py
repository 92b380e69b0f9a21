"""Who may join which room. Pure: the platform's part (may this user see that node?) is asked by
``gateway.chat.access``.

- ``GLOBAL``: authenticated users of profile *standard* or above.
- ``WORKSPACE`` (RoomTypeObject = workspace uuid): members of that workspace; every member who may
  read it may post, as in Cells.
- ``USER`` (RoomTypeObject = the other user's login): only the two users; both open the same room.
- ``NODE`` (RoomTypeObject = node uuid): users who can see the node (the node check).
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.chat.protocol import GLOBAL, NODE, USER, WORKSPACE, RoomRef, user_room_key
from gateway.identity import Identity
from gateway.protocol import ErrorCode, ProtocolError


@dataclass(frozen=True, slots=True)
class Grant:
    """Where a room the user may open is stored. Members may all post. A NODE grant holds only once
    the node check allowed it."""

    type: str
    type_object: str


def room_grant(identity: Identity, room: RoomRef) -> Grant:
    """The grant for ``room`` by the rules above (NODE: subject to the node check), or ProtocolError."""
    if room.type == GLOBAL:
        if not identity.has_profile("standard"):
            raise forbidden("the global room is for users of profile standard or above")
        return Grant(GLOBAL, room.type_object)
    if room.type == WORKSPACE:
        workspace = identity.workspace(room.type_object)
        if workspace is None:
            raise forbidden("you are not a member of this workspace")
        return Grant(WORKSPACE, workspace.uuid)
    if room.type == USER:
        return Grant(USER, user_room_key(identity.user, room.type_object))
    if room.type == NODE:
        return Grant(NODE, room.type_object)
    raise ProtocolError(ErrorCode.UNKNOWN_ROOM_TYPE, f"rooms of type {room.type} cannot be joined")


def forbidden(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.ROOM_FORBIDDEN, message)
