"""line entries: which entries one Stripe line covers (merged lines, issue 18)

Revision ID: 0007_line_entries
Revises: 0006_people_cost
Create Date: 2026-12-03 14:00:00

`line_entries` links a Stripe line, named by its lead entry (the entry whose
`stripe_invoice_item_id` holds the line and whose id its idempotency keys carry), to
every entry it bills, the lead included. Only merged lines (the client's
`line_grouping` is "item_person" or "role") have rows; a line of one entry has none.
An entry is on at most one line (`entry_id` is the key); the rows of a draft go when
its entries leave it (reject, void, defer).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_line_entries"
down_revision: str | None = "0006_people_cost"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "line_entries",
        sa.Column("entry_id", sa.Integer(), sa.ForeignKey("entries.id"), primary_key=True),
        sa.Column("lead_entry_id", sa.Integer(), sa.ForeignKey("entries.id"), nullable=False),
        sa.Column("invoice_id", sa.Integer(), sa.ForeignKey("invoices.id"), nullable=False),
    )
    op.create_index("ix_line_entries_lead", "line_entries", ["lead_entry_id"])
    op.create_index("ix_line_entries_invoice", "line_entries", ["invoice_id"])


def downgrade() -> None:
    op.drop_index("ix_line_entries_invoice", table_name="line_entries")
    op.drop_index("ix_line_entries_lead", table_name="line_entries")
    op.drop_table("line_entries")
