"""What a driver (a test, a benchmark) and a load-client process say to each other. Pure.

The driver writes a :class:`Spec` to a file and starts ``python -m loadclient FILE``. The process
writes lines ``<kind> <JSON object>`` on stdout:

- ``ready``     once every session tried to subscribe (:class:`Ready`);
- ``progress``  whenever what the sessions received changes (:class:`Progress`);
- ``closed``    after the ``close`` command;
- ``report``    after the ``report`` command: the totals and what the check found.

It reads commands on stdin, one per line (the ``Command`` values). End of input ends the process.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class Command(StrEnum):
    PHASE = "phase"  # start a new latency phase (plan checks)
    CLOSE = "close"  # close every session: half with a close handshake, half by dropping TCP
    DROP = "drop"  # drop every connection at once (they reconnect in reconnect mode)
    REPORT = "report"  # write the report line


@dataclass(frozen=True)
class Spec:
    url: str
    tokens: list[str]  # session i subscribes with tokens[i % len(tokens)]
    sessions: int = 0  # 0: one session per token
    reconnect: bool = False
    resume: bool = (
        False  # subscribe with "recover", reconnect after any drop with "since" (implies reconnect)
    )
    drop_every: int = 0  # resume mode: drop the connection after 1..2*N messages, again and again (0: never)
    answer_pings: bool = True
    plan: dict[str, Any] | None = None  # a loadclient.plan.Plan: check every message against it
    phases: list[int] | None = None  # marked events per phase (loadclient.marker): check those
    connect_concurrency: int = 64  # handshakes in flight while opening: under any listen backlog

    @property
    def session_count(self) -> int:
        return self.sessions or len(self.tokens)

    def token(self, index: int) -> str:
        return self.tokens[index % len(self.tokens)]

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Spec:
        return cls(**json.loads(text))


@dataclass(frozen=True)
class Ready:
    subscribed: int
    failed: int
    seconds: float  # opening and subscribing every session
    first_error: str  # "-" when none failed


@dataclass(frozen=True)
class Progress:
    live: int = 0  # sessions connected and subscribed (in resume mode: and done replaying)
    received: int = 0  # checked messages, first copies only
    least: list[int] = field(default_factory=list)  # marker checks: fewest events any session has, per phase
    drops_left: int = 0  # resume mode: drops the sessions have yet to make


def line(kind: str, payload: dict[str, Any]) -> str:
    return f"{kind} {json.dumps(payload)}\n"


def parse_line(text: str) -> tuple[str, dict[str, Any]]:
    """``(kind, payload)`` of one line the process wrote."""
    kind, _, rest = text.strip().partition(" ")
    payload = json.loads(rest) if rest else {}
    if not isinstance(payload, dict):
        raise TypeError(f"not a load-client line: {text!r}")
    return kind, payload
