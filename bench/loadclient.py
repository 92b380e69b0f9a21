"""Load client: many subscribed WebSocket sessions in one asyncio process, checking every event.

Started by ``bench.broadcast`` (one or more per run)::

    python -m bench.loadclient --url ws://127.0.0.1:PORT/ws --sessions N --token JWT --phases 20,1000

It speaks just enough RFC 6455 over ``asyncio.Protocol`` (handshake, masked client frames, unmasked
server frames, ping/pong, close) so that reading costs far less CPU than serving: a Python
WebSocket library would spend about as much per message as the server under test. Events are
recognised by the marker of :mod:`bench.workload`, without decoding their JSON.

Each session checks that it gets every event of every phase exactly once, in order. Protocol on
stdout, one line each: ``ready <subscribed> <failed> <seconds> <first error>``, then
``progress <least events of phase 0 any session has> <phase 1> ...`` whenever that changes, then
``report <json>`` once the orchestrator writes ``report`` (or closes) stdin.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from bench import stats
from bench.workload import parse_marker

CONNECT_CONCURRENCY: Final = 64  # handshakes in flight; stays under any listen backlog
SUBSCRIBE_TIMEOUT: Final = 30.0
PROGRESS_INTERVAL: Final = 0.01
WS_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONTINUATION, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
FIN_TEXT: Final = 0x80 | OP_TEXT  # first byte of a complete text frame
NO_CLOSE_CODE: Final = 1005
ABNORMAL_CLOSE: Final = 1006


class HandshakeError(Exception):
    """The server refused the WebSocket upgrade or the subscription."""


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One complete client frame, masked with a fresh random key as RFC 6455 requires."""
    size = len(payload)
    if size < 126:
        header = bytes((0x80 | opcode, 0x80 | size))
    elif size < 1 << 16:
        header = bytes((0x80 | opcode, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + size.to_bytes(8, "big")
    key = os.urandom(4)
    stream = (key * (size // 4 + 1))[:size]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(size, "big")
    return header + key + masked


def frame_bounds(data: bytes, pos: int) -> tuple[int, int] | None:
    """``(payload start, frame end)`` of the unmasked frame at ``pos``, or None if incomplete."""
    available = len(data) - pos
    if available < 2:
        return None
    length = data[pos + 1] & 0x7F
    header = 2
    if length == 126:
        header = 4
        if available < header:
            return None
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
    elif length == 127:
        header = 10
        if available < header:
            return None
        length = int.from_bytes(data[pos + 2 : pos + 10], "big")
    if available < header + length:
        return None
    return pos + header, pos + header + length


@dataclass
class PhaseTotals:
    """What all sessions of this process received in one phase."""

    messages: int = 0
    payload_bytes: int = 0
    first_us: int = 0
    last_us: int = 0
    histogram: list[int] = field(default_factory=stats.new_histogram)

    def record(self, latency_us: int, size: int, now_us: int) -> None:
        self.messages += 1
        self.payload_bytes += size
        if not self.first_us:
            self.first_us = now_us
        self.last_us = now_us
        self.histogram[stats.bucket(latency_us)] += 1


class Client:
    """State shared by the sessions of this process."""

    def __init__(self, phase_sizes: Sequence[int]) -> None:
        self.phase_sizes = list(phase_sizes)
        self.totals = [PhaseTotals() for _ in phase_sizes]
        self._least = [0] * len(phase_sizes)
        self.sessions: list[Session] = []
        self.closes: Counter[int] = Counter()
        self.unexpected = 0

    def least_received(self) -> list[int]:
        """Per phase, the fewest distinct events any session has: the phase's progress."""
        for phase, size in enumerate(self.phase_sizes):
            # Only phases under way are recomputed: this runs every PROGRESS_INTERVAL.
            if self._least[phase] < size and self.totals[phase].messages:
                self._least[phase] = min((s.distinct[phase] for s in self.sessions), default=0)
        return list(self._least)

    def report(self, failed: int) -> dict[str, Any]:
        phases = [self._phase_report(p) for p in range(len(self.phase_sizes))]
        return {
            "sessions": len(self.sessions),
            "failed": failed,
            "closed": {str(code): n for code, n in self.closes.items()},
            "unexpected": self.unexpected,
            "phases": phases,
        }

    def _phase_report(self, phase: int) -> dict[str, Any]:
        totals = self.totals[phase]
        expected = self.phase_sizes[phase]
        return {
            "messages": totals.messages,
            "missing": sum(expected - s.distinct[phase] for s in self.sessions),
            "duplicates": sum(s.duplicates[phase] for s in self.sessions),
            "disorder": sum(s.disorder[phase] for s in self.sessions),
            "payload_bytes": totals.payload_bytes,
            "first_us": totals.first_us,
            "last_us": totals.last_us,
            "histogram": totals.histogram,
        }


class Session(asyncio.Protocol):
    """One WebSocket session: upgrade, subscribe, then count marked events per phase."""

    def __init__(self, client: Client, host: str, path: str, token: str) -> None:
        self.client = client
        self.host = host
        self.path = path
        self.token = token
        self.transport: asyncio.Transport | None = None
        self.subscribed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._key = base64.b64encode(os.urandom(16))
        self._upgraded = False
        self._live = False  # subscribed: text frames are events from now on
        self._buffer = b""
        sizes = client.phase_sizes
        self.seen = [bytearray(n) for n in sizes]
        self.distinct = [0] * len(sizes)
        self.duplicates = [0] * len(sizes)
        self.disorder = [0] * len(sizes)
        self.last_seq = [-1] * len(sizes)

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        request = (
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {self._key.decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        )
        transport.write(request.encode())

    def data_received(self, data: bytes) -> None:
        if self._buffer:
            data = self._buffer + data
        if not self._upgraded:
            data = self._upgrade(data)
        self._buffer = self._frames(data, time.time_ns() // 1000)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.subscribed.done():
            self.subscribed.set_exception(HandshakeError(f"connection lost before subscribed: {exc}"))
        elif self._upgraded:  # neither we nor a close frame ended it
            self.client.closes[ABNORMAL_CLOSE] += 1

    # -- handshake and subscription ---------------------------------------------------------

    def _upgrade(self, data: bytes) -> bytes:
        """Consume the HTTP response; return what follows it (or all of it while incomplete)."""
        end = data.find(b"\r\n\r\n")
        if end < 0:
            return data
        head, rest = data[:end], data[end + 4 :]
        accept = base64.b64encode(hashlib.sha1(self._key + WS_GUID).digest())
        if not head.startswith(b"HTTP/1.1 101") or accept not in head:
            status = head.split(b"\r\n", 1)[0].decode(errors="replace")
            self._fail(f"upgrade refused: {status}")
            return b""
        self._upgraded = True
        self._send(OP_TEXT, json.dumps({"@type": "subscribe", "ack": True, "jwt": self.token}).encode())
        return rest

    def _on_reply(self, payload: bytes) -> None:
        try:
            reply = json.loads(payload)
        except ValueError:
            reply = None
        if isinstance(reply, dict) and reply.get("@type") == "subscribed":
            self._live = True
            self.subscribed.set_result(None)
        else:
            self._fail(f"subscribe refused: {payload[:200].decode(errors='replace')}")

    def _fail(self, message: str) -> None:
        if not self.subscribed.done():
            self.subscribed.set_exception(HandshakeError(message))
        self.abort()

    # -- frames -----------------------------------------------------------------------------

    def _frames(self, data: bytes, now_us: int) -> bytes:
        """Handle every complete frame in ``data``; return the incomplete rest."""
        pos, end = 0, len(data)
        while self._upgraded and end - pos >= 2:
            # This loop runs once per message: the usual headers are decoded inline.
            length = data[pos + 1]
            if length < 126:
                start, stop = pos + 2, pos + 2 + length
            elif length == 126 and end - pos >= 4:
                start = pos + 4
                stop = start + int.from_bytes(data[pos + 2 : start], "big")
            elif (bounds := frame_bounds(data, pos)) is not None:
                start, stop = bounds
            else:
                break
            if stop > end:
                break
            if data[pos] == FIN_TEXT and self._live:
                self._on_event(data, start, stop, now_us)
            else:
                self._on_other(data[pos] & 0x0F, data[start:stop])
            pos = stop
        return data[pos:]

    def _on_event(self, data: bytes, start: int, stop: int, now_us: int) -> None:
        # The hot path: a few microseconds per message, so that the client is never the bottleneck.
        found = parse_marker(data, start, stop)
        if found is None or found[0] >= len(self.seen) or found[1] >= len(self.seen[found[0]]):
            self.client.unexpected += 1
            return
        phase, seq, published_us = found
        seen = self.seen[phase]
        if seen[seq]:
            self.duplicates[phase] += 1
        else:
            seen[seq] = 1
            self.distinct[phase] += 1
        if seq < self.last_seq[phase]:
            self.disorder[phase] += 1
        self.last_seq[phase] = seq
        self.client.totals[phase].record(now_us - published_us, stop - start, now_us)

    def _on_other(self, opcode: int, payload: bytes) -> None:
        if opcode == OP_TEXT and not self._live:
            self._on_reply(payload)
        elif opcode == OP_PING:
            self._send(OP_PONG, payload)
        elif opcode == OP_CLOSE:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else NO_CLOSE_CODE
            self.client.closes[code] += 1
            self._fail(f"closed by the server with {code}: {payload[2:].decode(errors='replace')}")
        elif opcode != OP_PONG:
            self.client.unexpected += 1

    def _send(self, opcode: int, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame(opcode, payload))

    def abort(self) -> None:
        self._upgraded = False
        if self.transport is not None:
            self.transport.abort()


# ---------------------------------------------------------------------------------------------
# The process


@dataclass(frozen=True)
class Options:
    url: str
    sessions: int
    token: str
    phase_sizes: list[int]


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.loadclient", description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True, help="ws://HOST:PORT/PATH of the server under test")
    parser.add_argument("--sessions", type=int, required=True)
    parser.add_argument("--token", required=True, help="JWT sent in every session's subscribe")
    parser.add_argument("--phases", required=True, help="events per phase, comma-separated: 20,1000,5000")
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.phases.split(",")]
    return Options(args.url, args.sessions, args.token, sizes)


async def open_session(client: Client, options: Options, slots: asyncio.Semaphore) -> Session:
    url = urlsplit(options.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    async with slots:
        loop = asyncio.get_running_loop()
        _, session = await loop.create_connection(
            lambda: Session(client, url.netloc, url.path or "/", options.token), host, port
        )
        await asyncio.wait_for(session.subscribed, SUBSCRIBE_TIMEOUT)
    return session


async def open_sessions(client: Client, options: Options) -> list[BaseException]:
    """Open and subscribe every session; keep those that made it; return the failures."""
    slots = asyncio.Semaphore(CONNECT_CONCURRENCY)
    tasks = [open_session(client, options, slots) for _ in range(options.sessions)]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    client.sessions = [r for r in results if isinstance(r, Session)]
    return [r for r in results if isinstance(r, BaseException)]


async def report_progress(client: Client) -> None:
    last: list[int] = []
    while True:
        least = client.least_received()
        if least != last:
            emit("progress " + " ".join(map(str, least)))
            last = least
        await asyncio.sleep(PROGRESS_INTERVAL)


def emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def run(options: Options) -> None:
    client = Client(options.phase_sizes)
    started = time.monotonic()
    failures = await open_sessions(client, options)
    first_error = repr(failures[0]).replace("\n", " ") if failures else "-"
    emit(f"ready {len(client.sessions)} {len(failures)} {time.monotonic() - started:.3f} {first_error}")
    progress = asyncio.create_task(report_progress(client))
    loop = asyncio.get_running_loop()
    while (await loop.run_in_executor(None, sys.stdin.readline)).strip() not in ("report", ""):
        pass
    progress.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await progress
    emit("report " + json.dumps(client.report(len(failures))))
    for session in client.sessions:
        session.abort()


def main(argv: Sequence[str] | None = None) -> int:
    asyncio.run(run(parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
