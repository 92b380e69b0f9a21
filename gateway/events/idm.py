"""Identity-management events (``idm.ChangeEvent``): roles, ACLs, users and workspaces changed.

The platform picks *one* key to check, the first that applies, in this order: an ACL's RoleID
(ACLs on ``parameter:*`` and ``action:*`` are skipped), a Role's Uuid, a User's Login, a User's
Uuid (the session's ``sub``), a Workspace's UUID. The browser only reloads its workspaces when it
receives ``{"@type": "idm", ...}``, so the event goes out whole with that tag merged in.
"""

from __future__ import annotations

from typing import Final

from gateway.events.model import (
    Audience,
    Delivery,
    JsonObject,
    ToRole,
    ToSub,
    ToUser,
    ToWorkspaceUuid,
)

SKIPPED_ACL_PREFIXES: Final = ("parameter:", "action:")


def route(event: JsonObject) -> list[Delivery]:
    audience = _audience(event)
    if audience is None:
        return []
    return [Delivery({**event, "@type": "idm"}, (audience,))]


def _audience(event: JsonObject) -> Audience | None:
    acl = _object(event, "Acl")
    role_id = _text(acl, "RoleID")
    if role_id and not _action_name(acl).startswith(SKIPPED_ACL_PREFIXES):
        return ToRole(role_id)
    if role_uuid := _text(_object(event, "Role"), "Uuid"):
        return ToRole(role_uuid)
    user = _object(event, "User")
    if login := _text(user, "Login"):
        return ToUser(login)
    if user_uuid := _text(user, "Uuid"):
        return ToSub(user_uuid)
    if workspace_uuid := _text(_object(event, "Workspace"), "UUID"):
        return ToWorkspaceUuid(workspace_uuid)
    return None


def _object(event: JsonObject, key: str) -> JsonObject:
    value = event.get(key)
    return value if isinstance(value, dict) else {}


def _text(obj: JsonObject, key: str) -> str:
    value = obj.get(key)
    return value if isinstance(value, str) else ""


def _action_name(acl: JsonObject) -> str:
    return _text(_object(acl, "Action"), "Name")
