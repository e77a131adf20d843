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
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import structlog
from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from connectors.base import FatalError, RetriableError
from connectors.stripe.port import StripePort, StripeRejected
from mapping.aging import ReminderPolicy, reminder_due, reminder_slot
from mapping.domain import EntryState, LineGrouping
from mapping.invoices import (
    STRIPE_EVENT_STATES,
    ApprovalView,
    Approve,
    BillingPeriod,
    Cadence,
    DraftView,
    FinalizeDecision,
    FinalizeStep,
    FollowState,
    Ignore,
    InvoiceState,
    OpenDraft,
    Refusal,
    Refused,
    Release,
    decide_approve,
    decide_reject,
    finalize_guard,
    follow,
    follow_event,
    invoice_state,
    place_ready_lines,
    state_from_stripe,
    state_rank,
)
from mapping.invoices import billing_period as core_billing_period
from mapping.line_groups import GroupEntry, group_lines
from mapping.money import Money
from mapping.stripe_lines import (
    AlreadyLinked,
    AmountDrift,
    CancelCreate,
    DeleteStray,
    EntryOnDraft,
    LedgerLine,
    LineSource,
    Link,
    LinkedEntry,
    LinkItem,
    Requeue,
    StripeCustomer,
    StripeItem,
    Unlink,
    WaitForDraft,
    after_create,
    before_create,
    diff_lines,
    invoice_key,
    item_create_key,
    item_delete_key,
    stripe_line,
)
from mapping.stripe_rules import (
    MAX_INVOICE_ITEMS,
    check_charge,
    fit_description,
    fit_metadata,
    fit_metadata_value,
)
from sync.budgets import queue_budget_alerts
from sync.engine import Clock
from sync.failpoints import failpoint
from sync.ledger import invoices as q
from sync.ledger import lines as line_links
from sync.ledger.drafts import draft_view
from sync.ledger.finance import mark_overdue, open_invoices, record_due_date, record_reminder
from sync.ledger.ops import (
    audit,
    bump_version,
    enqueue,
    invoice_row,
    ledger_id,
    move_entry,
    queue_line_update,
)
from sync.ledger.outbox import (
    LINE_OPERATIONS,
    OPEN_STATUSES,
    Operation,
    OutboxOp,
    OutboxStatus,
    ops_for,
    park_entry_for_review,
)
from sync.ledger.records import (
    ApprovalRecord,
    EntryLineRecord,
    EntryLink,
    EntryRecord,
    InvoiceRecord,
)
from sync.ledger.store import Ledger, claim_delivery
from sync.outbox import BackoffPolicy, Done, Drainer, HandlerRegistry, Outcome, Park, Retry, Wait
from sync.retainers import apply_retainer
from sync.settings import ClientSettings, Settings

log = structlog.get_logger(__name__)

_R = TypeVar("_R")

