"""The invoicing core: invoice states, billing periods, approval decisions, the finalize
guard. Pure: no I/O, no clock (time is passed in); the shell loads views, asks these
functions, then saves what they return and enqueues its side effects in one
transaction.

Promises kept here (DESIGN.md, "Approve"; issue 15):
- nothing is finalized without an approval, and only at the approved total;
- an approval names the version it saw: a draft changed since is stale;
- an approved invoice is immutable: lines that become ready later go to the next
  draft (`place_ready_lines`), and nothing adjusts or rejects it;
- late or repeated Stripe events never move an invoice backwards (`InvoiceState.rank`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Protocol
from zoneinfo import ZoneInfo

from mapping.domain import EntryKind, EntryState
from mapping.money import Money
from mapping.stripe_lines import line_amount, next_seq

# --- invoice state -----------------------------------------------------------------------


class InvoiceState(StrEnum):
    """An invoice in the ledger (the `invoices.state` column)."""

    DRAFT = "draft"
    FINALIZED = "finalized"  # Stripe's "open"
    SENT = "sent"
    UNCOLLECTIBLE = "uncollectible"
    PAID = "paid"
    VOID = "void"
    DELETED = "deleted"

    @property
    def rank(self) -> int:
        """Order of the life cycle: an event for a state of lower or equal rank is late
        or repeated and changes nothing."""
        return _RANK[self]

    @property
    def is_final(self) -> bool:
        """Finalized or beyond: its lines are never edited again."""
        return self is not InvoiceState.DRAFT


_RANK = {
    InvoiceState.DRAFT: 0,
    InvoiceState.FINALIZED: 1,
    InvoiceState.SENT: 2,
    InvoiceState.UNCOLLECTIBLE: 3,
    InvoiceState.PAID: 4,
    InvoiceState.VOID: 5,
    InvoiceState.DELETED: 5,
}

# Where an invoice may go from each state (Stripe's invoice life cycle; a draft may be
# sent or paid outside kanvoice, which finalizes it on the way).
TRANSITIONS: Mapping[InvoiceState, frozenset[InvoiceState]] = {
    InvoiceState.DRAFT: frozenset(
        {
            InvoiceState.FINALIZED,
            InvoiceState.SENT,
            InvoiceState.PAID,
            InvoiceState.UNCOLLECTIBLE,
            InvoiceState.VOID,
            InvoiceState.DELETED,
        }
    ),
    InvoiceState.FINALIZED: frozenset(
        {InvoiceState.SENT, InvoiceState.PAID, InvoiceState.UNCOLLECTIBLE, InvoiceState.VOID}
    ),
    InvoiceState.SENT: frozenset(
        {InvoiceState.PAID, InvoiceState.UNCOLLECTIBLE, InvoiceState.VOID}
    ),
    InvoiceState.UNCOLLECTIBLE: frozenset({InvoiceState.PAID, InvoiceState.VOID}),
    InvoiceState.PAID: frozenset(),
    InvoiceState.VOID: frozenset(),
    InvoiceState.DELETED: frozenset(),
}

# The Stripe events kanvoice follows, and the state each one means.
STRIPE_EVENT_STATES: Mapping[str, InvoiceState] = {
    "invoice.finalized": InvoiceState.FINALIZED,
    "invoice.sent": InvoiceState.SENT,
    "invoice.paid": InvoiceState.PAID,
    "invoice.voided": InvoiceState.VOID,
    "invoice.deleted": InvoiceState.DELETED,
    "invoice.marked_uncollectible": InvoiceState.UNCOLLECTIBLE,
}

_STRIPE_STATUS = {
    "draft": InvoiceState.DRAFT,
    "open": InvoiceState.FINALIZED,
    "paid": InvoiceState.PAID,
    "void": InvoiceState.VOID,
    "uncollectible": InvoiceState.UNCOLLECTIBLE,
}


def invoice_state(value: str) -> InvoiceState:
    """The state named by a ledger value; an unknown value counts as a draft (rank 0),
    as the ledger always did, so it can only move forward."""
    try:
        return InvoiceState(value)
    except ValueError:
        return InvoiceState.DRAFT


def state_rank(value: str | InvoiceState) -> int:
    return invoice_state(value).rank if isinstance(value, str) else value.rank


def moves_forward(current: str | InvoiceState, target: str | InvoiceState) -> bool:
    """Whether `target` is ahead of `current` (else: a late or repeated event)."""
    return state_rank(target) > state_rank(current)


def can_transition(current: InvoiceState, target: InvoiceState) -> bool:
    """Forward and allowed by the life cycle (a paid invoice is never voided)."""
    return target in TRANSITIONS[current]


def state_from_stripe(status: str | None, deleted: bool = False) -> InvoiceState:
    """The ledger state for a Stripe invoice's `status` (what reconcile compares)."""
    if deleted:
        return InvoiceState.DELETED
    return _STRIPE_STATUS.get(str(status), InvoiceState.DRAFT)


