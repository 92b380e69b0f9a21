"""``make bench``: every delivery-engine target, measured against the peers in the same run.

    python -m bench.targets [--quick]

Runs, one after the other (each prints its own full table as it goes):

1. ``bench.broadcast`` with 1,000 sessions: saturation and fixed rate (10 events/s);
2. ``bench.broadcast`` with 5,000 sessions: saturation (CPU per delivery, flat in sessions?) and
   the time to open and subscribe them;
3. ``bench.broadcast --idle`` with 10,000 sessions: memory per idle subscribed session;
4. ``bench.chat``: durable posts/s end to end, 100 members in the room.

Then prints one table: each target, the gateway's figure, each peer's, the ratio, and whether the
target is met. ``--quick`` runs each at a tenth of the size (a smoke run: the figures mean little).
Exits 1 when a run failed (a session missed an event); an unmet target is reported, not an error.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from bench import broadcast, chat

PEERS: Final = ("picows", "websockets")
Table = dict[str, Any]  # what ``bench.broadcast --json`` writes


@dataclass(frozen=True)
class Scale:
    sessions: int
    many_sessions: int
    idle_sessions: int
    events: int
    many_events: int
    chat_posts: int


FULL: Final = Scale(1000, 5000, 10_000, 1000, 200, 20_000)
QUICK: Final = Scale(100, 500, 1000, 100, 20, 2000)


@dataclass(frozen=True)
class Target:
    name: str
    run: str  # which run's table holds the figure
    row: str  # the start of the row's label
    better: str  # "higher" or "lower"
    bound: float | None = None  # the gateway's figure must be at most (lower) / at least (higher) this
    peer_ratio: dict[str, float] | None = None  # gateway/peer must beat this per peer (default: 1.0)


def targets(scale: Scale) -> list[Target]:
    return [
        Target(f"RSS per idle subscribed session, {scale.idle_sessions:,} sessions (KiB)", "idle",
               "RSS per idle session", "lower", bound=14.0),
        Target(f"open + subscribe {scale.many_sessions:,} sessions (s)", "many", "open + subscribe",
               "lower", bound=2.0),
        Target(f"server CPU-s per million deliveries, {scale.sessions:,} sessions", "base",
               "server CPU-s per million", "lower", bound=1.0, peer_ratio={}),
        Target(f"server CPU-s per million deliveries, {scale.many_sessions:,} sessions", "many",
               "server CPU-s per million", "lower", bound=1.0, peer_ratio={}),
        Target(f"publish->deliver p99 at 10 events/s, {scale.sessions:,} sessions (ms)", "base",
               "latency p99 ms (fixed", "lower", bound=20.0),
        Target(f"delivered events/s, {scale.sessions:,} sessions", "base", "delivered events/s",
               "higher", peer_ratio={"picows": 1.5, "websockets": 4.0}),
    ]  # fmt: skip


def run_broadcast(args: list[str], out: Path) -> Table | None:
    status = broadcast.main([*args, "--json", str(out)])
    table: Table = json.loads(out.read_text()) if out.exists() else {}
    return table if status == 0 and table else None


def figure(table: Table, row: str) -> dict[str, float | None]:
    """The values of the row whose label starts with ``row``, per server."""
    for entry in table["rows"]:
        if entry["label"].startswith(row):
            return dict(zip(table["servers"], entry["values"], strict=True))
    raise KeyError(row)


def verdict(target: Target, values: dict[str, float | None]) -> tuple[list[str], bool]:
    """The ratio cells and whether the gateway's value meets the target."""
    mine = values.get("gateway")
    cells, met = [], mine is not None
    for peer in PEERS:
        theirs = values.get(peer)
        if mine is None or theirs is None or theirs == 0:
            cells.append("n/a")
            continue
        ratio = mine / theirs
        cells.append(f"{ratio:.2f}")
        if target.peer_ratio is None or peer in target.peer_ratio:
            need = (target.peer_ratio or {}).get(peer, 1.0)
            met = met and (ratio >= need if target.better == "higher" else ratio <= need)
    if mine is not None and target.bound is not None:
        met = met and (mine <= target.bound if target.better == "lower" else mine >= target.bound)
    return cells, met


def goal(target: Target) -> str:
    parts = []
    if target.bound is not None:
        parts.append(("<= " if target.better == "lower" else ">= ") + f"{target.bound:g}")
    ratios = target.peer_ratio if target.peer_ratio is not None else dict.fromkeys(PEERS, 1.0)
    for peer, need in ratios.items():
        sign = ">=" if target.better == "higher" else "<="
        parts.append(
            f"{sign} {need:g}x {peer}" if need != 1.0 else f"{'above' if sign == '>=' else 'below'} {peer}"
        )
    return ", ".join(parts)


def render(rows: list[tuple[Target, dict[str, float | None]]], chat_rate: float | None, chat_ok: bool) -> str:
    def value(v: float | None) -> str:
        return "n/a" if v is None else (f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}")

    header = f"{'target':<62}{'gateway':>10}{'picows':>10}{'websockets':>12}"
    header += f"{'g/picows':>10}{'g/websockets':>14}  goal"
    lines = [header, "-" * (len(header) + 30)]
    met_all = True
    for target, values in rows:
        cells, met = verdict(target, values)
        met_all &= met
        lines.append(
            f"{target.name:<62}{value(values.get('gateway')):>10}{value(values.get('picows')):>10}"
            f"{value(values.get('websockets')):>12}{cells[0]:>10}{cells[1]:>14}  {goal(target)}: "
            + ("met" if met else "NOT MET")
        )
    chat_met = chat_rate is not None and chat_rate >= 5000 and chat_ok
    met_all &= chat_met
    lines.append(
        f"{'chat: durable posts/s end to end, 100 members per room':<62}{value(chat_rate):>10}"
        f"{'-':>10}{'-':>12}{'-':>10}{'-':>14}  >= 5,000: " + ("met" if chat_met else "NOT MET")
    )
    lines.append("\nevery target met" if met_all else "\nsome targets are not met: see the tables above")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.targets", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the size: a smoke run")
    scale = QUICK if parser.parse_args(argv).quick else FULL
    with tempfile.TemporaryDirectory(prefix="bench-targets-") as tmp:
        out = Path(tmp)
        base = ["--sessions", str(scale.sessions), "--events", str(scale.events)]
        many = ["--sessions", str(scale.many_sessions), "--events", str(scale.many_events)]
        idle = ["--idle", "--sessions", str(scale.idle_sessions)]
        runs: dict[str, Callable[[], Table | None]] = {
            "base": lambda: run_broadcast(base, out / "base.json"),
            "many": lambda: run_broadcast([*many, "--latency-seconds", "2"], out / "many.json"),
            "idle": lambda: run_broadcast(idle, out / "idle.json"),
        }
        tables: dict[str, Table] = {}
        for name, run in runs.items():
            print(f"\n=== {name} ===", flush=True)
            table = run()
            if table is None:
                print(f"bench.targets: the {name} run failed", file=sys.stderr)
                return 1
            tables[name] = table
        print("\n=== chat ===", flush=True)
        chat_status = chat.main(["--posts", str(scale.chat_posts), "--json", str(out / "chat.json")])
        chat_figures = json.loads((out / "chat.json").read_text()) if (out / "chat.json").exists() else {}
    rows = [(t, figure(tables[t.run], t.row)) for t in targets(scale)]
    print("\n" + render(rows, chat_figures.get("posts_per_s"), bool(chat_figures.get("ok"))))
    return 1 if chat_status else 0


if __name__ == "__main__":
    sys.exit(main())
