"""The chat benchmark runs end to end in a tiny configuration (figures are not asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_chat_smoke() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.chat", "--members", "5", "--posters", "3", "--posts", "60"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "durable posts/s end to end" in result.stdout
    assert "every acknowledged post is stored exactly once" in result.stdout
    assert "chat store alone" in result.stdout
