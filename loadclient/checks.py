"""What a load client checks in every message its sessions receive, and the report it makes.

Three checks, chosen by the spec: :class:`CountCheck` (only counts), :class:`PlanCheck` (every message
against the oracle of a :class:`loadclient.plan.Plan`: the reliability tests) and
:class:`MarkerCheck` (every benchmark event exactly once and in order per phase, with its latency).
A check hands each session a checker; ``on_message`` runs once per message received, so the marker
checker, the benchmark's hot path, costs a few microseconds.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from loadclient import histogram
from loadclient.marker import parse_marker
from loadclient.plan import IDM, STAMP_PREFIX, TASKS, Plan, Shape

MAX_EXAMPLES: Final = 10


@dataclass
class Totals:
    """Counts over every session of the process; every report starts with these."""

    received: int = 0  # checked messages, first copies only
    duplicates: int = 0
    disorder: int = 0
    cross_tenant: int = 0
    unexpected: int = 0
    malformed: int = 0
    other: int = 0  # messages a CountCheck saw
    errors: Counter[str] = field(default_factory=Counter)  # {"@type": "error"} messages, by error
    closes: Counter[int] = field(default_factory=Counter)  # connections the server ended, by close code
    refused: Counter[int] = field(default_factory=Counter)  # upgrades refused, by HTTP status
    connect_errors: int = 0
    subscriptions: int = 0  # successful subscribes, reconnections included
    examples: list[str] = field(default_factory=list)

    def problem(self, kind: str, detail: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(f"{kind}: {detail}")

    def report(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "duplicates": self.duplicates,
            "disorder": self.disorder,
            "cross_tenant": self.cross_tenant,
            "unexpected": self.unexpected,
            "malformed": self.malformed,
            "other": self.other,
            "errors": dict(self.errors),
            "closes": {str(code): n for code, n in self.closes.items()},
            "refused": {str(status): n for status, n in self.refused.items()},
            "connect_errors": self.connect_errors,
            "subscriptions": self.subscriptions,
            "examples": self.examples,
        }


class SessionChecker(Protocol):
    def on_message(self, payload: bytes, now_us: int) -> None: ...


class Check(Protocol):
    def for_session(self, index: int) -> SessionChecker: ...

    def least(self) -> list[int]:
        """Per phase, the fewest distinct events any session has (marker checks; else empty)."""
        ...

    def new_phase(self) -> None: ...

    def report(self) -> dict[str, Any]: ...


def _error_of(payload: bytes) -> str | None:
    """The error code of an ``{"@type": "error"}`` message, None for any other message."""
    if b'"error"' not in payload:
        return None
    message = json.loads(payload)
    if isinstance(message, dict) and message.get("@type") == "error":
        return str(message.get("error"))
    return None


# ---------------------------------------------------------------------------------------------
# Counting only


class CountCheck:
    """No expectation: count messages (and error messages by code)."""

    def __init__(self, totals: Totals) -> None:
        self.totals = totals

    def for_session(self, index: int) -> CountCheck:
        return self

    def on_message(self, payload: bytes, now_us: int) -> None:
        error = _error_of(payload)
        if error is not None:
            self.totals.errors[error] += 1
        else:
            self.totals.other += 1

    def least(self) -> list[int]:
        return []

    def new_phase(self) -> None:
        pass

    def report(self) -> dict[str, Any]:
        return {}


# ---------------------------------------------------------------------------------------------
# A stress plan


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


# ---------------------------------------------------------------------------------------------
# Benchmark markers


@dataclass
class PhaseTotals:
    """What all sessions of this process received in one phase."""

    messages: int = 0
    payload_bytes: int = 0
    first_us: int = 0
    last_us: int = 0
    histogram: list[int] = field(default_factory=histogram.new_histogram)

    def record(self, latency_us: int, size: int, now_us: int) -> None:
        self.messages += 1
        self.payload_bytes += size
        if not self.first_us:
            self.first_us = now_us
        self.last_us = now_us
        self.histogram[histogram.bucket(latency_us)] += 1


class MarkerCheck:
    """Every marked event of every phase, exactly once and in order, in every session."""

    def __init__(self, phase_sizes: list[int], totals: Totals) -> None:
        self.phase_sizes = phase_sizes
        self.totals = totals
        self.phases = [PhaseTotals() for _ in phase_sizes]
        self.checkers: list[MarkerChecker] = []
        self._least = [0] * len(phase_sizes)

    def for_session(self, index: int) -> MarkerChecker:
        checker = MarkerChecker(self)
        self.checkers.append(checker)
        return checker

    def least(self) -> list[int]:
        for phase, size in enumerate(self.phase_sizes):
            # Only phases under way are recomputed: this runs at every progress tick.
            if self._least[phase] < size and self.phases[phase].messages:
                self._least[phase] = min((c.distinct[phase] for c in self.checkers), default=0)
        return list(self._least)

    def new_phase(self) -> None:
        pass  # the phases are in the markers

    def report(self) -> dict[str, Any]:
        return {"phases": [self._phase_report(p) for p in range(len(self.phase_sizes))]}

    def _phase_report(self, phase: int) -> dict[str, Any]:
        totals = self.phases[phase]
        expected = self.phase_sizes[phase]
        return {
            "messages": totals.messages,
            "missing": sum(expected - c.distinct[phase] for c in self.checkers),
            "duplicates": sum(c.duplicates[phase] for c in self.checkers),
            "disorder": sum(c.disorder[phase] for c in self.checkers),
            "payload_bytes": totals.payload_bytes,
            "first_us": totals.first_us,
            "last_us": totals.last_us,
            "histogram": totals.histogram,
        }


class MarkerChecker:
    __slots__ = ("check", "disorder", "distinct", "duplicates", "last_seq", "seen")

    def __init__(self, check: MarkerCheck) -> None:
        sizes = check.phase_sizes
        self.check = check
        self.seen = [bytearray(n) for n in sizes]
        self.distinct = [0] * len(sizes)
        self.duplicates = [0] * len(sizes)
        self.disorder = [0] * len(sizes)
        self.last_seq = [-1] * len(sizes)

    def on_message(self, payload: bytes, now_us: int) -> None:
        found = parse_marker(payload)
        if found is None or found[0] >= len(self.seen) or found[1] >= len(self.seen[found[0]]):
            error = _error_of(payload)
            if error is not None:
                self.check.totals.errors[error] += 1
            else:
                self.check.totals.problem("unexpected", payload[:200].decode(errors="replace"))
            return
        phase, seq, published_us = found
        seen = self.seen[phase]
        if seen[seq]:
            self.duplicates[phase] += 1
        else:
            seen[seq] = 1
            self.distinct[phase] += 1
            self.check.totals.received += 1
        if seq < self.last_seq[phase]:
            self.disorder[phase] += 1
        self.last_seq[phase] = seq
        self.check.phases[phase].record(now_us - published_us, len(payload), now_us)


def make_check(plan: dict[str, Any] | None, phases: list[int] | None, totals: Totals) -> Check:
    if plan is not None:
        return PlanCheck(Plan.from_json(plan), totals)
    if phases is not None:
        return MarkerCheck(phases, totals)
    return CountCheck(totals)


def now_us() -> int:
    return time.time_ns() // 1000
