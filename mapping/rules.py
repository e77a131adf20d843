"""Rule resolution: is an item Done, how is it billed, at which rate."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date
from decimal import Decimal
from functools import lru_cache

from mapping.domain import (
    BillingType,
    BoardItem,
    BoardPolicy,
    RateRule,
    RateScope,
    ResolvedRate,
    Staff,
    StateCategory,
    Worker,
    rate_on,
)


def is_done(item: BoardItem, policy: BoardPolicy) -> bool:
    """Done by state category, or by one of the board's configured Done columns."""
    if item.state_category is StateCategory.REMOVED:
        return False
    if item.state_category is StateCategory.DONE:
        return True
    return bool(policy.done_columns) and item.column.casefold() in _folded(policy.done_columns)


def _folded(names: frozenset[str]) -> frozenset[str]:
    """A policy's configured names, case-folded (memoized: a policy is a frozen value;
    a policy built with an unhashable collection is folded each time)."""
    try:
        return _folded_cached(names)
    except TypeError:
        return frozenset(name.casefold() for name in names)


@lru_cache(maxsize=256)
def _folded_cached(names: frozenset[str]) -> frozenset[str]:
    return frozenset(name.casefold() for name in names)


def resolve_billing_type(item: BoardItem, policy: BoardPolicy) -> BillingType:
    """A non-billable label always wins (never invoice internal work), then the item's
    billing-type field, then a fixed-price label, then the board's default."""
    if not item.labels:  # the common case: nothing to match
        return item.billing_type if item.billing_type is not None else policy.default_billing_type
    labels = {label.casefold() for label in item.labels}
    if policy.non_billable_labels and labels & _folded(policy.non_billable_labels):
        return BillingType.NON_BILLABLE
    if item.billing_type is not None:
        return item.billing_type
    if policy.fixed_price_labels and labels & _folded(policy.fixed_price_labels):
        return BillingType.FIXED_PRICE
    return policy.default_billing_type


def _effective(
    rules: Iterable[RateRule], on: date, first: Decimal | None = None
) -> Decimal | None:
    """The rate of the rule in force on `on`: the latest effective date not after it;
    undated rules (and `first`, an undated rate ahead of them all) are in force from the
    beginning of time. Ties keep configuration order."""
    best = first
    best_from = date.min
    for rule in rules:
        rule_from = rule.effective_from
        if rule_from is not None and rule_from > on:
            continue
        if best is None or (rule_from or date.min) > best_from:
            best = rule.rate
            best_from = rule_from or date.min
    return best


def resolve_rate(
    item: BoardItem, policy: BoardPolicy, on: date, worker: Worker | None = None
) -> ResolvedRate | None:
    """Most specific wins: item field > label rule > person > role > board > client >
    default, each judged on `on` (the day the item reached Done).

    Label rules come from the board, then the client; among several matching labels
    the first configured label rule wins. `worker` is whose share is priced: a person
    who is not configured (or has no rate) falls through to the next scope. Returns
    None when nothing sets a rate.
    """
    if item.rate is not None:
        return ResolvedRate(item.rate, RateScope.ITEM)

    board_rules = policy.rate_rules
    client_rules = policy.client.rate_rules
    if item.labels and (board_rules or client_rules):
        labels = {label.casefold() for label in item.labels}
        label_rules = [
            r
            for r in (*board_rules, *client_rules)
            if r.scope is RateScope.LABEL and r.label is not None and r.label.casefold() in labels
        ]
        for label in dict.fromkeys(r.label for r in label_rules):
            chosen = _effective([r for r in label_rules if r.label == label], on)
            if chosen is not None:
                return ResolvedRate(chosen, RateScope.LABEL, label)

    if worker is not None and worker.person is not None:
        own = rate_on(worker.person.bill_rates, on)
        if own is not None:
            return ResolvedRate(own, RateScope.PERSON)
    if worker is not None and worker.role is not None:
        by_role = rate_on(worker.role.bill_rates, on)
        if by_role is not None:
            return ResolvedRate(by_role, RateScope.ROLE)

    if not board_rules and not client_rules:  # the common case: plain rates, no rules
        if policy.rate is not None:
            return ResolvedRate(policy.rate, RateScope.BOARD)
        if policy.client.rate is not None:
            return ResolvedRate(policy.client.rate, RateScope.CLIENT)
        if policy.default_rate is not None:
            return ResolvedRate(policy.default_rate, RateScope.DEFAULT)
        return None

    rate = _effective((r for r in board_rules if r.scope is RateScope.BOARD), on, policy.rate)
    if rate is not None:
        return ResolvedRate(rate, RateScope.BOARD)

    rate = _effective(
        (r for r in client_rules if r.scope is RateScope.CLIENT), on, policy.client.rate
    )
    if rate is not None:
        return ResolvedRate(rate, RateScope.CLIENT)

    rate = _effective(
        (r for r in (*board_rules, *client_rules) if r.scope is RateScope.DEFAULT),
        on,
        policy.default_rate,
    )
    if rate is not None:
        return ResolvedRate(rate, RateScope.DEFAULT)
    return None


