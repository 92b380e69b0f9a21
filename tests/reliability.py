"""Trio-side helpers of the reliability suite: the load client process, metrics, publishing, faults.

The tests drive real gateway processes (``tests/process.py``) with the load client
(:mod:`loadclient`) in a process of its own, read the gateway's ``/metrics`` and ``/proc``, and
inject faults with the tools a root shell has (tmpfs and bind mounts, network namespaces).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from loadclient.interface import Command, Progress, Ready, Spec, parse_line
from loadclient.plan import Plan
from tests.helpers import RawClient, admin_publish, http_request, token

ROOT = Path(__file__).resolve().parents[1]
UPGRADE_REQUEST = (
    "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
STALL_TIMEOUT = 30.0  # a wait on the load client fails when nothing moved for this long


# Tests against the real process measure real time. A bound on what they measure (latency, how
# soon something happened) is checked only in the timed variant, run by ``make stress``: on a
# shared machine such a bound is about the machine as much as about the gateway. What the quick
# variant checks holds on any machine; exact timings are checked in process, on a virtual clock.
TIMED = pytest.mark.parametrize(
    "timed", [pytest.param(False, id="quick"), pytest.param(True, id="timed", marks=pytest.mark.slow)]
)


def record(case: str, **figures: Any) -> None:
    """Append what a case measured to the file named by $RELIABILITY_FIGURES (JSON lines), if set."""
    target = os.environ.get("RELIABILITY_FIGURES")
    if target:
        with open(target, "a") as out:
            out.write(json.dumps({"case": case, **figures}) + "\n")


# ---------------------------------------------------------------------------------------------
# The load client process


@dataclass
class LoadClient:
    """A load-client process (:mod:`loadclient`), as a trio test sees it."""

    process: trio.Process
    ready: Ready | None = None
    progress: Progress = field(default_factory=Progress)
    closed: bool = False
    reports: list[dict[str, Any]] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    _changed: trio.Event = field(default_factory=trio.Event)

    @property
    def received(self) -> int:
        """Checked messages received (first copies)."""
        return self.progress.received

    @property
    def live(self) -> int:
        """Sessions connected and subscribed."""
        return self.progress.live

    async def read_stdout(self) -> None:
        assert self.process.stdout is not None
        buffer = b""
        async for chunk in self.process.stdout:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                self._on_line(line.decode())
            self._changed.set()
            self._changed = trio.Event()
        self._changed.set()

    async def read_stderr(self) -> None:
        assert self.process.stderr is not None
        async for chunk in self.process.stderr:
            self.stderr.extend(chunk.decode(errors="replace").splitlines())

    def _on_line(self, line: str) -> None:
        kind, payload = parse_line(line)
        if kind == "ready":
            self.ready = Ready(**payload)
        elif kind == "progress":
            self.progress = Progress(**payload)
        elif kind == "closed":
            self.closed = True
        elif kind == "report":
            self.reports.append(payload)

    async def wait_for(self, condition: Callable[[], bool], what: str, stall: float = STALL_TIMEOUT) -> None:
        """Wait until ``condition()``; fail when the client reports nothing new for ``stall`` seconds."""
        while not condition():
            if self.process.returncode is not None:
                raise AssertionError(
                    f"load client exited ({self.process.returncode}) before {what}: {self.stderr}"
                )
            with trio.move_on_after(stall) as scope:
                await self._changed.wait()
            if scope.cancelled_caught:
                raise AssertionError(
                    f"no progress for {stall} s waiting for {what} "
                    f"(received {self.received}, live {self.live}): {self.stderr[-20:]}"
                )

    async def wait_received(self, count: int, what: str) -> None:
        await self.wait_for(lambda: self.received >= count, what)

    async def command(self, command: Command) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(command.value.encode() + b"\n")

    async def report(self) -> dict[str, Any]:
        count = len(self.reports)
        await self.command(Command.REPORT)
        await self.wait_for(lambda: len(self.reports) > count, "the report")
        return self.reports[-1]

    async def close_sessions(self) -> None:
        """Close every session: half with a close handshake, half by dropping the connection."""
        await self.command(Command.CLOSE)
        await self.wait_for(lambda: self.closed, "the sessions to close")


@asynccontextmanager
async def load_client(
    url: str,
    tokens: list[str],
    workdir: Path,
    *,
    plan: Plan | None = None,
    reconnect: bool = False,
    resume: bool = False,
    drop_every: int = 0,
    answer_pings: bool = True,
    prefix: Sequence[str] = (),
) -> AsyncIterator[LoadClient]:
    """Start a load client with one session per token; yield once every session tried to subscribe.

    ``resume``: sessions resume after the last event they had whenever dropped, and drop their
    connection themselves after every 1..2*``drop_every`` messages (:mod:`loadclient.resume`).
    ``prefix`` goes before the command line (``ip netns exec NAME``, to run it elsewhere)."""
    spec = Spec(url, tokens, plan=plan.to_json() if plan else None, reconnect=reconnect, resume=resume,
                drop_every=drop_every, answer_pings=answer_pings)  # fmt: skip
    spec_file = workdir / f"loadclient-{time.monotonic_ns()}.json"
    spec_file.write_text(spec.to_json())
    process = await trio.lowlevel.open_process(
        [*prefix, sys.executable, "-m", "loadclient", str(spec_file)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    client = LoadClient(process)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.read_stdout)
            nursery.start_soon(client.read_stderr)
            await client.wait_for(lambda: client.ready is not None, "the sessions to subscribe", stall=120)
            yield client
            assert process.stdin is not None
            await process.stdin.aclose()
            with trio.move_on_after(10):
                await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()


def plan_tokens(plan: Plan) -> list[str]:
    """One token per session of the plan: its user, with that user's workspaces."""
    return [
        token(plan.session_user(i), workspaces=[ws.claim() for ws in plan.session_workspaces(i)])
        for i in range(plan.sessions)
    ]