@dataclass(frozen=True, slots=True)
class FollowState:
    """Move the invoice to `target`. `record_finalized`: record number, total and
    entries invoiced (the shell audits a finalize without an approval row: it was
    finalized outside kanvoice). `release_entries`: void/deleted: entries back to
    ready for the next draft. `mark_paid`: invoiced entries become paid."""

    target: InvoiceState
    record_finalized: bool
    release_entries: bool
    mark_paid: bool


@dataclass(frozen=True, slots=True)
class Ignore:
    reason: str  # "ignored" (not an event we follow) or "stale"


def follow(current: str | InvoiceState, target: InvoiceState) -> FollowState | Ignore:
    """What a Stripe event (or reconcile) saying `target` does to an invoice in
    `current`. Late, repeated and impossible moves change nothing."""
    now = invoice_state(current) if isinstance(current, str) else current
    if not moves_forward(now, target) or not can_transition(now, target):
        return Ignore("stale")
    finalizes = target is InvoiceState.FINALIZED or (
        now is InvoiceState.DRAFT and target in (InvoiceState.SENT, InvoiceState.PAID)
    )
    return FollowState(
        target=target,
        record_finalized=finalizes,
        release_entries=target in (InvoiceState.VOID, InvoiceState.DELETED),
        mark_paid=target is InvoiceState.PAID,
    )


def follow_event(current: str | InvoiceState, event_type: str) -> FollowState | Ignore:
    target = STRIPE_EVENT_STATES.get(event_type)
    if target is None:
        return Ignore("ignored")
    return follow(current, target)


# --- billing periods -----------------------------------------------------------------------


class Cadence(StrEnum):
    ON_DEMAND = "on_demand"
    WEEKLY = "weekly"
    MONTHLY = "monthly"


@dataclass(frozen=True, slots=True)
class BillingPeriod:
    """One client's billing period: `key` names it in the ledger (one open draft per
    client and key), `label` for people; `start`/`end` in UTC, end exclusive."""

    key: str
    label: str
    start: datetime
    end: datetime

    def contains(self, moment: datetime) -> bool:
        return self.start <= moment < self.end


def billing_period(
    cadence: Cadence | str, now: datetime, zone: ZoneInfo | str = "UTC", week_starts_on: int = 0
) -> BillingPeriod:
    """The period containing `now` in the client's time zone: its month, its week
    (starting on `week_starts_on`, 0 = Monday), or one open-ended on-demand period."""
    if now.tzinfo is None:
        raise ValueError("now must carry a time zone")
    if not 0 <= week_starts_on <= 6:
        raise ValueError(f"week_starts_on {week_starts_on}: expected 0 (Monday) to 6")
    tz = ZoneInfo(zone) if isinstance(zone, str) else zone
    local = now.astimezone(tz)
    how = Cadence(cadence)
    if how is Cadence.MONTHLY:
        start_day = local.date().replace(day=1)
        end_day = (start_day + timedelta(days=32)).replace(day=1)
        key = f"{start_day:%Y-%m}"
        label = f"{start_day:%B %Y}"
    elif how is Cadence.WEEKLY:
        offset = (local.weekday() - week_starts_on) % 7
        start_day = local.date() - timedelta(days=offset)
        end_day = start_day + timedelta(days=7)
        key = f"week-{start_day.isoformat()}"
        label = f"week of {start_day:%d %b %Y}"
    else:
        start_day = date(2000, 1, 1)
        end_day = date(9999, 1, 1)
        key = "on-demand"
        label = "on demand"

    def at(day: date) -> datetime:
        return datetime.combine(day, time(0), tz).astimezone(UTC)

    return BillingPeriod(key, label, at(start_day), at(end_day))


