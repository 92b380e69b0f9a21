"""Figures from what the orchestrator saw and what the load clients reported, and the final table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from bench.processes import CpuUse
from loadclient.histogram import merge, percentile_ms

WARMUP, SATURATION, FIXED_RATE = 0, 1, 2
LABEL_WIDTH: Final = 54
VALUE_WIDTH: Final = 12
RATIO_WIDTH: Final = 22  # "gateway/websockets" and room to breathe


@dataclass(frozen=True)
class PhaseRun:
    """What the orchestrator saw of one phase (the clients' reports complete it)."""

    events: int
    published: int
    started_us: int  # wall clock of the first publish
    seconds: float  # first publish until every session had every event (or the phase gave up)
    cpu: CpuUse
    complete: bool

    def summary(self) -> str:
        def pct(cpu: float) -> str:
            return f"{100 * cpu / self.seconds:.0f}%"

        outcome = "" if self.complete else ", INCOMPLETE"
        return (
            f"{self.published} events in {self.seconds:.2f} s{outcome} (CPU: server {pct(self.cpu.server)}, "
            f"load clients {pct(self.cpu.clients)}, other processes {pct(self.cpu.others)})"
        )


@dataclass(frozen=True)
class PhaseFigures:
    messages: int
    missing: int
    duplicates: int
    disorder: int
    seconds: float  # as PhaseRun.seconds: CPU shares of phases much shorter than a second are noise
    delivered_per_s: float  # messages / (last delivery - first publish)
    p50_ms: float | None
    p99_ms: float | None
    payload_bytes: float
    server_cpu_pct: float
    client_cpu_pct: float
    other_cpu_pct: float
    cpu_s_per_million: float | None
    complete: bool

    @property
    def errors(self) -> int:
        return self.missing + self.duplicates + self.disorder


@dataclass(frozen=True)
class ServerFigures:
    name: str
    subscribed: int
    failed: int
    connect_seconds: float
    connect_server_us: float  # server CPU per session opened and subscribed
    connect_client_us: float  # the load clients' CPU per session, to tell which side bounds opening
    rss_idle_kib: float
    closed: dict[str, int]  # close code -> sessions the server closed with it
    unexpected: int  # frames that were neither events nor control frames
    phases: list[PhaseFigures]

    @property
    def broken(self) -> int:
        return self.failed + sum(self.closed.values()) + self.unexpected

    @property
    def ok(self) -> bool:
        return all(p.complete and not p.errors for p in self.phases) and not self.broken


def phase_figures(run: PhaseRun, reports: list[dict[str, Any]], phase: int) -> PhaseFigures:
    parts = [r["phases"][phase] for r in reports]
    messages = sum(p["messages"] for p in parts)
    last_us = max((p["last_us"] for p in parts if p["messages"]), default=run.started_us)
    seconds = max((last_us - run.started_us) / 1e6, 1e-6)
    histogram = merge(p["histogram"] for p in parts)
    return PhaseFigures(
        messages=messages,
        missing=sum(p["missing"] for p in parts),
        duplicates=sum(p["duplicates"] for p in parts),
        disorder=sum(p["disorder"] for p in parts),
        seconds=run.seconds,
        delivered_per_s=messages / seconds,
        p50_ms=percentile_ms(histogram, 0.50),
        p99_ms=percentile_ms(histogram, 0.99),
        payload_bytes=sum(p["payload_bytes"] for p in parts) / max(messages, 1),
        server_cpu_pct=100 * run.cpu.server / run.seconds,
        client_cpu_pct=100 * run.cpu.clients / run.seconds,
        other_cpu_pct=100 * run.cpu.others / run.seconds,
        cpu_s_per_million=run.cpu.server / messages * 1e6 if messages else None,
        complete=run.complete,
    )


def merge_counts(reports: list[dict[str, Any]], key: str) -> dict[str, int]:
    merged: dict[str, int] = {}
    for report in reports:
        for name, count in report[key].items():
            merged[name] = merged.get(name, 0) + count
    return merged


# ---------------------------------------------------------------------------------------------
# The table


@dataclass(frozen=True)
class Row:
    label: str
    value: Callable[[ServerFigures], float | None]
    spec: str  # format spec of the value
    better: str = ""  # "higher" or "lower"; "" for diagnostics, which get no ratio
    idle: bool = False  # measured without events too (``--idle``)


def rows(sessions: int, rate: float) -> list[Row]:
    def sat(f: ServerFigures) -> PhaseFigures:
        return f.phases[SATURATION]

    def fix(f: ServerFigures) -> PhaseFigures:
        return f.phases[FIXED_RATE]

    return [
        Row(
            "delivered events/s, all sessions (saturation)",
            lambda f: sat(f).delivered_per_s,
            ",.0f",
            "higher",
        ),
        Row("latency p50 ms (saturation)", lambda f: sat(f).p50_ms, ".1f", "lower"),
        Row("latency p99 ms (saturation)", lambda f: sat(f).p99_ms, ".1f", "lower"),
        Row(f"latency p50 ms (fixed {rate:g} events/s)", lambda f: fix(f).p50_ms, ".1f", "lower"),
        Row(f"latency p99 ms (fixed {rate:g} events/s)", lambda f: fix(f).p99_ms, ".1f", "lower"),
        Row("RSS per idle session KiB", lambda f: f.rss_idle_kib, ".1f", "lower", idle=True),
        Row(
            f"open + subscribe {sessions} sessions s", lambda f: f.connect_seconds, ".2f", "lower", idle=True
        ),
        Row("server CPU µs per session opened", lambda f: f.connect_server_us, ".0f", "lower", True),
        Row("load client CPU µs per session opened", lambda f: f.connect_client_us, ".0f", "", True),
        Row(
            "server CPU-s per million delivered (saturation)",
            lambda f: sat(f).cpu_s_per_million,
            ".1f",
            "lower",
        ),
        Row("server CPU % of one core (saturation)", lambda f: sat(f).server_cpu_pct, ".0f"),
        Row("load client CPU % of one core (saturation)", lambda f: sat(f).client_cpu_pct, ".0f"),
        Row("other processes CPU % of one core (saturation)", lambda f: sat(f).other_cpu_pct, ".0f"),
        Row("message payload bytes (mean)", lambda f: sat(f).payload_bytes, ".0f"),
        Row("missing + duplicate + out-of-order deliveries", lambda f: sum(p.errors for p in f.phases), "d"),
        Row("sessions failed or closed; unexpected frames", lambda f: f.broken, "d", idle=True),
    ]


def rows_for(results: list[ServerFigures], sessions: int, rate: float) -> list[Row]:
    """The rows that were measured: without events (``--idle``), the connection figures only."""
    idle = any(not r.phases for r in results)
    return [row for row in rows(sessions, rate) if row.idle or not idle]


def figures(results: list[ServerFigures], sessions: int, rate: float) -> dict[str, Any]:
    """The table as data (``--json``): every row's value per server, and the first's ratio to each other."""
    table = []
    for row in rows_for(results, sessions, rate):
        values = [row.value(r) for r in results]
        ratios = {r.name: _ratio(values[0], values[i], row) for i, r in enumerate(results) if i}
        table.append({"label": row.label, "values": values, "ratios": ratios, "better": row.better})
    return {"servers": [r.name for r in results], "rows": table, "ok": all(r.ok for r in results)}


def render(results: list[ServerFigures], sessions: int, rate: float) -> str:
    """One column per server, then the first one's ratio to each other and which way is better."""
    names = [r.name for r in results]
    first = names[0]
    header = "figure".ljust(LABEL_WIDTH) + "".join(n.rjust(VALUE_WIDTH) for n in names)
    header += "".join(f"{first}/{n}".rjust(RATIO_WIDTH) for n in names[1:])
    if len(names) > 1:
        header += "  better"
    lines = [header, "-" * len(header)]
    for row in rows_for(results, sessions, rate):
        values = [row.value(r) for r in results]
        line = row.label.ljust(LABEL_WIDTH) + "".join(_cell(v, row.spec).rjust(VALUE_WIDTH) for v in values)
        line += "".join(_ratio(values[0], v, row).rjust(RATIO_WIDTH) for v in values[1:])
        if len(names) > 1:
            line += f"  {row.better}"
        lines.append(line.rstrip())
    return "\n".join(lines)


def _cell(value: float | None, spec: str) -> str:
    if value is None:
        return "n/a"
    return format(int(value) if spec == "d" else value, spec)


def _ratio(first: float | None, second: float | None, row: Row) -> str:
    if not row.better:
        return "-"
    if first is None or second is None or second == 0:
        return "n/a"
    return f"{first / second:.2f}"
