"""Drafts, approvals and the Stripe outbox: ready entries become Stripe draft invoice
items exactly once, and nothing is finalized without an approval row.

Atomic phases: every intent to call Stripe is first written to the outbox, in the
same transaction as the ledger change that causes it, with a deterministic
idempotency key. `drain()` then performs each call and records its result in a new
transaction. A crash between the two repeats the call with the same key (Stripe
replays its first answer); when the key may have been pruned (older than a day) or
was spent on a server error, the drain first looks for an object whose metadata names
the entry, and adopts it instead of creating another.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import Connection, and_, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from connectors.base import FatalError, RetriableError
from connectors.stripe.port import StripePort, StripeRejected
from mapping.domain import EntryState
from mapping.invoices import BillingPeriod, Cadence, InvoiceState, moves_forward, state_rank
from mapping.invoices import billing_period as core_billing_period
from mapping.money import Money
from mapping.stripe_lines import line_what, line_who
from mapping.stripe_rules import (
    MAX_DESCRIPTION,
    check_charge,
    fit_description,
    fit_metadata,
    fit_metadata_value,
    invoice_capacity,
)
from sync.engine import Clock
from sync.failpoints import failpoint
from sync.ledger import schema as t
from sync.ledger.ops import (
    audit,
    bump_version,
    enqueue,
    invoice_row,
    ledger_id,
    move_entry,
    park_op,
)
from sync.ledger.review import deferred_from
from sync.ledger.store import Ledger, claim_delivery
from sync.settings import ClientSettings, Settings

log = structlog.get_logger(__name__)

# Invoice states in the ledger, ranked so late or repeated Stripe events never move an
# invoice backwards.
INVOICE_RANK = {
    "draft": 0,
    "finalized": 1,
    "sent": 2,
    "uncollectible": 3,
    "paid": 4,
    "void": 5,
    "deleted": 5,
}
KEY_REUSE_WINDOW = timedelta(hours=23)  # Stripe keeps keys at least 24 h
# Metadata the drain and reconcile search by: never dropped or renamed by truncation.
_SEARCH_KEYS = frozenset({"kanvoice_entry", "kanvoice_entry_id", "kanvoice_invoice"})


class InvoicingError(ValueError):
    """A request that cannot be done as asked; the message says why (shown to users)."""


class BelowMinimumCharge(InvoicingError):
    """The draft's total is under Stripe's minimum charge: not finalized unless forced.

    Stripe would mark such an invoice paid and move the amount to the customer's credit
    balance; the lines stay on the open draft and go out with the next invoice."""


class NotAnApprover(PermissionError):
    """The person is not on the approver list."""


def billing_period(client: ClientSettings, now: datetime) -> BillingPeriod:
    """The client's current period in its own time zone (month, week, or on demand)."""
    return core_billing_period(
        Cadence(client.cadence.value), now, client.timezone, client.week_starts_on
    )


@dataclass
class DraftResult:
    """What drafting did. `invoice_id` is None when the client had nothing to bill and
    no open draft: no draft is created for nothing."""

    invoice_id: int | None
    period: str
    added: int
    total: Money
    lines: int
    left: int = 0  # ready lines that did not fit (250 per invoice): on the next draft


@dataclass
class DrainReport:
    done: int = 0
    waiting: int = 0
    retried: int = 0
    parked: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class Drift:
    client: str
    invoice_id: int
    stripe_invoice_id: str | None
    problem: str
    repair: str


