"""Stripe lines as pure functions: one amount rule, one sequence rule, the invoice item
built from an entry, what to do with a created item, and reconcile's diff.

No I/O, no clock. The shell loads the views, asks, and applies the answer (the
Stripe drain records a created item; reconcile applies the repairs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

from mapping.domain import EntryKind, EntryState, LineGrouping, Staff
from mapping.money import Money, rounded_money

MAX_DESCRIPTION = 500
ON_DRAFT_STATES = frozenset({EntryState.DRAFTED, EntryState.APPROVED})


def line_amount(hours: Decimal, rate: Decimal | None, currency: str) -> Money | None:
    """amount = hours × rate, rounded half-up to the currency's smallest unit; None
    without a rate (nobody can price the line). The one place this is computed."""
    if rate is None:
        return None
    if not hours or not rate:  # zero: keep its sign (-0 and 0 are one cache key)
        return rounded_money(hours * rate, currency)
    return _line_amount(hours, rate, currency)


@lru_cache(maxsize=8192)
def _line_amount(hours: Decimal, rate: Decimal, currency: str) -> Money:
    """Memoized (a board repeats a few hour values and rates): exact, since equal
    inputs give equal products and the rounding fixes the representation (EUR 300.00
    from 2.5 h or 2.50 h), and Money is immutable."""
    return rounded_money(hours * rate, currency)


def next_seq(seqs: Iterable[int]) -> int:
    """The next sequence number after those used (1 for the first)."""
    return max(seqs, default=0) + 1


# --- idempotency keys (deterministic: derived from the ledger) -------------------------


def invoice_key(prefix: str, invoice_id: int, what: str) -> str:
    """`what`: create, finalize, send."""
    return f"{prefix}-inv{invoice_id}-{what}"


def item_create_key(prefix: str, entry_id: int, invoice_id: int, n: int) -> str:
    """The `n`th create of the entry's line on this invoice (a line taken off and put
    back needs a new key)."""
    return f"{prefix}-e{entry_id}-inv{invoice_id}-item{n}"


def item_update_key(prefix: str, entry_id: int, invoice_id: int, n: int) -> str:
    return f"{prefix}-e{entry_id}-inv{invoice_id}-update{n}"


def item_delete_key(prefix: str, entry_id: int, invoice_id: int, stripe_item_id: str) -> str:
    return f"{prefix}-e{entry_id}-inv{invoice_id}-delete-{stripe_item_id}"


# --- the invoice item for an entry -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LineSource:
    """What an invoice item is built from: the entry and its board item."""

    entry_id: int
    entry_key: str
    item_key: str
    kind: EntryKind
    hours: Decimal
    rate: Decimal | None
    amount: Decimal | None
    currency: str
    description: str
    title: str
    board: str
    external_id: str
    url: str
    created_at: datetime
    done_at: datetime | None = None
    person: str | None = None
    role: str | None = None
    #: A merged line (`line_grouping`): every entry it bills, the lead's first; its
    #: `hours` and `amount` are then the entries' sums. Empty for a line of one entry.
    entries: tuple[int, ...] = ()


def line_who(grouping: LineGrouping, person: str | None, role: str | None, staff: Staff) -> str:
    """Who did the work, as the client's `line_grouping` wants it on the invoice:
    `item_person` names the person (and role), `role` names the role only, `item`
    nothing. Empty for an entry of the whole item (no person)."""
    if grouping is LineGrouping.ITEM or person is None:
        return ""
    configured = staff.person(person)
    role_def = staff.role(role)
    role_text = role_def.label if role_def is not None else (role or "")
    if grouping is LineGrouping.ROLE:
        return role_text or "unassigned role"
    name = configured.label if configured is not None else person
    return f"{name} ({role_text})" if role_text else name


def rate_text(rate: Decimal, currency: str) -> str:
    """A rate with the currency's decimals (120.00 EUR), or all of its own digits when
    it has more (5.1245 KWD): a rate is not an amount and is never rounded for show."""
    exponent = Money.zero(currency).exponent
    shown = rate.quantize(Decimal(1).scaleb(-exponent))
    return f"{shown if shown == rate else rate:,} {currency}"


def line_what(kind: EntryKind | str, hours: Decimal, rate_text: str, who: str = "") -> str:
    """The part of a line's description that says what the money is for: the
    milestone, or hours × rate, prefixed by who did the work when the client asks."""
    if EntryKind(kind) is EntryKind.MILESTONE:
        # A milestone without hours (a retainer's fixed line) says only what it is.
        what = f"fixed price milestone ({hours} h)" if hours else "fixed price"
    else:
        what = f"{hours} h × {rate_text}"
    return f"{who}: {what}" if who else what


@dataclass(frozen=True, slots=True)
class StripeCustomer:
    key: str
    customer_id: str
    tax_rate_ids: tuple[str, ...] = ()


def _cut(text: str, keep: str, limit: int = MAX_DESCRIPTION) -> str:
    return (text + keep)[:limit]


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class StripeLine:
    """An invoice item's parameters (minus customer / invoice, which the drain adds)."""

    amount_minor: int
    currency: str
    description: str
    period_start: int
    period_end: int
    metadata: tuple[tuple[str, str], ...]
    tax_rates: tuple[str, ...] = ()

    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "amount": self.amount_minor,
            "currency": self.currency.lower(),
            "description": self.description,
            "period": {"start": self.period_start, "end": self.period_end},
            "metadata": dict(self.metadata),
        }
        if self.tax_rates:
            out["tax_rates"] = list(self.tax_rates)
        return out


