"""The Stripe gateway's error taxonomy, retries and client-side rate limit, and billing
periods; against the fake Stripe over real HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from connectors.base import FatalError, RetriableError
from connectors.stripe.gateway import (
    LIVE_MODE_RATE,
    TEST_MODE_RATE,
    RateLimiter,
    StripeGateway,
    StripeRejected,
)
from sync.invoicing import billing_period
from sync.settings import ClientSettings
from tests.stripe_support import API_KEY, StripeWorld, fake_stripe


@pytest.fixture(scope="module")
def world() -> Iterator[StripeWorld]:
    with fake_stripe({"acme": "eur"}) as w:
        yield w


def gateway(world: StripeWorld, sleeps: list[float], **kwargs: object) -> StripeGateway:
    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    return StripeGateway(
        API_KEY, api_base=world.base_url, sleep=sleep, requests_per_second=1000, **kwargs
    )  # type: ignore[arg-type]


def test_default_rate_limits_by_key_mode() -> None:
    assert StripeGateway("sk_test_x").limiter.rate == TEST_MODE_RATE == 20
    assert StripeGateway("sk_live_x").limiter.rate == LIVE_MODE_RATE == 80
    assert StripeGateway("sk_test_x", requests_per_second=5).limiter.rate == 5


def test_the_limiter_keeps_under_its_rate() -> None:
    now = [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(20, clock=lambda: now[0], sleep=sleep)

    async def burst() -> None:
        for _ in range(100):
            await limiter.acquire()

    asyncio.run(burst())
    # One every 1/20 s: 100 calls take 99/20 s, so no second holds more than 20.
    assert now[0] == pytest.approx(99 / 20, rel=0.01)


async def test_429_honours_retry_after_and_keeps_the_key(world: StripeWorld) -> None:
    sleeps: list[float] = []
    world.fake.rate_limit_next(method="GET", path="/v1/customers", retry_after=7)
    g = gateway(world, sleeps)
    customer = await g.retrieve_customer(world.customers["acme"])
    assert customer["id"] == world.customers["acme"]
    assert sleeps == [7.0]
    await g.close()


async def test_should_retry_false_is_not_retried(world: StripeWorld) -> None:
    sleeps: list[float] = []
    world.fake.fail_next(method="GET", path="/v1/customers", status=500, should_retry=False)
    g = gateway(world, sleeps)
    with pytest.raises(StripeRejected):
        await g.retrieve_customer(world.customers["acme"])
    assert sleeps == []
    await g.close()


async def test_5xx_exhausts_attempts_then_is_retriable(world: StripeWorld) -> None:
    sleeps: list[float] = []
    world.fake.fail_next(method="GET", path="/v1/customers", status=502, count=4)
    g = gateway(world, sleeps, max_attempts=4, backoff_initial=0.5)
    with pytest.raises(RetriableError):
        await g.retrieve_customer(world.customers["acme"])
    assert sleeps == [0.5, 1.0, 2.0]
    await g.close()


async def test_validation_error_is_a_rejection_and_bad_key_is_fatal(world: StripeWorld) -> None:
    sleeps: list[float] = []
    g = gateway(world, sleeps)
    with pytest.raises(StripeRejected, match="No such customer"):
        await g.retrieve_customer("cus_missing")
    await g.close()
    bad = StripeGateway("sk_test_wrong", api_base=world.base_url)
    with pytest.raises(FatalError, match="refused the API key"):
        await bad.retrieve_customer(world.customers["acme"])
    await bad.close()
    assert sleeps == []


def _client(**kwargs: object) -> ClientSettings:
    return ClientSettings(key="c", stripe_customer_id="cus_1", currency="EUR", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("cadence", "zone", "now", "key", "start"),
    [
        (
            "monthly",
            "UTC",
            datetime(2026, 11, 30, 23, 0, tzinfo=UTC),
            "2026-11",
            datetime(2026, 11, 1, tzinfo=UTC),
        ),
        # 23:30 UTC on 30 November is already December in Berlin.
        (
            "monthly",
            "Europe/Berlin",
            datetime(2026, 11, 30, 23, 30, tzinfo=UTC),
            "2026-12",
            datetime(2026, 11, 30, 23, 0, tzinfo=UTC),
        ),
        (
            "weekly",
            "UTC",
            datetime(2026, 11, 26, 12, 0, tzinfo=UTC),
            "week-2026-11-23",
            datetime(2026, 11, 23, tzinfo=UTC),
        ),
        (
            "on_demand",
            "UTC",
            datetime(2026, 11, 26, 12, 0, tzinfo=UTC),
            "on-demand",
            datetime(2000, 1, 1, tzinfo=UTC),
        ),
    ],
)
def test_billing_periods_follow_cadence_and_time_zone(
    cadence: str, zone: str, now: datetime, key: str, start: datetime
) -> None:
    period = billing_period(_client(cadence=cadence, timezone=zone), now)
    assert (period.key, period.start) == (key, start)
    assert period.start <= now < period.end


def test_weekly_periods_start_on_the_configured_day() -> None:
    sunday_start = _client(cadence="weekly", week_starts_on=6)
    period = billing_period(sunday_start, datetime(2026, 11, 26, 12, 0, tzinfo=UTC))
    assert period.key == "week-2026-11-22"
