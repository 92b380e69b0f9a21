"""The processes of a benchmark run: the server under test, the load clients, and /proc readings.

The orchestrator stays synchronous: each load client's stdout is read by a thread of its own,
which updates a :class:`ClientState` under one condition variable that the phases wait on.
"""

from __future__ import annotations

import http.client
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

from loadclient.interface import Command, Progress, Ready, Spec, parse_line

ROOT: Final = Path(__file__).resolve().parent.parent
HOST: Final = "127.0.0.1"
READY_TIMEOUT: Final = 20.0
CONNECT_TIMEOUT: Final = 120.0
STALL_TIMEOUT: Final = 10.0  # a wait gives up when no session progressed for this long
STOP_TIMEOUT: Final = 15.0
CLK_TCK: Final = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """The benchmark could not run (a server did not start, clients could not connect...)."""


# ---------------------------------------------------------------------------------------------
# /proc


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BenchError(f"no VmRSS for pid {pid}")


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time of the processes, from /proc/PID/stat (fields 14 and 15)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def system_busy_seconds() -> float:
    """CPU time all processors spent on anything but idling, from the first line of /proc/stat."""
    first_line = Path("/proc/stat").read_text().split("\n", 1)[0]
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, first_line.split()[1:9])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


@dataclass(frozen=True)
class CpuUse:
    """CPU seconds over a phase: the server, the load clients, and every other process on the box."""

    server: float
    clients: float
    others: float


class CpuMeter:
    def __init__(self, server: int, clients: Sequence[int]) -> None:
        self.server, self.clients = server, list(clients)
        self.start = self._sample()

    def _sample(self) -> tuple[float, float, float, float]:
        mine = cpu_seconds([os.getpid()])
        return cpu_seconds([self.server]), cpu_seconds(self.clients), mine, system_busy_seconds()

    def used(self) -> CpuUse:
        server, clients, mine, busy = (b - a for a, b in zip(self.start, self._sample(), strict=True))
        return CpuUse(server, clients, max(0.0, busy - server - clients - mine))


# ---------------------------------------------------------------------------------------------
# The server under test


@dataclass(frozen=True)
class ServerSpec:
    name: str
    argv: Callable[[int, int], list[str]]  # (ws port, admin port) -> command line


class Server:
    """A server under test, running as a subprocess with its output in a log file."""

    def __init__(self, spec: ServerSpec, env: dict[str, str], log: IO[bytes]) -> None:
        self.name = spec.name
        self.ws_port, self.admin_port = free_port(), free_port()
        self.log = log
        argv = spec.argv(self.ws_port, self.admin_port)
        # A session of its own: Ctrl-C reaches only the orchestrator, which stops everything in order.
        self.process = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self) -> float:
        """Poll ``/readyz`` until it answers 200; return how long that took."""
        started = time.monotonic()
        while time.monotonic() - started < READY_TIMEOUT:
            if self.process.poll() is not None:
                raise BenchError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            if self._ready():
                return time.monotonic() - started
            time.sleep(0.05)
        raise BenchError(f"{self.name} not ready after {READY_TIMEOUT:.0f} s:\n{self.log_tail()}")

    def _ready(self) -> bool:
        conn = http.client.HTTPConnection(HOST, self.admin_port, timeout=2)
        try:
            conn.request("GET", "/readyz")
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    def log_tail(self, lines: int = 20) -> str:
        self.log.flush()
        text = Path(self.log.name).read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# ---------------------------------------------------------------------------------------------
# Load clients


@dataclass
class ClientState:
    ready: Ready | None = None
    progress: Progress = field(default_factory=Progress)
    report: dict[str, Any] | None = None
    ended: bool = False


def split(total: int, parts: int) -> list[int]:
    """``total`` sessions over at most ``parts`` processes, as evenly as possible."""
    parts = min(parts, total)
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


class LoadClients:
    """The load-client processes (:mod:`loadclient`), and what they said on stdout (one thread each)."""

    def __init__(
        self, url: str, tokens: list[str], sessions: int, processes: int, phase_sizes: list[int]
    ) -> None:
        """Session ``i`` subscribes with ``tokens[i % len(tokens)]``."""
        self.changed = threading.Condition()
        self.states: list[ClientState] = []
        self.processes: list[subprocess.Popen[str]] = []
        self._specs = tempfile.TemporaryDirectory(prefix="bench-loadclient-")
        first = 0
        for n, share in enumerate(split(sessions, processes)):
            own = [tokens[(first + i) % len(tokens)] for i in range(min(share, len(tokens)))]
            first += share
            spec = Path(self._specs.name) / f"spec-{n}.json"
            spec.write_text(Spec(url, own, sessions=share, phases=phase_sizes).to_json())
            process = subprocess.Popen(
                [sys.executable, "-m", "loadclient", str(spec)],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
            state = ClientState(progress=Progress(least=[0] * len(phase_sizes)))
            self.processes.append(process)
            self.states.append(state)
            threading.Thread(target=self._read, args=(process, state), daemon=True).start()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def _read(self, process: subprocess.Popen[str], state: ClientState) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            kind, payload = parse_line(line)
            with self.changed:
                if kind == "ready":
                    state.ready = Ready(**payload)
                elif kind == "progress":
                    state.progress = Progress(**payload)
                elif kind == "report":
                    state.report = payload
                self.changed.notify_all()
        with self.changed:
            state.ended = True
            self.changed.notify_all()

    def wait_ready(self) -> Ready:
        """Wait until every client has opened its sessions."""
        if not self._wait(lambda: all(s.ready or s.ended for s in self.states), CONNECT_TIMEOUT):
            raise BenchError(f"load clients did not connect within {CONNECT_TIMEOUT:.0f} s")
        readies = [s.ready for s in self.states if s.ready is not None]
        if len(readies) < len(self.states):
            raise BenchError("a load client exited before connecting (see its error above)")
        errors = [r.first_error for r in readies if r.first_error != "-"]
        return Ready(
            subscribed=sum(r.subscribed for r in readies),
            failed=sum(r.failed for r in readies),
            seconds=max(r.seconds for r in readies),
            first_error=errors[0] if errors else "-",
        )

    def least(self, phase: int) -> int:
        """The fewest events of ``phase`` that any session has received."""
        return min(s.progress.least[phase] for s in self.states)

    def wait_progress(self, phase: int, target: int, limit: float = math.inf) -> bool:
        """Wait until every session has ``target`` events of ``phase``.

        False when no session progressed for STALL_TIMEOUT, or after ``limit`` seconds.
        """
        last, since, give_up = -1, time.monotonic(), time.monotonic() + limit
        with self.changed:
            while (current := self.least(phase)) < target:
                now = time.monotonic()
                if current != last:
                    last, since = current, now
                remaining = min(STALL_TIMEOUT - (now - since), give_up - now)
                if remaining <= 0 or any(s.ended for s in self.states):
                    return False
                self.changed.wait(remaining)
        return True

    def reports(self) -> list[dict[str, Any]]:
        """Ask every client for its report, then end it."""
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.write(f"{Command.REPORT}\n")
            process.stdin.close()
        if not self._wait(lambda: all(s.report or s.ended for s in self.states), STOP_TIMEOUT):
            raise BenchError("load clients did not report")
        for process in self.processes:
            process.wait(STOP_TIMEOUT)
        return [s.report for s in self.states if s.report is not None]

    def kill(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        self._specs.cleanup()

    def _wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(predicate, timeout)