def stripe_line(
    line: LineSource,
    customer: StripeCustomer,
    *,
    invoice_ref: str | None = None,
    fit_description: Callable[[str, str], str] = _cut,
    fit_metadata: Callable[[Mapping[str, str]], Mapping[str, str]] = dict,
    grouping: LineGrouping = LineGrouping.ITEM,
    staff: Staff | None = None,
) -> StripeLine:
    """The invoice item for one entry: the ledger's amount in minor units, a description
    that says what the money is for (hours × rate, or the milestone), the work period,
    and metadata naming the entry (`kanvoice_entry`: what drain and reconcile search
    by), item, board and client. `fit_description(text, keep)` and `fit_metadata` are
    the hooks for Stripe's field limits (`mapping.stripe_rules` on the money branch)."""
    who = line_who(grouping, line.person, line.role, staff or Staff())
    what = line_what(line.kind, line.hours, rate_text(line.rate or Decimal(0), line.currency), who)
    # Finance may have reworded the line (Adjust): the entry's own text wins. The
    # reference and hours × rate are kept whole; the url only when it fits too.
    keep = f" [{line.board} {line.external_id}] {what}"
    if line.url and len(keep) + len(line.url) + 1 < MAX_DESCRIPTION:
        keep += f" {line.url}"
    created = _aware(line.created_at)
    ended = _aware(line.done_at) if line.done_at else created
    metadata = {
        "kanvoice_entry": line.entry_key,
        "kanvoice_entry_id": str(line.entry_id),
        "item": line.item_key,
        "board": line.board,
        "client": customer.key,
        "hours": str(line.hours),
        "rate": str(line.rate) if line.rate is not None else "",
    }
    if line.person:
        metadata["person"] = line.person
    if line.role:
        metadata["role"] = line.role
    if invoice_ref is not None:
        metadata["kanvoice_invoice"] = invoice_ref
    if line.entries:
        metadata["entries"] = ",".join(str(e) for e in line.entries)
    return StripeLine(
        amount_minor=Money(line.amount or Decimal(0), line.currency).to_minor_units(),
        currency=line.currency,
        description=fit_description(line.description or line.title, keep),
        period_start=int(min(created, ended).timestamp()),
        period_end=int(ended.timestamp()),
        metadata=tuple(fit_metadata(metadata).items()),
        tax_rates=customer.tax_rate_ids,
    )


# --- creating a line: before the call, and with its result ----------------------------------


@dataclass(frozen=True, slots=True)
class EntryOnDraft:
    """An entry as the create handler sees it now."""

    entry_id: int
    state: EntryState
    invoice_id: int | None
    stripe_item_id: str | None


@dataclass(frozen=True, slots=True)
class CreateLine:
    """Make the call (the draft exists, the entry is still on it)."""


@dataclass(frozen=True, slots=True)
class WaitForDraft:
    """The draft itself is not on Stripe yet."""


@dataclass(frozen=True, slots=True)
class CancelCreate:
    reason: str


@dataclass(frozen=True, slots=True)
class AlreadyLinked:
    stripe_item_id: str


CreateStep = CreateLine | WaitForDraft | CancelCreate | AlreadyLinked


def before_create(entry: EntryOnDraft, invoice_id: int, has_stripe_invoice: bool) -> CreateStep:
    """Should the create of `entry`'s line on `invoice_id` be sent?"""
    if entry.invoice_id != invoice_id or entry.state not in ON_DRAFT_STATES:
        return CancelCreate(f"entry is {entry.state}")
    if entry.stripe_item_id:
        return AlreadyLinked(entry.stripe_item_id)
    if not has_stripe_invoice:
        return WaitForDraft()
    return CreateLine()


@dataclass(frozen=True, slots=True)
class LinkItem:
    """Record the created item on the entry."""

    entry_id: int
    stripe_item_id: str


@dataclass(frozen=True, slots=True)
class DeleteStrayItem:
    """The entry left the draft while its line was on its way (rejected, adjusted,
    voided): do not link it; delete the line Stripe just created."""

    entry_id: int
    stripe_item_id: str
    reason: str


