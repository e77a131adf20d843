"""The ledger's rows as typed records: what leaves `sync.ledger`, never an untyped row.

Each record has the attribute names of the columns it was read from, so code that read
``row.state`` keeps reading ``record.state``; states and kinds arrive as the domain's
enums (`InvoiceState`, `EntryState`, `EntryKind`; they are `str` enums, so comparing
with the stored strings still holds). Money and hours are exact `Decimal`s, times are
timezone-aware UTC (SQLite keeps no offset; the ledger writes UTC).
`tests/unit/test_ledger_records.py` checks that the table records name every column
of their table: a column added by a migration must be added here too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Self

from sqlalchemy import RowMapping

from mapping.domain import EntryKind, EntryState
from mapping.invoices import InvoiceState

# -- names: the `outbox` table's statuses and operations --------------------------------


class OutboxStatus(StrEnum):
    PENDING = "pending"
    CLAIMED = "claimed"  # leased to one drainer until `lease_until`
    DONE = "done"
    PARKED = "parked"  # refused for good: waits for a person, never retried
    CANCELLED = "cancelled"  # nothing left to do (the ledger moved on)


class Service(StrEnum):
    STRIPE = "stripe"
    SLACK = "slack"


class Operation(StrEnum):
    """Every external call kanvoice makes through the outbox (the `operation` column)."""

    CREATE_INVOICE = "create_invoice"
    CREATE_INVOICE_ITEM = "create_invoice_item"
    UPDATE_INVOICE_ITEM = "update_invoice_item"
    DELETE_INVOICE_ITEM = "delete_invoice_item"
    FINALIZE_INVOICE = "finalize_invoice"
    SEND_INVOICE = "send_invoice"
    # An overdue invoice sent again as a reminder (Stripe's send), one per interval.
    SEND_REMINDER = "send_reminder"
    SLACK_POST_DIGEST = "slack_post_digest"
    SLACK_POST_DRAFT = "slack_post_draft"
    SLACK_UPDATE_DECIDED = "slack_update_decided"
    SLACK_BUDGET_ALERT = "slack_budget_alert"

    @property
    def service(self) -> Service:
        return Service.SLACK if self.value.startswith("slack_") else Service.STRIPE


#: A JSON document as stored in a JSON column (an object at the top).
JsonObject = Mapping[str, object]


def utc(value: datetime | None) -> datetime | None:
    """The stored time as an aware UTC datetime (None stays None)."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _utc_required(value: datetime) -> datetime:
    found = utc(value)
    assert found is not None
    return found


def _decimal(value: Decimal | int | str) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


def _optional_decimal(value: Decimal | int | str | None) -> Decimal | None:
    return None if value is None else _decimal(value)


def _optional_int(value: int | None) -> int | None:
    return None if value is None else int(value)


def _optional_str(value: object) -> str | None:
    return None if value is None else str(value)


def _names(value: object) -> tuple[str, ...]:
    if isinstance(value, list | tuple):
        return tuple(str(v) for v in value)
    return ()


@dataclass(frozen=True, slots=True)
class InvoiceRecord:
    """One row of `invoices`: a draft or invoice of one client and billing period.

    `version` counts changes of the draft's lines (an approval names the version it
    saw); `total_minor` is Stripe's total in the currency's minor units, once known."""

    id: int
    client: str
    period_key: str
    period_start: datetime | None
    period_end: datetime | None
    currency: str
    state: InvoiceState
    open_slot: str | None
    stripe_invoice_id: str | None
    number: str | None
    hosted_url: str | None
    total_minor: int | None
    last_event_at: int | None
    version: int
    slack_channel: str | None
    slack_ts: str | None
    created_at: datetime
    updated_at: datetime
    #: Overdue invoices (0008): Stripe's due date, when Stripe (or the due date) made it
    #: overdue, and the reminders sent again since.
    due_date: datetime | None = None
    overdue_at: datetime | None = None
    last_reminder_at: datetime | None = None
    reminders: int = 0

    @classmethod
    def from_row(cls, row: RowMapping) -> Self:
        return cls(
            id=int(row["id"]),
            client=str(row["client"]),
            period_key=str(row["period_key"]),
            period_start=utc(row["period_start"]),
            period_end=utc(row["period_end"]),
            currency=str(row["currency"]),
            state=InvoiceState(row["state"]),
            open_slot=_optional_str(row["open_slot"]),
            stripe_invoice_id=_optional_str(row["stripe_invoice_id"]),
            number=_optional_str(row["number"]),
            hosted_url=_optional_str(row["hosted_url"]),
            total_minor=_optional_int(row["total_minor"]),
            last_event_at=_optional_int(row["last_event_at"]),
            version=int(row["version"] or 0),
            slack_channel=_optional_str(row["slack_channel"]),
            slack_ts=_optional_str(row["slack_ts"]),
            created_at=_utc_required(row["created_at"]),
            updated_at=_utc_required(row["updated_at"]),
            due_date=utc(row["due_date"]),
            overdue_at=utc(row["overdue_at"]),
            last_reminder_at=utc(row["last_reminder_at"]),
            reminders=int(row["reminders"] or 0),
        )


