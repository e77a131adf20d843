"""Budgets as pure functions: spend against a cap in hours and/or money, the threshold
alerts to send (once per threshold per period), and the over-budget flag.

A budget belongs to a client or to a board (`scope`: ``client:acme``,
``board:acme-web``). Spend is what the client is billed in the budget's period: hours
of billable entries (time and fixed-price; hours covered by a retainer included), and
money (every line's amount: time, milestones, the retainer line). Over-budget work
still queues and is drafted; the draft carries a flag so finance sees it before
approving.

No I/O, no clock: the shell passes the spend and the thresholds already alerted, and
records what it sends under `BudgetAlert.dedupe_key`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal

from mapping.money import Money, normalize_currency

DEFAULT_THRESHOLDS = (80, 100)
_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Budget:
    """A cap for one scope: `hours` and/or `amount` (in `currency`), the alert
    thresholds in percent of the cap, and whether it runs per billing period
    (``"period"``) or over the whole life of the client / board (``"total"``)."""

    scope: str
    currency: str
    hours: Decimal | None = None
    amount: Decimal | None = None
    thresholds: tuple[int, ...] = DEFAULT_THRESHOLDS
    per: str = "period"

    def __post_init__(self) -> None:
        object.__setattr__(self, "currency", normalize_currency(self.currency))
        if self.hours is None and self.amount is None:
            raise ValueError(f"budget {self.scope}: needs hours or amount (or both)")
        for name in ("hours", "amount"):
            value = getattr(self, name)
            if value is not None and (not value.is_finite() or value <= 0):
                raise ValueError(f"budget {self.scope}: {name} {value}: expected a number > 0")
        if not self.thresholds or any(p <= 0 or p > 1000 for p in self.thresholds):
            raise ValueError(f"budget {self.scope}: thresholds must be 1 to 1000 percent")
        object.__setattr__(self, "thresholds", tuple(sorted(set(self.thresholds))))
        if self.per not in ("period", "total"):
            raise ValueError(f"budget {self.scope}: per {self.per!r}: expected period or total")

    def period_key(self, billing_period_key: str) -> str:
        """The key alerts are deduplicated by: the billing period, or ``total``."""
        return billing_period_key if self.per == "period" else "total"


@dataclass(frozen=True, slots=True)
class Spend:
    """What counts against a budget in its period."""

    hours: Decimal
    amount: Money

    def __add__(self, other: Spend) -> Spend:
        return Spend(self.hours + other.hours, self.amount + other.amount)

    @classmethod
    def zero(cls, currency: str) -> Spend:
        return cls(_ZERO, Money.zero(currency))


def _percent(spent: Decimal, cap: Decimal | None) -> Decimal | None:
    if cap is None:
        return None
    return (spent * 100 / cap).quantize(Decimal("0.1"), rounding=ROUND_FLOOR)


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """Spend against the cap: percent of each capped measure (floored to 0.1 %), the
    larger of the two, and whether the spend exceeds the cap."""

    budget: Budget
    spend: Spend
    hours_percent: Decimal | None
    amount_percent: Decimal | None

    @property
    def percent(self) -> Decimal:
        return max(p for p in (self.hours_percent, self.amount_percent) if p is not None)

    @property
    def over(self) -> bool:
        """Over budget: more hours or more money than the cap (exactly at it is not)."""
        b = self.budget
        over_hours = b.hours is not None and self.spend.hours > b.hours
        over_amount = b.amount is not None and self.spend.amount.amount > b.amount
        return over_hours or over_amount

    def reached(self) -> tuple[int, ...]:
        """Thresholds the spend has reached (percent ≥ threshold), ascending."""
        return tuple(p for p in self.budget.thresholds if self._reached(p))

    def _reached(self, threshold: int) -> bool:
        b, s = self.budget, self.spend
        # Exact comparison (no rounding): spend × 100 ≥ threshold × cap.
        by_hours = b.hours is not None and s.hours * 100 >= b.hours * threshold
        by_amount = b.amount is not None and s.amount.amount * 100 >= b.amount * threshold
        return by_hours or by_amount

    def describe(self) -> str:
        """One line for people: 'client:acme: 170 h of 200 h (85.0 %)'."""
        b, s = self.budget, self.spend
        parts = []
        if b.hours is not None:
            parts.append(f"{s.hours.normalize():f} h of {b.hours.normalize():f} h")
        if b.amount is not None:
            cap = Money(b.amount, b.currency).quantized()
            parts.append(f"{s.amount.quantized()} of {cap}")
        return f"{b.scope}: {', '.join(parts)} ({self.percent} %)"


def status(budget: Budget, spend: Spend) -> BudgetStatus:
    if spend.amount.currency != budget.currency:
        raise ValueError(
            f"budget {budget.scope} is in {budget.currency}, not {spend.amount.currency}"
        )
    return BudgetStatus(
        budget,
        spend,
        _percent(spend.hours, budget.hours),
        _percent(spend.amount.amount, budget.amount),
    )


@dataclass(frozen=True, slots=True)
class BudgetAlert:
    """One alert to post: the budget reached `threshold` % in `period_key`."""

    scope: str
    period_key: str
    threshold: int
    text: str
    over: bool

    @property
    def dedupe_key(self) -> str:
        """Unique per scope, period and threshold: the ledger records it once."""
        return alert_key(self.scope, self.period_key, self.threshold)


def alert_key(scope: str, period_key: str, threshold: int) -> str:
    return f"budget|{scope}|{period_key}|{threshold}"


def alerts_to_send(
    budget: Budget, billing_period_key: str, spend: Spend, already_sent: Iterable[int]
) -> tuple[BudgetAlert, ...]:
    """The alerts for thresholds reached and not yet sent in the period, ascending.

    Whatever the order or chunking of the entries, a threshold is alerted at most once
    per period (the shell records each dedupe key; spend that falls back, e.g. a voided
    invoice, does not re-arm a sent threshold)."""
    sent = set(already_sent)
    now = status(budget, spend)
    period = budget.period_key(billing_period_key)
    return tuple(
        BudgetAlert(
            budget.scope,
            period,
            threshold,
            f"Budget {threshold} % reached: {now.describe()}",
            now.over,
        )
        for threshold in now.reached()
        if threshold not in sent
    )


@dataclass(frozen=True, slots=True)
class SpendLine:
    """A line on a draft, in spend order, for the per-line over-budget flag."""

    entry_id: int
    hours: Decimal
    amount: Money


def over_budget_lines(
    budget: Budget, spent_before: Spend, lines: Iterable[SpendLine]
) -> tuple[int, ...]:
    """Entry ids of the lines that add to a measure already past its cap, in order:
    `spent_before` is what the period had spent before these lines. A line that adds
    nothing to the exceeded measure (a 0-hour retainer line on an hours budget) is not
    flagged."""
    running = spent_before
    flagged: list[int] = []
    for line in lines:
        running = running + Spend(line.hours, line.amount)
        over_hours = budget.hours is not None and running.hours > budget.hours and line.hours > 0
        over_amount = (
            budget.amount is not None
            and running.amount.amount > budget.amount
            and line.amount.amount > 0
        )
        if over_hours or over_amount:
            flagged.append(line.entry_id)
    return tuple(flagged)
