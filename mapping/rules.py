"""Rule resolution: is an item Done, how is it billed, at which rate."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from decimal import Decimal

from mapping.domain import (
    BillingType,
    BoardItem,
    BoardPolicy,
    RateRule,
    RateScope,
    ResolvedRate,
    StateCategory,
)


def is_done(item: BoardItem, policy: BoardPolicy) -> bool:
    """Done by state category, or by one of the board's configured Done columns."""
    if item.state_category is StateCategory.REMOVED:
        return False
    if item.state_category is StateCategory.DONE:
        return True
    return bool(policy.done_columns) and item.column.casefold() in {
        c.casefold() for c in policy.done_columns
    }


def resolve_billing_type(item: BoardItem, policy: BoardPolicy) -> BillingType:
    """A non-billable label always wins (never invoice internal work), then the item's
    billing-type field, then a fixed-price label, then the board's default."""
    if not item.labels:  # the common case: nothing to match
        return item.billing_type if item.billing_type is not None else policy.default_billing_type
    labels = {label.casefold() for label in item.labels}
    if policy.non_billable_labels and labels & {
        label.casefold() for label in policy.non_billable_labels
    }:
        return BillingType.NON_BILLABLE
    if item.billing_type is not None:
        return item.billing_type
    if policy.fixed_price_labels and labels & {
        label.casefold() for label in policy.fixed_price_labels
    }:
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


def resolve_rate(item: BoardItem, policy: BoardPolicy, on: date) -> ResolvedRate | None:
    """Most specific wins: item field > label rule > board > client > default.

    Label rules come from the board, then the client; among several matching labels
    the first configured label rule wins. Returns None when nothing sets a rate.
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
