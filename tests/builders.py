"""Small builders for domain values in tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from mapping.domain import (
    BillingType,
    BoardItem,
    BoardPolicy,
    Client,
    RateRule,
    RoundingMode,
    RoundingRule,
    Source,
    StateCategory,
)

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)

CATEGORY = {
    "Todo": StateCategory.PROPOSED,
    "In progress": StateCategory.IN_PROGRESS,
    "Done": StateCategory.DONE,
    "Removed": StateCategory.REMOVED,
}


def client(
    currency: str = "EUR",
    rate: str | None = "100",
    rounding: RoundingRule | None = None,
    rules: tuple[RateRule, ...] = (),
) -> Client:
    return Client(
        key="acme",
        name="Acme",
        currency=currency,
        stripe_customer_id="cus_Acme",
        rate=Decimal(rate) if rate is not None else None,
        rounding=rounding or RoundingRule(1, RoundingMode.UP),
        rate_rules=rules,
    )


def policy(**kwargs: object) -> BoardPolicy:
    the_client = kwargs.pop("client", None) or client()
    return BoardPolicy(
        key="web",
        client=the_client,  # type: ignore[arg-type]
        non_billable_labels=frozenset({"internal"}),
        fixed_price_labels=frozenset({"fixed-price"}),
        **kwargs,  # type: ignore[arg-type]
    )


def snap(
    column: str,
    hours: str | None,
    revision: int,
    item_id: str = "7",
    labels: tuple[str, ...] = (),
    billing_type: BillingType | None = None,
    milestone: str | None = None,
    rate: str | None = None,
    board: str = "web",
) -> BoardItem:
    at = T0 + timedelta(hours=revision)
    return BoardItem(
        source=Source.FILE,
        board=board,
        item_id=item_id,
        title=f"Ticket {item_id}",
        url=f"https://example.test/{item_id}",
        column=column,
        state_category=CATEGORY[column],
        updated_at=at,
        revision=revision,
        hours=Decimal(hours) if hours is not None else None,
        billing_type=billing_type,
        labels=labels,
        milestone_amount=Decimal(milestone) if milestone is not None else None,
        rate=Decimal(rate) if rate is not None else None,
    )
