"""``python -m bench.broadcast`` end to end in a tiny configuration (about 5 s): both servers start,
every session gets every event, and the table has every figure for both. No timing is asserted."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Final

import pytest

from bench.report import rows

ROOT: Final = Path(__file__).resolve().parent.parent
SESSIONS, RATE = 5, 20.0
TINY: Final = ["--sessions", str(SESSIONS), "--events", "20", "--batch", "5", "--window", "10",
               "--rate", str(RATE), "--latency-seconds", "0.5"]  # fmt: skip
TIMEOUT: Final = 90.0
NUMBER: Final = r"[\d,]+(?:\.\d+)?"


def run_bench(args: list[str]) -> tuple[int, str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.broadcast", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)  # the orchestrator then stops its servers and clients
        output, _ = process.communicate(timeout=30)
        pytest.fail(f"the benchmark did not finish within {TIMEOUT:.0f} s:\n{output}")
    return process.returncode, output


def test_bench_broadcast_tiny_run_prints_every_figure() -> None:
    status, output = run_bench(TINY)
    assert status == 0, output
    assert "every session got every event exactly once" in output, output
    for row in rows(SESSIONS, RATE):
        line = next((ln for ln in output.splitlines() if ln.startswith(row.label)), None)
        assert line is not None, f"no {row.label!r} row in:\n{output}"
        values = line[len(row.label) :].split()
        assert all(re.fullmatch(NUMBER, v) for v in values[:2]), line  # gateway, peer
    assert re.search(r"^missing \+ duplicate \+ out-of-order deliveries\s+0\s+0\b", output, re.M), output
