"""outbox lease: every row is claimed with a compare-and-set lease

Revision ID: 0003_outbox_lease
Revises: 0002
Create Date: 2026-12-03 10:40:00

A drainer claims a row by setting `status = 'claimed'`, `lease_owner` (a token unique
to that claim) and `lease_until`; a row whose lease has expired may be claimed again,
so the CLI can drain beside a running daemon and a crashed drainer's rows come back.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_outbox_lease"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lease_owner", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_column("lease_until")
        batch_op.drop_column("lease_owner")
