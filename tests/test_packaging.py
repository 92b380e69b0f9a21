"""packaging/cells-ws-gateway.service: systemd accepts it, and its hardening stays in place."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.app import BUS_FLUSH_TIMEOUT
from gateway.config import Settings

UNIT = Path(__file__).resolve().parents[1] / "packaging" / "cells-ws-gateway.service"
EXEC_START = "/usr/local/bin/cells-ws-gateway serve"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
requires_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze not found (Debian: apt-get install systemd)"
)
# systemd-analyze security scores exposure from 0 (locked down) to 100; "OK" ends at 49.
EXPOSURE_THRESHOLD = 20

# Directives that must keep exactly these values: removing or weakening one fails the suite.
HARDENING = {
    "DynamicUser": ["yes"],
    "NoNewPrivileges": ["yes"],
    "CapabilityBoundingSet": [""],
    "AmbientCapabilities": [""],
    "ProtectSystem": ["strict"],
    "ProtectHome": ["yes"],
    "PrivateTmp": ["yes"],
    "PrivateDevices": ["yes"],
    "PrivateMounts": ["yes"],
    "ProtectKernelTunables": ["yes"],
    "ProtectKernelModules": ["yes"],
    "ProtectKernelLogs": ["yes"],
    "ProtectControlGroups": ["yes"],
    "ProtectClock": ["yes"],
    "ProtectHostname": ["yes"],
    "ProtectProc": ["invisible"],
    "RestrictAddressFamilies": ["AF_INET AF_INET6 AF_UNIX"],
    "RestrictNamespaces": ["yes"],
    "RestrictRealtime": ["yes"],
    "RestrictSUIDSGID": ["yes"],
    "LockPersonality": ["yes"],
    "MemoryDenyWriteExecute": ["yes"],
    "SystemCallArchitectures": ["native"],
    "SystemCallFilter": ["@system-service", "~@privileged @resources"],
    "SystemCallErrorNumber": ["EPERM"],
    "UMask": ["0077"],
}


def directives(path: Path = UNIT) -> dict[str, list[str]]:
    """Every ``Key=value`` of a unit file, each key's values in file order (sections are not kept)."""
    found: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def seconds(timespan: str) -> float:
    """A systemd time span such as ``30``, ``30s``, ``1min 30s`` in seconds."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", timespan)
    assert parts, timespan
    return sum(float(number) * units[unit] for number, unit in parts)


def runnable_copy(directory: Path) -> Path:
    """The unit with ExecStart pointed at an executable that exists here (the binary does not)."""
    true = shutil.which("true")
    assert true is not None
    text = UNIT.read_text()
    assert f"\nExecStart={EXEC_START}\n" in text
    copy = directory / UNIT.name
    copy.write_text(text.replace(f"\nExecStart={EXEC_START}\n", f"\nExecStart={true} serve\n"))
    return copy


def unit_warnings(stderr: str) -> list[str]:
    """systemd-analyze exits 0 on ignored keys and bad values: only its messages tell."""
    return [line for line in stderr.splitlines() if UNIT.name in line]


@pytest.mark.parametrize(("name", "expected"), sorted(HARDENING.items()))
def test_unit_keeps_its_hardening(name: str, expected: list[str]) -> None:
    assert directives().get(name) == expected


def test_unit_runs_the_binary_with_its_state_and_secrets() -> None:
    unit = directives()
    assert unit["ExecStart"] == [EXEC_START]
    assert unit["StateDirectory"] == ["cells-ws-gateway"]
    assert unit["WorkingDirectory"] == ["/var/lib/cells-ws-gateway"]
    assert "GATEWAY_DB_URL=sqlite:////var/lib/cells-ws-gateway/gateway.db" in unit["Environment"]
    assert unit["EnvironmentFile"] == ["-/etc/cells-ws-gateway/env"]
    assert unit["Restart"] == ["on-failure"]


def test_unit_stop_outlasts_the_drain_and_signals_the_bootloader_only() -> None:
    unit = directives()
    defaults = Settings()
    drain = defaults.drain_timeout + defaults.close_timeout + BUS_FLUSH_TIMEOUT
    assert seconds(unit["TimeoutStopSec"][0]) > drain
    assert unit["KillSignal"] == ["SIGTERM"]
    # The one-file bootloader forwards SIGTERM to the Python process; a second one aborts the drain.
    assert unit["KillMode"] == ["mixed"]


def test_unit_file_limit_fits_max_sessions() -> None:
    (limit,) = directives()["LimitNOFILE"]
    assert int(limit) > Settings().max_sessions + 1000


@requires_systemd_analyze
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    assert SYSTEMD_ANALYZE is not None
    result = subprocess.run([SYSTEMD_ANALYZE, "verify", str(runnable_copy(tmp_path))],
                            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert unit_warnings(result.stderr) == []


@requires_systemd_analyze
def test_unit_security_exposure_stays_low(tmp_path: Path) -> None:
    assert SYSTEMD_ANALYZE is not None
    argv = [SYSTEMD_ANALYZE, "security", "--offline=yes", "--no-pager",
            f"--threshold={EXPOSURE_THRESHOLD}", str(runnable_copy(tmp_path))]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_unit_reload_sends_sighup_to_the_bootloader() -> None:
    """``systemctl reload`` reloads the TLS certificate (the bootloader forwards the signal)."""
    assert directives()["ExecReload"] == ["kill -HUP $MAINPID"]
