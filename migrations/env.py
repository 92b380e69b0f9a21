"""Alembic environment of the chat store.

Run from code by ``gateway.chat.migrate`` (which hands over an open connection in
``config.attributes["connection"]``), or by the ``alembic`` command with ``sqlalchemy.url`` set.
Revisions are written by hand; ``target_metadata`` is only there for ``alembic revision
--autogenerate`` as a starting point.
"""

from __future__ import annotations

from typing import Final

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection

from gateway.chat.models import Base, make_engine

# Any constant shared by every gateway: PostgreSQL serialises concurrent upgrades on it.
PG_MIGRATION_LOCK: Final = 0x63_68_61_74  # "chat"

config = context.config


def run_offline() -> None:
    """Print the SQL (``alembic upgrade head --sql``) instead of running it."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=Base.metadata,
        literal_binds=True,
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    """Migrate through the caller's connection, or through a new one to ``sqlalchemy.url``."""
    connection = config.attributes.get("connection")
    if isinstance(connection, Connection):
        migrate(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set sqlalchemy.url or pass a connection in config.attributes")
    engine = make_engine(url, role="migrate")
    try:
        with engine.connect() as new_connection:
            migrate(new_connection)
    finally:
        engine.dispose()


def migrate(connection: Connection) -> None:
    # transactional_ddl: both backends roll DDL back; on SQLite the engine emits a real BEGIN.
    context.configure(connection=connection, target_metadata=Base.metadata, transactional_ddl=True)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Held to the end of the transaction: a second instance waits here, then finds head.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_MIGRATION_LOCK})
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
