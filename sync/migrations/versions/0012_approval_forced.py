"""approval forced below the minimum charge: a column, not only an audit row

Revision ID: 0012_approval_forced
Revises: 0006_people_cost
Create Date: 2026-12-03 14:00:00

`approvals.forced_below_minimum`: the approval was given with `--force` (or Slack's
"Approve below minimum") for a total under Stripe's minimum charge. The finalize guard
reads it; until now it lived only in the `approved` audit row's detail, from which
existing approvals are filled in.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012_approval_forced"
down_revision: str | None = "0009_retainers_budgets"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("approvals", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "forced_below_minimum", sa.Boolean(), server_default=sa.false(), nullable=False
            )
        )
    conn = op.get_bind()
    audit = sa.table(
        "audit_log",
        sa.column("action", sa.String),
        sa.column("subject", sa.String),
        sa.column("detail", sa.JSON),
    )
    approvals = sa.table(
        "approvals",
        sa.column("invoice_id", sa.Integer),
        sa.column("forced_below_minimum", sa.Boolean),
    )
    forced = [
        int(row.subject.partition(":")[2])
        for row in conn.execute(
            sa.select(audit.c.subject, audit.c.detail).where(audit.c.action == "approved")
        )
        if (row.detail or {}).get("forced_below_minimum")
        and row.subject.partition(":")[2].isdigit()
    ]
    if forced:
        conn.execute(
            sa.update(approvals)
            .where(approvals.c.invoice_id.in_(forced))
            .values(forced_below_minimum=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("approvals", schema=None) as batch_op:
        batch_op.drop_column("forced_below_minimum")
