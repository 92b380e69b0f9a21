"""What routing produces: a Delivery (one message) and its audiences (who may receive it).

A :class:`Delivery` says *what* to send (one JSON message, serialised once) and *to whom* (one or
more audiences, plus an optional per-identity check). The hub resolves audiences through its
indexes; ``Delivery.reaches`` resolves them against one identity.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from gateway.identity import Identity, Workspace
from gateway.paths import ancestors_and_self

JsonObject = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToUser:
    login: str


@dataclass(frozen=True, slots=True)
class ToSub:
    sub: str


@dataclass(frozen=True, slots=True)
class ToRole:
    role: str


@dataclass(frozen=True, slots=True)
class ToAdmins:
    pass


@dataclass(frozen=True, slots=True)
class ToWorkspace:
    """Sessions holding exactly this workspace (same uuid, slug, roots and permissions)."""

    workspace: Workspace


@dataclass(frozen=True, slots=True)
class ToWorkspaceUuid:
    uuid: str


Audience = ToUser | ToSub | ToRole | ToAdmins | ToWorkspace | ToWorkspaceUuid


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


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message for the union of ``audiences``, minus identities ``allow`` refuses."""

    message: JsonObject
    audiences: tuple[Audience, ...]
    allow: Callable[[Identity], bool] | None = None

    def reaches(self, identity: Identity) -> bool:
        if not any(audience_matches(a, identity) for a in self.audiences):
            return False
        return self.allow is None or self.allow(identity)


# Which workspaces cover a normalised node path: (workspace, matching root), deepest root first.
Covering = Callable[[str], Iterable[tuple[Workspace, str]]]


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