async def raw_client(port: int, *, path: str = "/ws", jwt: str | None = None, rcvbuf: int = 0) -> RawClient:
    """A RawClient (it answers nothing by itself) on a real TCP connection to 127.0.0.1:port.

    With ``jwt``, it has done the handshake and is subscribed. ``rcvbuf`` shrinks the socket's
    receive buffer (before connecting, so that the TCP window is small too): a client that stops
    reading then fills up after a few kilobytes instead of megabytes.
    """
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    await sock.connect(("127.0.0.1", port))
    client = RawClient(trio.SocketStream(sock))
    if jwt is not None:
        await client.handshake(path)
        await client.send_json({"@type": "subscribe", "ack": True, "jwt": jwt})
        while not any(m.get("@type") == "subscribed" for m in client.texts()):
            await client.receive_some()
    return client


async def read_to_the_end(client: RawClient) -> None:
    """Read until the server's close frame (answered, then hang up) or the end of the stream."""
    from wsproto.connection import ConnectionState
    from wsproto.events import CloseConnection

    try:
        while not any(isinstance(e, CloseConnection) for e in client.events):
            if not await client.receive_some():
                break  # (wsproto reports the end of the stream as a close with 1006)
        close = next((e for e in client.events if isinstance(e, CloseConnection)), None)
        if close is not None and client.ws.state is ConnectionState.REMOTE_CLOSING:
            await client.stream.send_all(client.ws.send(close.response()))
    except trio.BrokenResourceError:
        pass  # reset by the server: the end as well
    finally:
        await trio.aclose_forcefully(client.stream)


# ---------------------------------------------------------------------------------------------
# Publishing


def cumulative_deliveries(plan: Plan) -> list[int]:
    """``result[j]``: messages all sessions must have received once events ``0..j-1`` are delivered."""
    totals = [0]
    for j in range(plan.events):
        totals.append(totals[-1] + plan.deliveries(j))
    return totals