def open_slot(client_key: str, period: BillingPeriod) -> str:
    """The value of `invoices.open_slot` while a draft is open (unique in the ledger)."""
    return f"{client_key}|{period.key}"


# --- views the shell loads ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LineView:
    """One entry as a decision needs it."""

    entry_id: int
    item_key: str
    kind: EntryKind
    seq: int
    state: EntryState
    hours: Decimal
    rate: Decimal | None
    amount: Decimal | None
    currency: str
    description: str = ""
    invoice_id: int | None = None
    stripe_item_id: str | None = None


@dataclass(frozen=True, slots=True)
class DraftView:
    """An invoice and the lines on it (drafted and approved entries)."""

    invoice_id: int
    client: str
    state: InvoiceState
    version: int
    currency: str
    approved_by: str | None = None
    lines: tuple[LineView, ...] = ()

    @property
    def open_lines(self) -> tuple[LineView, ...]:
        return tuple(
            line for line in self.lines if line.state in (EntryState.DRAFTED, EntryState.APPROVED)
        )

    @property
    def total(self) -> Money:
        """Sum of the lines' amounts, in the currency's smallest unit."""
        amounts = (line.amount or Decimal(0) for line in self.open_lines)
        return Money(sum(amounts, Decimal(0)), self.currency).quantized()

    @property
    def is_approved(self) -> bool:
        return self.approved_by is not None


class ChargeVerdict(Protocol):
    """What a minimum-charge rule says about a total (`mapping.stripe_rules.ChargeCheck`
    on the money-rules branch has this shape)."""

    @property
    def below_minimum(self) -> bool: ...

    @property
    def reason(self) -> str: ...


# The minimum-charge hook: `mapping.stripe_rules.check_charge` fits it.
ChargeRule = Callable[[Money], ChargeVerdict]


# --- decisions: results --------------------------------------------------------------------


class Refusal(StrEnum):
    NOT_APPROVER = "not_approver"
    NOT_A_DRAFT = "not_a_draft"
    ALREADY_APPROVED = "already_approved"
    STALE = "stale"
    EMPTY = "empty"
    BELOW_MINIMUM = "below_minimum"
    NO_REASON = "no_reason"
    INVALID = "invalid"


@dataclass(frozen=True, slots=True)
class Refused:
    """Nothing changes (the shell audits the refusal and shows `message`)."""

    refusal: Refusal
    message: str
    # Adjust only: field errors keyed by (entry id, field: hours / rate / description).
    errors: Mapping[tuple[int, str], str] | None = None


@dataclass(frozen=True, slots=True)
class Approve:
    """Record the approval at `total_minor`, move `entry_ids` to approved, give up the
    open slot (new lines go to the next draft), and enqueue the finalize call."""

    invoice_id: int
    approver: str
    total_minor: int
    currency: str
    entry_ids: tuple[int, ...]
    forced_below_minimum: bool = False


@dataclass(frozen=True, slots=True)
class Release:
    """An entry leaves the draft back to ready; `delete_item`: its Stripe line to delete."""

    entry_id: int
    delete_item: str | None


@dataclass(frozen=True, slots=True)
class Reject:
    """Every line leaves the draft (back to ready), the version is bumped."""

    invoice_id: int
    who: str
    reason: str
    releases: tuple[Release, ...]


def draft_refusal(draft: DraftView | None, version: int | None) -> Refused | None:
    """Whether a person may decide on `draft` as they saw it (`version`): a draft, not
    approved, unchanged since, with lines. None: yes; else the refusal. Every decision
    (approve, reject, adjust, and the shell's own pre-checks) asks this."""
    if draft is None:
        return Refused(Refusal.NOT_A_DRAFT, "no such invoice")
    if draft.is_approved:
        return Refused(
            Refusal.ALREADY_APPROVED,
            f"invoice {draft.invoice_id} was already approved by {draft.approved_by}",
        )
    if draft.state is not InvoiceState.DRAFT:
        return Refused(
            Refusal.NOT_A_DRAFT, f"invoice {draft.invoice_id} is {draft.state}, not a draft"
        )
    if version is not None and version != draft.version:
        return Refused(
            Refusal.STALE,
            f"invoice {draft.invoice_id} changed since this message (version "
            f"{version} → {draft.version}); review the new version",
        )
    if not draft.open_lines:
        return Refused(Refusal.EMPTY, f"invoice {draft.invoice_id} has no lines")
    return None


