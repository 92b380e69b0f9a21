"""``python -m loadclient SPEC.json``: open the spec's sessions, then obey stdin until it ends."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from typing import Any, Final

import uvloop

from loadclient.checks import SessionChecker, Totals, make_check
from loadclient.connection import Session
from loadclient.interface import Command, Progress, Ready, Spec, line
from loadclient.oracle import PlanChecker
from loadclient.resume import Drop, drop_points

PROGRESS_INTERVAL: Final = 0.01


class LoadClient:
    """Every session of this process, and what they received."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.totals = Totals()
        self.check = make_check(spec.plan, spec.phases, self.totals)
        self.sessions = [self._session(i) for i in range(spec.session_count)]
        self.tasks: list[asyncio.Task[None]] = []

    def _session(self, index: int) -> Session:
        checker = self.check.for_session(index)
        return Session(self.spec, index, self.totals, checker, self._drops(index, checker))

    def _drops(self, index: int, checker: SessionChecker) -> list[Drop]:
        """When session ``index`` drops its connection (resume mode): before its last expected message."""
        if not (self.spec.resume and self.spec.drop_every):
            return []
        if not isinstance(checker, PlanChecker) or self.spec.plan is None:
            raise ValueError("drop_every needs a plan: drops are counted in the messages it expects")
        return drop_points(self.spec.plan["seed"], index, self.spec.drop_every, checker.expected)

    def progress(self) -> Progress:
        live = sum(1 for s in self.sessions if s.live)
        drops_left = sum(len(s.resumer.drops) for s in self.sessions if s.resumer is not None)
        return Progress(live, self.totals.received, self.check.least(), drops_left)

    async def start(self) -> Ready:
        slots = asyncio.Semaphore(self.spec.connect_concurrency)
        started = time.monotonic()
        self.tasks = [asyncio.create_task(s.run(slots)) for s in self.sessions]
        results = await asyncio.gather(*(s.first_attempt for s in self.sessions))
        ok = sum(results)
        first_error = next(iter(self.totals.refused or self.totals.errors), "-")
        if first_error == "-" and self.totals.connect_errors:
            first_error = "connect_error"
        return Ready(ok, len(results) - ok, round(time.monotonic() - started, 3), str(first_error))

    async def close_all(self) -> None:
        await asyncio.gather(*(s.close(graceful=i % 2 == 0) for i, s in enumerate(self.sessions)))
        await self.stop()

    def drop_all(self) -> None:
        """A network blip: every connection lost at once (in reconnect mode, they come back)."""
        for session in self.sessions:
            session.abort()

    async def stop(self) -> None:
        for session in self.sessions:
            session.stopping = True
            session.abort()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def report(self) -> dict[str, Any]:
        return {
            "sessions": len(self.sessions),
            "live": self.progress().live,
            **self.totals.report(),
            **self.check.report(),
        }


def emit(kind: str, payload: dict[str, Any]) -> None:
    sys.stdout.write(line(kind, payload))
    sys.stdout.flush()


async def report_progress(client: LoadClient) -> None:
    last = None
    while True:
        now = client.progress()
        if now != last:
            emit("progress", vars(now))
            last = now
        await asyncio.sleep(PROGRESS_INTERVAL)


async def obey(client: LoadClient, commands: asyncio.StreamReader) -> None:
    while text := (await commands.readline()).decode().strip():
        command = Command(text)
        if command is Command.PHASE:
            client.check.new_phase()
        elif command is Command.CLOSE:
            await client.close_all()
            emit("closed", {"sessions": len(client.sessions)})
        elif command is Command.DROP:
            client.drop_all()
        elif command is Command.REPORT:
            emit("report", client.report())


async def run(spec: Spec) -> None:
    loop = asyncio.get_running_loop()
    commands = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
    client = LoadClient(spec)
    ready = await client.start()
    emit("progress", vars(client.progress()))  # the state as of "ready"
    emit("ready", vars(ready))
    progress = asyncio.create_task(report_progress(client))
    try:
        await obey(client, commands)
    finally:
        progress.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await progress
        await client.stop()


def main() -> int:
    with open(sys.argv[1]) as spec:
        uvloop.run(run(Spec.from_json(spec.read())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
