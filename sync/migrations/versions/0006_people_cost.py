"""people and cost: who did the work, their role, and the entry's cost

Revision ID: 0006_people_cost
Revises: 0005_board_state_cache
Create Date: 2026-12-03 11:30:00

`entries.person` (a configured person's key, or the board identity of someone not
configured; NULL for an entry of the whole item, as before people existed),
`entries.role` (frozen with the entry), `entries.cost_rate` and `entries.cost`
(hours × cost rate, in the entry's currency; scaled integers like every amount).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_people_cost"
down_revision: str | None = "0005_board_state_cache"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("entries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("person", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("role", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("cost_rate", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("cost", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("entries", schema=None) as batch_op:
        batch_op.drop_column("cost")
        batch_op.drop_column("cost_rate")
        batch_op.drop_column("role")
        batch_op.drop_column("person")
