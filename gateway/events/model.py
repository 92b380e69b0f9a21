"""What routing produces: a Delivery (one message) and its audiences (who may receive it).

A :class:`Delivery` says *what* to send (one JSON message, serialised once) and *to whom* (one or
more audiences, plus an optional per-identity check). The hub resolves audiences through its
indexes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from gateway.identity import Identity, Workspace

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


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message for the union of ``audiences``, minus identities ``allow`` refuses."""

    message: JsonObject
    audiences: tuple[Audience, ...]
    allow: Callable[[Identity], bool] | None = None


# Which workspaces cover a normalised node path: (workspace, matching root), deepest root first.
Covering = Callable[[str], Iterable[tuple[Workspace, str]]]
