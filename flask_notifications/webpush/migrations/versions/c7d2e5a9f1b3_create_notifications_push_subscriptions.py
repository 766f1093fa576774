"""Create the notifications_push_subscriptions table: every user's Web Push
subscriptions (one row per browser or phone).

Revision ID: c7d2e5a9f1b3
Revises:
Create Date: 2026-12-06 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "c7d2e5a9f1b3"
down_revision = None
branch_labels = ("flask_notifications_webpush",)
depends_on = None

TABLE = "notifications_push_subscriptions"


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("recipient", sa.String(255), nullable=False),
        sa.Column("endpoint", sa.Text(), nullable=False),
        sa.Column("endpoint_hash", sa.String(64), nullable=False),
        sa.Column("p256dh", sa.String(128), nullable=False),
        sa.Column("auth", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("endpoint_hash", name=f"uq_{TABLE}_endpoint"),
        sqlite_autoincrement=True,
    )
    op.create_index(f"ix_{TABLE}_recipient", TABLE, ["recipient", "id"])


def downgrade() -> None:
    op.drop_table(TABLE)