class Invoicing:
    """Drafting, approval and the Stripe outbox for every configured client.

    `gateway_factory` builds the `StripePort` (the real gateway, or the in-memory
    Stripe of the demo) in the event loop that first needs it; None: Stripe is not
    configured, and any call to it is an `InvoicingError` naming the setting.
    """

    def __init__(
        self,
        ledger: Ledger,
        settings: Settings,
        clock: Clock,
        gateway_factory: Callable[[], StripePort] | None = None,
    ) -> None:
        self.ledger = ledger
        self.settings = settings
        self.clock = clock
        self.gateway_factory = gateway_factory
        self._gateway: StripePort | None = None
        self._drain_lock = asyncio.Lock()
        self.verified_approvers: set[str] = set()

    @property
    def gateway(self) -> StripePort:
        if self._gateway is None:
            if self.gateway_factory is None:
                raise InvoicingError(
                    "stripe.api_key is not set: set KANVOICE_STRIPE__API_KEY to reach Stripe"
                )
            self._gateway = self.gateway_factory()
        return self._gateway

    async def close(self) -> None:
        if self._gateway is not None:
            await self._gateway.close()
            self._gateway = None

    def _client(self, key: str) -> ClientSettings:
        try:
            return self.settings.client(key)
        except KeyError:
            known = [c.key for c in self.settings.clients]
            raise InvoicingError(f"unknown client {key!r}: expected one of {known}") from None

    # --- drafting (ledger only) ---------------------------------------------------

    def create_or_refresh_draft(self, client_key: str, actor: str = "kanvoice") -> DraftResult:
        """Put every ready entry of the client on its open draft for the current period,
        creating the draft if needed, and queue the Stripe calls. Safe to repeat."""
        client = self._client(client_key)
        now = self.clock()
        period = billing_period(client, now)
        slot = f"{client.key}|{period.key}"
        for attempt in range(3):
            try:
                with self.ledger.engine.begin() as conn:
                    return self._draft(conn, client, period, slot, now, actor)
            except IntegrityError:
                # Another instance opened the same draft at the same time: use theirs.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _draft(
        self,
        conn: Connection,
        client: ClientSettings,
        period: BillingPeriod,
        slot: str,
        now: datetime,
        actor: str,
    ) -> DraftResult:
        invoice = conn.execute(select(t.invoices).where(t.invoices.c.open_slot == slot)).first()
        queued = conn.execute(
            select(t.entries.c.id)
            .where(
                t.entries.c.client == client.key,
                t.entries.c.state == EntryState.READY.value,
                t.entries.c.currency == client.currency,
            )
            .order_by(t.entries.c.id)
        ).all()
        if invoice is None and not queued:
            # Nothing to bill: no 0-line draft on Stripe, no approval request for it.
            return DraftResult(None, period.key, 0, Money.zero(client.currency).quantized(), 0)
        if invoice is None:
            invoice_id = int(
                conn.execute(
                    insert(t.invoices).values(
                        client=client.key,
                        period_key=period.key,
                        period_start=period.start,
                        period_end=period.end,
                        currency=client.currency,
                        state="draft",
                        open_slot=slot,
                        version=0,
                        created_at=now,
                        updated_at=now,
                    )
                ).inserted_primary_key[0]  # type: ignore[index]
            )
            audit(
                conn, now, actor, "drafted", f"invoice:{invoice_id}", client=client.key,
                period=period.key,
            )
        else:
            invoice_id = int(invoice.id)
        prefix = f"kv-{ledger_id(conn)}"
        enqueue(
            conn, "create_invoice", f"{prefix}-inv{invoice_id}-create", now, invoice_id=invoice_id
        )
        # Stripe takes at most 250 invoice items per invoice: what does not fit stays
        # ready (oldest first on this draft) and goes on the client's next draft.
        _, on_draft = self._invoice_total(conn, invoice_id)
        capacity = invoice_capacity(on_draft)
        if invoice is not None:
            # A line deferred from this draft waits for the client's next draft.
            deferred = set(conn.execute(deferred_from(invoice_id)).scalars())
            queued = [row for row in queued if row.id not in deferred]
        ready, left = queued[:capacity], len(queued) - min(capacity, len(queued))
        if left:
            log.info("draft.full", invoice=invoice_id, client=client.key, left_ready=left)
        for row in ready:
            move_entry(
                conn,
                row.id,
                EntryState.DRAFTED,
                actor,
                f"added to draft {invoice_id} ({period.label})",
                now,
                invoice_id=invoice_id,
            )
            # An entry taken off a draft (rejected) and put back needs a new key.
            attached = conn.execute(
                select(func.count())
                .select_from(t.outbox)
                .where(
                    t.outbox.c.entry_id == row.id,
                    t.outbox.c.invoice_id == invoice_id,
                    t.outbox.c.operation == "create_invoice_item",
                )
            ).scalar_one()
            enqueue(
                conn,
                "create_invoice_item",
                f"{prefix}-e{row.id}-inv{invoice_id}-item{attached + 1}",
                now,
                entry_id=row.id,
                invoice_id=invoice_id,
            )
        if ready:
            bump_version(conn, invoice_id, now)
        total, lines = self._invoice_total(conn, invoice_id)
        return DraftResult(
            invoice_id,
            period.key,
            len(ready),
            Money(total, client.currency).quantized(),
            lines,
            left,
        )

    @staticmethod
    def _invoice_total(conn: Connection, invoice_id: int) -> tuple[Decimal, int]:
        row = conn.execute(
            select(func.coalesce(func.sum(t.entries.c.amount), 0), func.count()).where(
                t.entries.c.invoice_id == invoice_id,
                t.entries.c.state.in_([EntryState.DRAFTED.value, EntryState.APPROVED.value]),
            )
        ).one()
        return Decimal(row[0]), int(row[1])

    # --- approval -----------------------------------------------------------------

    def is_approver(self, who: str) -> bool:
        """Listed in `slack.approvers`, or a member of `slack.approver_group` whom Slack
        has confirmed (the approval desk adds those to `verified_approvers`)."""
        return who in set(self.settings.slack.approvers) or who in self.verified_approvers

    def approve(
        self,
        invoice_id: int,
        approver: str,
        channel: str,
        version: int | None = None,
        *,
        force: bool = False,
    ) -> dict[str, Any]:
        """Record the approval (once per invoice) and queue the finalize call.

        A total under Stripe's minimum charge for the currency is refused with
        BelowMinimumCharge (the lines stay on the open draft, for the next invoice)
        unless `force`, which is recorded in the approval's audit row.

        Raises NotAnApprover, LookupError (no such invoice) or InvoicingError (already
        decided, changed since the approver saw it, or nothing on it)."""
        now = self.clock()
        if not self.is_approver(approver):
            with self.ledger.engine.begin() as conn:
                audit(
                    conn, now, approver, "approve_refused", f"invoice:{invoice_id}", channel=channel
                )
            raise NotAnApprover(f"{approver} is not an approver")
        try:
            with self.ledger.engine.begin() as conn:
                invoice = invoice_row(conn, invoice_id, lock=True)
                if invoice.state != "draft":
                    raise InvoicingError(f"invoice {invoice_id} is {invoice.state}, not a draft")
                if version is not None and version != invoice.version:
                    raise InvoicingError(
                        f"invoice {invoice_id} changed since this message (version "
                        f"{version} → {invoice.version}); review the new version"
                    )
                total, lines = self._invoice_total(conn, invoice_id)
                if lines == 0:
                    raise InvoicingError(f"invoice {invoice_id} has no lines to approve")
                charge = check_charge(Money(total, invoice.currency))
                if charge.below_minimum and not force:
                    raise BelowMinimumCharge(f"invoice {invoice_id} not approved: {charge.reason}")
                minor = Money(total, invoice.currency).to_minor_units()
                conn.execute(
                    insert(t.approvals).values(
                        invoice_id=invoice_id,
                        approver=approver,
                        channel=channel,
                        total_minor=minor,
                        decided_at=now,
                    )
                )
                entries = conn.execute(
                    select(t.entries.c.id).where(
                        t.entries.c.invoice_id == invoice_id,
                        t.entries.c.state == EntryState.DRAFTED.value,
                    )
                ).all()
                for row in entries:
                    move_entry(
                        conn, row.id, EntryState.APPROVED, approver, f"approved via {channel}", now
                    )
                prefix = f"kv-{ledger_id(conn)}"
                enqueue(
                    conn,
                    "finalize_invoice",
                    f"{prefix}-inv{invoice_id}-finalize",
                    now,
                    invoice_id=invoice_id,
                )
                audit(
                    conn,
                    now,
                    approver,
                    "approved",
                    f"invoice:{invoice_id}",
                    channel=channel,
                    total_minor=minor,
                    currency=invoice.currency,
                    **({"forced_below_minimum": True} if charge.below_minimum else {}),
                )
                return {
                    "invoice_id": invoice_id,
                    "approver": approver,
                    "total_minor": minor,
                    "currency": invoice.currency,
                    "decided_at": now.isoformat(),
                    "forced_below_minimum": charge.below_minimum,
                }
        except BelowMinimumCharge as exc:
            with self.ledger.engine.begin() as conn:
                audit(
                    conn,
                    now,
                    approver,
                    "approve_held_below_minimum",
                    f"invoice:{invoice_id}",
                    channel=channel,
                    reason=str(exc),
                )
            raise
        except IntegrityError:
            with self.ledger.engine.connect() as conn:
                existing = conn.execute(
                    select(t.approvals).where(t.approvals.c.invoice_id == invoice_id)
                ).first()
            who = existing.approver if existing else "someone"
            raise InvoicingError(f"invoice {invoice_id} was already approved by {who}") from None

    def reject(self, invoice_id: int, who: str, channel: str, reason: str) -> dict[str, Any]:
        """Take every line off the draft (entries back to ready, reason recorded); the
        draft stays unfinalized and empty, ready for the next attempt."""
        now = self.clock()
        if not self.is_approver(who):
            with self.ledger.engine.begin() as conn:
                audit(conn, now, who, "reject_refused", f"invoice:{invoice_id}", channel=channel)
            raise NotAnApprover(f"{who} is not an approver")
        with self.ledger.engine.begin() as conn:
            invoice = invoice_row(conn, invoice_id, lock=True)
            if invoice.state != "draft":
                raise InvoicingError(f"invoice {invoice_id} is {invoice.state}, not a draft")
            if conn.execute(
                select(t.approvals.c.id).where(t.approvals.c.invoice_id == invoice_id)
            ).first():
                raise InvoicingError(f"invoice {invoice_id} is already approved")
            released = self._release_entries(
                conn, invoice_id, who, f"rejected via {channel}: {reason}", now
            )
            bump_version(conn, invoice_id, now)
            audit(
                conn,
                now,
                who,
                "rejected",
                f"invoice:{invoice_id}",
                channel=channel,
                reason=reason,
                entries=released,
            )
            return {"invoice_id": invoice_id, "rejected_by": who, "entries_returned": released}

    def _release_entries(
        self,
        conn: Connection,
        invoice_id: int,
        actor: str,
        reason: str,
        now: datetime,
        delete_items: bool = True,
    ) -> int:
        """Entries on the invoice go back to ready; their Stripe lines are deleted."""
        rows = conn.execute(
            select(t.entries.c.id, t.entries.c.stripe_invoice_item_id).where(
                t.entries.c.invoice_id == invoice_id,
                t.entries.c.state.in_(
                    [EntryState.DRAFTED.value, EntryState.APPROVED.value, EntryState.INVOICED.value]
                ),
            )
        ).all()
        prefix = f"kv-{ledger_id(conn)}"
        for row in rows:
            move_entry(
                conn,
                row.id,
                EntryState.READY,
                actor,
                reason,
                now,
                invoice_id=None,
                stripe_invoice_item_id=None,
            )
            # A create still pending for this entry is cancelled by its own check.
            if delete_items and row.stripe_invoice_item_id:
                enqueue(
                    conn,
                    "delete_invoice_item",
                    f"{prefix}-e{row.id}-inv{invoice_id}-delete-{row.stripe_invoice_item_id}",
                    now,
                    entry_id=row.id,
                    invoice_id=invoice_id,
                    payload={"stripe_invoice_item_id": row.stripe_invoice_item_id},
                )
        return len(rows)

    # --- the drain ----------------------------------------------------------------

    async def drain(
        self, max_rounds: int = 20, should_stop: Callable[[], bool] | None = None
    ) -> DrainReport:
        """Perform every due outbox call, in order, until nothing more can progress.

        `should_stop` is asked before each call: once it says so, the drain returns
        after the call in flight is recorded (the rest stays queued)."""
        report = DrainReport()
        stop = should_stop or (lambda: False)
        async with self._drain_lock:
            for _ in range(max_rounds):
                progressed = await self._drain_round(report, stop)
                if not progressed or stop():
                    break
        return report

    async def _drain_round(self, report: DrainReport, stop: Callable[[], bool]) -> bool:
        now = self.clock()
        with self.ledger.engine.connect() as conn:
            ops = conn.execute(
                select(t.outbox)
                .where(t.outbox.c.status == "pending")
                .where((t.outbox.c.not_before.is_(None)) | (t.outbox.c.not_before <= now))
                .order_by(t.outbox.c.id)
            ).all()
        progressed = False
        report.waiting = 0
        for op in ops:
            if stop():
                break
            handler = getattr(self, f"_op_{op.operation}", None)
            if handler is None:
                continue  # other services' operations (e.g. Slack) are drained elsewhere
            try:
                outcome = await handler(op)
            except RetriableError as exc:
                self._retry_later(op, str(exc), exc.retry_after, spent_key=_spent(exc))
                report.retried += 1
                report.errors.append(f"{op.operation} #{op.id}: {exc}")
                continue
            except StripeRejected as exc:
                self._park(op, str(exc))
                report.parked += 1
                report.errors.append(f"{op.operation} #{op.id}: {exc}")
                continue
            except FatalError as exc:
                report.errors.append(f"{op.operation} #{op.id}: {exc}")
                raise
            if outcome == "wait":
                report.waiting += 1
            else:
                report.done += 1
                progressed = True
        return progressed

    def _key(self, op: Any) -> str:
        generation = int((op.payload or {}).get("generation", 0))
        return op.idempotency_key if generation == 0 else f"{op.idempotency_key}-g{generation}"

    def _must_search_first(self, op: Any) -> bool:
        """The key may no longer protect us: pruned by Stripe, or spent on an error."""
        generation = int((op.payload or {}).get("generation", 0))
        created = op.created_at if op.created_at.tzinfo else op.created_at.replace(tzinfo=UTC)
        return generation > 0 or self.clock() - created > KEY_REUSE_WINDOW

    def _finish(
        self, conn: Connection, op: Any, status: str = "done", result: dict[str, Any] | None = None
    ) -> None:
        conn.execute(
            update(t.outbox)
            .where(t.outbox.c.id == op.id)
            .values(
                status=status,
                completed_at=self.clock(),
                result=result or {},
                attempts=op.attempts + 1,
            )
        )

    def _retry_later(self, op: Any, error: str, retry_after: float | None, spent_key: bool) -> None:
        attempts = op.attempts + 1
        delay = retry_after if retry_after is not None else min(300.0, 2.0**attempts)
        payload = dict(op.payload or {})
        if spent_key:
            payload["generation"] = int(payload.get("generation", 0)) + 1
        with self.ledger.engine.begin() as conn:
            conn.execute(
                update(t.outbox)
                .where(t.outbox.c.id == op.id)
                .values(
                    attempts=attempts,
                    last_error=error[:2000],
                    payload=payload,
                    not_before=self.clock() + timedelta(seconds=delay),
                )
            )
        log.warning("outbox.retry_later", operation=op.operation, op=op.id, attempts=attempts)

    def _park(self, op: Any, error: str) -> None:
        """Stripe refused the call: never loop; the entry waits for a person."""
        now = self.clock()
        with self.ledger.engine.begin() as conn:
            park_op(conn, op, "stripe", error, now, attempts=op.attempts + 1)
            if op.entry_id is not None:
                state = conn.execute(
                    select(t.entries.c.state).where(t.entries.c.id == op.entry_id)
                ).scalar_one()
                if state in (EntryState.DRAFTED.value, EntryState.APPROVED.value):
                    move_entry(
                        conn,
                        op.entry_id,
                        EntryState.NEEDS_REVIEW,
                        "stripe",
                        error,
                        now,
                        review_reason=error[:2000],
                        invoice_id=None,
                    )
        log.error("outbox.parked", operation=op.operation, op=op.id, error=error)

    # Each operation reads the ledger as it is now: an entry that moved away since the
    # intent was queued is not pushed to Stripe.

    async def _op_create_invoice(self, op: Any) -> str:
        with self.ledger.engine.connect() as conn:
            invoice = invoice_row(conn, op.invoice_id)
            lid = ledger_id(conn)
        if invoice.stripe_invoice_id:
            with self.ledger.engine.begin() as conn:
                self._finish(conn, op, result={"id": invoice.stripe_invoice_id})
            return "done"
        client = self._client(invoice.client)
        marker = f"{lid}:{invoice.id}"
        found: dict[str, Any] | None = None
        if self._must_search_first(op):
            drafts = await self.gateway.list_draft_invoices(client.stripe_customer_id)
            found = next(
                (d for d in drafts if (d.get("metadata") or {}).get("kanvoice_invoice") == marker),
                None,
            )
        if found is None:
            failpoint("before_stripe_call:create_invoice")
            found = await self.gateway.create_invoice(
                {
                    "customer": client.stripe_customer_id,
                    "auto_advance": False,
                    "collection_method": "send_invoice",
                    "days_until_due": client.days_until_due,
                    "currency": client.currency.lower(),
                    "pending_invoice_items_behavior": "exclude",
                    "description": fit_description(
                        f"{client.name or client.key}: {invoice.period_key}"
                    ),
                    "metadata": fit_metadata(
                        {
                            "kanvoice_invoice": marker,
                            "client": client.key,
                            "period": invoice.period_key,
                        },
                        _SEARCH_KEYS,
                    ),
                },
                self._key(op),
            )
            failpoint("after_stripe_call:create_invoice")
        with self.ledger.engine.begin() as conn:
            conn.execute(
                update(t.invoices)
                .where(t.invoices.c.id == invoice.id)
                .values(stripe_invoice_id=found["id"], updated_at=self.clock())
            )
            self._finish(conn, op, result={"id": found["id"]})
        return "done"

    def _line(self, conn: Connection, entry_id: int) -> Any:
        return conn.execute(
            select(
                t.entries,
                t.items.c.item_key,
                t.items.c.board,
                t.items.c.title,
                t.items.c.url,
                t.items.c.external_id,
            )
            .join(t.items, t.items.c.id == t.entries.c.item_id)
            .where(t.entries.c.id == entry_id)
        ).one()

    def _item_params(self, line: Any, client: ClientSettings) -> dict[str, Any]:
        """The invoice item for one entry, within Stripe's field limits.

        `amount` is the ledger's amount in minor units (already a multiple of ten for the
        three-decimal currencies, see `Money.quantized`). The description keeps its
        reference and hours × rate whole and cuts the title; the metadata keeps the
        keys the drain searches by (`kanvoice_entry`, `kanvoice_entry_id`,
        `kanvoice_invoice`) intact."""
        amount = Money(line.amount or Decimal(0), line.currency)
        who = line_who(client.line_grouping, line.person, line.role, self.settings.staff())
        rate_text = _rate_text(line.rate or Decimal(0), line.currency)
        what = line_what(line.kind, line.hours, rate_text, who)
        # Finance may have reworded the line (Adjust): the entry's own text wins.
        keep = f" [{line.board} {line.external_id}] {what}"
        if line.url and len(keep) + len(line.url) + 1 < MAX_DESCRIPTION:
            keep += f" {line.url}"
        description = fit_description(line.description or line.title or "", keep)
        created = line.created_at if line.created_at.tzinfo else line.created_at.replace(tzinfo=UTC)
        ended = line.done_at or created
        ended = ended if ended.tzinfo else ended.replace(tzinfo=UTC)
        params: dict[str, Any] = {
            "amount": amount.to_minor_units(),
            "currency": line.currency.lower(),
            "description": description,
            "period": {
                "start": int(min(created, ended).timestamp()),
                "end": int(ended.timestamp()),
            },
            "metadata": {
                "kanvoice_entry": line.entry_key,
                "kanvoice_entry_id": str(line.id),
                "item": line.item_key,
                "board": line.board,
                "client": client.key,
                "hours": str(line.hours),
                "rate": str(line.rate) if line.rate is not None else "",
                **({"person": line.person} if line.person else {}),
                **({"role": line.role} if line.role else {}),
            },
        }
        if client.tax_rate_ids:
            params["tax_rates"] = list(client.tax_rate_ids)
        return params

    @staticmethod
    def _fit_metadata(params: dict[str, Any]) -> None:
        params["metadata"] = fit_metadata(params["metadata"], _SEARCH_KEYS)

    async def _op_create_invoice_item(self, op: Any) -> str:
        with self.ledger.engine.connect() as conn:
            line = self._line(conn, op.entry_id)
            invoice = invoice_row(conn, op.invoice_id)
            lid = ledger_id(conn)
        if line.invoice_id != op.invoice_id or line.state not in (
            EntryState.DRAFTED.value,
            EntryState.APPROVED.value,
        ):
            with self.ledger.engine.begin() as conn:
                self._finish(conn, op, "cancelled", {"reason": f"entry is {line.state}"})
            return "done"
        if line.stripe_invoice_item_id:
            with self.ledger.engine.begin() as conn:
                self._finish(conn, op, result={"id": line.stripe_invoice_item_id})
            return "done"
        if not invoice.stripe_invoice_id:
            return "wait"  # the draft itself is not created yet
        client = self._client(invoice.client)
        params = self._item_params(line, client)
        params.update(customer=client.stripe_customer_id, invoice=invoice.stripe_invoice_id)
        params["metadata"]["kanvoice_invoice"] = f"{lid}:{invoice.id}"
        self._fit_metadata(params)
        found: dict[str, Any] | None = None
        if self._must_search_first(op):
            existing = await self.gateway.list_invoice_items(invoice.stripe_invoice_id)
            found = next(
                (
                    i
                    for i in existing
                    if (i.get("metadata") or {}).get("kanvoice_entry")
                    == fit_metadata_value(line.entry_key)
                ),
                None,
            )
        if found is None:
            failpoint("before_stripe_call:create_invoice_item")
            found = await self.gateway.create_invoice_item(params, self._key(op))
            failpoint("after_stripe_call:create_invoice_item")
        with self.ledger.engine.begin() as conn:
            conn.execute(
                update(t.entries)
                .where(t.entries.c.id == line.id)
                .values(stripe_invoice_item_id=found["id"], updated_at=self.clock())
            )
            self._finish(conn, op, result={"id": found["id"]})
        return "done"

    async def _op_update_invoice_item(self, op: Any) -> str:
        with self.ledger.engine.connect() as conn:
            line = self._line(conn, op.entry_id)
            invoice = invoice_row(conn, op.invoice_id)
        if line.invoice_id != op.invoice_id or not line.stripe_invoice_item_id:
            # Not on Stripe yet: the pending create sends the current values.
            with self.ledger.engine.begin() as conn:
                self._finish(conn, op, "cancelled", {"reason": "no Stripe line to update"})
            return "done"
        if invoice.state != "draft":
            raise StripeRejected(
                f"invoice {invoice.id} is {invoice.state}: lines are never edited after "
                "finalization",
                None,
                "invoice_not_editable",
            )
        client = self._client(invoice.client)
        params = self._item_params(line, client)
        params.pop("currency")
        self._fit_metadata(params)
        result = await self.gateway.update_invoice_item(
            line.stripe_invoice_item_id, params, self._key(op)
        )
        with self.ledger.engine.begin() as conn:
            self._finish(conn, op, result={"id": result["id"], "amount": result.get("amount")})
        return "done"

    async def _op_delete_invoice_item(self, op: Any) -> str:
        item_id = (op.payload or {}).get("stripe_invoice_item_id")
        if item_id:
            await self.gateway.delete_invoice_item(item_id)
        with self.ledger.engine.begin() as conn:
            self._finish(conn, op, result={"deleted": item_id})
        return "done"

    async def _op_finalize_invoice(self, op: Any) -> str:
        """The only path to a finalized invoice; refused without an approval row."""
        with self.ledger.engine.connect() as conn:
            invoice = invoice_row(conn, op.invoice_id)
            approval = conn.execute(
                select(t.approvals).where(t.approvals.c.invoice_id == op.invoice_id)
            ).first()
            unsynced = conn.execute(
                select(func.count())
                .select_from(t.outbox)
                .where(
                    t.outbox.c.invoice_id == op.invoice_id,
                    t.outbox.c.status == "pending",
                    t.outbox.c.operation.in_(
                        [
                            "create_invoice",
                            "create_invoice_item",
                            "update_invoice_item",
                            "delete_invoice_item",
                        ]
                    ),
                )
            ).scalar_one()
        if approval is None:
            raise StripeRejected(
                f"refusing to finalize invoice {invoice.id}: the ledger holds no approval",
                None,
                "no_approval",
            )
        if unsynced or not invoice.stripe_invoice_id:
            return "wait"
        remote = await self.gateway.retrieve_invoice(invoice.stripe_invoice_id)
        if remote.get("status") == "draft":
            total = int(remote.get("total") or 0)
            if total != approval.total_minor:
                raise StripeRejected(
                    f"refusing to finalize invoice {invoice.id}: Stripe's total {total} is "
                    f"not the approved {approval.total_minor}; approve it again",
                    None,
                    "total_changed",
                )
            failpoint("before_stripe_call:finalize_invoice")
            remote = await self.gateway.finalize_invoice(invoice.stripe_invoice_id, self._key(op))
            failpoint("after_stripe_call:finalize_invoice")
        client = self._client(invoice.client)
        with self.ledger.engine.begin() as conn:
            self._record_finalized(conn, invoice.id, remote, "stripe")
            if client.auto_send and remote.get("status") == "open":
                enqueue(
                    conn,
                    "send_invoice",
                    f"kv-{ledger_id(conn)}-inv{invoice.id}-send",
                    self.clock(),
                    invoice_id=invoice.id,
                )
            self._finish(conn, op, result={"status": remote.get("status")})
        return "done"

    def _record_finalized(
        self, conn: Connection, invoice_id: int, remote: dict[str, Any], actor: str
    ) -> None:
        now = self.clock()
        invoice = invoice_row(conn, invoice_id)
        if state_rank(invoice.state) >= InvoiceState.FINALIZED.rank:
            return
        audit(
            conn, now, actor, "finalized", f"invoice:{invoice_id}",
            number=remote.get("number"), stripe_invoice_id=remote.get("id"),
            total_minor=remote.get("total"),
        )
        conn.execute(
            update(t.invoices)
            .where(t.invoices.c.id == invoice_id)
            .values(
                state="finalized",
                open_slot=None,
                number=remote.get("number"),
                hosted_url=remote.get("hosted_invoice_url"),
                total_minor=remote.get("total"),
                updated_at=now,
            )
        )
        for row in conn.execute(
            select(t.entries.c.id).where(
                t.entries.c.invoice_id == invoice_id,
                t.entries.c.state.in_([EntryState.DRAFTED.value, EntryState.APPROVED.value]),
            )
        ).all():
            move_entry(
                conn,
                row.id,
                EntryState.INVOICED,
                actor,
                f"invoice {remote.get('number') or invoice_id} finalized",
                now,
            )

    async def _op_send_invoice(self, op: Any) -> str:
        with self.ledger.engine.connect() as conn:
            invoice = invoice_row(conn, op.invoice_id)
        if invoice.state not in ("finalized",):
            with self.ledger.engine.begin() as conn:
                self._finish(conn, op, "cancelled", {"reason": f"invoice is {invoice.state}"})
            return "done"
        await self.gateway.send_invoice(invoice.stripe_invoice_id, self._key(op))
        with self.ledger.engine.begin() as conn:
            moved = conn.execute(
                update(t.invoices)
                .where(
                    and_(
                        t.invoices.c.id == invoice.id,
                        t.invoices.c.state == "finalized",
                    )
                )
                .values(state="sent", updated_at=self.clock())
            ).rowcount
            if moved:
                audit(conn, self.clock(), "kanvoice", "sent", f"invoice:{invoice.id}")
            self._finish(conn, op)
        return "done"

    # --- following Stripe -----------------------------------------------------------

    def apply_event(self, event: dict[str, Any]) -> str:
        """Apply one verified Stripe event. Duplicates and late events change nothing."""
        now = self.clock()
        kind = str(event.get("type", ""))
        obj = (event.get("data") or {}).get("object") or {}
        handled = {
            "invoice.finalized": "finalized",
            "invoice.sent": "sent",
            "invoice.paid": "paid",
            "invoice.voided": "void",
            "invoice.deleted": "deleted",
            "invoice.marked_uncollectible": "uncollectible",
        }
        if kind not in handled:
            return "ignored"
        with self.ledger.engine.begin() as conn:
            if not claim_delivery(conn, "stripe", str(event.get("id")), now):
                return "duplicate"
            invoice = conn.execute(
                select(t.invoices).where(t.invoices.c.stripe_invoice_id == obj.get("id"))
            ).first()
            if invoice is None:
                return "unknown invoice"
            target = handled[kind]
            if not moves_forward(invoice.state, target):
                return "stale"
            self._apply_state(conn, invoice, target, obj, f"stripe {kind}")
            return "applied"

    def _apply_state(
        self, conn: Connection, invoice: Any, target: str, obj: dict[str, Any], reason: str
    ) -> None:
        now = self.clock()
        if target == "finalized" or (invoice.state == "draft" and target in ("sent", "paid")):
            approved = conn.execute(
                select(t.approvals.c.id).where(t.approvals.c.invoice_id == invoice.id)
            ).first()
            if approved is None:
                audit(
                    conn,
                    now,
                    "stripe",
                    "finalized_without_approval",
                    f"invoice:{invoice.id}",
                    stripe_invoice_id=invoice.stripe_invoice_id,
                )
                log.error("invoice.finalized_outside_kanvoice", invoice=invoice.id)
            self._record_finalized(conn, invoice.id, obj, "stripe")
        if target in ("void", "deleted"):
            self._release_entries(conn, invoice.id, "stripe", reason, now, delete_items=False)
        if target == "paid":
            for row in conn.execute(
                select(t.entries.c.id).where(
                    t.entries.c.invoice_id == invoice.id,
                    t.entries.c.state == EntryState.INVOICED.value,
                )
            ).all():
                move_entry(conn, row.id, EntryState.PAID, "stripe", reason, now)
        conn.execute(
            update(t.invoices)
            .where(t.invoices.c.id == invoice.id)
            .values(state=target, open_slot=None, updated_at=now)
        )
        if target != "finalized":
            audit(conn, now, "stripe", target, f"invoice:{invoice.id}", reason=reason)

    # --- reconcile --------------------------------------------------------------------

    async def reconcile(self, client_key: str | None = None, repair: bool = True) -> list[Drift]:
        """Compare every Stripe-backed invoice with the ledger; repair what is safe."""
        drifts: list[Drift] = []
        with self.ledger.engine.connect() as conn:
            query = select(t.invoices).where(t.invoices.c.stripe_invoice_id.is_not(None))
            if client_key:
                self._client(client_key)
                query = query.where(t.invoices.c.client == client_key)
            invoices = conn.execute(query.order_by(t.invoices.c.id)).all()
        for invoice in invoices:
            if invoice.state in ("void", "deleted"):
                continue
            remote = await self.gateway.retrieve_invoice(invoice.stripe_invoice_id)
            status = {
                "open": "finalized",
                "draft": "draft",
                "paid": "paid",
                "void": "void",
                "uncollectible": "uncollectible",
            }.get(str(remote.get("status")), "draft")
            if remote.get("deleted"):
                status = "deleted"
            if moves_forward(invoice.state, status):
                drifts.append(
                    Drift(
                        invoice.client,
                        invoice.id,
                        invoice.stripe_invoice_id,
                        f"ledger says {invoice.state}, Stripe says {status}",
                        "ledger moved on" if repair else "none (report only)",
                    )
                )
                if repair:
                    with self.ledger.engine.begin() as conn:
                        fresh = invoice_row(conn, invoice.id)
                        self._apply_state(conn, fresh, status, remote, "reconcile")
                continue
            if invoice.state != "draft":
                continue
            drifts.extend(await self._reconcile_lines(invoice, repair))
        return drifts

    async def _reconcile_lines(self, invoice: Any, repair: bool) -> list[Drift]:
        drifts: list[Drift] = []
        remote_items = await self.gateway.list_invoice_items(invoice.stripe_invoice_id)
        by_entry = {(i.get("metadata") or {}).get("kanvoice_entry"): i for i in remote_items}
        with self.ledger.engine.connect() as conn:
            lines = conn.execute(
                select(t.entries).where(
                    t.entries.c.invoice_id == invoice.id,
                    t.entries.c.state.in_([EntryState.DRAFTED.value, EntryState.APPROVED.value]),
                )
            ).all()
            pending = {
                r.entry_id
                for r in conn.execute(
                    select(t.outbox.c.entry_id).where(
                        t.outbox.c.invoice_id == invoice.id, t.outbox.c.status == "pending"
                    )
                ).all()
            }
        ours = {fit_metadata_value(line.entry_key) for line in lines}
        for line in lines:
            remote = by_entry.get(fit_metadata_value(line.entry_key))
            if remote is None:
                if line.id in pending:
                    continue
                drifts.append(
                    Drift(
                        invoice.client,
                        invoice.id,
                        invoice.stripe_invoice_id,
                        f"entry {line.entry_key} has no Stripe line",
                        "line queued again" if repair else "none",
                    )
                )
                if repair:
                    with self.ledger.engine.begin() as conn:
                        conn.execute(
                            update(t.entries)
                            .where(t.entries.c.id == line.id)
                            .values(stripe_invoice_item_id=None)
                        )
                        enqueue(
                            conn,
                            "create_invoice_item",
                            f"kv-{ledger_id(conn)}-e{line.id}-inv{invoice.id}-item-r"
                            f"{int(self.clock().timestamp())}",
                            self.clock(),
                            entry_id=line.id,
                            invoice_id=invoice.id,
                            payload={"generation": 1},
                        )
                continue
            if line.stripe_invoice_item_id != remote["id"]:
                drifts.append(
                    Drift(
                        invoice.client,
                        invoice.id,
                        invoice.stripe_invoice_id,
                        f"entry {line.entry_key} not linked to {remote['id']}",
                        "linked" if repair else "none",
                    )
                )
                if repair:
                    with self.ledger.engine.begin() as conn:
                        conn.execute(
                            update(t.entries)
                            .where(t.entries.c.id == line.id)
                            .values(stripe_invoice_item_id=remote["id"])
                        )
            expected = Money(line.amount or Decimal(0), line.currency).to_minor_units()
            if int(remote.get("amount") or 0) != expected:
                drifts.append(
                    Drift(
                        invoice.client,
                        invoice.id,
                        invoice.stripe_invoice_id,
                        f"entry {line.entry_key}: Stripe {remote.get('amount')} "
                        f"≠ ledger {expected}",
                        "reported",
                    )
                )
        for entry_key, remote in by_entry.items():
            if entry_key and entry_key not in ours:
                drifts.append(
                    Drift(
                        invoice.client,
                        invoice.id,
                        invoice.stripe_invoice_id,
                        f"Stripe line {remote['id']} names entry {entry_key}, "
                        "which is not on this draft",
                        "deleted from the draft" if repair else "none",
                    )
                )
                if repair:
                    await self.gateway.delete_invoice_item(remote["id"])
        return drifts


def _rate_text(rate: Decimal, currency: str) -> str:
    """A rate with the currency's decimals (120.00 EUR), or all of its own digits when
    it has more (5.1245 KWD): a rate is not an amount and is never rounded for show."""
    exponent = Money.zero(currency).exponent
    shown = rate.quantize(Decimal(1).scaleb(-exponent))
    return f"{shown if shown == rate else rate:,} {currency}"


def _spent(exc: RetriableError) -> bool:
    """A 5xx answer is saved by Stripe under the key: the next try needs a new key
    (after a metadata search). A timeout or 429 leaves the key usable."""
    cause = exc.__cause__
    status = getattr(cause, "http_status", None)
    return isinstance(status, int) and status >= 500
