"""overdue invoices: due date, overdue flag, reminders

Revision ID: 0008_invoice_due
Revises: 0006_people_cost
Create Date: 2026-12-03 13:40:00

`invoices.due_date` (Stripe's invoice ``due_date``, recorded on finalize and from
webhooks), `invoices.overdue_at` (when Stripe's ``invoice.overdue`` arrived),
`invoices.last_reminder_at` and `invoices.reminders` (reminders re-sent through
Stripe's ``send``, at most once per configured interval).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_invoice_due"
down_revision: str | None = "0007_line_entries"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("due_date", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("overdue_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("last_reminder_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("reminders", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.drop_column("reminders")
        batch_op.drop_column("last_reminder_at")
        batch_op.drop_column("overdue_at")
        batch_op.drop_column("due_date")