def resolve_cost_rate(policy: BoardPolicy, on: date, worker: Worker | None) -> Decimal | None:
    """What an hour of `worker` costs the agency on `on`: the person's cost rate, else
    the role's, else the default cost rate; None when none is configured. In the
    client's currency (kanvoice converts nothing)."""
    if worker is not None and worker.person is not None:
        own = rate_on(worker.person.cost_rates, on)
        if own is not None:
            return own
    if worker is not None and worker.role is not None:
        by_role = rate_on(worker.role.cost_rates, on)
        if by_role is not None:
            return by_role
    return policy.staff.default_cost_rate


def parse_hours_by_person(text: str | None) -> tuple[tuple[str, Decimal], ...]:
    """An "Hours by person" field's text, e.g. ``alice: 3, bob: 1.5`` (separators: comma,
    semicolon or new line; ``=`` works as well as ``:``). Anything unreadable gives an
    empty tuple, so the item falls back to equal shares rather than a guessed split."""
    if not text or not text.strip():
        return ()
    pairs: list[tuple[str, Decimal]] = []
    for part in text.replace(";", ",").replace("\n", ",").split(","):
        if not part.strip():
            continue
        who, sep, hours = part.replace("=", ":").rpartition(":")
        try:
            value = Decimal(hours.strip().lower().removesuffix("h").strip())
        except ArithmeticError:
            return ()
        if not sep or not who.strip() or not value.is_finite() or value < 0:
            return ()
        pairs.append((who.strip(), value))
    return tuple(pairs)


def people_without_rate(
    staff: Staff, seen: Mapping[str, Iterable[str]], on: date
) -> list[tuple[str, str]]:
    """(who, why) for everyone billed at a rate that is not their own: board identities
    seen on items that name no configured person (billed at the next rate in the
    precedence: board, client, default), and configured people with no bill rate of
    their own or of their role on `on`. Also who has no cost rate (their margin leaves
    cost out). Sorted by who."""
    out: list[tuple[str, str]] = []
    for name, boards in seen.items():
        if staff.worker(name).person is None:
            where = ", ".join(sorted(set(boards)))
            out.append(
                (
                    name,
                    f"not a configured person (seen on {where}): billed at the board, "
                    "client or default rate, no cost",
                )
            )
    for person in staff.people:
        role = staff.role(person.role)
        bill = rate_on(person.bill_rates, on)
        if bill is None and role is not None:
            bill = rate_on(role.bill_rates, on)
        cost = rate_on(person.cost_rates, on)
        if cost is None and role is not None:
            cost = rate_on(role.cost_rates, on)
        if bill is None:
            out.append(
                (
                    person.key,
                    "no bill rate of their own or of their role: billed at "
                    "the board, client or default rate",
                )
            )
        if cost is None and staff.default_cost_rate is None:
            out.append((person.key, "no cost rate of their own or of their role: no cost"))
    return sorted(out)
