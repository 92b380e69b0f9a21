"""Logging: one JSON object per line (for collectors), or plain text on a terminal.

Tokens and secrets are never passed to the logger; ``tests/test_jwt_attacks.py`` greps a run's
logs to keep it that way.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Final, TextIO

_STANDARD_ATTRS: Final = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Install one handler on the root logger (replacing any previous one)."""
    out = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        JsonFormatter()
        if use_json
        else logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # trio-websocket logs every frame at debug level, Alembic every migration step at info:
    # keep them quiet unless asked for.
    logging.getLogger("trio-websocket").setLevel(max(root.level, logging.INFO))
    logging.getLogger("alembic").setLevel(max(root.level, logging.WARNING))


class Throttle:
    """At most one log line per key per ``interval`` seconds (the caller passes the time)."""

    MAX_KEYS = 1024

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}

    def allow(self, key: str, now: float) -> bool:
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            return False
        if len(self._last) >= self.MAX_KEYS:
            self._last.clear()
        self._last[key] = now
        return True