def after_create(
    entry: EntryOnDraft | None, invoice_id: int, stripe_item_id: str
) -> LinkItem | DeleteStrayItem:
    """What to record once Stripe created a line, re-reading the entry in the same
    transaction that records it (the decision made before the call may be stale)."""
    if entry is None:
        return DeleteStrayItem(0, stripe_item_id, "the entry no longer exists")
    if entry.invoice_id != invoice_id or entry.state not in ON_DRAFT_STATES:
        return DeleteStrayItem(
            entry.entry_id, stripe_item_id, f"entry left the draft meanwhile ({entry.state})"
        )
    if entry.stripe_item_id and entry.stripe_item_id != stripe_item_id:
        return DeleteStrayItem(
            entry.entry_id, stripe_item_id, f"entry is already linked to {entry.stripe_item_id}"
        )
    return LinkItem(entry.entry_id, stripe_item_id)


# --- reconcile: the ledger's draft against Stripe's -------------------------------------------


@dataclass(frozen=True, slots=True)
class LedgerLine:
    """A drafted or approved entry on the invoice, as the ledger holds it."""

    entry_id: int
    entry_key: str
    amount_minor: int
    stripe_item_id: str | None
    pending: bool = False  # an outbox call for this entry is still open


@dataclass(frozen=True, slots=True)
class StripeItem:
    """An invoice item on Stripe's draft (`entry_ref`: its `kanvoice_entry` metadata)."""

    item_id: str
    entry_ref: str | None
    amount_minor: int


@dataclass(frozen=True, slots=True)
class LinkedEntry:
    """A ledger entry off this draft that is still linked to a Stripe item id (the shell
    passes the invoice's released entries and every entry linked to one of its Stripe
    items): such a link is always wrong, the line is a stray or already deleted."""

    entry_id: int
    stripe_item_id: str


@dataclass(frozen=True, slots=True)
class Requeue:
    """The entry has no line on Stripe: unlink it and queue a new create (next key
    generation: search first)."""

    entry_id: int
    entry_key: str


@dataclass(frozen=True, slots=True)
class Link:
    entry_id: int
    entry_key: str
    stripe_item_id: str


@dataclass(frozen=True, slots=True)
class AmountDrift:
    """Reported only: a person decides (Adjust, or fix the line on Stripe)."""

    entry_id: int
    entry_key: str
    stripe_minor: int
    ledger_minor: int


@dataclass(frozen=True, slots=True)
class DeleteStray:
    """A Stripe line naming an entry that is not on this draft, or (`duplicate_of`: the
    line kept) a second line for an entry that already has one: delete it, or the
    client is billed twice."""

    stripe_item_id: str
    entry_ref: str
    duplicate_of: str | None = None


@dataclass(frozen=True, slots=True)
class Unlink:
    """An entry off this draft still linked to one of its Stripe lines (a stray line's
    entry): clear the link, so its next draft creates a line instead of adopting a
    deleted one."""

    entry_id: int
    stripe_item_id: str


Repair = Requeue | Link | AmountDrift | DeleteStray | Unlink


def diff_lines(
    lines: Iterable[LedgerLine],
    items: Iterable[StripeItem],
    linked_elsewhere: Iterable[LinkedEntry] = (),
    entry_ref: Callable[[str], str] = str,
) -> tuple[Repair, ...]:
    """Repairs that bring the ledger's draft and Stripe's draft together.

    `entry_ref(entry_key)` is the value Stripe's metadata holds for an entry key (the
    money branch shortens long keys). Stripe items without a `kanvoice_entry` (added by
    hand) are left alone. An entry keeps one line: any other line naming it is deleted."""
    ours = list(lines)
    by_ref: dict[str, list[StripeItem]] = {}
    for item in items:
        if item.entry_ref:
            by_ref.setdefault(item.entry_ref, []).append(item)
    repairs: list[Repair] = []
    refs = set()
    for line in ours:
        ref = entry_ref(line.entry_key)
        refs.add(ref)
        remote_items = by_ref.get(ref, [])
        if not remote_items:
            if not line.pending:
                repairs.append(Requeue(line.entry_id, line.entry_key))
            continue
        # One line per entry: the one it is linked to, else Stripe's first.
        remote = next(
            (i for i in remote_items if i.item_id == line.stripe_item_id), remote_items[0]
        )
        if line.stripe_item_id != remote.item_id:
            repairs.append(Link(line.entry_id, line.entry_key, remote.item_id))
        if remote.amount_minor != line.amount_minor:
            repairs.append(
                AmountDrift(line.entry_id, line.entry_key, remote.amount_minor, line.amount_minor)
            )
        for extra in remote_items:
            if extra is not remote:
                repairs.append(DeleteStray(extra.item_id, ref, duplicate_of=remote.item_id))
    for ref, found in by_ref.items():
        if ref not in refs:
            repairs.extend(DeleteStray(item.item_id, ref) for item in found)
    on_draft = {line.entry_id for line in ours}
    for linked in linked_elsewhere:
        if linked.entry_id not in on_draft:
            repairs.append(Unlink(linked.entry_id, linked.stripe_item_id))
    return tuple(repairs)