@dataclass(frozen=True, slots=True)
class ApprovalRecord:
    """One row of `approvals`: who approved which invoice, from where, for what total
    (minor units), and when. The only path to finalizing an invoice."""

    id: int
    invoice_id: int
    approver: str
    channel: str
    total_minor: int
    decided_at: datetime
    #: Approved below Stripe's minimum charge on purpose (`--force`, 0012): the
    #: finalize guard lets such a total through.
    forced_below_minimum: bool = False

    @classmethod
    def from_row(cls, row: RowMapping) -> Self:
        return cls(
            id=int(row["id"]),
            invoice_id=int(row["invoice_id"]),
            approver=str(row["approver"]),
            channel=str(row["channel"]),
            total_minor=int(row["total_minor"]),
            decided_at=_utc_required(row["decided_at"]),
            forced_below_minimum=bool(row["forced_below_minimum"]),
        )


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One row of `audit_log`: who did what to which subject (``invoice:12``,
    ``item:…``), when, with the details (a JSON object)."""

    id: int
    at: datetime
    actor: str
    action: str
    subject: str
    detail: JsonObject = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: RowMapping) -> Self:
        detail = row["detail"]
        return cls(
            id=int(row["id"]),
            at=_utc_required(row["at"]),
            actor=str(row["actor"]),
            action=str(row["action"]),
            subject=str(row["subject"]),
            detail=dict(detail) if isinstance(detail, Mapping) else {},
        )


@dataclass(frozen=True, slots=True)
class DraftLineRecord:
    """One entry on an invoice with its board item: what a reviewer sees per line.

    `id` is the entry's id; `amount` is hours × rate (or the milestone price), None
    when the entry has no rate."""

    id: int
    kind: EntryKind
    state: EntryState
    hours: Decimal
    rate: Decimal | None
    amount: Decimal | None
    currency: str
    description: str
    review_reason: str | None
    stripe_invoice_item_id: str | None
    done_at: datetime | None
    title: str
    url: str | None
    board: str
    iteration: str | None
    assignees: tuple[str, ...]
    external_id: str
    milestone_amount: Decimal | None

    @classmethod
    def from_row(cls, row: RowMapping) -> Self:
        return cls(
            id=int(row["id"]),
            kind=EntryKind(row["kind"]),
            state=EntryState(row["state"]),
            hours=_decimal(row["hours"]),
            rate=_optional_decimal(row["rate"]),
            amount=_optional_decimal(row["amount"]),
            currency=str(row["currency"]),
            description=str(row["description"] or ""),
            review_reason=_optional_str(row["review_reason"]),
            stripe_invoice_item_id=_optional_str(row["stripe_invoice_item_id"]),
            done_at=utc(row["done_at"]),
            title=str(row["title"]),
            url=_optional_str(row["url"]),
            board=str(row["board"]),
            iteration=_optional_str(row["iteration"]),
            assignees=_names(row["assignees"]),
            external_id=str(row["external_id"]),
            milestone_amount=_optional_decimal(row["milestone_amount"]),
        )


@dataclass(frozen=True, slots=True)
class PipelineRow:
    """Entries summed per client, state, kind and currency (exact Decimals)."""

    client: str
    state: EntryState
    kind: EntryKind
    currency: str
    entries: int
    hours: Decimal
    amount: Decimal

    @classmethod
    def from_row(cls, row: RowMapping) -> Self:
        return cls(
            client=str(row["client"]),
            state=EntryState(row["state"]),
            kind=EntryKind(row["kind"]),
            currency=str(row["currency"]),
            entries=int(row["entries"]),
            hours=_decimal(row["hours"]),
            amount=_decimal(row["amount"]),
        )


@dataclass(frozen=True, slots=True)
class BreakdownRow(PipelineRow):
    """`PipelineRow` split finer, per board and iteration of the entries' items."""

    board: str
    iteration: str | None

    @classmethod
    def from_row(cls, row: RowMapping) -> Self:
        return cls(
            client=str(row["client"]),
            state=EntryState(row["state"]),
            kind=EntryKind(row["kind"]),
            currency=str(row["currency"]),
            entries=int(row["entries"]),
            hours=_decimal(row["hours"]),
            amount=_decimal(row["amount"]),
            board=str(row["board"]),
            iteration=_optional_str(row["iteration"]),
        )


