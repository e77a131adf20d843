"""Domain types shared by the connectors, the billing core and the ledger.

Everything here is a frozen value: connectors build `BoardItem` snapshots, the
billing core reads them with the client's and board's rules and returns actions.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal
from enum import StrEnum
from functools import lru_cache

from mapping.frozen import quick_init
from mapping.money import Money, normalize_currency, tidy_decimal


class Source(StrEnum):
    GITHUB = "github"
    AZURE_DEVOPS = "azure_devops"
    SIMULATED = "simulated"
    FILE = "file"


class StateCategory(StrEnum):
    """Board-independent meaning of a column/state (Azure DevOps' state categories)."""

    PROPOSED = "proposed"
    IN_PROGRESS = "in_progress"
    RESOLVED = "resolved"
    DONE = "done"
    REMOVED = "removed"


class BillingType(StrEnum):
    TIME_AND_MATERIALS = "time_and_materials"
    FIXED_PRICE = "fixed_price"
    NON_BILLABLE = "non_billable"


class EntryState(StrEnum):
    IN_PROGRESS = "in_progress"
    READY = "ready"
    DRAFTED = "drafted"
    APPROVED = "approved"
    INVOICED = "invoiced"
    PAID = "paid"
    NON_BILLABLE = "non_billable"
    VOIDED = "voided"
    NEEDS_REVIEW = "needs_review"


# States whose hours count as settled: billed, being billed, or decided by a person.
SETTLED_STATES = frozenset(
    {
        EntryState.READY,
        EntryState.DRAFTED,
        EntryState.APPROVED,
        EntryState.INVOICED,
        EntryState.PAID,
        EntryState.VOIDED,
        EntryState.NEEDS_REVIEW,
    }
)
# States that may still be changed without touching a finalized invoice.
EDITABLE_STATES = frozenset({EntryState.READY, EntryState.DRAFTED})
# States that are on (or past) a finalized invoice: never edited automatically.
INVOICED_STATES = frozenset({EntryState.APPROVED, EntryState.INVOICED, EntryState.PAID})


class EntryKind(StrEnum):
    TIME = "time"  # time and materials: hours x rate
    MILESTONE = "milestone"  # fixed price: the milestone amount, once
    ADJUSTMENT = "adjustment"  # hours lowered after invoicing: for a person to review
    COST = "cost"  # non-billable hours, kept for cost only


class RoundingMode(StrEnum):
    UP = "up"
    NEAREST = "nearest"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class RoundingRule:
    """Round hours to an increment in minutes at billing time (raw hours are kept)."""

    increment_minutes: int = 1
    mode: RoundingMode = RoundingMode.UP

    def __post_init__(self) -> None:
        if self.increment_minutes <= 0 or self.increment_minutes > 24 * 60:
            raise ValueError(
                f"rounding increment {self.increment_minutes!r} minutes: expected 1 to 1440"
            )

    def apply(self, hours: Decimal) -> Decimal:
        """Hours rounded to the increment; exact multiples stay as they are."""
        if hours <= 0:
            return Decimal(0)
        return _rounded_hours(hours, self.increment_minutes, self.mode)


@lru_cache(maxsize=4096)
def _rounded_hours(hours: Decimal, increment_minutes: int, mode: RoundingMode) -> Decimal:
    """`RoundingRule.apply` of positive hours. Memoized (a board repeats a few hour
    values): exact, since equal inputs give the same value and `_tidy` gives every
    value one representation, so a hit returns what computing again would."""
    minutes = hours * 60
    steps = minutes / increment_minutes
    whole_steps = steps.quantize(_ONE, rounding=_DECIMAL_ROUNDING[mode])
    rounded = whole_steps * increment_minutes / Decimal(60)
    # Keep a tidy representation (e.g. 1.25, not 1.250000000).
    return _tidy(rounded)


_ONE = Decimal(1)
_MILLIONTH = Decimal("0.000001")
_DECIMAL_ROUNDING = {
    RoundingMode.UP: ROUND_CEILING,
    RoundingMode.DOWN: ROUND_FLOOR,
    RoundingMode.NEAREST: ROUND_HALF_UP,
}


def _tidy(value: Decimal) -> Decimal:
    # At most 6 decimals (the ledger's precision): 1/60 of an hour is not finite.
    return tidy_decimal(value.quantize(_MILLIONTH, rounding=ROUND_HALF_UP))


class RateScope(StrEnum):
    ITEM = "item"
    LABEL = "label"
    PERSON = "person"
    ROLE = "role"
    BOARD = "board"
    CLIENT = "client"
    DEFAULT = "default"


_SCOPE_PRIORITY = {
    RateScope.ITEM: 0,
    RateScope.LABEL: 1,
    RateScope.PERSON: 2,
    RateScope.ROLE: 3,
    RateScope.BOARD: 4,
    RateScope.CLIENT: 5,
    RateScope.DEFAULT: 6,
}


class LineGrouping(StrEnum):
    """How a client wants time lines described on the invoice.

    `item`: the item's title, hours and rate (as before people existed);
    `item_person`: the item plus who did the work (and their role);
    `role`: the item plus the role, not the person's name."""

    ITEM = "item"
    ITEM_PERSON = "item_person"
    ROLE = "role"


@dataclass(frozen=True, slots=True)
class DatedRate:
    """An hourly bill or cost rate in force from a date (None: from the beginning)."""

    rate: Decimal
    effective_from: date | None = None

    def __post_init__(self) -> None:
        if not self.rate.is_finite() or self.rate < 0:
            raise ValueError(f"rate {self.rate} is negative")


def rate_on(rates: tuple[DatedRate, ...], on: date) -> Decimal | None:
    """The rate in force on `on`: the latest effective date not after it (undated
    rates are in force from the beginning of time; ties keep configuration order)."""
    best: DatedRate | None = None
    for rate in rates:
        if rate.effective_from is not None and rate.effective_from > on:
            continue
        if best is None or (rate.effective_from or date.min) > (best.effective_from or date.min):
            best = rate
    return best.rate if best is not None else None


@dataclass(frozen=True, slots=True)
class Role:
    """A role (senior, junior, designer…): a bill rate and a cost rate, each dated."""

    key: str
    name: str = ""
    bill_rates: tuple[DatedRate, ...] = ()
    cost_rates: tuple[DatedRate, ...] = ()

    @property
    def label(self) -> str:
        return self.name or self.key


@dataclass(frozen=True, slots=True)
class Person:
    """Someone who works on the boards: their board identities (GitHub login, Azure
    DevOps unique name / email; matched without case), a role, and optional bill and
    cost rates of their own (dated), which beat the role's."""

    key: str
    name: str = ""
    identities: frozenset[str] = frozenset()
    role: str | None = None
    bill_rates: tuple[DatedRate, ...] = ()
    cost_rates: tuple[DatedRate, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "identities", frozenset(i.casefold() for i in (*self.identities, self.key))
        )

    @property
    def label(self) -> str:
        return self.name or self.key


@dataclass(frozen=True, slots=True)
class Worker:
    """One share of an item's hours: the person key written on the entry (a configured
    person's key, or the board identity of someone not configured), and the person and
    role when configured."""

    key: str
    person: Person | None = None
    role: Role | None = None


@dataclass(frozen=True, slots=True)
class Staff:
    """Everyone configured: people and roles. Empty: billing is per item, as before."""

    people: tuple[Person, ...] = ()
    roles: tuple[Role, ...] = ()
    default_cost_rate: Decimal | None = None

    def __bool__(self) -> bool:
        return bool(self.people)

    def role(self, key: str | None) -> Role | None:
        return next((r for r in self.roles if r.key == key), None) if key else None

    def person(self, key: str) -> Person | None:
        return next((p for p in self.people if p.key == key), None)

    def worker(self, identity: str) -> Worker:
        """The worker a board identity names (unknown identities keep their own key)."""
        folded = identity.strip().casefold()
        for person in self.people:
            if folded in person.identities:
                return Worker(person.key, person, self.role(person.role))
        return Worker(folded[:MAX_PERSON_KEY])


@dataclass(frozen=True, slots=True)
class RateRule:
    """An hourly rate for a scope; `label` only for label rules; effective from a date."""

    scope: RateScope
    rate: Decimal
    label: str | None = None
    effective_from: date | None = None

    def __post_init__(self) -> None:
        if self.rate < 0:
            raise ValueError(f"rate {self.rate} is negative")
        if self.scope is RateScope.LABEL and not self.label:
            raise ValueError("a label rate rule needs a label")


@quick_init
@dataclass(frozen=True, slots=True)
class ResolvedRate:
    rate: Decimal
    scope: RateScope
    label: str | None = None


@dataclass(frozen=True, slots=True)
class Client:
    """Who gets invoiced, in which currency, and how hours are priced."""

    key: str
    name: str
    currency: str
    stripe_customer_id: str
    rate: Decimal | None = None
    rounding: RoundingRule = field(default_factory=RoundingRule)
    rate_rules: tuple[RateRule, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "currency", normalize_currency(self.currency))


@dataclass(frozen=True, slots=True)
class BoardPolicy:
    """How one board's items are read for billing, and which client pays for them."""

    key: str
    client: Client
    done_columns: frozenset[str] = frozenset()
    non_billable_labels: frozenset[str] = frozenset()
    fixed_price_labels: frozenset[str] = frozenset()
    default_billing_type: BillingType = BillingType.TIME_AND_MATERIALS
    rate: Decimal | None = None
    rate_rules: tuple[RateRule, ...] = ()
    default_rate: Decimal | None = None
    rounding: RoundingRule | None = None
    staff: Staff = field(default_factory=Staff)
    line_grouping: LineGrouping = LineGrouping.ITEM

    @property
    def effective_rounding(self) -> RoundingRule:
        return self.rounding or self.client.rounding


@dataclass(frozen=True, slots=True)
class BoardItem:
    """A normalized snapshot of one board item, as a connector saw it.

    `hours` is the tracked total (None: the item has no hours field value);
    `revision` orders snapshots of the same item (a connector that has no revision
    number uses the update time's epoch). `done_at` is when the item reached Done,
    if the connector knows it (Azure reads it from the item's updates); otherwise
    the billing core uses `updated_at`.
    """

    source: Source
    board: str
    item_id: str
    title: str
    url: str
    column: str
    state_category: StateCategory
    updated_at: datetime
    revision: int
    hours: Decimal | None = None
    billing_type: BillingType | None = None
    labels: tuple[str, ...] = ()
    assignees: tuple[str, ...] = ()
    iteration: str | None = None
    rate: Decimal | None = None
    milestone_amount: Decimal | None = None
    done_at: datetime | None = None
    # The board's "Hours by person" field, when it has one: (identity, hours) pairs.
    hours_by_person: tuple[tuple[str, Decimal], ...] = ()
    # Globally unique item key: source, board and the board's own item id. Computed
    # once (the ingest reads it several times per snapshot).
    key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"{self.source._value_}:{self.board}:{self.item_id}")
        for who, hours in self.hours_by_person:
            if not hours.is_finite() or hours < 0:
                raise ValueError(f"item {self.item_id}: hours of {who} {hours} is negative")
        if self.hours is not None:
            if not self.hours.is_finite():
                raise ValueError(f"item {self.item_id}: hours {self.hours} is not a number")
            if self.hours < 0:
                raise ValueError(f"item {self.item_id}: hours {self.hours} is negative")
        if self.rate is not None and (not self.rate.is_finite() or self.rate < 0):
            raise ValueError(f"item {self.item_id}: rate {self.rate} is negative")
        if self.milestone_amount is not None and (
            not self.milestone_amount.is_finite() or self.milestone_amount < 0
        ):
            raise ValueError(f"item {self.item_id}: milestone amount is negative")
        if self.updated_at.tzinfo is None:
            raise ValueError(f"item {self.item_id}: updated_at must carry a time zone")

    @property
    def tracked_hours(self) -> Decimal:
        return self.hours if self.hours is not None else Decimal(0)


