"""What a load client checks in every message its sessions receive, and the report it makes.

Three checks, chosen by the spec: :class:`CountCheck` (here: only counts), ``PlanCheck`` (every
message against the oracle of a :class:`loadclient.plan.Plan`: the reliability tests,
:mod:`loadclient.oracle`) and ``MarkerCheck`` (every benchmark event exactly once and in order per
phase, with its latency: :mod:`loadclient.markers`). A check hands each session a checker whose
``on_message`` runs once per message received.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

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
    # Resume mode (loadclient.resume)
    gaps: int = 0  # {"@type": "gap"} answers: a resume the history could not serve
    drops: int = 0  # connections the sessions dropped on purpose (no close frame)
    resumes: int = 0  # subscribes with "since" the gateway accepted
    recovered: int = 0  # {"@type": "recovered"}: replays that ended
    replayed: int = 0  # events the recovered frames say were replayed
    split: int = 0  # messages of an event a drop cut in two, that the replay brought
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
            "gaps": self.gaps,
            "drops": self.drops,
            "resumes": self.resumes,
            "recovered": self.recovered,
            "replayed": self.replayed,
            "split": self.split,
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


def error_of(payload: bytes) -> str | None:
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
        error = error_of(payload)
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


def make_check(plan: dict[str, Any] | None, phases: list[int] | None, totals: Totals) -> Check:
    from loadclient.markers import MarkerCheck
    from loadclient.oracle import PlanCheck
    from loadclient.plan import Plan

    if plan is not None:
        return PlanCheck(Plan.from_json(plan), totals)
    if phases is not None:
        return MarkerCheck(phases, totals)
    return CountCheck(totals)


def now_us() -> int:
    return time.time_ns() // 1000
