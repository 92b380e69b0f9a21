"""The routing rules applied to one identity: the specification the hub is checked against.

``messages_for`` is what one session with a given identity must receive for an event (after
debouncing), computed from the pure rules alone, with no hub and no index.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from gateway.events import route
from gateway.events.model import (
    Audience,
    Covering,
    Delivery,
    JsonObject,
    ToAdmins,
    ToRole,
    ToSub,
    ToUser,
    ToWorkspace,
    ToWorkspaceUuid,
)
from gateway.identity import Identity, Workspace
from gateway.paths import ancestors_and_self


def messages_for(topic: str, event: JsonObject, identity: Identity) -> list[JsonObject]:
    """What one session with ``identity`` receives for this event (after debouncing)."""
    deliveries = route(topic, event, covering_from(identity.workspaces))
    return [d.message for d in deliveries if reaches(d, identity)]


def reaches(delivery: Delivery, identity: Identity) -> bool:
    if not any(audience_matches(a, identity) for a in delivery.audiences):
        return False
    return delivery.allow is None or delivery.allow(identity)


def audience_matches(audience: Audience, identity: Identity) -> bool:
    match audience:
        case ToUser(login):
            return identity.user == login
        case ToSub(sub):
            return identity.sub == sub
        case ToRole(role):
            return role in identity.roles
        case ToAdmins():
            return identity.is_admin
        case ToWorkspace(workspace):
            return workspace in identity.workspaces
        case ToWorkspaceUuid(uuid):
            return any(ws.uuid == uuid for ws in identity.workspaces)
    raise AssertionError(audience)  # pragma: no cover


def covering_from(workspaces: Iterable[Workspace]) -> Covering:
    """A Covering over a fixed set of workspaces (one identity's, or a test's)."""
    by_root: dict[str, list[Workspace]] = {}
    for ws in workspaces:
        for root in ws.roots:
            by_root.setdefault(root, []).append(ws)

    def covering(path: str) -> Iterator[tuple[Workspace, str]]:
        for candidate in ancestors_and_self(path):
            for ws in by_root.get(candidate, ()):
                yield ws, candidate

    return covering
