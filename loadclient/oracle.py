"""The reliability tests' check: every message against the oracle of a stress plan.

Exactly once, in publish order per topic, only for the session's own workspaces and user, with the
paths rewritten as docs/PROTOCOL.md says (the oracle is :class:`loadclient.plan.Plan`).
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from loadclient.checks import Totals
from loadclient.plan import IDM, STAMP_PREFIX, TASKS, Plan, Shape


class PlanCheck:
    """The plan, indexed for checking messages: (topic, event number) -> what each audience gets."""

    def __init__(self, plan: Plan, totals: Totals) -> None:
        self.plan = plan
        self.totals = totals
        self.tree: dict[tuple[str, int], dict[str, Shape]] = {}
        self.users: dict[tuple[str, int], str] = {}
        self.counts: Counter[str] = Counter()  # messages per workspace uuid and per user
        self.topic_of: list[str] = []
        self.checkers: list[PlanChecker] = []
        self.latencies: list[list[int]] = [[]]  # µs, one list per phase
        for j in range(plan.events):
            topic, shapes, user = plan.expected(j)
            self.topic_of.append(topic)
            if user is not None:
                self.users[topic, j] = user
                self.counts[user] += 1
            else:
                self.tree[topic, j] = shapes
                self.counts.update(shapes.keys())

    def for_session(self, index: int) -> PlanChecker:
        checker = PlanChecker(self, index)
        self.checkers.append(checker)
        return checker

    def least(self) -> list[int]:
        return []

    def new_phase(self) -> None:
        self.latencies.append([])

    def report(self) -> dict[str, Any]:
        return {
            "expected": sum(c.expected for c in self.checkers),
            "missing": sum(max(0, c.expected - len(c.seen)) for c in self.checkers),
            "latency_ms": [_latency_summary(phase) for phase in self.latencies],
        }


class PlanChecker:
    """What one session received, checked message by message against the plan's oracle."""

    __slots__ = ("check", "expected", "last", "seen", "totals", "user", "workspaces")

    def __init__(self, check: PlanCheck, index: int) -> None:
        plan = check.plan
        self.check = check
        self.totals = check.totals
        self.user = plan.session_user(index)
        self.workspaces = {ws.uuid for ws in plan.session_workspaces(index)}
        self.expected = plan.session_expected_count(index, check.counts)
        self.seen: set[tuple[str, int, str]] = set()
        self.last: dict[str, int] = {}

    def on_message(self, payload: bytes, now_us: int) -> None:
        message = json.loads(payload)
        if message.get("@type") == "error":
            self.totals.errors[str(message.get("error"))] += 1
        elif "TaskUpdated" in message:
            task = message["TaskUpdated"]
            self._check_user(TASKS, task.get("ID", ""), task.get("TriggerOwner"))
        elif message.get("@type") == "idm":
            user = message.get("User", {})
            self._check_user(IDM, user.get("Uuid", ""), user.get("Login"))
        elif "Source" in message or "Target" in message:
            self._check_tree(message, now_us)
        else:
            self.totals.problem("malformed", payload[:200].decode(errors="replace"))

    def _check_user(self, topic: str, ident: str, owner: object) -> None:
        j = int(ident.split("-", 1)[1])
        if owner != self.user:
            self.totals.problem("cross_tenant", f"{self.user} got {topic} #{j} for {owner}")
        elif self.check.users.get((topic, j)) != self.user:
            self.totals.problem("unexpected", f"{self.user} got {topic} #{j}")
        else:
            self._count(topic, j, "")

    def _check_tree(self, message: dict[str, Any], now_us: int) -> None:
        source, target = message.get("Source"), message.get("Target")
        node = target or source
        if not isinstance(node, dict):
            self.totals.problem("malformed", f"{self.user} got a tree message without a node: {message}")
            return
        j = int(node["Uuid"].split("-", 1)[1])
        ws = json.loads(node["MetaStore"]["EventWorkspaceId"])
        shape = (message.get("Type", "CREATE"), source and source["Path"], target and target["Path"])
        topic_of = self.check.topic_of
        topic = topic_of[j] if 0 <= j < len(topic_of) else ""
        if ws not in self.workspaces:
            self.totals.problem("cross_tenant", f"{self.user} got tree #{j} for workspace {ws}")
        elif self.check.tree.get((topic, j), {}).get(ws) != shape:
            self.totals.problem("unexpected", f"{self.user} got {shape} for #{j} in {ws}")
        elif any(key.startswith("pydio:") for n in (source, target) if n for key in n.get("MetaStore", {})):
            self.totals.problem("unexpected", f"{self.user} got pydio: meta in #{j}")
        else:
            self._count(topic, j, ws)
            stamp = node.get("Etag", "")
            if stamp.startswith(STAMP_PREFIX):
                self.check.latencies[-1].append(now_us - int(stamp[len(STAMP_PREFIX) :]))

    def _count(self, topic: str, j: int, ws: str) -> None:
        key = (topic, j, ws)
        if key in self.seen:
            self.totals.problem("duplicates", f"{self.user} got {key} twice")
            return
        self.seen.add(key)
        if j < self.last.get(topic, -1):
            self.totals.problem("disorder", f"{self.user} got {topic} #{j} after #{self.last[topic]}")
        self.last[topic] = j
        self.totals.received += 1


def _latency_summary(values: list[int]) -> dict[str, float]:
    if not values:
        return {"count": 0, "p50": 0.0, "p99": 0.0, "max": 0.0}
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000

    return {"count": len(ordered), "p50": at(0.50), "p99": at(0.99), "max": ordered[-1] / 1000}