def decide_approve(
    draft: DraftView | None,
    approver: str,
    *,
    is_approver: bool,
    version: int | None = None,
    charge_rule: ChargeRule | None = None,
    force: bool = False,
) -> Approve | Refused:
    """Approve the draft as the approver saw it (`version`), at its current total.

    A total under the minimum charge (`charge_rule`) is refused unless `force`."""
    if not is_approver:
        return Refused(Refusal.NOT_APPROVER, f"{approver} is not an approver")
    refused = draft_refusal(draft, version)
    if refused is not None:
        return refused
    assert draft is not None
    total = draft.total
    below = False
    if charge_rule is not None:
        verdict = charge_rule(total)
        below = verdict.below_minimum
        if below and not force:
            return Refused(
                Refusal.BELOW_MINIMUM,
                f"invoice {draft.invoice_id} not approved: {verdict.reason}",
            )
    return Approve(
        invoice_id=draft.invoice_id,
        approver=approver,
        total_minor=total.to_minor_units(),
        currency=draft.currency,
        entry_ids=tuple(
            line.entry_id for line in draft.open_lines if line.state is EntryState.DRAFTED
        ),
        forced_below_minimum=below,
    )


def decide_reject(
    draft: DraftView | None,
    who: str,
    reason: str,
    *,
    is_approver: bool,
    version: int | None = None,
) -> Reject | Refused:
    """Take every line off an undecided draft; a reason is required. Lines already on
    Stripe are deleted there; a line whose create is still in flight is caught when
    its result comes back (`after_item_created`)."""
    if not is_approver:
        return Refused(Refusal.NOT_APPROVER, f"{who} is not an approver")
    if not reason.strip():
        return Refused(Refusal.NO_REASON, "a reason is required to reject a draft")
    refused = draft_refusal(draft, version)
    if refused is not None:
        return refused
    assert draft is not None
    return Reject(
        invoice_id=draft.invoice_id,
        who=who,
        reason=reason.strip(),
        releases=tuple(Release(line.entry_id, line.stripe_item_id) for line in draft.open_lines),
    )


# --- adjust and write-off -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LineChange:
    """What finance asked for one line in the Adjust form (None: unchanged)."""

    entry_id: int
    hours: Decimal | None = None
    rate: Decimal | None = None
    description: str | None = None
    exclude: bool = False


@dataclass(frozen=True, slots=True)
class Exclude:
    """The entry goes to voided: its hours stay settled, never billed again; its Stripe
    line (if any) is deleted by the draft-edit queue."""

    entry_id: int
    who: str


@dataclass(frozen=True, slots=True)
class WriteOff:
    """Hours taken off a line, kept as a new voided entry of the same item (seq `seq`)
    so they count as settled and the board never bills them again."""

    from_entry_id: int
    item_key: str
    seq: int
    hours: Decimal
    rate: Decimal | None
    amount: Money | None
    who: str

    @property
    def reason(self) -> str:
        return f"written off by {self.who}"


@dataclass(frozen=True, slots=True)
class Reprice:
    """New hours / rate / amount / description of a drafted line (None: unchanged)."""

    entry_id: int
    hours: Decimal
    rate: Decimal | None
    amount: Money | None
    description: str | None
    what: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Adjust:
    """Apply these to the draft, queue the Stripe edits, bump the version, re-post."""

    invoice_id: int
    who: str
    excluded: tuple[Exclude, ...]
    write_offs: tuple[WriteOff, ...]
    repriced: tuple[Reprice, ...]

    @property
    def changed_entry_ids(self) -> tuple[int, ...]:
        ids = [e.entry_id for e in self.excluded] + [r.entry_id for r in self.repriced]
        return tuple(dict.fromkeys(ids))


