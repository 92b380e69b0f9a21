"""Tree and meta events (``NodeChangeEvent``): per-workspace visibility, path rewrite, policies.

For each workspace whose root covers the node, one message: paths rewritten as the platform's
output filters do (``<slug>/<path below root>``; ``<slug>/<root key>/<path below root>`` in a
workspace of several roots; the root itself as ``<slug>/`` with ``MetaStore.ws_root``),
``MetaStore.EventWorkspaceId`` set to the JSON-encoded workspace uuid, every ``pydio:*`` meta
removed. A node is *visible* in a workspace when it lies at or below one of its roots, no segment
below that root starts with ``.`` (``.pydio`` included), and no sub-folder access rule of the
workspace hides it; both Source and Target are checked (the platform checks only the Target, and
so leaks the names of nodes moved out of, or deleted from, a folder the user may not see). Only
``Type``, ``Source`` and ``Target`` are forwarded, as the platform does.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

from gateway import paths
from gateway.events.model import Covering, Delivery, JsonObject, ToWorkspace
from gateway.identity import Identity, Workspace

CREATE: Final = "CREATE"
READ: Final = "READ"
UPDATE_PATH: Final = "UPDATE_PATH"
UPDATE_CONTENT: Final = "UPDATE_CONTENT"
UPDATE_META: Final = "UPDATE_META"
DELETE: Final = "DELETE"
UPDATE_USER_META: Final = "UPDATE_USER_META"
EVENT_TYPES: Final = frozenset(
    {CREATE, READ, UPDATE_PATH, UPDATE_CONTENT, UPDATE_META, DELETE, UPDATE_USER_META}
)
# Debounced per node uuid when they carry a Target; the others go at once.
DEBOUNCED_TYPES: Final = frozenset({CREATE, UPDATE_CONTENT, UPDATE_META})

RESERVED_META_PREFIX: Final = "pydio:"
META_POLICIES: Final = "pydio:meta-policies"
WORKSPACE_META: Final = "EventWorkspaceId"
# The platform flags a workspace root node (a JSON-encoded string, like every MetaStore value).
ROOT_META: Final = "ws_root"
ROOT_META_VALUE: Final = '"true"'


def event_type(event: JsonObject) -> str:
    """The event's type; CREATE is the enum's zero value, so the platform omits it."""
    value = event.get("Type") or CREATE
    return value if isinstance(value, str) else ""


def node_of(event: JsonObject, key: str) -> JsonObject | None:
    node = event.get(key)
    return node if isinstance(node, dict) else None


def node_uuids(event: JsonObject) -> list[str]:
    """The nodes an event is about: its Target's uuid, then its Source's (each once)."""
    found: list[str] = []
    for key in ("Target", "Source"):
        node = node_of(event, key)
        uuid = node.get("Uuid") if node else None
        if isinstance(uuid, str) and uuid and uuid not in found:
            found.append(uuid)
    return found


def route(event: JsonObject, covering: Covering) -> list[Delivery]:
    kind = event_type(event)
    if kind not in EVENT_TYPES or kind == READ:
        return []
    source, target = node_of(event, "Source"), node_of(event, "Target")
    allow = None
    if kind == UPDATE_USER_META:
        allow = meta_policy_check(source)
        source = None  # the platform never forwards the Source of a user-meta change
    source_path, target_path = _path(source), _path(target)
    roots = _roots_by_workspace(covering, source_path, target_path)
    deliveries = []
    for ws, (source_root, target_root) in roots.items():
        seen_source = _visible(ws, source_path, source_root)
        seen_target = _visible(ws, target_path, target_root)
        message = _message(
            kind,
            ws,
            source if seen_source else None,
            target if seen_target else None,
            source_root,
            target_root,
            has_target=target is not None,
        )
        if message is not None:
            deliveries.append(Delivery(message, (ToWorkspace(ws),), allow))
    return deliveries


def _path(node: JsonObject | None) -> str | None:
    if node is None:
        return None
    raw = node.get("Path")
    return paths.normalize(raw) if isinstance(raw, str) and raw else None


def _roots_by_workspace(
    covering: Covering, source_path: str | None, target_path: str | None
) -> dict[Workspace, tuple[str | None, str | None]]:
    """For each workspace touching either path: its deepest root covering source, and target."""
    found: dict[Workspace, tuple[str | None, str | None]] = {}
    if source_path is not None:
        for ws, root in covering(source_path):
            found.setdefault(ws, (root, None))
    if target_path is not None:
        for ws, root in covering(target_path):
            source_root, target_root = found.get(ws, (None, None))
            if target_root is None:
                found[ws] = (source_root, root)
    return found


def _visible(ws: Workspace, path: str | None, root: str | None) -> bool:
    if path is None or root is None:
        return False
    return not paths.has_hidden_segment(paths.relative_to(path, root)) and ws.can_read(path)


def _message(
    kind: str,
    ws: Workspace,
    source: JsonObject | None,
    target: JsonObject | None,
    source_root: str | None,
    target_root: str | None,
    *,
    has_target: bool,
) -> JsonObject | None:
    """The message for one workspace, or None when the workspace sees nothing of it."""
    out_source = _rewrite(source, ws, source_root) if source is not None else None
    out_target = _rewrite(target, ws, target_root) if target is not None else None
    if kind == UPDATE_PATH:
        if out_source is not None and out_target is not None:
            return {"Type": UPDATE_PATH, "Source": out_source, "Target": out_target}
        if out_target is not None:  # moved in from outside: a creation for this workspace
            return {"Target": out_target}
        if out_source is not None:  # moved out: a deletion for this workspace
            return {"Type": DELETE, "Source": out_source}
        return None
    if kind == DELETE:
        return {"Type": DELETE, "Source": out_source} if out_source is not None else None
    # CREATE, UPDATE_CONTENT, UPDATE_META, UPDATE_USER_META: about the Target when there is one.
    if has_target and out_target is None:
        return None
    if not has_target and out_source is None:
        return None
    message: JsonObject = {} if kind == CREATE else {"Type": kind}
    if out_source is not None:
        message["Source"] = out_source
    if out_target is not None:
        message["Target"] = out_target
    return message


def _rewrite(node: JsonObject, ws: Workspace, root: str | None) -> JsonObject:
    """A copy of ``node`` as the workspace shows it. Requires ``root`` to cover the node."""
    assert root is not None
    path = paths.normalize(node["Path"])
    assert path is not None
    relative = paths.relative_to(path, root)
    out = dict(node)
    out["Path"] = paths.join(ws.slug, ws.root_key(root), relative) + ("" if relative else "/")
    meta = node.get("MetaStore")
    clean = (
        {k: v for k, v in meta.items() if not k.startswith(RESERVED_META_PREFIX)}
        if isinstance(meta, dict)
        else {}
    )
    if not relative:
        clean[ROOT_META] = ROOT_META_VALUE
    clean[WORKSPACE_META] = json.dumps(ws.uuid)
    out["MetaStore"] = clean
    return out


# ---------------------------------------------------------------------------------------------
# UPDATE_USER_META: resource policies in Source.MetaStore["pydio:meta-policies"]

_READ_ACTIONS: Final = frozenset({2, "READ"})
_ANY_ACTIONS: Final = frozenset({0, "ANY", None})
_ALLOW_EFFECTS: Final = frozenset({1, "allow", "ALLOW"})


def meta_policy_check(source: JsonObject | None) -> Callable[[Identity], bool]:
    """Who may see a user-meta change: deny by default; any matching deny wins over allows.

    Policies are the platform's ResourcePolicy JSON (``Subject``, ``Action``, ``Effect``; enums as
    numbers or names, zero values omitted, so a missing Effect is *deny*). Allows count only for
    the READ action; denies count for READ and ANY. A policy with conditions cannot be evaluated
    here, so it never allows and, when it denies, it denies.
    """
    policies = _policies(source)
    allowed = set()
    denied = set()
    for policy in policies:
        subject = policy.get("Subject")
        if not isinstance(subject, str):
            continue
        action = _enum(policy.get("Action"))
        is_allow = _enum(policy.get("Effect")) in _ALLOW_EFFECTS
        conditional = bool(policy.get("JsonConditions"))
        if is_allow and action in _READ_ACTIONS and not conditional:
            allowed.add(subject)
        elif not is_allow and (action in _READ_ACTIONS or action in _ANY_ACTIONS):
            denied.add(subject)
    allowed_subjects, denied_subjects = frozenset(allowed), frozenset(denied)

    def allow(identity: Identity) -> bool:
        subjects = identity.policy_subjects
        return not (subjects & denied_subjects) and bool(subjects & allowed_subjects)

    return allow


def _enum(value: object) -> str | int | None:
    """An enum as the platform writes it (number or name); anything else counts as missing."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    return value


def _policies(source: JsonObject | None) -> list[dict[str, Any]]:
    meta = source.get("MetaStore") if source else None
    raw = meta.get(META_POLICIES) if isinstance(meta, dict) else None
    # MetaStore values are JSON-encoded; tolerate one more level of encoding.
    for _ in range(2):
        if not isinstance(raw, str):
            break
        try:
            raw = json.loads(raw)
        except (ValueError, RecursionError):
            return []
    if not isinstance(raw, list):
        return []
    return [p for p in raw if isinstance(p, dict)]