@quick_init
@dataclass(frozen=True, slots=True)
class BillableEntry:
    """One line of money (or cost) for one item, as the ledger holds it.

    `entry_key` is deterministic (item key, kind, sequence number): the ledger has a
    unique constraint on it, so two processes computing the same entry cannot both
    record it, and the Stripe idempotency key is derived from it. When people are
    configured a time entry is one person's share of the item (`person`, their
    `role` frozen with it) and its key names the person.

    `cost` = hours × `cost_rate` (the person's, else the role's, else the default
    cost rate), in the client's currency; for a milestone or non-billable entry
    shared by several people it is the sum of each share × that person's cost rate.
    None when no cost rate is known.
    """

    entry_key: str
    item_key: str
    kind: EntryKind
    seq: int
    state: EntryState
    hours: Decimal
    rate: Decimal | None
    amount: Money | None
    description: str = ""
    person: str | None = None
    role: str | None = None
    cost_rate: Decimal | None = None
    cost: Money | None = None

    @property
    def counts_as_settled(self) -> bool:
        return self.state in SETTLED_STATES


MAX_ENTRY_KEY = 450
MAX_PERSON_KEY = 200


def entry_key(item_key: str, kind: EntryKind, seq: int, person: str | None = None) -> str:
    """`item#kind-seq`, plus `@person` for one person's share (the sequence number is
    still unique per item and kind, so two shares never share a key)."""
    base = f"{item_key}#{kind._value_}-{seq}"
    if person is None:
        return base
    if len(base) + 1 + len(person) > MAX_ENTRY_KEY:  # the ledger's column: a digest then
        person = "sha1-" + hashlib.sha1(person.encode(), usedforsecurity=False).hexdigest()
    return f"{base}@{person}"
