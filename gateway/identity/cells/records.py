"""Cells' REST answers, parsed into the facts identity resolution needs. Pure: JSON in, records out.

Shapes follow Cells' protojson (PascalCase field names, zero values omitted); anything that does
not fit raises :class:`ShapeError`, which the resolver reports as ``platform_unavailable``: a
gateway that misreads an answer must not guess who someone is.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from gateway.identity.model import PROFILES

DEFAULT_PROFILE: Final = "standard"  # Cells' own default when a user has no profile attribute
DATASOURCE_PREFIX: Final = "DATASOURCE:"


class ShapeError(ValueError):
    """A 2xx answer that is not what the endpoint documents."""


@dataclass(frozen=True, slots=True)
class CellsUser:
    uuid: str
    login: str
    profile: str
    roles: tuple[str, ...]  # in the platform's order: the last role wins a conflict
    group_path: str | None = None
    display_name: str | None = None
    email: str | None = None


@dataclass(frozen=True, slots=True)
class WorkspaceGrant:
    """A workspace a user may open, with its roots unresolved (ids such as ``my-files``)."""

    uuid: str
    slug: str
    root_ids: tuple[str, ...]
    permissions: str  # "r", "w" or "rw"


@dataclass(frozen=True, slots=True)
class RootNode:
    """A workspace root as ``POST /a/workspace`` returns it (``RootNodes``)."""

    uuid: str
    path: str
    name: str = ""
    virtual: bool = False  # a template such as my-files, resolved per user


@dataclass(frozen=True, slots=True)
class Acl:
    role: str
    action: str
    node: str
    workspace: str = ""


# -- identification ---------------------------------------------------------------------------


def userinfo(doc: Any) -> tuple[str, str | None]:
    """``GET /oidc/userinfo`` -> (user uuid, login if the claims carry it)."""
    obj = _object(doc, "userinfo")
    sub = obj.get("sub")
    if not isinstance(sub, str) or not sub:
        raise ShapeError("userinfo has no 'sub'")
    name = obj.get("name")
    return sub, name if isinstance(name, str) and name else None


def frontend_login(xml: bytes) -> str | None:
    """``GET /a/frontend/state``: the ``id`` of its ``<user>`` element (None: not logged in)."""
    try:
        for _, element in ElementTree.iterparse(_BytesStream(xml), events=("start",)):
            if element.tag == "user":
                login = element.get("id")
                return login or None
    except ElementTree.ParseError as exc:
        raise ShapeError(f"frontend state is not XML: {exc}") from None
    return None


class _BytesStream:
    """The minimal file object ``iterparse`` reads from."""

    def __init__(self, data: bytes) -> None:
        self._data, self._at = data, 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size < 0 else self._at + size
        chunk, self._at = self._data[self._at : end], min(end, len(self._data))
        return chunk


# -- users, workspaces, ACLs ------------------------------------------------------------------


def user(doc: Any) -> CellsUser:
    """``GET /a/user/{login}`` -> the user, their profile and their roles in order."""
    obj = _object(doc, "user")
    uuid, login = _text(obj, "Uuid", required=True), _text(obj, "Login", required=True)
    attributes = obj.get("Attributes") or {}
    if not isinstance(attributes, dict):
        raise ShapeError("user Attributes is not an object")
    profile = attributes.get("profile") or DEFAULT_PROFILE
    roles = tuple(dict.fromkeys(_text(r, "Uuid", required=True) for r in _list(obj, "Roles", "user")))
    return CellsUser(
        uuid=uuid,
        login=login,
        profile=profile if profile in PROFILES else "anon",  # unknown: the least privilege
        roles=roles,
        group_path=_text(obj, "GroupPath") or None,
        display_name=_optional(attributes, "displayName"),
        email=_optional(attributes, "email"),
    )


_ACCESS: Final = {"read": "r", "write": "w", "read,write": "rw", "write,read": "rw"}


def graph_state(doc: Any) -> list[WorkspaceGrant]:
    """``GET /a/graph/state/ws`` -> the workspaces the session may open, with their access."""
    obj = _object(doc, "graph state")
    accesses = obj.get("WorkspacesAccesses") or {}
    if not isinstance(accesses, dict):
        raise ShapeError("WorkspacesAccesses is not an object")
    grants = []
    for ws in _list(obj, "Workspaces", "graph state"):
        uuid = _text(ws, "UUID", required=True)
        permissions = _ACCESS.get(str(accesses.get(uuid, "")).replace(" ", ""))
        if permissions is None:
            continue  # listed without read or write: not open to this user
        roots = tuple(_strings(ws, "RootUUIDs"))
        grants.append(WorkspaceGrant(uuid, _text(ws, "Slug", required=True), roots, permissions))
    return grants


# uuid -> (slug, {root id: root node}): what ``POST /a/workspace`` says about workspaces.
Listing = Mapping[str, tuple[str, Mapping[str, RootNode]]]


def workspaces(doc: Any) -> dict[str, tuple[str, Mapping[str, RootNode]]]:
    """``POST /a/workspace`` -> {uuid: (slug, {root id: root node})}."""
    obj = _object(doc, "workspace collection")
    found: dict[str, tuple[str, Mapping[str, RootNode]]] = {}
    for ws in _list(obj, "Workspaces", "workspace collection"):
        nodes = ws.get("RootNodes") or {}
        if not isinstance(nodes, dict):
            raise ShapeError("RootNodes is not an object")
        roots = {key: root_node(key, node) for key, node in nodes.items()}
        found[_text(ws, "UUID", required=True)] = (_text(ws, "Slug", required=True), roots)
    return found


def root_node(key: str, doc: Any) -> RootNode:
    node = _object(doc, "root node")
    meta = node.get("MetaStore") or {}
    if not isinstance(meta, dict):
        raise ShapeError("MetaStore is not an object")
    return RootNode(
        uuid=_text(node, "Uuid") or key,
        path=_text(node, "Path"),
        name=_meta_string(meta.get("name")),
        virtual="resolution" in meta,
    )


def acls(doc: Any) -> list[Acl]:
    """``POST /a/acl`` -> the ACLs of the roles asked about."""
    obj = _object(doc, "ACL collection")
    found = []
    for entry in _list(obj, "ACLs", "ACL collection"):
        action = entry.get("Action") or {}
        if not isinstance(action, dict):
            raise ShapeError("ACL Action is not an object")
        found.append(
            Acl(
                role=_text(entry, "RoleID"),
                action=_text(action, "Name"),
                node=_text(entry, "NodeID"),
                workspace=_text(entry, "WorkspaceID"),
            )
        )
    return found


def stat_path(doc: Any) -> str:
    """``POST /a/tree/admin/stat`` -> the node's internal path."""
    node = _object(_object(doc, "stat").get("Node"), "stat node")
    path = _text(node, "Path")
    if not path:
        raise ShapeError("stat answered a node without a Path")
    return path


# -- helpers ------------------------------------------------------------------------------------


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ShapeError(f"{what}: expected a JSON object")
    return value


def _list(obj: dict[str, Any], key: str, what: str) -> Iterator[dict[str, Any]]:
    value = obj.get(key) or []
    if not isinstance(value, list):
        raise ShapeError(f"{what}: {key} is not a list")
    for item in value:
        yield _object(item, f"{what}: {key} entry")


def _text(obj: dict[str, Any], key: str, *, required: bool = False) -> str:
    value = obj.get(key, "")
    if not isinstance(value, str) or (required and not value):
        raise ShapeError(f"{key} must be a non-empty string" if required else f"{key} must be a string")
    return value


def _optional(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    return value if isinstance(value, str) and value else None


def _strings(obj: dict[str, Any], key: str) -> list[str]:
    value = obj.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ShapeError(f"{key} is not a list of strings")
    return value


def _meta_string(raw: object) -> str:
    """A MetaStore value is JSON; a string one is what Cells' GetStringMeta returns."""
    if not isinstance(raw, str):
        return ""
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return ""
    return value if isinstance(value, str) else ""