KEY_REUSE_WINDOW = timedelta(hours=23)  # Stripe keeps keys at least 24 h
# A failed Stripe call is tried again after 2, 4, 8 … s (at most 5 min), or when Stripe
# says (Retry-After).
STRIPE_BACKOFF = BackoffPolicy(floor=2.0, cap=300.0)
# A claimed row is another drain's again after this long: well over the longest
# gateway call (4 attempts of at most 30 s each, and at most 60 s of Retry-After
# between them: 5 min).
STRIPE_LEASE = timedelta(minutes=10)
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
    """What a drain did. `done` counts the calls made and those no longer needed;
    `lost`: rows whose lease ran out under this drain (another drain has them)."""

    done: int = 0
    waiting: int = 0
    retried: int = 0
    parked: int = 0
    lost: int = 0
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
        self._fatal: Exception | None = None
        self.drainer = Drainer(
            ledger,
            self._registry(),
            clock,
            policy=STRIPE_BACKOFF,
            lease=STRIPE_LEASE,
            owner=drainer_owner(),
            gone=dead_drainer,
        )
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
        # Held until commit (FOR UPDATE on PostgreSQL; SQLite's write lock is taken at
        # BEGIN): two refreshes of one draft (a double click, two instances) take turns,
        # and the second reads the entries the first moved, so no entry is added twice.
        invoice = q.open_draft_in_slot(conn, slot)
        # Retainer (issue 19): the period's fixed line, covered and overage hours.
        apply_retainer(conn, client, period, now, actor)
        queued = q.ready_entry_ids(conn, client.key, client.currency)
        open_draft: OpenDraft | None = None
        if invoice is not None:
            approved = q.approval_of(conn, invoice.id)
            open_draft = OpenDraft(
                invoice_id=invoice.id,
                state=invoice_state(invoice.state),
                approved=approved is not None,
                lines=self._invoice_total(conn, invoice.id)[1],
            )
            if open_draft.usable:
                # A line deferred from this draft waits for the client's next draft.
                deferred = q.deferred_entry_ids(conn, invoice.id)
                queued = [entry_id for entry_id in queued if entry_id not in deferred]
        # Stripe takes at most 250 invoice items per invoice: what does not fit stays
        # ready (oldest first on this draft) and goes on the client's next draft.
        plan = place_ready_lines(
            open_draft, tuple(queued), max_lines=MAX_INVOICE_ITEMS
        )
        if plan.invoice_id is None and not plan.add:
            # Nothing to bill: no 0-line draft on Stripe, no approval request for it.
            return DraftResult(None, period.key, 0, Money.zero(client.currency).quantized(), 0)
        if plan.close_slot_of is not None:
            # Approved or finalized meanwhile: immutable, it gives up the slot.
            q.close_slot(conn, plan.close_slot_of, now)
        if plan.invoice_id is None:
            invoice_id = q.insert_draft(
                conn,
                client=client.key,
                period_key=period.key,
                period_start=period.start,
                period_end=period.end,
                currency=client.currency,
                slot=slot,
                now=now,
            )
            audit(
                conn, now, actor, "drafted", f"invoice:{invoice_id}", client=client.key,
                period=period.key,
            )
        else:
            invoice_id = plan.invoice_id
        prefix = f"kv-{ledger_id(conn)}"
        enqueue(
            conn, "create_invoice", invoice_key(prefix, invoice_id, "create"), now,
            invoice_id=invoice_id,
        )
        if plan.left:
            log.info("draft.full", invoice=invoice_id, client=client.key, left_ready=plan.left)
        placed, grown = self._plan_lines(conn, client, invoice_id, list(plan.add))
        for entry_id in plan.add:
            move_entry(
                conn,
                entry_id,
                EntryState.DRAFTED,
                actor,
                f"added to draft {invoice_id} ({period.label})",
                now,
                invoice_id=invoice_id,
            )
            lead = placed.get(entry_id, entry_id)
            if lead != entry_id:
                # Merged into the lead's line (`line_grouping`): no line of its own.
                line_links.link(conn, lead, [entry_id], invoice_id)
                continue
            # An entry taken off a draft (rejected) and put back needs a new key.
            attached = q.item_creates_count(conn, entry_id, invoice_id)
            enqueue(
                conn,
                "create_invoice_item",
                item_create_key(prefix, entry_id, invoice_id, attached + 1),
                now,
                entry_id=entry_id,
                invoice_id=invoice_id,
            )
        for lead in grown:
            # A line already on the draft bills the new entries too: update it.
            queue_line_update(conn, lead, invoice_id, now)
        if plan.add:
            bump_version(conn, invoice_id, now)
        # Budgets (issue 19): thresholds newly reached go to Slack, once per period.
        queue_budget_alerts(conn, self.settings, client, period, now)
        total, lines = self._invoice_total(conn, invoice_id)
        return DraftResult(
            invoice_id,
            period.key,
            len(plan.add),
            Money(total, client.currency).quantized(),
            lines,
            plan.left,
        )

    @staticmethod
    def _plan_lines(
        conn: Connection, client: ClientSettings, invoice_id: int, ready: list[int]
    ) -> tuple[dict[int, int], list[int]]:
        """Which line each entry joining the draft goes on (`mapping.line_groups`, the
        client's `line_grouping`): entry → lead for the entries that merge into another
        entry's line, and the leads of lines already on the draft that gain entries."""
        if client.line_grouping is LineGrouping.ITEM or not ready:
            return {}, []
        on_draft = line_links.leads_on(conn, invoice_id)
        rows = q.grouping_lines(conn, ready, invoice_id)
        joining = set(ready)
        plans = group_lines(
            (
                GroupEntry(
                    entry_id=r.id,
                    item_key=r.item_key,
                    kind=r.kind,
                    hours=r.hours,
                    amount=r.amount or Decimal(0),
                    rate=r.rate,
                    currency=r.currency,
                    person=r.person,
                    role=r.role,
                    line=None if r.id in joining else on_draft.get(r.id, r.id),
                )
                for r in rows
            ),
            client.line_grouping,
        )
        placed: dict[int, int] = {}
        grown: list[int] = []
        for plan in plans:
            for entry_id in plan.entries:
                if entry_id in joining and entry_id != plan.lead:
                    placed[entry_id] = plan.lead
            if plan.lead not in joining and any(e in joining for e in plan.entries):
                grown.append(plan.lead)
        return placed, grown

    @staticmethod
    def _invoice_total(conn: Connection, invoice_id: int) -> tuple[Decimal, int]:
        return q.invoice_total(conn, invoice_id)

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
        unless `force`: the decision's `forced_below_minimum` is stored on the approval
        (and its audit row), and only such an approval passes the finalize guard under
        the minimum.

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
                invoice_row(conn, invoice_id, lock=True)  # LookupError if none; held
                decision = decide_approve(
                    self._draft_view(conn, invoice_id),
                    approver,
                    is_approver=True,
                    version=version,
                    charge_rule=check_charge,
                    force=force,
                )
                if isinstance(decision, Refused):
                    if decision.refusal is Refusal.BELOW_MINIMUM:
                        raise BelowMinimumCharge(decision.message)
                    raise InvoicingError(decision.message)
                self._record_approval(conn, decision, channel, now)
                return {
                    "invoice_id": invoice_id,
                    "approver": approver,
                    "total_minor": decision.total_minor,
                    "currency": decision.currency,
                    "decided_at": now.isoformat(),
                    "forced_below_minimum": decision.forced_below_minimum,
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
                existing = q.approval_of(conn, invoice_id)
            who = existing.approver if existing else "someone"
            raise InvoicingError(f"invoice {invoice_id} was already approved by {who}") from None

    @staticmethod
    def _draft_view(conn: Connection, invoice_id: int) -> DraftView | None:
        """The invoice and its drafted / approved lines, as the decisions see them."""
        return draft_view(conn, invoice_id)

    def _record_approval(
        self, conn: Connection, decision: Approve, channel: str, now: datetime
    ) -> None:
        """Apply `decide_approve`: the approval row at the approved total, the entries
        approved, the finalize queued, and the open-draft slot given up, so the approved
        invoice never changes again: lines that become ready now go on the client's next
        draft (a refresh before the finalize opens a new one)."""
        invoice_id = decision.invoice_id
        q.insert_approval(
            conn,
            invoice_id=invoice_id,
            approver=decision.approver,
            channel=channel,
            total_minor=decision.total_minor,
            now=now,
            forced_below_minimum=decision.forced_below_minimum,
        )
        for entry_id in decision.entry_ids:
            move_entry(
                conn,
                entry_id,
                EntryState.APPROVED,
                decision.approver,
                f"approved via {channel}",
                now,
            )
        q.close_slot(conn, invoice_id, now)
        enqueue(
            conn,
            "finalize_invoice",
            invoice_key(f"kv-{ledger_id(conn)}", invoice_id, "finalize"),
            now,
            invoice_id=invoice_id,
        )
        audit(
            conn,
            now,
            decision.approver,
            "approved",
            f"invoice:{invoice_id}",
            channel=channel,
            total_minor=decision.total_minor,
            currency=decision.currency,
            **({"forced_below_minimum": True} if decision.forced_below_minimum else {}),
        )

    def reject(self, invoice_id: int, who: str, channel: str, reason: str) -> dict[str, Any]:
        """Take every line off the draft (entries back to ready, reason recorded); the
        draft stays unfinalized and empty, ready for the next attempt."""
        now = self.clock()
        if not self.is_approver(who):
            with self.ledger.engine.begin() as conn:
                audit(conn, now, who, "reject_refused", f"invoice:{invoice_id}", channel=channel)
            raise NotAnApprover(f"{who} is not an approver")
        with self.ledger.engine.begin() as conn:
            invoice_row(conn, invoice_id, lock=True)  # LookupError if none; held
            # Locked (PostgreSQL): a create recording its line meanwhile either committed
            # first (its link is seen, and the line deleted here) or sees the entry gone
            # and deletes the line it just made (`after_create`).
            q.lock_entries_of(conn, invoice_id)
            decision = decide_reject(
                self._draft_view(conn, invoice_id), who, reason, is_approver=True
            )
            if isinstance(decision, Refused):
                raise InvoicingError(decision.message)
            released = self._apply_releases(
                conn, invoice_id, decision.releases, who, f"rejected via {channel}: {reason}", now
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

    def _apply_releases(
        self,
        conn: Connection,
        invoice_id: int,
        releases: tuple[Release, ...],
        actor: str,
        reason: str,
        now: datetime,
    ) -> int:
        """Apply `decide_reject`'s releases: each entry back to ready, its Stripe line (if
        it has one yet) deleted through the outbox."""
        prefix = f"kv-{ledger_id(conn)}"
        # Every entry of a merged line goes back; only the lead's Stripe line exists.
        line_links.unlink(conn, [release.entry_id for release in releases])
        for release in releases:
            move_entry(
                conn,
                release.entry_id,
                EntryState.READY,
                actor,
                reason,
                now,
                invoice_id=None,
                stripe_invoice_item_id=None,
            )
            if release.delete_item:
                enqueue(
                    conn,
                    "delete_invoice_item",
                    item_delete_key(prefix, release.entry_id, invoice_id, release.delete_item),
                    now,
                    entry_id=release.entry_id,
                    invoice_id=invoice_id,
                    payload={"stripe_invoice_item_id": release.delete_item},
                )
        return len(releases)

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
        # Locked (PostgreSQL): a create recording its line meanwhile either committed
        # first (its link is seen, and the line deleted here) or sees these entries gone.
        rows = q.links_to_release(conn, invoice_id)
        prefix = f"kv-{ledger_id(conn)}"
        line_links.unlink(conn, [row.id for row in rows])
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
        """Perform every due Stripe outbox call, in order, until nothing more can progress.

        The calls go through the one outbox mechanism (`sync.outbox.Drainer`): each row
        is claimed with a lease before its call, so a drain here and one in another
        process (the daemon and `kanvoice outbox drain`) never make the same call twice.
        A `FatalError` (or Stripe not configured) stops the drain and is raised after
        the row is handed back. `should_stop` is asked before each call: once it says
        so, the drain returns after the call in flight is recorded (the rest stays
        queued)."""
        async with self._drain_lock:
            self._fatal = None
            outcome = await self.drainer.drain(max_rounds, should_stop=should_stop)
            fatal, self._fatal = self._fatal, None
        if fatal is not None:
            raise fatal
        return DrainReport(
            done=outcome.done + outcome.cancelled,
            waiting=outcome.waiting,
            retried=outcome.retried,
            parked=outcome.parked,
            lost=outcome.lost,
            errors=list(outcome.errors),
        )

    def _registry(self) -> HandlerRegistry:
        """The Stripe operations and their handlers; a refused call parks its row and
        sends the entry to `needs_review` (`park_entry_for_review`), in one transaction."""
        registry = HandlerRegistry()
        handlers: dict[Operation, Callable[[OutboxOp], Awaitable[Outcome]]] = {
            Operation.CREATE_INVOICE: self._op_create_invoice,
            Operation.CREATE_INVOICE_ITEM: self._op_create_invoice_item,
            Operation.UPDATE_INVOICE_ITEM: self._op_update_invoice_item,
            Operation.DELETE_INVOICE_ITEM: self._op_delete_invoice_item,
            Operation.FINALIZE_INVOICE: self._op_finalize_invoice,
            Operation.SEND_INVOICE: self._op_send_invoice,
            Operation.SEND_REMINDER: self._op_send_reminder,
        }
        for operation, handler in handlers.items():
            registry.register(operation, self._stripe_call(handler), on_park=park_entry_for_review)
        return registry

    def _stripe_call(
        self, handler: Callable[[OutboxOp], Awaitable[Outcome]]
    ) -> Callable[[OutboxOp], Awaitable[Outcome]]:
        """Stripe's answers as outcomes: refused → Park; transient → Retry (a 5xx spent
        the key: the next try uses a new one, after a metadata search); credentials or
        no Stripe at all → the drain stops (`FatalError`) and `drain` raises it."""

        async def run(op: OutboxOp) -> Outcome:
            try:
                return await handler(op)
            except StripeRejected as exc:
                return Park(str(exc))
            except RetriableError as exc:
                return Retry(str(exc), exc.retry_after, new_key=_spent(exc))
            except (FatalError, InvoicingError) as exc:
                self._fatal = exc
                raise FatalError(str(exc)) from exc

        return run

    def _must_search_first(self, op: OutboxOp) -> bool:
        """The key may no longer protect us: pruned by Stripe, or spent on an error."""
        return op.key_may_be_unprotected(self.clock(), KEY_REUSE_WINDOW)

    def _read(self, fn: Callable[[Connection], _R]) -> Awaitable[_R]:
        """`fn(conn)` on a worker thread: the ledger is never read on the event loop."""

        def run() -> _R:
            with self.ledger.engine.connect() as conn:
                return fn(conn)

        return asyncio.to_thread(run)

    # Each operation reads the ledger as it is now: an entry that moved away since the
    # intent was queued is not pushed to Stripe. What a call returns is recorded by
    # `Done.record`, in the transaction that closes the row, only while this drain
    # still holds the row's lease.

    async def _op_create_invoice(self, op: OutboxOp) -> Outcome:
        assert op.invoice_id is not None
        invoice_id = op.invoice_id
        invoice, lid = await self._read(
            lambda conn: (invoice_row(conn, invoice_id), ledger_id(conn))
        )
        if invoice.stripe_invoice_id:
            return Done({"id": invoice.stripe_invoice_id})
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
                op.call_key,
            )
            failpoint("after_stripe_call:create_invoice")
        stripe_id = str(found["id"])

        def record(conn: Connection) -> None:
            q.set_stripe_invoice(conn, invoice_id, stripe_id, self.clock())

        return Done({"id": stripe_id}, record)

    def _line(self, conn: Connection, entry_id: int) -> EntryLineRecord:
        return q.entry_line(conn, entry_id)

    def _item_params(
        self,
        line: EntryLineRecord,
        client: ClientSettings,
        merged: line_links.LineTotals | None = None,
        invoice_ref: str | None = None,
    ) -> dict[str, Any]:
        """The invoice item for one entry, or the merged line it leads (`merged`: the
        entries' summed hours and amounts, named in the metadata's `entries`)
        (`mapping.stripe_lines.stripe_line`), within
        Stripe's field limits (`mapping.stripe_rules`): the ledger's amount in minor
        units, the description's reference and hours × rate whole, and the metadata
        keys the drain searches by (`kanvoice_entry`, `kanvoice_entry_id`,
        `kanvoice_invoice`) intact."""
        source = LineSource(
            entry_id=line.id,
            entry_key=line.entry_key,
            item_key=line.item_key,
            kind=line.kind,
            hours=merged.hours if merged is not None else line.hours,
            rate=line.rate,
            amount=merged.amount if merged is not None else line.amount,
            currency=line.currency,
            description=line.description,
            title=line.title,
            board=line.board,
            external_id=line.external_id,
            url=line.url or "",
            created_at=line.created_at,
            done_at=line.done_at,
            person=line.person,
            role=line.role,
            entries=tuple(merged.entries) if merged is not None else (),
        )
        customer = StripeCustomer(
            client.key, client.stripe_customer_id, tuple(client.tax_rate_ids)
        )
        return stripe_line(
            source,
            customer,
            invoice_ref=invoice_ref,
            fit_description=fit_description,
            fit_metadata=lambda metadata: fit_metadata(metadata, _SEARCH_KEYS),
            grouping=client.line_grouping,
            staff=self.settings.staff(),
        ).params()

    async def _op_create_invoice_item(self, op: OutboxOp) -> Outcome:
        """One entry's line on its draft (`mapping.stripe_lines.before_create` decides
        whether to call; `after_create` what to record). A line Stripe created after
        its entry left the draft (rejected, adjusted, voided while the call was in
        flight) is never linked: its deletion is queued in the same transaction."""
        assert op.entry_id is not None and op.invoice_id is not None
        entry_id, invoice_id = op.entry_id, op.invoice_id
        line, invoice, lid, merged = await self._read(
            lambda conn: (
                self._line(conn, entry_id),
                invoice_row(conn, invoice_id),
                ledger_id(conn),
                line_links.line_totals(conn, entry_id, invoice_id),
            )
        )
        step = before_create(_on_draft(line), invoice_id, bool(invoice.stripe_invoice_id))
        if isinstance(step, CancelCreate):
            return Done({"reason": step.reason}, cancelled=True)
        if isinstance(step, AlreadyLinked):
            return Done({"id": step.stripe_item_id})
        if isinstance(step, WaitForDraft):
            return Wait(reason="the draft is not on Stripe yet")
        assert invoice.stripe_invoice_id is not None  # else before_create waits
        client = self._client(invoice.client)
        params = self._item_params(line, client, merged, invoice_ref=f"{lid}:{invoice.id}")
        params.update(customer=client.stripe_customer_id, invoice=invoice.stripe_invoice_id)
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
            found = await self.gateway.create_invoice_item(params, op.call_key)
            failpoint("after_stripe_call:create_invoice_item")
        item_id = str(found["id"])

        def record(conn: Connection) -> None:
            # Locked: a reject or adjust of this entry either committed before (and is
            # seen here) or waits for this link (and then deletes the line itself).
            now_row = q.entry_for_update(conn, entry_id)
            decision = after_create(
                _on_draft(now_row) if now_row is not None else None, invoice_id, item_id
            )
            if isinstance(decision, LinkItem):
                q.set_entry_item(conn, entry_id, item_id, self.clock())
                return
            log.warning("outbox.stray_line", entry=entry_id, item=item_id, reason=decision.reason)
            enqueue(
                conn,
                "delete_invoice_item",
                item_delete_key(f"kv-{lid}", entry_id, invoice_id, item_id),
                self.clock(),
                entry_id=entry_id,
                invoice_id=invoice_id,
                payload={"stripe_invoice_item_id": item_id},
            )

        return Done({"id": item_id}, record)

    async def _op_update_invoice_item(self, op: OutboxOp) -> Outcome:
        assert op.entry_id is not None and op.invoice_id is not None
        entry_id, invoice_id = op.entry_id, op.invoice_id
        line, invoice, creating, merged = await self._read(
            lambda conn: (
                self._line(conn, entry_id),
                invoice_row(conn, invoice_id),
                ops_for(
                    conn,
                    entry_id=entry_id,
                    invoice_id=invoice_id,
                    operations={Operation.CREATE_INVOICE_ITEM},
                    statuses={OutboxStatus.CLAIMED},
                ),
                line_links.line_totals(conn, entry_id, invoice_id),
            )
        )
        if line.invoice_id == invoice_id and not line.stripe_invoice_item_id and creating:
            # A create is in flight (another drain) with the values from before this
            # change: once it has linked its line, the line is updated.
            return Wait(reason="the line's create is in flight")
        if line.invoice_id != invoice_id or not line.stripe_invoice_item_id:
            # Not on Stripe yet: the pending create sends the current values.
            return Done({"reason": "no Stripe line to update"}, cancelled=True)
        if invoice.state != "draft":
            return Park(
                f"invoice {invoice.id} is {invoice.state}: lines are never edited after "
                "finalization"
            )
        client = self._client(invoice.client)
        params = self._item_params(line, client, merged)
        params.pop("currency")
        # A line that billed several entries and now bills one: Stripe drops the key.
        params["metadata"].setdefault("entries", "")
        result = await self.gateway.update_invoice_item(
            line.stripe_invoice_item_id, params, op.call_key
        )
        return Done({"id": result["id"], "amount": result.get("amount")})

    async def _op_delete_invoice_item(self, op: OutboxOp) -> Outcome:
        item_id = op.payload.get("stripe_invoice_item_id")
        if item_id:
            await self.gateway.delete_invoice_item(str(item_id))
        return Done({"deleted": item_id})

    async def _op_finalize_invoice(self, op: OutboxOp) -> Outcome:
        """The only path to a finalized invoice; refused without an approval row, and
        only once no call that changes the draft's lines is open (pending, or claimed by
        a drain in flight)."""
        assert op.invoice_id is not None
        invoice_id = op.invoice_id

        def read(conn: Connection) -> tuple[InvoiceRecord, ApprovalRecord | None, int]:
            invoice = invoice_row(conn, invoice_id)
            approval = q.approval_of(conn, invoice_id)
            unsynced = len(
                ops_for(
                    conn,
                    invoice_id=invoice_id,
                    operations=LINE_OPERATIONS,
                    statuses=OPEN_STATUSES,
                )
            )
            return invoice, approval, unsynced

        invoice, approval, unsynced = await self._read(read)
        approved = (
            ApprovalView(
                approval.approver,
                approval.total_minor,
                approval.forced_below_minimum,
            )
            if approval is not None
            else None
        )

        def guard(remote: dict[str, Any] | None = None) -> FinalizeDecision:
            return finalize_guard(
                approved,
                has_stripe_invoice=bool(invoice.stripe_invoice_id),
                line_ops_pending=unsynced,
                stripe_status=None if remote is None else str(remote.get("status")),
                stripe_total_minor=None if remote is None else int(remote.get("total") or 0),
                currency=invoice.currency,
                invoice_id=invoice.id,
                charge_rule=check_charge,
            )

        decision = guard()
        if decision.step is FinalizeStep.REFUSE:
            return Park(decision.reason)
        if decision.step is FinalizeStep.WAIT:
            return Wait(reason=decision.reason)
        stripe_id = invoice.stripe_invoice_id
        assert stripe_id is not None  # else the guard waits
        remote = await self.gateway.retrieve_invoice(stripe_id)
        decision = guard(remote)
        if decision.step is FinalizeStep.REFUSE:
            return Park(decision.reason)
        if decision.step is FinalizeStep.FINALIZE:
            failpoint("before_stripe_call:finalize_invoice")
            remote = await self.gateway.finalize_invoice(stripe_id, op.call_key)
            failpoint("after_stripe_call:finalize_invoice")
        client = self._client(invoice.client)

        def record(conn: Connection) -> None:
            self._record_finalized(conn, invoice_id, remote, "stripe")
            if client.auto_send and remote.get("status") == "open":
                enqueue(
                    conn,
                    "send_invoice",
                    f"kv-{ledger_id(conn)}-inv{invoice_id}-send",
                    self.clock(),
                    invoice_id=invoice_id,
                )

        return Done({"status": remote.get("status")}, record)

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
        q.record_finalized(
            conn,
            invoice_id,
            number=remote.get("number"),
            hosted_url=remote.get("hosted_invoice_url"),
            total_minor=remote.get("total"),
            now=now,
        )
        record_due_date(conn, invoice_id, remote)
        for entry_id in q.entry_ids_on(conn, invoice_id, q.ON_DRAFT):
            move_entry(
                conn,
                entry_id,
                EntryState.INVOICED,
                actor,
                f"invoice {remote.get('number') or invoice_id} finalized",
                now,
            )

    async def _op_send_invoice(self, op: OutboxOp) -> Outcome:
        assert op.invoice_id is not None
        invoice_id = op.invoice_id
        invoice = await self._read(lambda conn: invoice_row(conn, invoice_id))
        if invoice.state not in ("finalized",):
            return Done({"reason": f"invoice is {invoice.state}"}, cancelled=True)
        assert invoice.stripe_invoice_id is not None  # finalized on Stripe, so it has an id
        await self.gateway.send_invoice(invoice.stripe_invoice_id, op.call_key)

        def record(conn: Connection) -> None:
            if q.mark_sent(conn, invoice_id, self.clock()):
                audit(conn, self.clock(), "kanvoice", "sent", f"invoice:{invoice.id}")

        return Done(record=record)

    # --- overdue reminders ------------------------------------------------------------

    def queue_reminders(self) -> int:
        """Queue a reminder (Stripe's ``send`` again) for every overdue invoice whose
        last reminder is older than `[overdue] remind_interval_days`; nothing when
        reminders are off. The key names the invoice and the interval since its due
        date, so two instances (or two runs in one interval) queue one reminder."""
        policy = self.settings.overdue.policy()
        if not policy.enabled:
            return 0
        now = self.clock()
        queued = 0
        with self.ledger.engine.begin() as conn:
            lid = ledger_id(conn)
            for invoice in open_invoices(conn, overdue_only_at=now):
                if not reminder_due(policy, True, invoice.last_reminder_at, now):
                    continue
                slot = reminder_slot(invoice.due_date or invoice.overdue_at, now, policy.interval)
                queued += enqueue(
                    conn,
                    Operation.SEND_REMINDER.value,
                    f"kv-{lid}-inv{invoice.invoice_id}-remind{slot}-{invoice.reminders}",
                    now,
                    invoice_id=invoice.invoice_id,
                )
        return queued

    async def _op_send_reminder(self, op: OutboxOp) -> Outcome:
        """Send an overdue invoice again, unless it was paid, voided or reminded within
        the interval since the reminder was queued (then the row is cancelled)."""
        assert op.invoice_id is not None
        invoice_id = op.invoice_id
        policy = self.settings.overdue.policy()
        now = self.clock()
        invoices = await self._read(lambda conn: open_invoices(conn, overdue_only_at=now))
        invoice = next((i for i in invoices if i.invoice_id == invoice_id), None)
        if invoice is None or not invoice.stripe_invoice_id:
            return Done({"reason": "no longer overdue"}, cancelled=True)
        if not reminder_due(
            ReminderPolicy(True, policy.interval), True, invoice.last_reminder_at, now
        ):
            return Done({"reason": "reminded within the interval"}, cancelled=True)
        await self.gateway.send_invoice(invoice.stripe_invoice_id, op.call_key)

        def record(conn: Connection) -> None:
            record_reminder(conn, invoice_id, self.clock())

        return Done({"reminded": invoice.stripe_invoice_id}, record)

    # --- following Stripe -----------------------------------------------------------

    def apply_event(self, event: dict[str, Any]) -> str:
        """Apply one verified Stripe event (`mapping.invoices.follow_event` decides).
        Duplicates and late events change nothing."""
        now = self.clock()
        kind = str(event.get("type", ""))
        obj = (event.get("data") or {}).get("object") or {}
        if kind not in STRIPE_EVENT_STATES and kind != "invoice.overdue":
            return "ignored"
        with self.ledger.engine.begin() as conn:
            if not claim_delivery(conn, "stripe", str(event.get("id")), now):
                return "duplicate"
            stripe_id = obj.get("id")
            invoice = q.invoice_by_stripe_id(
                conn, None if stripe_id is None else str(stripe_id)
            )
            if invoice is None:
                return "unknown invoice"
            record_due_date(conn, invoice.id, obj)
            if kind == "invoice.overdue":
                # Not a state of its own (`follow_event` ignores it): a flag on the invoice.
                return mark_overdue(conn, invoice, now)
            step = follow_event(invoice.state, kind)
            if isinstance(step, Ignore):
                return step.reason
            self._apply_state(conn, invoice, step, obj, f"stripe {kind}")
            return "applied"

    def _apply_state(
        self,
        conn: Connection,
        invoice: InvoiceRecord,
        step: FollowState,
        obj: dict[str, Any],
        reason: str,
    ) -> None:
        """Apply `follow`'s decision: record the finalize (auditing one without an
        approval: finalized outside kanvoice), release the entries of a voided or deleted
        invoice back to ready, mark invoiced entries paid, and move the invoice."""
        now = self.clock()
        if step.record_finalized:
            if q.approval_of(conn, invoice.id) is None:
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
        if step.release_entries:
            self._release_entries(conn, invoice.id, "stripe", reason, now, delete_items=False)
        if step.mark_paid:
            for entry_id in q.entry_ids_on(conn, invoice.id, [EntryState.INVOICED]):
                move_entry(conn, entry_id, EntryState.PAID, "stripe", reason, now)
        q.move_invoice(conn, invoice.id, step.target, now)
        if step.target is not InvoiceState.FINALIZED:
            audit(
                conn, now, "stripe", step.target.value, f"invoice:{invoice.id}", reason=reason
            )

    # --- reconcile --------------------------------------------------------------------

    async def reconcile(self, client_key: str | None = None, repair: bool = True) -> list[Drift]:
        """Compare every Stripe-backed invoice with the ledger; repair what is safe.

        The invoice's state follows Stripe's (`mapping.invoices.follow`: never
        backwards); a draft's lines are compared by `_reconcile_lines`."""
        drifts: list[Drift] = []
        if client_key:
            self._client(client_key)

        def read(conn: Connection) -> list[InvoiceRecord]:
            return q.stripe_backed_invoices(conn, client_key)

        invoices = await self._read(read)
        for invoice in invoices:
            if invoice_state(invoice.state) in (InvoiceState.VOID, InvoiceState.DELETED):
                continue
            assert invoice.stripe_invoice_id is not None  # only Stripe-backed ones are read
            remote = await self.gateway.retrieve_invoice(invoice.stripe_invoice_id)
            if repair and invoice.due_date is None and remote.get("due_date") is not None:
                # Finalized before the ledger kept due dates (0008): learn it now.
                await asyncio.to_thread(self._learn_due_date, int(invoice.id), remote)
            status = state_from_stripe(remote.get("status"), bool(remote.get("deleted")))
            if isinstance(follow(invoice.state, status), FollowState):
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
                    await asyncio.to_thread(self._follow_remote, int(invoice.id), status, remote)
                continue
            if invoice.state != InvoiceState.DRAFT.value:
                continue
            drifts.extend(await self._reconcile_lines(invoice, repair))
        return drifts

    def _learn_due_date(self, invoice_id: int, remote: dict[str, Any]) -> None:
        with self.ledger.engine.begin() as conn:
            record_due_date(conn, invoice_id, remote)

    def _follow_remote(self, invoice_id: int, status: InvoiceState, remote: dict[str, Any]) -> None:
        """Reconcile's repair of an invoice state: decided again on the row as it is now."""
        with self.ledger.engine.begin() as conn:
            fresh = invoice_row(conn, invoice_id, lock=True)
            step = follow(fresh.state, status)
            if isinstance(step, FollowState):
                self._apply_state(conn, fresh, step, remote, "reconcile")

    async def _reconcile_lines(self, invoice: InvoiceRecord, repair: bool) -> list[Drift]:
        """The draft's lines against Stripe's (`mapping.stripe_lines.diff_lines`), and
        the safe repairs: queue a missing line again, link an adopted one, delete a
        stray, and unlink an entry still linked to a line that is not on its draft."""
        assert invoice.stripe_invoice_id is not None  # only Stripe-backed ones are read
        remote_items = await self.gateway.list_invoice_items(invoice.stripe_invoice_id)
        items = [
            StripeItem(
                item_id=str(i["id"]),
                entry_ref=(i.get("metadata") or {}).get("kanvoice_entry"),
                amount_minor=int(i.get("amount") or 0),
            )
            for i in remote_items
        ]
        item_ids = [item.item_id for item in items]

        def read(
            conn: Connection,
        ) -> tuple[list[EntryRecord], set[int], list[EntryLink], dict[int, int]]:
            lines = q.entries_on(conn, invoice.id, q.ON_DRAFT)
            pending = {
                op.entry_id
                for op in ops_for(conn, invoice_id=invoice.id, statuses=OPEN_STATUSES)
                if op.entry_id is not None
            }
            linked = q.entries_linked_to(conn, item_ids)
            return lines, pending, linked, line_links.leads_on(conn, invoice.id)

        lines, pending, linked, leads = await self._read(read)
        keys = {line.id: line.entry_key for line in lines}
        # A merged line is its lead's: the others have no Stripe line of their own, and
        # the lead's bills the sum of them all.
        billed: dict[int, Decimal] = {}
        for line in lines:
            lead = leads.get(int(line.id), int(line.id))
            billed[lead] = billed.get(lead, Decimal(0)) + (line.amount or Decimal(0))
        repairs = diff_lines(
            [
                LedgerLine(
                    entry_id=int(line.id),
                    entry_key=line.entry_key,
                    amount_minor=Money(billed[int(line.id)], line.currency).to_minor_units(),
                    stripe_item_id=line.stripe_invoice_item_id,
                    pending=line.id in pending,
                )
                for line in lines
                if leads.get(int(line.id), int(line.id)) == int(line.id)
            ],
            items,
            [LinkedEntry(int(r.id), str(r.stripe_invoice_item_id)) for r in linked],
            entry_ref=fit_metadata_value,
        )
        drifts: list[Drift] = []

        def drift(problem: str, done: str) -> None:
            drifts.append(
                Drift(invoice.client, invoice.id, invoice.stripe_invoice_id, problem, done)
            )

        for fix in repairs:
            if isinstance(fix, Requeue):
                drift(
                    f"entry {fix.entry_key} has no Stripe line",
                    "line queued again" if repair else "none",
                )
                if repair:
                    await asyncio.to_thread(self._requeue_line, invoice.id, fix.entry_id)
            elif isinstance(fix, Link):
                drift(
                    f"entry {fix.entry_key} not linked to {fix.stripe_item_id}",
                    "linked" if repair else "none",
                )
                if repair:
                    await asyncio.to_thread(self._set_link, fix.entry_id, fix.stripe_item_id)
            elif isinstance(fix, AmountDrift):
                drift(
                    f"entry {fix.entry_key}: Stripe {fix.stripe_minor} ≠ ledger {fix.ledger_minor}",
                    "reported",
                )
            elif isinstance(fix, DeleteStray):
                drift(
                    f"Stripe line {fix.stripe_item_id} repeats entry {fix.entry_ref} "
                    f"(its line is {fix.duplicate_of})"
                    if fix.duplicate_of
                    else f"Stripe line {fix.stripe_item_id} names entry {fix.entry_ref}, "
                    "which is not on this draft",
                    "deleted from the draft" if repair else "none",
                )
                if repair:
                    await self.gateway.delete_invoice_item(fix.stripe_item_id)
            elif isinstance(fix, Unlink):
                drift(
                    f"entry {keys.get(fix.entry_id, fix.entry_id)} is off this draft but "
                    f"linked to its Stripe line {fix.stripe_item_id}",
                    "unlinked" if repair else "none",
                )
                if repair:
                    await asyncio.to_thread(self._set_link, fix.entry_id, None)
        return drifts

    def _requeue_line(self, invoice_id: int, entry_id: int) -> None:
        with self.ledger.engine.begin() as conn:
            q.set_entry_item(conn, entry_id, None)
            enqueue(
                conn,
                "create_invoice_item",
                f"kv-{ledger_id(conn)}-e{entry_id}-inv{invoice_id}-item-r"
                f"{int(self.clock().timestamp())}",
                self.clock(),
                entry_id=entry_id,
                invoice_id=invoice_id,
                payload={"generation": 1},
            )

    def _set_link(self, entry_id: int, stripe_item_id: str | None) -> None:
        with self.ledger.engine.begin() as conn:
            q.set_entry_item(conn, entry_id, stripe_item_id)


def drainer_owner() -> str:
    """This process, as outbox leases name it: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def dead_drainer(owner: str) -> bool:
    """Whether `owner` (``host:pid``) is a process of this host that no longer runs:
    a drain killed mid-call (its rows come back at once, not when the lease lapses).
    Another host's drainer, or a live process, is never judged dead."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # it exists (another user's process)
    return False


def _on_draft(row: EntryRecord) -> EntryOnDraft:
    """The create handler's view of an entry row."""
    return EntryOnDraft(
        entry_id=row.id,
        state=row.state,
        invoice_id=row.invoice_id,
        stripe_item_id=row.stripe_invoice_item_id,
    )


def _spent(exc: RetriableError) -> bool:
    """A 5xx answer is saved by Stripe under the key: the next try needs a new key
    (after a metadata search). A timeout or 429 leaves the key usable."""
    cause = exc.__cause__
    status = getattr(cause, "http_status", None)
    return isinstance(status, int) and status >= 500