async def publish_plan(
    admin_port: int,
    plan: Plan,
    client: LoadClient,
    *,
    start: int = 0,
    stop: int | None = None,
    batch: int = 500,
    window: int = 2,
    cumulative: list[int] | None = None,
) -> None:
    """Publish events ``start..stop-1`` in batches through the admin API; return once all arrived.

    At most ``window`` batches are in flight: the next one waits until the client has everything
    of the batch ``window`` places back, so a fast publisher cannot turn readers into slow
    consumers. Each tree event carries its publish time (for latency).
    """
    stop = plan.events if stop is None else stop
    cumulative = cumulative or cumulative_deliveries(plan)
    for first in range(start, stop, batch):
        settled = first - window * batch
        if settled > start:
            await client.wait_received(cumulative[settled], f"event {settled}")
        last = min(first + batch, stop)
        now_us = time.time_ns() // 1000
        body = {"events": [dict(zip(("topic", "event"), plan.event(j, now_us), strict=True))
                           for j in range(first, last)]}  # fmt: skip
        status, reply = await admin_publish(admin_port, body)
        assert (status, reply.get("published")) == (202, last - first), reply
    await client.wait_for(lambda: client.received >= cumulative[stop], f"all events up to {stop}")


# ---------------------------------------------------------------------------------------------
# Observing the gateway


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(admin_port: int) -> Samples:
    status, _, body = await http_request(admin_port, "GET", "/metrics")
    assert status == 200
    samples: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return samples


