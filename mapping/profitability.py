"""Profitability as pure functions: revenue, cost, margin and effective hourly rate of
the entries the ledger holds, grouped by client, board, sprint or person, and whether
each fixed-price milestone made or lost money. No I/O, no clock.

What counts (see README, "Billing rules, as built"):
- entries that are done and decided: ready, drafted, approved, invoiced, paid (their
  amount is revenue), and non-billable cost entries (no revenue); entries in progress,
  voided or under review are left out (nobody has decided what they earn yet);
- revenue = the entries' amounts; cost = the entries' costs (hours × cost rate);
  margin = revenue − cost; margin % = margin / revenue;
- effective hourly rate = revenue / every hour counted (billable, fixed-price and
  non-billable hours alike): what an hour of work really earned;
- hours whose entry has no cost (nobody configured a cost rate) are counted as
  `uncosted_hours`, so a margin that leaves out cost says so.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import Any

from mapping.domain import EntryKind, EntryState
from mapping.money import Money

REVENUE_STATES = frozenset(
    {
        EntryState.READY,
        EntryState.DRAFTED,
        EntryState.APPROVED,
        EntryState.INVOICED,
        EntryState.PAID,
    }
)
COUNTED_STATES = REVENUE_STATES | {EntryState.NON_BILLABLE}
NOBODY = "(unassigned)"
SHARED = "(shared)"
NO_SPRINT = "(no sprint)"


class Dimension(StrEnum):
    CLIENT = "client"
    BOARD = "board"
    SPRINT = "sprint"
    PERSON = "person"


@dataclass(frozen=True, slots=True)
class ProfitEntry:
    """One ledger entry, as the report reads it. `shared` marks a milestone or
    non-billable entry worked on by several people (its cost is their sum)."""

    client: str
    board: str
    sprint: str | None
    person: str | None
    kind: EntryKind
    state: EntryState
    hours: Decimal
    amount: Decimal | None
    cost: Decimal | None
    currency: str
    item_key: str
    title: str
    done_on: date | None
    shared: bool = False


@dataclass(frozen=True, slots=True)
class ProfitFilter:
    client: str | None = None
    board: str | None = None
    sprint: str | None = None
    start: date | None = None  # done on or after
    end: date | None = None  # done on or before

    def keeps(self, entry: ProfitEntry) -> bool:
        if self.client is not None and entry.client != self.client:
            return False
        if self.board is not None and entry.board != self.board:
            return False
        if self.sprint is not None and (entry.sprint or "") != self.sprint:
            return False
        if self.start is not None and (entry.done_on is None or entry.done_on < self.start):
            return False
        return not (self.end is not None and (entry.done_on is None or entry.done_on > self.end))


@dataclass(frozen=True, slots=True)
class Profit:
    """Revenue, cost and margin of one group, in one currency."""

    dimension: Dimension
    key: str
    currency: str
    hours: Decimal
    billable_hours: Decimal
    uncosted_hours: Decimal
    revenue: Money
    cost: Money

    @property
    def margin(self) -> Money:
        return Money(self.revenue.amount - self.cost.amount, self.currency).quantized()

    @property
    def margin_percent(self) -> Decimal | None:
        """margin / revenue × 100, to one decimal; None without revenue."""
        if self.revenue.amount == 0:
            return None
        pct = self.margin.amount / self.revenue.amount * 100
        return pct.quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)

    @property
    def effective_rate(self) -> Money | None:
        """Revenue per hour counted (billable or not); None without hours."""
        if self.hours == 0:
            return None
        return Money(self.revenue.amount / self.hours, self.currency).quantized()

    @property
    def made_money(self) -> bool:
        return self.margin.amount >= 0


def counted(entries: Iterable[ProfitEntry], where: ProfitFilter) -> list[ProfitEntry]:
    """The entries a report counts: done and decided, and inside the filter."""
    return [e for e in entries if e.state in COUNTED_STATES and where.keeps(e)]


def _group_key(entry: ProfitEntry, dimension: Dimension) -> str:
    if dimension is Dimension.CLIENT:
        return entry.client
    if dimension is Dimension.BOARD:
        return entry.board
    if dimension is Dimension.SPRINT:
        return entry.sprint or NO_SPRINT
    if entry.shared:
        return SHARED
    return entry.person or NOBODY


def _sum(entries: list[ProfitEntry], dimension: Dimension, key: str, currency: str) -> Profit:
    hours = sum((e.hours for e in entries), Decimal(0))
    billable = sum((e.hours for e in entries if e.kind is not EntryKind.COST), Decimal(0))
    uncosted = sum((e.hours for e in entries if e.cost is None), Decimal(0))
    revenue = sum(
        (e.amount or Decimal(0) for e in entries if e.state in REVENUE_STATES), Decimal(0)
    )
    cost = sum((e.cost or Decimal(0) for e in entries), Decimal(0))
    return Profit(
        dimension,
        key,
        currency,
        hours,
        billable,
        uncosted,
        Money(revenue, currency).quantized(),
        Money(cost, currency).quantized(),
    )


def profitability(
    entries: Iterable[ProfitEntry], dimension: Dimension, where: ProfitFilter = ProfitFilter()
) -> list[Profit]:
    """One row per group and currency, sorted by group key then currency."""
    groups: dict[tuple[str, str], list[ProfitEntry]] = {}
    for entry in counted(entries, where):
        groups.setdefault((_group_key(entry, dimension), entry.currency), []).append(entry)
    return [
        _sum(rows, dimension, key, currency) for (key, currency), rows in sorted(groups.items())
    ]


@dataclass(frozen=True, slots=True)
class MilestoneResult:
    """A fixed-price milestone: its price against the cost of the hours spent on it."""

    item_key: str
    title: str
    board: str
    profit: Profit


def milestones(
    entries: Iterable[ProfitEntry], where: ProfitFilter = ProfitFilter()
) -> list[MilestoneResult]:
    """Every counted fixed-price milestone, with whether it made or lost money."""
    out = []
    for entry in counted(entries, where):
        if entry.kind is EntryKind.MILESTONE:
            profit = _sum([entry], Dimension.CLIENT, entry.client, entry.currency)
            out.append(MilestoneResult(entry.item_key, entry.title, entry.board, profit))
    return sorted(out, key=lambda m: (m.board, m.item_key))


CSV_HEADER = (
    "dimension",
    "key",
    "currency",
    "hours",
    "billable_hours",
    "uncosted_hours",
    "revenue",
    "cost",
    "margin",
    "margin_percent",
    "effective_hourly_rate",
    "result",
)


def csv_row(profit: Profit, dimension: str | None = None) -> tuple[str, ...]:
    """One CSV row (money as plain decimals in the currency, no thousands separator)."""
    rate = profit.effective_rate
    pct = profit.margin_percent
    return (
        dimension or profit.dimension.value,
        profit.key,
        profit.currency,
        str(profit.hours),
        str(profit.billable_hours),
        str(profit.uncosted_hours),
        str(profit.revenue.amount),
        str(profit.cost.amount),
        str(profit.margin.amount),
        str(pct) if pct is not None else "",
        str(rate.amount) if rate is not None else "",
        "made money" if profit.made_money else "lost money",
    )


def profit_json(p: Profit) -> dict[str, Any]:
    """One profitability row as JSON: money as decimal strings in its currency."""
    rate = p.effective_rate
    pct = p.margin_percent
    return {
        "key": p.key,
        "currency": p.currency,
        "hours": str(p.hours),
        "billable_hours": str(p.billable_hours),
        "uncosted_hours": str(p.uncosted_hours),
        "revenue": str(p.revenue.amount),
        "cost": str(p.cost.amount),
        "margin": str(p.margin.amount),
        "margin_percent": str(pct) if pct is not None else None,
        "effective_hourly_rate": str(rate.amount) if rate is not None else None,
    }