@dataclass(frozen=True, slots=True)
class EntryRecord:
    """One row of `entries`: billable (or cost-only) work of one board item.

    `amount` is hours × rate (or the milestone price) in `currency`, None without a
    rate; `invoice_id` and `stripe_invoice_item_id` say which draft and Stripe line
    bill it (None: on none); `person` / `role` name who did it (None: the whole item),
    `cost` is hours × their cost rate."""

    id: int
    entry_key: str
    item_id: int
    client: str
    kind: EntryKind
    seq: int
    state: EntryState
    hours: Decimal
    rate: Decimal | None
    amount: Decimal | None
    currency: str
    description: str
    done_at: datetime | None
    invoice_id: int | None
    stripe_invoice_item_id: str | None
    review_reason: str | None
    created_at: datetime
    updated_at: datetime
    person: str | None
    role: str | None
    cost_rate: Decimal | None
    cost: Decimal | None

    @staticmethod
    def _fields(row: RowMapping) -> dict[str, object]:
        return {
            "id": int(row["id"]),
            "entry_key": str(row["entry_key"]),
            "item_id": int(row["item_id"]),
            "client": str(row["client"]),
            "kind": EntryKind(row["kind"]),
            "seq": int(row["seq"]),
            "state": EntryState(row["state"]),
            "hours": _decimal(row["hours"]),
            "rate": _optional_decimal(row["rate"]),
            "amount": _optional_decimal(row["amount"]),
            "currency": str(row["currency"]),
            "description": str(row["description"] or ""),
            "done_at": utc(row["done_at"]),
            "invoice_id": _optional_int(row["invoice_id"]),
            "stripe_invoice_item_id": _optional_str(row["stripe_invoice_item_id"]),
            "review_reason": _optional_str(row["review_reason"]),
            "created_at": _utc_required(row["created_at"]),
            "updated_at": _utc_required(row["updated_at"]),
            "person": _optional_str(row["person"]),
            "role": _optional_str(row["role"]),
            "cost_rate": _optional_decimal(row["cost_rate"]),
            "cost": _optional_decimal(row["cost"]),
        }

    @classmethod
    def from_row(cls, row: RowMapping) -> Self:
        return cls(**cls._fields(row))  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class EntryLineRecord(EntryRecord):
    """An entry with what its Stripe line and grouping need of its board item."""

    item_key: str
    board: str
    title: str
    url: str | None
    external_id: str

    @classmethod
    def from_row(cls, row: RowMapping) -> Self:
        return cls(
            **cls._fields(row),  # type: ignore[arg-type]
            item_key=str(row["item_key"]),
            board=str(row["board"]),
            title=str(row["title"] or ""),
            url=_optional_str(row["url"]),
            external_id=str(row["external_id"]),
        )


@dataclass(frozen=True, slots=True)
class EntryLink:
    """An entry and the Stripe line it is linked to (None: none yet)."""

    id: int
    stripe_invoice_item_id: str | None


@dataclass(frozen=True, slots=True)
class SummaryLineRecord:
    """One line of a draft as the approval message shows it (entry and its item).

    `kind` is the stored name as it is (the message shows an unknown kind as time)."""

    id: int
    kind: str
    hours: Decimal | None
    rate: Decimal | None
    amount: Decimal | None
    description: str
    person: str | None
    role: str | None
    title: str
    url: str | None

    @classmethod
    def from_row(cls, row: RowMapping) -> Self:
        return cls(
            id=int(row["id"]),
            kind=str(row["kind"]),
            hours=_optional_decimal(row["hours"]),
            rate=_optional_decimal(row["rate"]),
            amount=_optional_decimal(row["amount"]),
            description=str(row["description"] or ""),
            person=_optional_str(row["person"]),
            role=_optional_str(row["role"]),
            title=str(row["title"]),
            url=_optional_str(row["url"]),
        )
