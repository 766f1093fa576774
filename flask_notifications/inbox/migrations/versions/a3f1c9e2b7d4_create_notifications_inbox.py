"""Create the notifications_inbox table and its badge versions table.

Revision ID: a3f1c9e2b7d4
Revises:
Create Date: 2025-01-01 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "a3f1c9e2b7d4"
down_revision = None
branch_labels = ("flask_notifications_inbox",)
depends_on = None

TABLE = "notifications_inbox"


def upgrade() -> None:
    unread = sa.text("read_at IS NULL AND archived_at IS NULL")
    op.create_table(
        TABLE,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("recipient", sa.String(255), nullable=False),
        sa.Column("delivery_id", sa.String(255), nullable=False),
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.Column("event_type", sa.String(255), nullable=False),
        sa.Column("event", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("delivery_id", "recipient", name=f"uq_{TABLE}_delivery_recipient"),
        sqlite_autoincrement=True,
    )
    op.create_index(f"ix_{TABLE}_recipient_id", TABLE, ["recipient", "id"])
    op.create_index(f"ix_{TABLE}_unread", TABLE, ["recipient", "id"], postgresql_where=unread, sqlite_where=unread)
    op.create_index(f"ix_{TABLE}_created_at", TABLE, ["created_at"])
    op.create_table(
        f"{TABLE}_versions",
        sa.Column("recipient", sa.String(255), primary_key=True),
        sa.Column("version", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table(f"{TABLE}_versions")
    op.drop_table(TABLE)
