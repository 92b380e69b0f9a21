"""Rooms know their creator and since when they are vacant; labels and client ids made safe.

``created_by`` counts against the creator's hourly cap (``chat_rooms_created_per_hour``);
``vacant_since`` lets the empty-room sweep delete rooms with no member and no message. Rooms that
are already empty count as vacant since their last update. Labels stored before are cleaned as new
ones are, and ClientMessageIds that a client could not send today are dropped (they were sent back
raw to every member).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-10
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import sqlalchemy as sa
from alembic import op

from gateway.chat.sanitise import CLIENT_ID, label_text

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHUNK: Final = 5000  # messages read at a time while checking client ids


def upgrade() -> None:
    with op.batch_alter_table("rooms") as batch:
        batch.add_column(sa.Column("created_by", sa.Text(), nullable=True))
        batch.add_column(sa.Column("vacant_since", sa.Double(), nullable=True))
    op.create_index("ix_rooms_created_by", "rooms", ["created_by", "created_at"])
    op.create_index("ix_rooms_vacant_since", "rooms", ["vacant_since"])
    connection = op.get_bind()
    connection.execute(
        sa.text(
            "UPDATE rooms SET vacant_since = last_updated WHERE next_seq = 1 "
            "AND NOT EXISTS (SELECT 1 FROM members WHERE members.room_id = rooms.id)"
        )
    )
    _clean_labels(connection)
    _drop_unsafe_client_ids(connection)


def _clean_labels(connection: sa.Connection) -> None:
    rows = connection.execute(sa.text("SELECT id, label FROM rooms WHERE label <> ''")).all()
    for room_id, label in rows:
        cleaned = label_text(label)
        if cleaned != label:
            connection.execute(
                sa.text("UPDATE rooms SET label = :label WHERE id = :id"), {"label": cleaned, "id": room_id}
            )


def _drop_unsafe_client_ids(connection: sa.Connection) -> None:
    select = sa.text(
        "SELECT id, client_id FROM messages WHERE client_id IS NOT NULL AND id > :after ORDER BY id LIMIT :n"
    )
    after = 0
    while rows := connection.execute(select, {"after": after, "n": CHUNK}).all():
        unsafe = [{"id": row_id} for row_id, client_id in rows if CLIENT_ID.fullmatch(client_id) is None]
        if unsafe:
            connection.execute(sa.text("UPDATE messages SET client_id = NULL WHERE id = :id"), unsafe)
        after = rows[-1][0]


def downgrade() -> None:
    op.drop_index("ix_rooms_vacant_since", "rooms")
    op.drop_index("ix_rooms_created_by", "rooms")
    with op.batch_alter_table("rooms") as batch:
        batch.drop_column("vacant_since")
        batch.drop_column("created_by")
