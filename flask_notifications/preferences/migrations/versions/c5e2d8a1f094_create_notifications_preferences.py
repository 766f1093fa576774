"""Create the notifications_preferences table.

Revision ID: c5e2d8a1f094
Revises:
Create Date: 2026-12-06 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "c5e2d8a1f094"
down_revision = None
branch_labels = ("flask_notifications_preferences",)
depends_on = None

TABLE = "notifications_preferences"


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("recipient", sa.String(255), nullable=False),
        sa.Column("hub", sa.String(100), nullable=False),
        sa.Column("channel", sa.String(100), nullable=False),
        sa.Column("enabled", sa.Boolean(name=f"ck_{TABLE}_enabled"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("recipient", "hub", "channel", name=f"pk_{TABLE}"),
    )


def downgrade() -> None:
    op.drop_table(TABLE)