def write_off(line: LineView, hours: Decimal, who: str, item_seqs: Iterable[int]) -> WriteOff:
    """Hours removed from `line`, as a voided entry (the next time seq of the item)."""
    if hours <= 0 or hours > line.hours:
        raise ValueError(f"write-off of {hours} h from a line of {line.hours} h")
    amount = line_amount(hours, line.rate, line.currency)
    return WriteOff(
        line.entry_id, line.item_key, next_seq(item_seqs), hours, line.rate, amount, who
    )


def decide_adjust(
    draft: DraftView | None,
    who: str,
    changes: tuple[LineChange, ...],
    *,
    is_approver: bool,
    version: int | None,
    time_seqs: Mapping[str, Iterable[int]],
) -> Adjust | Refused:
    """Apply the Adjust form to an undecided draft at the version finance saw.

    `time_seqs`: the time-entry seqs already used per item (write-offs take the next).
    Rules: only drafted lines of this draft; only time lines have hours and a rate;
    hours may only be lowered (more come from the board); 0 hours is excluding;
    amount = `line_amount(hours, rate)`. Nothing differing is refused."""
    if not is_approver:
        return Refused(Refusal.NOT_APPROVER, f"{who} is not an approver")
    refused = draft_refusal(draft, version)
    if refused is not None:
        return refused
    assert draft is not None
    by_id = {line.entry_id: line for line in draft.lines}
    errors: dict[tuple[int, str], str] = {}
    for change in changes:
        line = by_id.get(change.entry_id)
        if line is None or line.state is not EntryState.DRAFTED:
            errors[(change.entry_id, "description")] = (
                "This line is no longer on the draft; close and reopen Adjust."
            )
            continue
        if line.kind is not EntryKind.TIME and (
            change.hours is not None or change.rate is not None
        ):
            errors[(change.entry_id, "description")] = (
                "Only time lines have hours and a rate to change."
            )
            continue
        if change.hours is not None and (change.hours < 0 or change.hours > line.hours):
            errors[(change.entry_id, "hours")] = (
                f"Hours can only be lowered here (now {line.hours} h); "
                "more hours come from the board."
            )
        if change.rate is not None and (line.rate is None or change.rate < 0):
            errors[(change.entry_id, "rate")] = (
                "This line has no rate to change." if line.rate is None else "A rate is positive."
            )
    if errors:
        return Refused(Refusal.INVALID, "; ".join(errors.values()), errors)

    excluded: list[Exclude] = []
    write_offs: list[WriteOff] = []
    repriced: list[Reprice] = []
    used = {key: list(seqs) for key, seqs in time_seqs.items()}
    for change in changes:
        line = by_id[change.entry_id]
        if change.exclude or change.hours == 0:
            excluded.append(Exclude(line.entry_id, who))
            continue
        hours, rate = line.hours, line.rate
        what: list[str] = []
        if change.hours is not None and change.hours != line.hours:
            seqs = used.setdefault(line.item_key, [line.seq])
            off = write_off(line, line.hours - change.hours, who, seqs)
            seqs.append(off.seq)
            write_offs.append(off)
            hours = change.hours
            what.append("hours")
        if change.rate is not None and change.rate != line.rate:
            rate = change.rate
            what.append("rate")
        description = None
        if change.description is not None and change.description != line.description:
            description = change.description
            what.append("description")
        if not what:
            continue
        amount = (
            line_amount(hours, rate, line.currency)
            if (hours, rate) != (line.hours, line.rate)
            else (Money(line.amount, line.currency) if line.amount is not None else None)
        )
        repriced.append(Reprice(line.entry_id, hours, rate, amount, description, tuple(what)))
    if not excluded and not repriced:
        first = changes[0].entry_id if changes else 0
        return Refused(
            Refusal.INVALID,
            "Nothing differs from the draft",
            {
                (first, "description"): (
                    "Nothing differs from the draft: change a value, tick Exclude, or press Cancel."
                )
            },
        )
    return Adjust(draft.invoice_id, who, tuple(excluded), tuple(write_offs), tuple(repriced))


