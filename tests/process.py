"""Run a real gateway process (``python -m gateway`` or the one-file binary) for end-to-end tests."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import trio

from tests.helpers import ADMIN_KEY, SECRET

READY = re.compile(r"gateway ready: websocket \S+ \(port (\d+)\), admin \S+ \(port (\d+)\)")


@dataclass
class GatewayProcess:
    process: trio.Process
    ws_port: int
    admin_port: int
    log_lines: list[str] = field(default_factory=list)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}"

    def logs(self) -> str:
        return "\n".join(self.log_lines)


def gateway_env(**extra: str) -> dict[str, str]:
    """A clean environment: test keys, JSON logs, and a throwaway in-memory chat database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(
        GATEWAY_JWT_SECRET=SECRET,
        GATEWAY_ADMIN_KEY=ADMIN_KEY,
        GATEWAY_LOG_FORMAT="json",
        GATEWAY_DB_URL="sqlite://",
        # The tests' clients all come from loopback: hundreds of them connecting at once (the
        # load client's reconnections) are one address's pending connections.
        GATEWAY_MAX_PENDING_PER_IP="2000",
    )
    env.update(extra)
    return env


@asynccontextmanager
async def gateway_process(
    *args: str,
    command: Sequence[str] = (sys.executable, "-m", "gateway"),
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    start_timeout: float = 30,
    listen: str = "127.0.0.1:0",
) -> AsyncIterator[GatewayProcess]:
    """Start ``gateway serve`` (on loopback port 0 unless ``listen`` says otherwise) and wait until it
    logs that it is ready."""
    argv = [*command, "serve", "--listen", listen, "--admin-listen", "127.0.0.1:0", *args]
    async with trio.open_nursery() as nursery:
        run = partial(trio.run_process, argv, env=env or gateway_env(), cwd=cwd,
                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)  # fmt: skip
        process: trio.Process = await nursery.start(run)
        lines: list[str] = []
        ports = await _wait_ready(process, lines, start_timeout)
        nursery.start_soon(_collect, process, lines)
        handle = GatewayProcess(process, ports[0], ports[1], lines)
        try:
            yield handle
        finally:
            if process.returncode is None:
                process.kill()


async def _wait_ready(process: trio.Process, lines: list[str], within: float) -> tuple[int, int]:
    assert process.stderr is not None
    buffer = b""
    with trio.fail_after(within):
        while True:
            chunk = await process.stderr.receive_some(65536)
            if not chunk:
                raise AssertionError("gateway exited before ready:\n" + "\n".join(lines))
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            for raw in complete:
                lines.append(raw.decode(errors="replace"))
                match = READY.search(_message(lines[-1]))
                if match:
                    return int(match.group(1)), int(match.group(2))


async def _collect(process: trio.Process, lines: list[str]) -> None:
    assert process.stderr is not None
    buffer = b""
    async for chunk in process.stderr:
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        lines.extend(raw.decode(errors="replace") for raw in complete)
    if buffer:
        lines.append(buffer.decode(errors="replace"))


def _message(line: str) -> str:
    try:
        return str(json.loads(line).get("msg", ""))
    except ValueError:
        return line
