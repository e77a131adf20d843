"""retainers and budgets: retainer periods, allocations, budget alerts sent

Revision ID: 0009_retainers_budgets
Revises: 0006_people_cost
Create Date: 2026-12-03 14:00:00

`retainer_periods` (one per client and billing period: hours counted, covered and
rolled in, the period's fixed retainer line), `retainer_allocations` (each T&M entry the
retainer placed, once) and `budget_alerts` (one row per scope, period and threshold
alerted; the unique dedupe key is the once-only guarantee).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_retainers_budgets"
down_revision: str | None = "0008_invoice_due"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "retainer_periods",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("client", sa.String(length=100), nullable=False),
        sa.Column("period_key", sa.String(length=64), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("counted_hours", sa.BigInteger(), nullable=False),
        sa.Column("covered_hours", sa.BigInteger(), nullable=False),
        sa.Column("rollover_in", sa.BigInteger(), nullable=False),
        sa.Column("line_entry_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["line_entry_id"],
            ["entries.id"],
            name=op.f("fk_retainer_periods_line_entry_id_entries"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_retainer_periods")),
        sa.UniqueConstraint("client", "period_key", name="uq_retainer_periods_client_period"),
        sa.UniqueConstraint("line_entry_id", name=op.f("uq_retainer_periods_line_entry_id")),
    )
    op.create_table(
        "retainer_allocations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("entry_id", sa.Integer(), nullable=False),
        sa.Column("client", sa.String(length=100), nullable=False),
        sa.Column("period_key", sa.String(length=64), nullable=False),
        sa.Column("covered_hours", sa.BigInteger(), nullable=False),
        sa.Column("overage_hours", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["entries.id"], name=op.f("fk_retainer_allocations_entry_id_entries")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_retainer_allocations")),
        sa.UniqueConstraint("entry_id", name=op.f("uq_retainer_allocations_entry_id")),
    )
    op.create_table(
        "budget_alerts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dedupe_key", sa.String(length=300), nullable=False),
        sa.Column("scope", sa.String(length=200), nullable=False),
        sa.Column("period_key", sa.String(length=64), nullable=False),
        sa.Column("threshold", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_budget_alerts")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_budget_alerts_dedupe_key")),
    )


def downgrade() -> None:
    op.drop_table("budget_alerts")
    op.drop_table("retainer_allocations")
    op.drop_table("retainer_periods")