# --- drafting: where ready lines go ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpenDraft:
    """What the ledger holds in the client's open slot for the period (if anything)."""

    invoice_id: int
    state: InvoiceState
    approved: bool
    lines: int

    @property
    def usable(self) -> bool:
        """An undecided draft takes new lines; an approved (or finalized) one never."""
        return self.state is InvoiceState.DRAFT and not self.approved


@dataclass(frozen=True, slots=True)
class DraftPlan:
    """`invoice_id` None: open a new draft in the slot first (after `close_slot_of`
    gave up the slot, when set). `add`: the ready entries to put on it, oldest first;
    `left`: how many did not fit (they stay ready, for the next draft)."""

    invoice_id: int | None
    close_slot_of: int | None
    add: tuple[int, ...]
    left: int


def place_ready_lines(
    open_draft: OpenDraft | None, ready: tuple[int, ...], max_lines: int | None = None
) -> DraftPlan:
    """Where the client's ready entries go. An approved (or finalized) invoice still in
    the slot is immutable: it gives up the slot and a new draft takes the lines.
    `max_lines` (Stripe's 250 items per invoice) caps the draft; the rest stays ready."""
    usable = open_draft is not None and open_draft.usable
    on_draft = open_draft.lines if usable and open_draft is not None else 0
    room = len(ready) if max_lines is None else max(0, max_lines - on_draft)
    add = ready[:room]
    if usable and open_draft is not None:
        return DraftPlan(open_draft.invoice_id, None, add, len(ready) - len(add))
    close = open_draft.invoice_id if open_draft is not None else None
    return DraftPlan(None, close, add, len(ready) - len(add))


# --- the finalize guard ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ApprovalView:
    approver: str
    total_minor: int
    forced_below_minimum: bool = False


class FinalizeStep(StrEnum):
    REFUSE = "refuse"  # park: a person must look (never finalize)
    WAIT = "wait"  # lines still on their way to Stripe, or the draft not created yet
    CHECK_STRIPE = "check_stripe"  # prechecks passed: read Stripe's invoice, ask again
    FINALIZE = "finalize"  # call Stripe's finalize
    RECORD = "record"  # already finalized on Stripe: record it, no call


@dataclass(frozen=True, slots=True)
class FinalizeDecision:
    step: FinalizeStep
    reason: str = ""
    code: str = ""


def finalize_guard(
    approval: ApprovalView | None,
    *,
    has_stripe_invoice: bool,
    line_ops_pending: int,
    stripe_status: str | None = None,
    stripe_total_minor: int | None = None,
    currency: str | None = None,
    invoice_id: int | None = None,
    charge_rule: ChargeRule | None = None,
) -> FinalizeDecision:
    """The only path to a finalized invoice.

    Call it twice: before reading Stripe (`stripe_status` None) it refuses without an
    approval and waits while line operations are pending; with Stripe's view it
    finalizes only a draft whose total equals the approved total (and, with
    `charge_rule`, is not under the minimum charge unless the approval forced it)."""
    label = f"invoice {invoice_id}" if invoice_id is not None else "the invoice"
    if approval is None:
        return FinalizeDecision(
            FinalizeStep.REFUSE,
            f"refusing to finalize {label}: the ledger holds no approval",
            "no_approval",
        )
    if line_ops_pending or not has_stripe_invoice:
        return FinalizeDecision(FinalizeStep.WAIT, "lines still on their way to Stripe")
    if stripe_status is None:
        return FinalizeDecision(FinalizeStep.CHECK_STRIPE, "read Stripe's invoice, then ask again")
    if stripe_status != "draft":
        return FinalizeDecision(FinalizeStep.RECORD, f"Stripe says {stripe_status}")
    total = int(stripe_total_minor or 0)
    if total != approval.total_minor:
        return FinalizeDecision(
            FinalizeStep.REFUSE,
            f"refusing to finalize {label}: Stripe's total {total} is not the approved "
            f"{approval.total_minor}; approve it again",
            "total_changed",
        )
    if charge_rule is not None and currency is not None and not approval.forced_below_minimum:
        verdict = charge_rule(Money.from_minor_units(total, currency))
        if verdict.below_minimum:
            return FinalizeDecision(
                FinalizeStep.REFUSE,
                f"refusing to finalize {label}: {verdict.reason}",
                "below_minimum",
            )
    return FinalizeDecision(FinalizeStep.FINALIZE)