def metric(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass(frozen=True)
class Footprint:
    """What a gateway holds: sessions, trio tasks and file descriptors (from /proc and /metrics)."""

    sessions: float
    tasks: float
    fds: int
    fds_metric: float

    def __str__(self) -> str:
        return f"sessions={self.sessions:g} tasks={self.tasks:g} fds={self.fds} (metric {self.fds_metric:g})"


async def footprint(admin_port: int, pid: int) -> Footprint:
    """What the gateway holds now. Its descriptors are counted before the scrape opens a connection
    to it (its tasks, during the scrape: they include the one serving it)."""
    fds = open_fds(pid)
    samples = await scrape(admin_port)
    sessions = sum(v for (name, _), v in samples.items() if name == "gateway_sessions")
    return Footprint(
        sessions, metric(samples, "gateway_trio_tasks"), fds, metric(samples, "gateway_open_fds")
    )


async def eventually(check: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    """Poll an external process's state until ``check()`` holds; fail after ``within`` seconds."""
    deadline = trio.current_time() + within
    while not await check():
        if trio.current_time() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        await trio.sleep(0.05)


async def settle_footprint(admin_port: int, pid: int, baseline: Footprint, within: float = 15) -> Footprint:
    """Wait until the gateway is back to ``baseline`` (or the deadline passes); return what it holds."""
    latest = baseline

    async def back() -> bool:
        nonlocal latest
        latest = await footprint(admin_port, pid)
        return (latest.sessions, latest.tasks, latest.fds) == (0, baseline.tasks, baseline.fds)

    with trio.move_on_after(within):
        await eventually(back, within + 1, "the gateway to release every session")
    return latest


# ---------------------------------------------------------------------------------------------
# Faults that need root: mounts and network namespaces


def mount_problem(scratch: Path) -> str | None:
    """None when this process can mount a tmpfs and a read-only bind mount (tried in ``scratch``),
    else why not. Synchronous, for fixtures: a skip raised inside trio loses its reason."""
    if os.geteuid() != 0:
        return "needs root (mount)"
    probe = scratch / "mount-probe"
    probe.mkdir(parents=True, exist_ok=True)
    for argv in (["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)], ["umount", str(probe)],
                 ["mount", "--bind", str(probe), str(probe)], ["mount", "-o", "remount,bind,ro", str(probe)],
                 ["umount", str(probe)]):  # fmt: skip
        try:
            result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=10)
        except OSError as exc:
            return f"{argv[0]}: {exc}"
        if result.returncode != 0:
            subprocess.run(["umount", "-l", str(probe)], capture_output=True, check=False, timeout=10)
            return f"{' '.join(argv[:3])}: {result.stderr.strip()}"
    return None


def netns_problem() -> str | None:
    """None when this process can create network namespaces and veth pairs, else why not."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return "needs root and iproute2"
    name = f"gwprobe{os.getpid() % 100_000}"
    veth = ["ip", "link", "add", f"{name}h", "type", "veth", "peer", "name", f"{name}p", "netns", name]
    steps = (["ip", "netns", "add", name], veth)
    try:
        for argv in steps:
            result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=10)
            if result.returncode != 0:
                return f"{' '.join(argv[:3])}: {result.stderr.strip()}"
        return None
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False, timeout=10)


async def run(*argv: str) -> None:
    """Run a system command; fail with its stderr."""
    result = await trio.run_process(list(argv), capture_stdout=True, capture_stderr=True, check=False)
    if result.returncode != 0:
        raise OSError(f"{' '.join(argv)}: {result.stderr.decode().strip()}")


@dataclass(frozen=True)
class Namespace:
    """A network namespace joined to this one by a veth pair: a second host, one cable away."""

    name: str
    host_address: str  # this side's address: the gateway listens here
    peer_address: str
    peer_link: str  # the interface inside the namespace

    @property
    def exec_prefix(self) -> tuple[str, ...]:
        return ("ip", "netns", "exec", self.name)

    async def cut_cable(self) -> None:
        """Take the namespace's end down: its packets stop, and no FIN or RST ever leaves it."""
        await run(*self.exec_prefix, "ip", "link", "set", self.peer_link, "down")


@asynccontextmanager
async def veth_namespace() -> AsyncIterator[Namespace]:
    """A fresh network namespace with a veth pair to this one (see :func:`netns_problem`)."""
    name = f"gwt{os.getpid() % 100_000}"
    subnet = await _free_subnet()
    ns = Namespace(name, f"{subnet}.1", f"{subnet}.2", f"{name}p")
    await run("ip", "netns", "add", name)
    try:
        await run(
            "ip", "link", "add", f"{name}h", "type", "veth", "peer", "name", ns.peer_link, "netns", name
        )
        await run("ip", "addr", "add", f"{ns.host_address}/30", "dev", f"{name}h")
        await run("ip", "link", "set", f"{name}h", "up")
        await run(*ns.exec_prefix, "ip", "addr", "add", f"{ns.peer_address}/30", "dev", ns.peer_link)
        await run(*ns.exec_prefix, "ip", "link", "set", ns.peer_link, "up")
        await run(*ns.exec_prefix, "ip", "link", "set", "lo", "up")
        yield ns
    finally:
        with trio.CancelScope(shield=True):
            # The pair first: the namespace itself lives on while the kernel still retransmits for
            # the sockets the client left in it.
            for argv in (["ip", "link", "del", f"{name}h"], ["ip", "netns", "del", name]):
                await trio.run_process(argv, check=False, capture_stderr=True)


async def _free_subnet() -> str:
    """A 10.231.x.0/30 that no interface here uses (namespaces of other test runs may be alive)."""
    used = (await trio.run_process(["ip", "-o", "addr"], capture_stdout=True)).stdout.decode()
    start = os.getpid() % 250
    for x in range(250):
        subnet = f"10.231.{(start + x) % 250 + 1}"
        if f" {subnet}." not in used:
            return subnet
    raise OSError("no free 10.231.x.0/30 subnet")


@asynccontextmanager
async def mounted_tmpfs(path: Path, size: str) -> AsyncIterator[Path]:
    """A small tmpfs at ``path``: a disk that fills up for real (see :func:`mount_problem`)."""
    await trio.Path(path).mkdir(parents=True, exist_ok=True)
    await run("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    try:
        yield path
    finally:
        with trio.CancelScope(shield=True):
            await run("umount", "-l", str(path))


class ReadOnlyBind:
    """A read-only bind mount of a folder over itself: new opens of its files are read-only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.mounted = False

    async def mount(self) -> None:
        await run("mount", "--bind", str(self.path), str(self.path))
        self.mounted = True
        await run("mount", "-o", "remount,bind,ro", str(self.path))

    async def unmount(self) -> None:
        """Lazily: files opened through the read-only mount keep it alive until they are closed."""
        if self.mounted:
            with trio.CancelScope(shield=True):
                await run("umount", "-l", str(self.path))
            self.mounted = False


def fill_up(folder: Path) -> Path:
    """Write a file into ``folder`` until its file system has not a byte left; return the file."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for size in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
            block = b"\0" * size
            try:
                while True:
                    os.write(fd, block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    finally:
        os.close(fd)
    return filler
