"""A deterministic multi-tenant workload, and the oracle of what every session must receive.

Shared by the reliability tests, which publish the events, and by the load client
(:mod:`loadclient.checks`), which checks every message it receives against the oracle. The oracle is
written from docs/PROTOCOL.md, not from the gateway's routing code, so that it checks that code
instead of repeating it. Pure: no I/O, no trio, no asyncio.

Users own 1-3 workspaces each (some nested inside another: an event there reaches a session once
per workspace that covers it); sessions belong to users round-robin. Events are tree moves inside a
workspace and across two, deletions, moves of hidden files and of paths no workspace covers, meta
deletions, job tasks and identity changes, so that every routing rule decides something. Only
immediate event types are used (no debounce), so each topic's messages keep publish order.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Final

TREE: Final = "topic.pydio.tree.nodes.changes"
META: Final = "topic.pydio.meta.nodes.changes"
TASKS: Final = "topic.pydio.tasks.event"
IDM: Final = "topic.pydio.idm.event"
STAMP_PREFIX: Final = "ts:"  # Etag of published tree nodes: "ts:<publish time, µs since the epoch>"

Shape = tuple[str, str | None, str | None]
"""What a tree message must be: (Type, Source path, Target path), the paths as rewritten."""


@dataclass(frozen=True)
class Workspace:
    uuid: str
    slug: str
    root: str

    def claim(self) -> dict[str, Any]:
        return {"uuid": self.uuid, "slug": self.slug, "roots": [self.root], "permissions": "rw"}

    def rewrite(self, path: str | None) -> str | None:
        """The path as a session of this workspace sees it, or None if the node is not visible here."""
        if path is None or not (path == self.root or path.startswith(self.root + "/")):
            return None
        below = path[len(self.root) :]
        if any(part.startswith(".") for part in below.split("/") if part):
            return None
        return self.slug + below


@dataclass(frozen=True)
class Plan:
    """``sessions`` sessions of ``users`` users over ``workspaces`` base workspaces, and ``events``."""

    sessions: int
    events: int
    users: int
    workspaces: int
    seed: int = 1
    mixed: bool = True
    """False: every event is a move inside workspace 0, which every user has (latency tests)."""

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Plan:
        return cls(**raw)

    def to_json(self) -> dict[str, Any]:
        return {
            "sessions": self.sessions,
            "events": self.events,
            "users": self.users,
            "workspaces": self.workspaces,
            "seed": self.seed,
            "mixed": self.mixed,
        }

    # -- tenants ------------------------------------------------------------------------------

    @cached_property
    def base_workspaces(self) -> list[Workspace]:
        return [Workspace(f"ws-{k}", f"files-{k}", f"/ds/p{k}") for k in range(self.workspaces)]

    @cached_property
    def team_workspaces(self) -> dict[int, Workspace]:
        """Every third base workspace has a team workspace rooted inside it."""
        return {
            k: Workspace(f"ws-{k}-team", f"team-{k}", f"/ds/p{k}/team") for k in range(0, self.workspaces, 3)
        }

    @cached_property
    def all_workspaces(self) -> dict[str, Workspace]:
        found = [*self.base_workspaces, *self.team_workspaces.values()]
        return {ws.uuid: ws for ws in found}

    def user(self, u: int) -> str:
        return f"user-{u:04d}"

    def session_user(self, i: int) -> str:
        return self.user(i % self.users)

    @cached_property
    def user_workspaces(self) -> dict[str, tuple[Workspace, ...]]:
        owned: dict[str, tuple[Workspace, ...]] = {}
        for u in range(self.users):
            rng = random.Random(f"{self.seed}:user:{u}")
            if not self.mixed:
                owned[self.user(u)] = (self.base_workspaces[0],)
                continue
            count = min(self.workspaces, rng.randint(1, 3))
            chosen: list[Workspace] = []
            for k in sorted(rng.sample(range(self.workspaces), count)):
                chosen.append(self.base_workspaces[k])
                if k in self.team_workspaces and rng.random() < 0.5:
                    chosen.append(self.team_workspaces[k])
            owned[self.user(u)] = tuple(chosen)
        return owned

    def session_workspaces(self, i: int) -> tuple[Workspace, ...]:
        return self.user_workspaces[self.session_user(i)]

    # -- events -------------------------------------------------------------------------------

    def event(self, j: int, published_us: int = 0) -> tuple[str, dict[str, Any]]:
        """Event ``j`` as published on the bus: (topic, event)."""
        if not self.mixed:
            return TREE, _move(j, f"/ds/p0/in/f{j}.txt", f"/ds/p0/out/f{j}.txt", published_us)
        rng = random.Random(f"{self.seed}:event:{j}")
        k, m = rng.randrange(self.workspaces), rng.randrange(self.workspaces)
        base = f"/ds/p{k}/team" if k in self.team_workspaces and rng.random() < 0.4 else f"/ds/p{k}"
        kind = rng.random()
        if kind < 0.55:
            return TREE, _move(j, f"{base}/a/f{j}.txt", f"{base}/b/f{j}.txt", published_us)
        if kind < 0.65:
            return TREE, _move(j, f"{base}/a/f{j}.txt", f"/ds/p{m}/in/f{j}.txt", published_us)
        if kind < 0.70:
            return TREE, _delete(j, f"{base}/old/f{j}.txt", published_us)
        if kind < 0.73:
            return TREE, _move(j, f"{base}/.hidden/f{j}", f"{base}/.hidden/g{j}", published_us)
        if kind < 0.75:
            return TREE, _move(j, f"/ds/nowhere/f{j}", f"/ds/nowhere/g{j}", published_us)
        if kind < 0.83:
            return META, _delete(j, f"{base}/meta/f{j}.txt", published_us)
        owner = self.user(rng.randrange(self.users))
        if kind < 0.92:
            task = {"ID": f"t-{j}", "JobID": "copy", "Status": "Running", "TriggerOwner": owner}
            return TASKS, {"TaskUpdated": task, "Job": {"ID": "copy", "Owner": owner}}
        return IDM, {"Type": "UPDATE", "User": {"Uuid": f"u-{j}", "Login": owner, "GroupPath": "/"}}

    def expected(self, j: int) -> tuple[str, dict[str, Shape], str | None]:
        """(topic, {workspace uuid: tree message shape}, addressed user) for event ``j``."""
        topic, event = self.event(j)
        if topic in (TASKS, IDM):
            owner = event["TaskUpdated"]["TriggerOwner"] if topic == TASKS else event["User"]["Login"]
            return topic, {}, owner
        source, target = event.get("Source"), event.get("Target")
        source_path = source["Path"] if source else None
        target_path = target["Path"] if target else None
        shapes: dict[str, Shape] = {}
        for ws in self.all_workspaces.values():
            src, tgt = ws.rewrite(source_path), ws.rewrite(target_path)
            if src is not None and tgt is not None:
                shapes[ws.uuid] = ("UPDATE_PATH", src, tgt)
            elif src is not None:
                shapes[ws.uuid] = ("DELETE", src, None)
            elif tgt is not None:
                shapes[ws.uuid] = ("CREATE", None, tgt)
        return topic, shapes, None

    @cached_property
    def sessions_per_workspace(self) -> Counter[str]:
        return Counter(ws.uuid for i in range(self.sessions) for ws in self.session_workspaces(i))

    @cached_property
    def sessions_per_user(self) -> Counter[str]:
        return Counter(self.session_user(i) for i in range(self.sessions))

    def deliveries(self, j: int) -> int:
        """Messages all sessions together must receive for event ``j``."""
        _, shapes, user = self.expected(j)
        if user is not None:
            return self.sessions_per_user[user]
        return sum(self.sessions_per_workspace[uuid] for uuid in shapes)

    def session_expected_count(self, i: int, counts: Counter[str]) -> int:
        """Messages session ``i`` must receive, given ``counts`` of messages per workspace and user."""
        return sum(counts[ws.uuid] for ws in self.session_workspaces(i)) + counts[self.session_user(i)]


def _node(j: int, path: str, published_us: int) -> dict[str, Any]:
    meta = {"name": json.dumps(path.rsplit("/", 1)[-1]), "pydio:meta-data-source-name": json.dumps("ds1")}
    return {
        "Uuid": f"n-{j}",
        "Path": path,
        "Type": "LEAF",
        "Size": "1024",
        "Etag": f"{STAMP_PREFIX}{published_us}",
        "MetaStore": meta,
    }


def _move(j: int, source: str, target: str, published_us: int) -> dict[str, Any]:
    return {
        "Type": "UPDATE_PATH",
        "Source": _node(j, source, published_us),
        "Target": _node(j, target, published_us),
    }


def _delete(j: int, source: str, published_us: int) -> dict[str, Any]:
    return {"Type": "DELETE", "Source": _node(j, source, published_us)}
