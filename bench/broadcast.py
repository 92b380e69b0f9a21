"""Broadcast benchmark: the real gateway and two peers under the same workload, one table.

    python -m bench.broadcast [--sessions 1000] [--events 1000] [--batch 20] [--window 200]
                              [--rate 10] [--latency-seconds 5] [--clients 1]
                              [--only gateway|picows|websockets] [--json FILE]

The peers (:mod:`bench.peers`): picows on uvloop, and asyncio with ``websockets``.

For each server: start it as a subprocess on free loopback ports and wait for ``/readyz``; open
the sessions from a separate load-client process (:mod:`loadclient`), reading the server's
VmRSS before and after; then publish through the admin API in three phases: a short warm-up,
*saturation* (batches as fast as the slowest session keeps up, with at most ``--window`` events
in flight) and *fixed rate* (``--rate`` events/s for ``--latency-seconds``). Every session must
get every event once, in order; the run exits 1 when one did not. ``bench/README.md`` explains
how to read the table.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import resource
import secrets
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

from bench.processes import (
    HOST,
    ROOT,
    BenchError,
    CpuMeter,
    LoadClients,
    Server,
    ServerSpec,
    rss_kib,
    split,
)
from bench.report import (
    FIXED_RATE,
    SATURATION,
    WARMUP,
    PhaseRun,
    ServerFigures,
    figures,
    merge_counts,
    phase_figures,
    render,
)
from bench.workload import PUBLISH_PATH, WORKSPACE, publish_body
from gateway.identity.mint import mint_token

WARMUP_EVENTS: Final = 20
DRAIN_LIMIT: Final = 30.0  # a phase gives up when delivery goes on this long after the last publish
SETTLE: Final = 0.5  # seconds before reading VmRSS, so the server has finished its work
MIN_TICK: Final = 0.005  # the fixed-rate publisher wakes at most every 5 ms (then batches)
TOKEN_TTL: Final = 3600
SPARE_FILES: Final = 200  # descriptors beyond the sessions: listeners, logs, the database, pipes
BUSY_BOX: Final = 25.0  # % of a core used by other processes beyond which the run says so


@dataclass(frozen=True)
class Options:
    sessions: int
    events: int
    batch: int
    window: int
    rate: float
    latency_seconds: float
    clients: int
    only: str | None
    json: str | None
    idle: bool = False  # connect and measure memory only: no events

    @property
    def phase_sizes(self) -> list[int]:
        if self.idle:
            return []
        return [WARMUP_EVENTS, self.events, max(1, round(self.rate * self.latency_seconds))]


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.broadcast", description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--sessions", type=int, default=1000, help="subscribed sessions (default 1000)")
    add("--events", type=int, default=1000, help="events in the saturation phase (default 1000)")
    add("--batch", type=int, default=20, help="events per publish request in saturation (default 20)")
    add("--window", type=int, default=200, help="saturation: most events ahead of the slowest session")
    add("--rate", type=float, default=10.0, help="fixed-rate phase: events per second, each to every session")
    add("--latency-seconds", type=float, default=5.0, help="fixed-rate phase duration (default 5)")
    add("--clients", type=int, default=1, help="load-client processes sharing the sessions (default 1)")
    add("--only", choices=[spec.name for spec in SERVERS], help="benchmark one server only")
    add("--json", metavar="FILE", help="also write the table to FILE as JSON")
    add("--idle", action="store_true", help="only open the sessions and measure memory: no events")
    args = parser.parse_args(argv)
    if min(args.sessions, args.events, args.batch, args.clients) < 1 or args.rate <= 0:
        parser.error("--sessions, --events, --batch, --clients and --rate must be positive")
    if args.window < args.batch:
        parser.error("--window must be at least --batch")
    return Options(
        sessions=args.sessions,
        events=args.events,
        batch=args.batch,
        window=args.window,
        rate=args.rate,
        latency_seconds=args.latency_seconds,
        clients=args.clients,
        json=args.json,
        only=args.only,
        idle=args.idle,
    )


def gateway_argv(ws_port: int, admin_port: int) -> list[str]:
    script = Path(sys.executable).parent / "gateway"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "gateway"]
    return [*command, "serve", "--listen", f"{HOST}:{ws_port}", "--admin-listen", f"{HOST}:{admin_port}"]


def peer_argv(module: str) -> Callable[[int, int], list[str]]:
    def argv(ws_port: int, admin_port: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            module,
            "--listen",
            f"{HOST}:{ws_port}",
            "--admin-listen",
            f"{HOST}:{admin_port}",
        ]

    return argv


SERVERS: Final = (
    ServerSpec("gateway", gateway_argv),
    ServerSpec("picows", peer_argv("bench.peers.picows_peer")),
    ServerSpec("websockets", peer_argv("bench.peers.websockets_peer")),
)


# ---------------------------------------------------------------------------------------------
# Publishing and phases


class Publisher:
    """Batches to the publish API over one keep-alive connection."""

    def __init__(self, port: int, admin_key: str) -> None:
        self.conn = http.client.HTTPConnection(HOST, port, timeout=30)
        self.headers = {"Authorization": f"Bearer {admin_key}", "Content-Type": "application/json"}

    def publish(self, phase: int, first: int, stop: int) -> None:
        """Publish events ``first`` to ``stop - 1`` of ``phase``, stamped with the time right now."""
        body = publish_body(phase, range(first, stop), time.time_ns() // 1000)
        try:
            self.conn.request("POST", PUBLISH_PATH, body, self.headers)
            response = self.conn.getresponse()
            answer = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise BenchError(f"publish failed: {exc!r}") from None
        if response.status != 202:
            raise BenchError(f"publish refused ({response.status}): {answer[:300]!r}")

    def close(self) -> None:
        self.conn.close()


@dataclass(frozen=True)
class Target:
    """The server, its publisher and its clients: what a phase acts on."""

    server: Server
    publisher: Publisher
    clients: LoadClients


def run_phase(target: Target, phase: int, events: int, publish: Callable[[], int]) -> PhaseRun:
    """Run ``publish`` (which returns how many events it published) and wait for delivery."""
    meter = CpuMeter(target.server.pid, target.clients.pids)
    started_us, started = time.time_ns() // 1000, time.monotonic()
    published = publish()
    complete = published == events and target.clients.wait_progress(phase, events, DRAIN_LIMIT)
    return PhaseRun(events, published, started_us, time.monotonic() - started, meter.used(), complete)


def saturate(target: Target, phase: int, events: int, batch: int, window: int) -> int:
    """Publish batches as fast as the slowest session allows, keeping ``window`` events in flight."""
    published = 0
    while published < events:
        size = min(batch, events - published)
        if not target.clients.wait_progress(phase, published + size - window):
            break
        target.publisher.publish(phase, published, published + size)
        published += size
    return published


def at_rate(target: Target, phase: int, events: int, rate: float) -> int:
    """Publish event k at ``k / rate`` seconds, waking at most every MIN_TICK (then in one batch)."""
    started = time.monotonic()
    published, wake = 0, started
    while published < events:
        time.sleep(max(0.0, wake - time.monotonic()))
        now = time.monotonic()
        due = min(events, math.floor((now - started) * rate) + 1)
        target.publisher.publish(phase, published, due)
        published = due
        wake = max(started + published / rate, now + MIN_TICK)
    return published


def run_phases(target: Target, options: Options) -> list[PhaseRun]:
    sizes, batch, window = options.phase_sizes, options.batch, options.window
    plans: list[tuple[str, int, Callable[[], int]]] = [
        ("warm-up", WARMUP, lambda: saturate(target, WARMUP, sizes[WARMUP], batch, window)),
        ("saturation", SATURATION, lambda: saturate(target, SATURATION, sizes[SATURATION], batch, window)),
        (
            f"fixed rate {options.rate:g}/s",
            FIXED_RATE,
            lambda: at_rate(target, FIXED_RATE, sizes[FIXED_RATE], options.rate),
        ),
    ]
    runs = []
    for label, phase, publish in plans:
        run = run_phase(target, phase, sizes[phase], publish)
        say(target.server.name, f"{label}: {run.summary()}")
        runs.append(run)
    return runs


# ---------------------------------------------------------------------------------------------
# One server, end to end


def say(name: str, message: str) -> None:
    print(f"[{name}] {message}", flush=True)


def bench_server(spec: ServerSpec, options: Options, env: dict[str, str], log: IO[bytes]) -> ServerFigures:
    server = Server(spec, env, log)
    try:
        say(spec.name, f"ready in {server.wait_ready():.2f} s (pid {server.pid})")
        return measure(server, options, env)
    finally:
        server.stop()


def session_tokens(secret: str, sessions: int) -> list[str]:
    """One user per session, as in a real deployment: no server can verify a token once for all."""
    return [
        mint_token(secret, user=f"bench-{n}", workspaces=[WORKSPACE], ttl=TOKEN_TTL) for n in range(sessions)
    ]


def measure(server: Server, options: Options, env: dict[str, str]) -> ServerFigures:
    tokens = session_tokens(env["GATEWAY_JWT_SECRET"], options.sessions)
    time.sleep(SETTLE)
    rss_before = rss_kib(server.pid)
    url = f"ws://{HOST}:{server.ws_port}/ws"
    clients = LoadClients(url, tokens, options.sessions, options.clients, options.phase_sizes)
    try:
        meter = CpuMeter(server.pid, clients.pids)
        ready = clients.wait_ready()
        connect_cpu = meter.used()
        if ready.failed:
            raise BenchError(f"{ready.failed} sessions could not subscribe; the first: {ready.first_error}")
        say(server.name, f"{ready.subscribed} sessions subscribed in {ready.seconds:.2f} s")
        time.sleep(SETTLE)
        rss_idle = (rss_kib(server.pid) - rss_before) / max(ready.subscribed, 1)
        runs = []
        if not options.idle:
            publisher = Publisher(server.admin_port, env["GATEWAY_ADMIN_KEY"])
            runs = run_phases(Target(server, publisher, clients), options)
            publisher.close()
        reports = clients.reports()
    finally:
        clients.kill()
    return ServerFigures(
        name=server.name,
        subscribed=ready.subscribed,
        failed=ready.failed,
        connect_seconds=ready.seconds,
        connect_server_us=1e6 * connect_cpu.server / max(ready.subscribed, 1),
        connect_client_us=1e6 * connect_cpu.clients / max(ready.subscribed, 1),
        rss_idle_kib=rss_idle,
        closed=merge_counts(reports, "closes"),
        unexpected=sum(r["unexpected"] for r in reports),
        phases=[phase_figures(run, reports, index) for index, run in enumerate(runs)],
    )


# ---------------------------------------------------------------------------------------------
# Main


def server_env(options: Options) -> dict[str, str]:
    """The environment of both servers: fresh keys, room for every session from one address."""
    env = dict(os.environ)
    env.update(
        GATEWAY_JWT_SECRET=secrets.token_urlsafe(32),
        GATEWAY_ADMIN_KEY=secrets.token_urlsafe(24),
        GATEWAY_MAX_SESSIONS_PER_IP=str(options.sessions + 100),
        # Every load client is on loopback: one address for all of them.
        GATEWAY_MAX_PENDING_PER_IP=str(options.sessions + 100),
        GATEWAY_MAX_SESSIONS=str(max(20000, options.sessions + 100)),
        GATEWAY_LOG_LEVEL="warning",
        GATEWAY_DB_URL="sqlite://",  # chat history in memory: the bench measures events only
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
    )
    return env


def describe(options: Options) -> str:
    processes = len(split(options.sessions, options.clients))
    if options.idle:
        return f"bench.broadcast: {options.sessions} idle sessions from {processes} load-client process(es)"
    return (
        f"bench.broadcast: {options.sessions} sessions from {processes} load-client process(es), "
        "one workspace, UPDATE_PATH tree events\n"
        f"  saturation: {options.events} events, {options.batch} per publish, at most {options.window} "
        f"in flight; fixed rate: {options.rate:g} events/s for {options.latency_seconds:g} s"
    )


def conclusion(options: Options, results: list[ServerFigures]) -> tuple[str, int]:
    notes = []
    measured = [r.phases[SATURATION] for r in results if r.phases and r.phases[SATURATION].seconds >= 1]
    busy = max((p.other_cpu_pct for p in measured), default=0.0)
    if busy > BUSY_BOX:
        notes.append(
            f"note: other processes used up to {busy:.0f}% of a core during saturation; on a busy box the "
            "absolute figures drop (CPU-s per million delivered much less)"
        )
    broken = [r.name for r in results if not r.ok]
    if broken:
        notes.append(f"FAILED: not every session got every event exactly once on: {', '.join(broken)}")
        return "\n".join(notes), 1
    if not options.idle:
        notes.append(
            f"every session got every event exactly once, in order ({sum(options.phase_sizes)} events)"
        )
    return "\n".join(notes), 0


def raise_open_files_limit() -> int:
    """Raise this process's (and so the servers' and clients') descriptor limit to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    env = server_env(options)
    limit = raise_open_files_limit()
    print(describe(options) + f"\n  open files limit (RLIMIT_NOFILE): {limit}", flush=True)
    if limit < options.sessions + SPARE_FILES:  # each process (server, load client) holds one per session
        need = options.sessions + SPARE_FILES
        print(f"FAILED: {options.sessions} sessions need {need} descriptors per process; limit {limit}")
        return 1
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        for spec in SERVERS:
            if options.only not in (None, spec.name):
                continue
            with open(Path(tmp) / f"{spec.name}.log", "w+b") as log:
                try:
                    results.append(bench_server(spec, options, env, log))
                except BenchError as exc:
                    print(f"[{spec.name}] FAILED: {exc}", file=sys.stderr)
                    return 1
    print("\n" + render(results, options.sessions, options.rate) + "\n")
    if options.json:
        Path(options.json).write_text(json.dumps(figures(results, options.sessions, options.rate), indent=1))
    text, status = conclusion(options, results)
    print(text)
    return status


if __name__ == "__main__":
    sys.exit(main())
