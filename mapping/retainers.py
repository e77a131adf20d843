"""Retainers as pure functions: prepaid hours per billing period at a fixed price.

A client on a retainer pays one fixed line per period (`RetainerTerms.amount`) that
covers `included_hours` of time-and-materials work, plus the hours rolled over from the
previous period when rollover is on. Hours beyond that are overage, billed as T&M at
the overage rate (the entry's own rate when the retainer names none). Unused hours roll
over to the next period, capped. Fixed-price milestones are never covered: they are
billed as they always are.

No I/O, no clock: the shell passes the period's state as the ledger holds it and
applies the plan in the same transaction that drafts the lines.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal

from mapping.money import Money, normalize_currency, tidy_decimal
from mapping.stripe_lines import line_amount

_ZERO = Decimal(0)
_MILLIONTH = Decimal("0.000001")  # the ledger's precision for hours


def _hours(value: Decimal) -> Decimal:
    return tidy_decimal(value.quantize(_MILLIONTH, rounding=ROUND_FLOOR))


@dataclass(frozen=True, slots=True)
class RetainerTerms:
    """What the client prepays each billing period.

    `amount`: the fixed retainer line (in `currency`, rounded to its minor unit);
    `included_hours`: the T&M hours it covers; `overage_rate`: the hourly rate of
    hours beyond them (None: each entry's own rate); `rollover`: unused hours carry to
    the next period, at most `rollover_cap_hours` (None: no cap)."""

    currency: str
    amount: Decimal
    included_hours: Decimal
    overage_rate: Decimal | None = None
    rollover: bool = False
    rollover_cap_hours: Decimal | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "currency", normalize_currency(self.currency))
        for name in ("amount", "included_hours", "overage_rate", "rollover_cap_hours"):
            value = getattr(self, name)
            if value is not None and (not value.is_finite() or value < 0):
                raise ValueError(f"retainer {name} {value}: expected a number ≥ 0")

    @property
    def line(self) -> Money:
        """The fixed retainer line, exact to the currency's minor unit."""
        return Money(self.amount, self.currency).quantized()


@dataclass(frozen=True, slots=True)
class RetainerPeriod:
    """The retainer's state in one billing period, as the ledger holds it.

    `counted_hours`: T&M hours already placed in this period (covered + overage);
    `covered_hours`: of those, the hours the retainer covered; `rollover_in`: hours
    carried from the previous period; `line_billed`: the fixed line is already on a
    draft of this period."""

    period_key: str
    counted_hours: Decimal = _ZERO
    covered_hours: Decimal = _ZERO
    rollover_in: Decimal = _ZERO
    line_billed: bool = False


@dataclass(frozen=True, slots=True)
class WorkEntry:
    """A ready time-and-materials entry about to be drafted in the period."""

    entry_id: int
    hours: Decimal
    rate: Decimal | None


@dataclass(frozen=True, slots=True)
class Allocation:
    """How one entry is billed under the retainer: `covered_hours` on the retainer (no
    charge of their own), `overage_hours` at `overage_rate` for `overage_amount`
    (None without a rate: nobody can price it, the line waits for a person as any
    unpriced line does)."""

    entry_id: int
    covered_hours: Decimal
    overage_hours: Decimal
    overage_rate: Decimal | None
    overage_amount: Money | None

    @property
    def fully_covered(self) -> bool:
        return self.overage_hours == 0

    @property
    def split(self) -> bool:
        """Partly covered: the entry becomes a covered part and an overage part."""
        return self.covered_hours > 0 and self.overage_hours > 0


@dataclass(frozen=True, slots=True)
class RetainerPlan:
    """What drafting does for the retainer: add `retainer_line` (None: already billed
    this period), bill each entry as its allocation says, and record `period`."""

    retainer_line: Money | None
    allocations: tuple[Allocation, ...]
    period: RetainerPeriod

    @property
    def overage_total(self) -> Money | None:
        amounts = [a.overage_amount for a in self.allocations if a.overage_amount is not None]
        if not amounts:
            return None
        return sum(amounts[1:], amounts[0])


def available_hours(terms: RetainerTerms, period: RetainerPeriod) -> Decimal:
    """The hours the retainer covers in the period: included plus rolled over."""
    return terms.included_hours + (period.rollover_in if terms.rollover else _ZERO)


def remaining_hours(terms: RetainerTerms, period: RetainerPeriod) -> Decimal:
    return max(_ZERO, available_hours(terms, period) - period.covered_hours)


def plan_retainer(
    terms: RetainerTerms, period: RetainerPeriod, entries: Iterable[WorkEntry]
) -> RetainerPlan:
    """Place the new T&M entries of the period on the retainer, oldest first.

    Each entry's hours are covered while the period's available hours last; the rest
    is overage at the overage rate (else the entry's own rate), amount rounded half-up
    to the currency's minor unit. The fixed line is billed once per period: with the
    first draft of the period. Covered + overage hours of an entry = its hours."""
    left = remaining_hours(terms, period)
    counted = period.counted_hours
    covered_total = period.covered_hours
    allocations: list[Allocation] = []
    for entry in entries:
        hours = max(_ZERO, entry.hours)
        covered = min(hours, left)
        overage = hours - covered
        left -= covered
        counted += hours
        covered_total += covered
        rate = terms.overage_rate if terms.overage_rate is not None else entry.rate
        amount = line_amount(overage, rate, terms.currency) if overage > 0 else None
        allocations.append(
            Allocation(
                entry.entry_id,
                tidy_decimal(covered) if covered else _ZERO,
                tidy_decimal(overage) if overage else _ZERO,
                rate,
                amount,
            )
        )
    return RetainerPlan(
        None if period.line_billed else terms.line,
        tuple(allocations),
        RetainerPeriod(period.period_key, counted, covered_total, period.rollover_in, True),
    )


def rollover_out(terms: RetainerTerms, period: RetainerPeriod) -> Decimal:
    """The unused hours the period carries to the next one: never negative, never above
    the cap, zero without rollover. Rolled-in hours that stay unused carry again
    (within the cap)."""
    if not terms.rollover:
        return _ZERO
    unused = remaining_hours(terms, period)
    if terms.rollover_cap_hours is not None:
        unused = min(unused, terms.rollover_cap_hours)
    return _hours(unused) if unused else _ZERO


def next_period(
    terms: RetainerTerms, previous: RetainerPeriod | None, period_key: str
) -> RetainerPeriod:
    """A new period's starting state, from the previous period (None: the first)."""
    carried = rollover_out(terms, previous) if previous is not None else _ZERO
    return RetainerPeriod(period_key, rollover_in=carried)


@dataclass(frozen=True, slots=True)
class RetainerUsage:
    """Used / included for the dashboard: hours, and money when the retainer has a
    price (`value_used` = the share of the fixed line the used hours stand for)."""

    used_hours: Decimal
    available_hours: Decimal
    included_hours: Decimal
    rollover_in: Decimal
    overage_hours: Decimal
    amount: Money
    value_used: Money

    @property
    def percent(self) -> Decimal:
        if self.available_hours == 0:
            return Decimal(100) if self.used_hours else _ZERO
        return (self.used_hours * 100 / self.available_hours).quantize(Decimal(1))


def usage(terms: RetainerTerms, period: RetainerPeriod) -> RetainerUsage:
    available = available_hours(terms, period)
    share = period.covered_hours / available if available else _ZERO
    return RetainerUsage(
        used_hours=period.covered_hours,
        available_hours=available,
        included_hours=terms.included_hours,
        rollover_in=period.rollover_in if terms.rollover else _ZERO,
        overage_hours=max(_ZERO, period.counted_hours - period.covered_hours),
        amount=terms.line,
        value_used=Money(terms.amount * share, terms.currency).quantized(),
    )


@dataclass(frozen=True, slots=True)
class PlacedEntry:
    """An entry the retainer already placed (its allocation) and the hours it has now:
    the billing core lowers a ready or drafted entry in place when the board's hours
    fall, and zeroes (voids) it when they fall below it."""

    entry_id: int
    covered_hours: Decimal
    overage_hours: Decimal
    hours_now: Decimal


@dataclass(frozen=True, slots=True)
class Release:
    """The entry's allocation after its hours fell: what it still covers / runs over."""

    entry_id: int
    covered_hours: Decimal
    overage_hours: Decimal


def release_lowered(
    period: RetainerPeriod, placed: Iterable[PlacedEntry]
) -> tuple[RetainerPeriod, tuple[Release, ...]]:
    """Give back the hours of placed entries that were lowered after the retainer
    placed them: overage hours first, then covered hours, so the period's counted and
    covered hours fall by exactly what the entries no longer hold (never below zero).

    An entry whose hours did not fall keeps its allocation (hours only rise through a
    new entry, placed as any other). Freed covered hours are available to the entries
    placed next; lines already priced as overage are not re-priced."""
    counted = period.counted_hours
    covered = period.covered_hours
    releases: list[Release] = []
    for entry in placed:
        allocated = entry.covered_hours + entry.overage_hours
        now = max(_ZERO, entry.hours_now)
        if now >= allocated:
            continue
        cut = allocated - now
        overage_cut = min(entry.overage_hours, cut)
        covered_cut = cut - overage_cut
        counted -= cut
        covered -= covered_cut
        releases.append(
            Release(
                entry.entry_id,
                tidy_decimal(entry.covered_hours - covered_cut),
                tidy_decimal(entry.overage_hours - overage_cut),
            )
        )
    if not releases:
        return period, ()
    state = RetainerPeriod(
        period.period_key,
        tidy_decimal(max(_ZERO, counted)),
        tidy_decimal(max(_ZERO, covered)),
        period.rollover_in,
        period.line_billed,
    )
    return state, tuple(releases)
