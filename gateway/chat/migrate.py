"""Schema migrations of the chat store: Alembic, driven from code (no ``alembic.ini``).

The scripts live in ``migrations/`` at the top of the repository, or next to the unpacked PyInstaller
binary (``--add-data migrations:migrations``). These functions block: call them from a worker thread
(``trio.to_thread.run_sync(upgrade, url)``) when an event loop is running.

Several gateway instances may upgrade one database at the same time: SQLite serialises them with its
write lock (``BEGIN IMMEDIATE``), PostgreSQL with an advisory lock taken in ``migrations/env.py``; the
later ones then find the schema at head and do nothing.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Final

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from gateway.chat.models import make_engine

if TYPE_CHECKING:  # Alembic is imported only when a migration has to run (it costs ~90 ms)
    from alembic.config import Config

MIGRATIONS_DIR_ENV: Final = "GATEWAY_MIGRATIONS_DIR"
# The newest migration script. A database already there is recognised without importing Alembic,
# which keeps the usual restart fast; tests/test_chat_store.py checks it matches the scripts.
HEAD_REVISION: Final = "0003"

# Alembic keeps the running migration in module globals (alembic.context, alembic.op): two upgrades
# in one process at the same time would trample each other.
_ALEMBIC_LOCK: Final = threading.Lock()


def migrations_dir() -> Path:
    """Where the Alembic scripts are: ``$GATEWAY_MIGRATIONS_DIR``, the PyInstaller bundle, or the repo."""
    configured = os.environ.get(MIGRATIONS_DIR_ENV)
    if configured:
        return Path(configured)
    bundle = getattr(sys, "_MEIPASS", None)
    if getattr(sys, "frozen", False) and bundle is not None:
        return Path(bundle) / "migrations"
    return Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(url: str | None = None) -> Config:
    """An Alembic configuration built in code, pointing at ``migrations_dir()``."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    if url is not None:
        # ConfigParser treats "%" as interpolation; URL-escaped passwords contain it.
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str) -> None:
    """Bring the database at ``url`` to the newest schema; a database already there is left alone."""
    engine = make_engine(url, role="migrate")
    try:
        with engine.begin() as connection:
            if _recorded_revision(connection) != HEAD_REVISION:
                upgrade_connection(connection)
    finally:
        engine.dispose()


def _recorded_revision(connection: Connection) -> str | None:
    """The revision in Alembic's version table, read with plain SQL (None if there is none yet)."""
    try:
        with connection.begin_nested():
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one_or_none()
    except DBAPIError:  # no version table yet
        return None


def upgrade_connection(connection: Connection) -> None:
    """Upgrade through an open connection, inside the caller's transaction (commits with it)."""
    from alembic import command

    config = alembic_config()
    config.attributes["connection"] = connection
    with _ALEMBIC_LOCK:
        command.upgrade(config, "head")


def current(url: str) -> str | None:
    """The revision the database at ``url`` is at, or None before the first migration."""
    engine = make_engine(url, role="migrate")
    try:
        with engine.connect() as connection:
            from alembic.runtime.migration import MigrationContext

            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def head() -> str:
    """The newest revision among the migration scripts."""
    from alembic.script import ScriptDirectory

    revision = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if revision is None:
        raise RuntimeError(f"no migration scripts in {migrations_dir()}")
    return revision
