"""``python -m bench.broadcast`` end to end in a tiny configuration (about 5 s): both servers start,
every session gets every event, and the table (read from ``--json``) has every figure for both.
No timing is asserted. The bench runs as a process: the tests import nothing from ``bench``."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Final

import pytest

ROOT: Final = Path(__file__).resolve().parent.parent
SESSIONS, RATE = 5, 20.0
TINY: Final = ["--sessions", str(SESSIONS), "--events", "20", "--batch", "5", "--window", "10",
               "--rate", str(RATE), "--latency-seconds", "0.5"]  # fmt: skip
TIMEOUT: Final = 90.0


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


def test_bench_broadcast_tiny_run_prints_every_figure(tmp_path: Path) -> None:
    status, output = run_bench([*TINY, "--json", str(tmp_path / "table.json")])
    assert status == 0, output
    assert "every session got every event exactly once" in output, output
    table = json.loads((tmp_path / "table.json").read_text())
    assert table["servers"] == ["gateway", "picows", "websockets"] and table["ok"], table
    for row in table["rows"]:
        assert row["label"] in output, f"{row['label']!r} not printed:\n{output}"
        assert all(isinstance(v, int | float) for v in row["values"]), row
    errors = next(r for r in table["rows"] if r["label"].startswith("missing + duplicate"))
    assert errors["values"] == [0, 0, 0], table


def test_bench_broadcast_idle_run_measures_connections_only(tmp_path: Path) -> None:
    status, output = run_bench(["--idle", "--sessions", str(SESSIONS), "--json", str(tmp_path / "idle.json")])
    assert status == 0, output
    assert "open files limit (RLIMIT_NOFILE)" in output, output
    table = json.loads((tmp_path / "idle.json").read_text())
    labels = [row["label"] for row in table["rows"]]
    assert labels[0] == "RSS per idle session KiB", labels
    assert not any("delivered" in label for label in labels), labels
    assert table["ok"], table
