"""Identity-management events (``idm.ChangeEvent``): roles, ACLs, users and workspaces changed.

The platform picks *one* key to check, the first that applies, in this order: an ACL's RoleID
(ACLs on ``parameter:*`` and ``action:*`` are skipped), a Role's Uuid, a User's Login, a User's
Uuid (the session's ``sub``), a Workspace's UUID. The browser only reloads its workspaces when it
receives ``{"@type": "idm", ...}``, so the event goes out whole with that tag merged in; a User
in the form Cells v5 sends it (``pydio:*`` attributes and password fields removed,
``PoliciesContextEditable`` set).
"""

from __future__ import annotations

from dataclasses import dataclass
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
from gateway.identity import Identity

SKIPPED_ACL_PREFIXES: Final = ("parameter:", "action:")


PRIVATE_USER_FIELDS: Final = frozenset({"Password", "OldPassword"})
RESERVED_ATTRIBUTE_PREFIX: Final = "pydio:"


def route(event: JsonObject) -> list[Delivery]:
    audience = _audience(event)
    if audience is None:
        return []
    message = {**event, "@type": "idm"}
    if isinstance(event.get("User"), dict):
        message["User"] = public_user(event["User"])
    return [Delivery(message, (audience,))]


def public_user(user: JsonObject) -> JsonObject:
    """A User as Cells v5 shows it to browsers (``User.WithPublicData``)."""
    out = {k: v for k, v in user.items() if k not in PRIVATE_USER_FIELDS}
    attributes = user.get("Attributes")
    if isinstance(attributes, dict):
        kept = {k: v for k, v in attributes.items() if not k.startswith(RESERVED_ATTRIBUTE_PREFIX)}
        if kept:
            out["Attributes"] = kept
        else:
            out.pop("Attributes")
    out["PoliciesContextEditable"] = True
    return out


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


# ---------------------------------------------------------------------------------------------
# Which identities an event changes (cells identity: their access is recomputed)


@dataclass(frozen=True, slots=True)
class IdmChange:
    """Who an identity event may have changed the access of, and what it certainly took away."""

    logins: frozenset[str] = frozenset()
    subs: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()
    workspaces: frozenset[str] = frozenset()
    # Certain losses, applied before the recomputation returns: a deleted workspace; the
    # workspace an ACL deletion took from a role (given back if another role still grants it).
    deleted_workspace: str | None = None
    revoked: tuple[str, str] | None = None  # (role, workspace)

    def concerns(self, identity: Identity) -> bool:
        return (
            identity.user in self.logins
            or identity.sub in self.subs
            or not self.roles.isdisjoint(identity.roles)
            or any(ws.uuid in self.workspaces for ws in identity.workspaces)
        )

    def certain_losses(self, identity: Identity) -> frozenset[str]:
        """Uuids of the workspaces ``identity`` has lost for sure."""
        lost = set()
        if self.deleted_workspace is not None:
            lost.add(self.deleted_workspace)
        if self.revoked is not None and self.revoked[0] in identity.roles:
            lost.add(self.revoked[1])
        return frozenset(lost & {ws.uuid for ws in identity.workspaces})


def change_of(event: JsonObject) -> IdmChange | None:
    """What an idm event changes; None for events that change no one's access (LOGIN, READ...)."""
    kind = _text(event, "Type") or "CREATE"
    if kind not in ACCESS_CHANGES:
        return None
    acl, user = _object(event, "Acl"), _object(event, "User")
    role, workspace = _text(_object(event, "Role"), "Uuid"), _text(_object(event, "Workspace"), "UUID")
    acl_role, acl_workspace = _text(acl, "RoleID"), _text(acl, "WorkspaceID")
    deleting = kind == "DELETE"
    return IdmChange(
        logins=_set(_text(user, "Login")),
        subs=_set(_text(user, "Uuid")),
        roles=_set(role, acl_role),
        workspaces=_set(workspace, acl_workspace),
        deleted_workspace=workspace if deleting and workspace else None,
        revoked=(acl_role, acl_workspace) if deleting and acl_role and acl_workspace else None,
    )


ACCESS_CHANGES: Final = frozenset({"CREATE", "UPDATE", "DELETE"})


def _set(*values: str) -> frozenset[str]:
    return frozenset(v for v in values if v)
