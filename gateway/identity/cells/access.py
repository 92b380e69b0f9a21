"""What a Cells user may see, computed from the platform's facts as its own services do. Pure.

- Root ids -> internal paths as bus events spell them: a configured virtual root (``my-files`` ->
  ``personal/<login>``), ``DATASOURCE:<ds>`` -> ``<ds>``, else the root node's path.
- Root keys: Cells prefixes the content of a workspace of several roots with one segment per root
  (``<ds>`` for a data source, ``template-<id>`` for a virtual root, else the first 8 hex digits
  of md5(root uuid) + ``-`` + the root's name).
- ACLs flattened per node: of the user's roles, in order, the last that has ACLs on a node decides
  its mask; an ACL naming a workspace marks its node as a root of that workspace; a root whose mask
  denies is dropped, and a workspace left without roots with it.
- Sub-folder rules: every other node with a mask becomes a :class:`FolderRule` (deny, or read or
  not), applied to every node sent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from gateway import paths
from gateway.identity.cells.records import DATASOURCE_PREFIX, Acl, CellsUser, RootNode, WorkspaceGrant
from gateway.identity.model import FolderRule, Identity, Workspace

ACCESS_ACTIONS: Final = ("read", "write", "deny")
READ, WRITE, DENY = ACCESS_ACTIONS


def parse_virtual_roots(entries: Iterable[str]) -> dict[str, str]:
    """``["my-files=personal/{login}", ...]`` -> {root id: path template}."""
    return dict(entry.split("=", 1) for entry in entries)


def root_path(
    root_id: str, node: RootNode | None, login: str, virtual_roots: Mapping[str, str]
) -> str | None:
    """The internal path of a workspace root, as bus events spell it; None if it cannot be known."""
    template = virtual_roots.get(root_id)
    if template is not None:
        return paths.normalize(template.replace("{login}", login))
    if root_id.startswith(DATASOURCE_PREFIX):
        return paths.normalize(root_id[len(DATASOURCE_PREFIX) :]) or None
    if node is None or node.virtual or not node.path:
        return None
    return paths.normalize(node.path) or None


def root_key(root_id: str, node: RootNode | None, path: str) -> str:
    """The segment Cells puts before a root's content in a workspace of several roots."""
    if root_id.startswith(DATASOURCE_PREFIX) and "/" not in path:
        return root_id[len(DATASOURCE_PREFIX) :]
    if node is None or node.virtual:
        return f"template-{root_id}"
    digest = hashlib.md5(node.uuid.encode(), usedforsecurity=False).hexdigest()
    return f"{digest[:8]}-{node.name}"


def flatten(acls: Iterable[Acl], roles: Iterable[str]) -> dict[str, frozenset[str]]:
    """Node id -> the mask (set of access actions) that applies: the last role in order wins."""
    by_role: dict[str, dict[str, set[str]]] = {}
    for acl in acls:
        if acl.action in ACCESS_ACTIONS and acl.node:
            by_role.setdefault(acl.role, {}).setdefault(acl.node, set()).add(acl.action)
    masks: dict[str, frozenset[str]] = {}
    for role in roles:
        for node, actions in by_role.get(role, {}).items():
            masks[node] = frozenset(actions)
    return masks


def granted_workspaces(acls: Iterable[Acl], masks: Mapping[str, frozenset[str]]) -> dict[str, WorkspaceGrant]:
    """The workspaces the flattened ACLs open (uuid -> grant with root ids); slugs left empty."""
    roots: dict[str, list[str]] = {}
    for acl in acls:
        if acl.workspace and acl.node in masks and acl.action in (READ, WRITE):
            roots.setdefault(acl.workspace, [])
            if acl.node not in roots[acl.workspace]:
                roots[acl.workspace].append(acl.node)
    grants = {}
    for uuid, nodes in roots.items():
        kept = [n for n in nodes if DENY not in masks[n]]
        actions = set().union(*(masks[n] for n in kept)) if kept else set()
        permissions = ("r" if READ in actions else "") + ("w" if WRITE in actions else "")
        if kept and permissions:
            grants[uuid] = WorkspaceGrant(uuid, "", tuple(kept), permissions)
    return grants


@dataclass(slots=True)
class FolderAccess:
    """Sub-folder rules, and the workspaces hidden because a deny could not be placed."""

    rules: list[FolderRule] = field(default_factory=list)
    hidden_workspaces: set[str] = field(default_factory=set)
    unresolved: list[str] = field(default_factory=list)  # node ids whose deny hid a workspace


def folder_access(
    masks: Mapping[str, frozenset[str]],
    node_paths: Mapping[str, str | None],
    acls: Iterable[Acl],
    grants: Iterable[WorkspaceGrant],
) -> FolderAccess:
    """Rules for every masked node; a denying node without a path fails closed (workspace hidden)."""
    acls = list(acls)
    out = FolderAccess()
    for node, mask in masks.items():
        path = node_paths.get(node)
        hides = DENY in mask or READ not in mask
        if path is not None:
            out.rules.append(FolderRule(path, deny=DENY in mask, read=READ in mask))
        elif hides:
            out.unresolved.append(node)
            out.hidden_workspaces.update(_workspaces_of(node, acls, grants))
    return out


def _workspaces_of(node: str, acls: list[Acl], grants: Iterable[WorkspaceGrant]) -> set[str]:
    """Workspaces an unplaced rule may fall in: the ones its ACLs name, else its roles grant."""
    named = {a.workspace for a in acls if a.node == node and a.workspace}
    if named:
        return named
    roles = {a.role for a in acls if a.node == node}
    granted_by_roles = {a.workspace for a in acls if a.role in roles and a.workspace}
    return granted_by_roles & {g.uuid for g in grants} or {g.uuid for g in grants}


def workspace(
    grant: WorkspaceGrant,
    slug: str,
    root_nodes: Mapping[str, RootNode],
    login: str,
    virtual_roots: Mapping[str, str],
    rules: Iterable[FolderRule],
) -> Workspace | None:
    """The session's view of one workspace; None if none of its roots can be placed."""
    placed: list[tuple[str, str]] = []  # (path, key)
    for root_id in grant.root_ids:
        node = root_nodes.get(root_id)
        path = root_path(root_id, node, login, virtual_roots)
        if path is not None and path not in (p for p, _ in placed):
            placed.append((path, root_key(root_id, node, path)))
    if not placed:
        return None
    roots = tuple(p for p, _ in placed)
    keys = tuple(k for _, k in placed) if len(placed) > 1 else ()
    relevant = tuple(sorted((r for r in rules if _touches(r.path, roots)), key=lambda r: r.path))
    return Workspace(grant.uuid, slug, roots, grant.permissions, keys, relevant)


def _touches(path: str, roots: Iterable[str]) -> bool:
    """A rule matters to a workspace when it lies inside one of its roots, or above one."""
    return any(paths.is_within(path, root) or paths.is_within(root, path) for root in roots)


def identity(cells_user: CellsUser, workspaces: Iterable[Workspace]) -> Identity:
    """The Identity of a Cells user: no expiry (access is re-resolved on identity events instead)."""
    return Identity(
        user=cells_user.login,
        sub=cells_user.uuid,
        profile=cells_user.profile,
        roles=cells_user.roles,
        workspaces=tuple(workspaces),
        email=cells_user.email,
        display_name=cells_user.display_name,
        group_path=cells_user.group_path,
    )
