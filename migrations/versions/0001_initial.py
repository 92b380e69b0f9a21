"""Chat history: rooms, members, messages.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SQLite only auto-increments an INTEGER PRIMARY KEY (the rowid alias), not a BIGINT one.
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
LIVE = sa.text("deleted_at IS NULL")


def upgrade() -> None:
    op.create_table(
        "rooms",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uuid", sa.String(36), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("type_object", sa.Text(), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("last_updated", sa.Double(), nullable=False),
        sa.Column("next_seq", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_rooms"),
        sa.UniqueConstraint("uuid", name="uq_rooms_uuid"),
        sa.UniqueConstraint("type", "type_object", name="uq_rooms_type_type_object"),
    )
    op.create_table(
        "members",
        sa.Column("room_id", sa.Integer(), nullable=False),
        sa.Column("user", sa.Text(), nullable=False),
        sa.Column("last_seen", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("room_id", "user", name="pk_members"),
        sa.ForeignKeyConstraint(
            ["room_id"], ["rooms.id"], name="fk_members_room_id_rooms", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_members_last_seen", "members", ["last_seen"])
    op.create_table(
        "messages",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("room_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("uuid", sa.String(36), nullable=False),
        sa.Column("client_id", sa.Text(), nullable=True),
        sa.Column("author", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("timestamp", sa.Double(), nullable=False),
        sa.Column("edits", sa.Text(), server_default=sa.text("'[]'"), nullable=False),
        sa.Column("deleted_at", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_messages"),
        sa.ForeignKeyConstraint(
            ["room_id"], ["rooms.id"], name="fk_messages_room_id_rooms", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("uuid", name="uq_messages_uuid"),
        sa.UniqueConstraint("room_id", "seq", name="uq_messages_room_id_seq"),
        sa.UniqueConstraint("room_id", "author", "client_id", name="uq_messages_room_id_author_client_id"),
    )
    op.create_index(
        "ix_messages_live", "messages", ["room_id", "seq"], sqlite_where=LIVE, postgresql_where=LIVE
    )


def downgrade() -> None:
    op.drop_table("messages")
    op.drop_table("members")
    op.drop_table("rooms")
