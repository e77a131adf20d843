"""board state cache: each Azure DevOps work item type's states, kept across runs

Revision ID: 0005_board_state_cache
Revises: 0003_outbox_lease
Create Date: 2026-12-03 11:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_board_state_cache"
down_revision: str | None = "0003_outbox_lease"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "board_state_cache",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("board", sa.String(length=200), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_board_state_cache")),
        sa.UniqueConstraint("source", "board", name="uq_board_state_cache_source_board"),
    )


def downgrade() -> None:
    op.drop_table("board_state_cache")
