"""Real servers for integration tests, on loopback: nats-server and a throwaway PostgreSQL cluster.

Both come with the dev install as wheels (tests/engines.py says where, and what a test does
without one). PostgreSQL refuses to run as root, so as root the cluster runs as an unprivileged
user (through ``runuser``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVarTuple

import psycopg
import pytest
import trio
from sqlalchemy.engine import make_url

from tests import engines

START_TIMEOUT = 5.0
POLL = 0.005


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_until(condition: Callable[[], bool]) -> None:
    """Poll a condition that depends on an external process (the caller's fail_after bounds it)."""
    while not condition():  # noqa: ASYNC110 - nothing to wait on: the state is another process's
        await trio.sleep(POLL)


Args = TypeVarTuple("Args")


async def wait_until_async(condition: Callable[[*Args], Awaitable[bool]], *args: *Args) -> None:
    """``wait_until`` for ``condition(*args)``, which must be fetched (a monitoring endpoint, an HTTP API)."""
    while not await condition(*args):  # noqa: ASYNC110 - the state is another process's
        await trio.sleep(POLL)


# --- nats-server ---------------------------------------------------------------------------------

NATS_SERVER = engines.nats_server()
requires_nats = pytest.mark.engine("nats")


class NatsServer:
    """One nats-server process on a fixed loopback port: start, stop and start again."""

    def __init__(self, workdir: Path, args: list[str], port: int | None = None) -> None:
        self.port = port or free_port()
        self.monitor_port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self._args = args
        self._log = workdir / f"nats-{self.port}.log"
        self._process: trio.Process | None = None

    @property
    def running(self) -> bool:
        return self._process is not None

    async def start(self) -> None:
        assert NATS_SERVER is not None, engines.why_missing("nats")
        command = [NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.port), "-m", str(self.monitor_port)]
        with self._log.open("ab") as log:
            self._process = await trio.lowlevel.open_process(
                [*command, *self._args], stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        with trio.fail_after(START_TIMEOUT):
            while not await self._accepts():
                assert self._process.returncode is None, self._log.read_text()
                await trio.sleep(0.01)

    async def stop(self, *, graceful: bool = False) -> None:
        """Kill the server (as a crash would); ``graceful``: SIGTERM, which lets JetStream flush its store."""
        if self._process is not None:
            if graceful:
                self._process.terminate()
            else:
                self._process.kill()
            with trio.fail_after(START_TIMEOUT):
                await self._process.wait()
            self._process = None

    async def _accepts(self) -> bool:
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", self.monitor_port)
        except OSError:
            return False
        await stream.aclose()
        return True

    async def monitor(self, path: str) -> dict[str, Any]:
        """GET a monitoring endpoint (``/connz?subs=1`` ...) as JSON, over plain HTTP/1.0."""
        stream = await trio.open_tcp_stream("127.0.0.1", self.monitor_port)
        async with stream:
            await stream.send_all(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
            response = b""
            while chunk := await stream.receive_some():
                response += chunk
        result = json.loads(response.partition(b"\r\n\r\n")[2])
        assert isinstance(result, dict)
        return result


StartServer = Callable[..., Awaitable[NatsServer]]


@contextlib.asynccontextmanager
async def nats_servers(workdir: Path) -> AsyncIterator[StartServer]:
    """Start nats-server processes (extra CLI args, optional config text); all killed on exit.

    Skips the test when there is no nats-server binary (fails it under CI=true).
    """
    engines.require("nats")
    servers: list[NatsServer] = []

    async def start(*args: str, config: str | None = None) -> NatsServer:
        extra = list(args)
        if config is not None:
            path = workdir / f"nats-{len(servers)}.conf"
            path.write_text(config)
            extra += ["-c", str(path)]
        server = NatsServer(workdir, extra)
        servers.append(server)
        await server.start()
        return server

    try:
        yield start
    finally:
        with trio.CancelScope(shield=True):
            for server in servers:
                await server.stop()


# --- PostgreSQL ----------------------------------------------------------------------------------

PG_TIMEOUT = 60
CREATED_DATABASES: list[str] = []  # dropped at the end when the server is not a throwaway one


def as_postgres(argv: list[str]) -> list[str]:
    """As root, run as an unprivileged user: PostgreSQL refuses to run as root."""
    user = engines.postgres_user()
    return ["runuser", "-u", user, "--", *argv] if user else argv


class PostgresCluster:
    """A throwaway PostgreSQL cluster in a temporary folder, on a fixed loopback port.

    Durability is off (``fsync``, ``full_page_writes``): it holds test data only. ``stop`` and
    ``start`` keep the port and the data, as a restart of a real server does. Methods block: call
    them from a worker thread when an event loop is running.
    """

    def __init__(self) -> None:
        bin_dir = engines.postgres_bin()
        assert bin_dir is not None, engines.why_missing("postgres")
        self.root = Path(tempfile.mkdtemp(prefix="chat-pg-"))
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self._data = self.root / "data"
        self._pg_ctl = [str(bin_dir / "pg_ctl"), "-D", str(self._data), "-l", str(self.root / "log"), "-w"]
        self._initdb = [str(bin_dir / "initdb"), "-D", str(self._data), "-U", "postgres", "--auth=trust",
                        "--no-sync"]  # fmt: skip
        self.running = False

    def create(self) -> None:
        user = engines.postgres_user()
        if user is not None:
            shutil.chown(self.root, user)
        self._run(self._initdb)
        self.start()

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c full_page_writes=off"
        )
        self._run([*self._pg_ctl, "-o", options, "start"])
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """``fast``: disconnect every client and shut down cleanly; ``immediate``: as after a crash."""
        self._run([*self._pg_ctl, "-m", mode, "stop"])
        self.running = False

    def destroy(self) -> None:
        if self.running:
            subprocess.run(as_postgres([*self._pg_ctl, "-m", "immediate", "stop"]),
                           capture_output=True, timeout=PG_TIMEOUT, check=False)  # fmt: skip
            self.running = False
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        path = self.root / "log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _run(self, argv: list[str]) -> None:
        subprocess.run(as_postgres(argv), check=True, capture_output=True, timeout=PG_TIMEOUT)


@contextlib.contextmanager
def postgres_cluster(hint: str = "") -> Iterator[PostgresCluster]:
    """A running throwaway cluster, destroyed on exit; skips the test when none can be started
    (``hint``, added to the reason, says what else would do)."""
    reason = engines.why_missing("postgres")
    if reason is not None:
        engines.missing(reason + hint)
    cluster = PostgresCluster()
    try:
        cluster.create()
    except (OSError, LookupError, subprocess.SubprocessError) as exc:
        cluster.destroy()
        detail = getattr(exc, "stderr", b"") or b""
        engines.missing(f"PostgreSQL: cannot start a cluster: {exc} {detail.decode(errors='replace')[:300]}")
    try:
        yield cluster
    finally:
        cluster.destroy()


@contextlib.contextmanager
def postgres_admin_url() -> Iterator[str]:
    """A URL to a PostgreSQL server where new databases may be created.

    ``$GATEWAY_TEST_POSTGRES_URL`` when set (the databases created there are dropped on exit), else
    a throwaway cluster.
    """
    configured = os.environ.get("GATEWAY_TEST_POSTGRES_URL")
    if configured:
        yield configured
        with psycopg_connect(configured) as admin:
            for name in CREATED_DATABASES:
                admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        return
    with postgres_cluster(hint="; or set GATEWAY_TEST_POSTGRES_URL") as cluster:
        yield cluster.url


def psycopg_connect(url: str) -> psycopg.Connection[Any]:
    """A plain psycopg connection (autocommit) for an SQLAlchemy URL."""
    parsed = make_url(url)
    return psycopg.connect(
        host=parsed.host,
        port=parsed.port,
        user=parsed.username,
        password=parsed.password,
        dbname=parsed.database,
        options=str(parsed.query.get("options", "")),
        autocommit=True,
    )


def new_pg_database(admin_url: str) -> str:
    """A new, empty database (a quarter of a second: for tests that change database settings)."""
    name = f"chat_{uuid.uuid4().hex[:12]}"
    with psycopg_connect(admin_url) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    CREATED_DATABASES.append(name)
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def new_pg_schema(database_url: str) -> str:
    """The URL of a new, empty schema: a few milliseconds, where a database takes a quarter second."""
    schema = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg_connect(database_url) as connection:
        connection.execute(f"CREATE SCHEMA {schema}")
    url = make_url(database_url).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)
