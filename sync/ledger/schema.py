"""The ledger's tables (SQLAlchemy Core). Alembic migrations in sync/migrations mirror it.

Money and hours are stored as exact scaled integers (millionths) so that SQLite, which
has no decimal type, keeps them exact and SUM() stays exact on both databases.
Unique constraints, not only code, make double entries impossible:
- `entries.entry_key` (and item, kind, sequence): one entry per billing step;
- `entries.stripe_invoice_item_id`: one ledger entry per Stripe line;
- `outbox.idempotency_key`: one external call per intent;
- `invoices.open_slot`: one open draft per client and billing period;
- `approvals.invoice_id`: one approval per invoice;
- `seen_deliveries (source, delivery_id)`: one processing per webhook delivery.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.sql.expression import false
from sqlalchemy.types import TypeDecorator

from mapping.money import tidy_decimal

SCALE = 6
_FACTOR = Decimal(10) ** SCALE


@lru_cache(maxsize=1 << 14)  # a pure function of the number; boards repeat a few values
def to_scaled(value: Decimal | None) -> int | None:
    """A Decimal as stored: an integer number of millionths (half-up beyond that)."""
    if value is None:
        return None
    if type(value) is not Decimal:
        value = Decimal(value)
    return int((value * _FACTOR).to_integral_value(rounding=ROUND_HALF_UP))


@lru_cache(maxsize=1 << 14)
def from_scaled(value: int | None) -> Decimal | None:
    """A stored number of millionths as a tidy Decimal (1500000 -> 1.5)."""
    if value is None:
        return None
    return tidy_decimal(Decimal(int(value)).scaleb(-SCALE))


class ScaledDecimal(TypeDecorator[Decimal]):
    """A Decimal stored as an integer number of millionths (exact on every database)."""

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> int | None:
        return to_scaled(value)

    def process_result_value(self, value: int | None, dialect: Dialect) -> Decimal | None:
        return from_scaled(value)


def utc_datetime() -> DateTime:
    return DateTime(timezone=True)


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

items = Table(
    "items",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("item_key", String(400), nullable=False, unique=True),
    Column("source", String(32), nullable=False),
    Column("board", String(200), nullable=False),
    Column("external_id", String(200), nullable=False),
    Column("client", String(100), nullable=False),
    Column("title", Text, nullable=False),
    Column("url", Text, nullable=False),
    Column("column_name", String(200), nullable=False),
    Column("state_category", String(20), nullable=False),
    Column("is_done", Boolean, nullable=False),
    Column("hours", ScaledDecimal(), nullable=True),
    Column("billing_type", String(32), nullable=False),
    Column("labels", JSON, nullable=False),
    Column("assignees", JSON, nullable=False),
    Column("iteration", String(400), nullable=True),
    Column("rate", ScaledDecimal(), nullable=True),
    Column("milestone_amount", ScaledDecimal(), nullable=True),
    Column("revision", BigInteger, nullable=False),
    Column("fingerprint", String(40), nullable=False),
    Column("updated_at", utc_datetime(), nullable=False),
    Column("done_at", utc_datetime(), nullable=True),
    Column("first_seen_at", utc_datetime(), nullable=False),
    Column("last_seen_at", utc_datetime(), nullable=False),
)
Index("ix_items_client_board", items.c.client, items.c.board)

transitions = Table(
    "transitions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("item_id", Integer, ForeignKey("items.id"), nullable=False, index=True),
    Column("from_column", String(200), nullable=True),
    Column("to_column", String(200), nullable=False),
    Column("from_category", String(20), nullable=True),
    Column("to_category", String(20), nullable=False),
    Column("revision", BigInteger, nullable=False),
    Column("at", utc_datetime(), nullable=False),
    Column("recorded_at", utc_datetime(), nullable=False),
)

invoices = Table(
    "invoices",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("client", String(100), nullable=False, index=True),
    Column("period_key", String(64), nullable=False),
    Column("period_start", utc_datetime(), nullable=True),
    Column("period_end", utc_datetime(), nullable=True),
    Column("currency", String(3), nullable=False),
    # draft, finalized (open), sent, paid, void, deleted, uncollectible
    Column("state", String(20), nullable=False),
    # "client|period" while the invoice is an open draft, NULL afterwards: unique, so
    # there is at most one open draft per client and billing period.
    Column("open_slot", String(200), nullable=True, unique=True),
    Column("stripe_invoice_id", String(100), nullable=True, unique=True),
    Column("number", String(100), nullable=True),
    Column("hosted_url", Text, nullable=True),
    Column("total_minor", BigInteger, nullable=True),
    Column("last_event_at", BigInteger, nullable=True),
    # Bumped on every change of the draft's lines: an approval names the version it saw.
    Column("version", Integer, nullable=False, server_default="0"),
    Column("slack_channel", String(100), nullable=True),
    Column("slack_ts", String(100), nullable=True),
    Column("created_at", utc_datetime(), nullable=False),
    Column("updated_at", utc_datetime(), nullable=False),
    # Overdue invoices (0008): Stripe's due date, when Stripe said overdue, and the
    # reminders kanvoice re-sent (at most one per configured interval).
    Column("due_date", utc_datetime(), nullable=True),
    Column("overdue_at", utc_datetime(), nullable=True),
    Column("last_reminder_at", utc_datetime(), nullable=True),
    Column("reminders", Integer, nullable=False, server_default="0"),
)

entries = Table(
    "entries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("entry_key", String(450), nullable=False, unique=True),
    Column("item_id", Integer, ForeignKey("items.id"), nullable=False, index=True),
    Column("client", String(100), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("state", String(20), nullable=False),
    Column("hours", ScaledDecimal(), nullable=False),
    Column("rate", ScaledDecimal(), nullable=True),
    Column("amount", ScaledDecimal(), nullable=True),
    Column("currency", String(3), nullable=False),
    Column("description", Text, nullable=False),
    Column("done_at", utc_datetime(), nullable=True),
    Column("invoice_id", Integer, ForeignKey("invoices.id"), nullable=True, index=True),
    Column("stripe_invoice_item_id", String(100), nullable=True, unique=True),
    Column("review_reason", Text, nullable=True),
    Column("created_at", utc_datetime(), nullable=False),
    Column("updated_at", utc_datetime(), nullable=False),
    # Who did the work (0006): the person's key (NULL: the whole item), their role, and
    # the entry's cost = hours × cost rate, in the entry's currency.
    Column("person", String(200), nullable=True),
    Column("role", String(100), nullable=True),
    Column("cost_rate", ScaledDecimal(), nullable=True),
    Column("cost", ScaledDecimal(), nullable=True),
    UniqueConstraint("item_id", "kind", "seq", name="uq_entries_item_kind_seq"),
)
Index("ix_entries_client_state", entries.c.client, entries.c.state)

# A merged Stripe line (0007): every entry it bills, by the line's lead entry (whose
# stripe_invoice_item_id holds the line). Lines of one entry have no rows.
line_entries = Table(
    "line_entries",
    metadata,
    Column("entry_id", Integer, ForeignKey("entries.id"), primary_key=True),
    Column("lead_entry_id", Integer, ForeignKey("entries.id"), nullable=False),
    Column("invoice_id", Integer, ForeignKey("invoices.id"), nullable=False),
)
Index("ix_line_entries_lead", line_entries.c.lead_entry_id)
Index("ix_line_entries_invoice", line_entries.c.invoice_id)

entry_events = Table(
    "entry_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("entry_id", Integer, ForeignKey("entries.id"), nullable=False, index=True),
    Column("from_state", String(20), nullable=True),
    Column("to_state", String(20), nullable=False),
    Column("hours", ScaledDecimal(), nullable=False),
    Column("amount", ScaledDecimal(), nullable=True),
    Column("actor", String(200), nullable=False),
    Column("reason", Text, nullable=False),
    Column("at", utc_datetime(), nullable=False),
)

approvals = Table(
    "approvals",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("invoice_id", Integer, ForeignKey("invoices.id"), nullable=False, unique=True),
    Column("approver", String(200), nullable=False),
    Column("channel", String(32), nullable=False),
    Column("total_minor", BigInteger, nullable=False),
    Column("decided_at", utc_datetime(), nullable=False),
    # Approved although under Stripe's minimum charge (`approve --force`): the
    # finalize guard lets only such an approval through below the minimum.
    Column("forced_below_minimum", Boolean, nullable=False, server_default=false()),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", utc_datetime(), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("action", String(64), nullable=False),
    Column("subject", String(400), nullable=False),
    Column("detail", JSON, nullable=False),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("idempotency_key", String(200), nullable=False, unique=True),
    Column("operation", String(64), nullable=False),
    Column("entry_id", Integer, ForeignKey("entries.id"), nullable=True, index=True),
    Column("invoice_id", Integer, ForeignKey("invoices.id"), nullable=True, index=True),
    Column("payload", JSON, nullable=False),
    # pending, claimed (leased to one drainer), done, parked (needs a person), cancelled
    Column("status", String(20), nullable=False, index=True),
    Column("attempts", Integer, nullable=False),
    Column("not_before", utc_datetime(), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("result", JSON, nullable=True),
    Column("created_at", utc_datetime(), nullable=False),
    Column("completed_at", utc_datetime(), nullable=True),
    # The claim: a token unique to one drainer's claim, and when it lapses (0003).
    Column("lease_owner", String(100), nullable=True),
    Column("lease_until", utc_datetime(), nullable=True),
)

cursors = Table(
    "cursors",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("source", String(32), nullable=False),
    Column("board", String(200), nullable=False),
    Column("value", Text, nullable=False),
    Column("updated_at", utc_datetime(), nullable=False),
    UniqueConstraint("source", "board", name="uq_cursors_source_board"),
)

#: What a board's connector learnt about the board's process and may reuse across
#: runs (Azure DevOps: each work item type's states and their categories).
board_state_cache = Table(
    "board_state_cache",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("source", String(32), nullable=False),
    Column("board", String(200), nullable=False),
    Column("value", JSON, nullable=False),
    Column("fetched_at", utc_datetime(), nullable=False),
    UniqueConstraint("source", "board", name="uq_board_state_cache_source_board"),
)

seen_deliveries = Table(
    "seen_deliveries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("source", String(32), nullable=False),
    Column("delivery_id", String(200), nullable=False),
    Column("received_at", utc_datetime(), nullable=False),
    UniqueConstraint("source", "delivery_id", name="uq_seen_deliveries_source_delivery"),
)

ledger_meta = Table(
    "ledger_meta",
    metadata,
    Column("key", String(100), primary_key=True),
    Column("value", Text, nullable=False),
)

# Every verified inbound webhook, written in one short INSERT before it is answered, and
# drained by the worker (sync/intake.py). The unique (source, delivery_id) is the dedupe:
# a redelivery inserts nothing and is answered "duplicate". Rows stay after processing
# (status done / ignored) so that late redeliveries still dedupe.
inbox = Table(
    "inbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("source", String(32), nullable=False),
    Column("delivery_id", String(200), nullable=False),
    Column("event", String(100), nullable=False),
    Column("action", String(100), nullable=False),
    # The board's own item id to re-fetch (GitHub node id, Azure DevOps work item id);
    # NULL for events that carry their data (Stripe).
    Column("item_id", String(200), nullable=True),
    Column("board_hint", String(400), nullable=True),
    Column("revision", BigInteger, nullable=True),
    # The raw body as received (after verification), for events processed from it.
    Column("body", Text, nullable=True),
    # pending, done, ignored
    Column("status", String(20), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("not_before", utc_datetime(), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("received_at", utc_datetime(), nullable=False),
    Column("processed_at", utc_datetime(), nullable=True),
    UniqueConstraint("source", "delivery_id", name="uq_inbox_source_delivery"),
)
Index("ix_inbox_status_id", inbox.c.status, inbox.c.id)

# Retainers (0009): one row per client and billing period with a retainer. Hours are
# T&M hours placed on the period's drafts (`counted_hours`), those the retainer covered
# (`covered_hours`) and those rolled in from the previous period; `line_entry_id` is the
# period's fixed retainer line (one per period: the unique constraint).
retainer_periods = Table(
    "retainer_periods",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("client", String(100), nullable=False),
    Column("period_key", String(64), nullable=False),
    Column("period_start", utc_datetime(), nullable=True),
    Column("counted_hours", ScaledDecimal(), nullable=False),
    Column("covered_hours", ScaledDecimal(), nullable=False),
    Column("rollover_in", ScaledDecimal(), nullable=False),
    Column("line_entry_id", Integer, ForeignKey("entries.id"), nullable=True, unique=True),
    Column("created_at", utc_datetime(), nullable=False),
    Column("updated_at", utc_datetime(), nullable=False),
    UniqueConstraint("client", "period_key", name="uq_retainer_periods_client_period"),
)

# Each T&M entry the retainer placed, once (a line released and drafted again keeps
# its allocation): covered hours (billed by the retainer line) and overage hours.
retainer_allocations = Table(
    "retainer_allocations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("entry_id", Integer, ForeignKey("entries.id"), nullable=False, unique=True),
    Column("client", String(100), nullable=False),
    Column("period_key", String(64), nullable=False),
    Column("covered_hours", ScaledDecimal(), nullable=False),
    Column("overage_hours", ScaledDecimal(), nullable=False),
    Column("created_at", utc_datetime(), nullable=False),
)

# Budget alerts queued to Slack: the unique `dedupe_key` (scope, period, threshold)
# makes each alert once per threshold per period, whatever runs the check.
budget_alerts = Table(
    "budget_alerts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dedupe_key", String(300), nullable=False, unique=True),
    Column("scope", String(200), nullable=False),
    Column("period_key", String(64), nullable=False),
    Column("threshold", Integer, nullable=False),
    Column("text", Text, nullable=False),
    Column("created_at", utc_datetime(), nullable=False),
)
