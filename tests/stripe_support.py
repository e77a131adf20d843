"""A fake Stripe on loopback plus settings that point kanvoice at it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from sync.composition import Services, build_services
from sync.settings import Settings
from tests.conftest import FixedClock
from tests.fakes.stripe_server import FakeStripe, run_fake_stripe_in_thread

API_KEY = "sk_test_kanvoice"
WEBHOOK_SECRET = "whsec_kanvoice_test"
APPROVER = "U0FINANCE"


@dataclass
class StripeWorld:
    fake: FakeStripe
    base_url: str
    customers: dict[str, str]


@contextmanager
def fake_stripe(currencies: dict[str, str] | None = None) -> Iterator[StripeWorld]:
    """A running fake Stripe with one customer per client (client key -> currency)."""
    currencies = currencies or {"acme": "eur", "globex": "usd", "kaiju": "jpy"}
    fake = FakeStripe(api_key=API_KEY, webhook_secret=WEBHOOK_SECRET)
    with run_fake_stripe_in_thread(fake) as base_url:
        customers = {}
        for client, currency in currencies.items():
            response = httpx.post(
                f"{base_url}/v1/customers",
                data={"name": client, "currency": currency},
                headers={"Authorization": f"Bearer {API_KEY}"},
            )
            response.raise_for_status()
            customers[client] = response.json()["id"]
        try:
            yield StripeWorld(fake, base_url, customers)
        finally:
            fake.close()


def world_settings(
    world: StripeWorld, ledger_url: str, **client_overrides: dict[str, Any]
) -> dict[str, Any]:
    rules = {
        "acme": {"currency": "EUR", "rate": "120", "rounding": {"increment_minutes": 15}},
        "globex": {"currency": "USD", "rate": "99.99", "rounding": {"increment_minutes": 1}},
        "kaiju": {"currency": "JPY", "rate": "12345", "rounding": {"increment_minutes": 1}},
        "qahwa": {"currency": "KWD", "rate": "14", "rounding": {"increment_minutes": 1}},
    }
    clients = []
    for key, customer in world.customers.items():
        clients.append(
            {
                "key": key,
                "name": key.title(),
                "stripe_customer_id": customer,
                "timezone": "UTC",
                **rules[key],
                **client_overrides.get(key, {}),
            }
        )
    return {
        "ledger": {"url": ledger_url},
        "stripe": {
            "api_key": API_KEY,
            "webhook_secret": WEBHOOK_SECRET,
            "api_base": world.base_url,
            "requests_per_second": 1000,
        },
        "slack": {"approvers": [APPROVER]},
        "clients": clients,
        "boards": [
            {
                "key": f"{c['key']}-board",
                "source": "file",
                "client": c["key"],
                "fixed_price_labels": ["fixed-price"],
            }
            for c in clients
        ],
    }


def services_for(data: dict[str, Any], clock: FixedClock) -> Services:
    return build_services(Settings(**data), clock)


@contextmanager
def open_services(
    data: dict[str, Any], clock: FixedClock, *, fast: bool = True
) -> Iterator[Services]:
    """Services on the settings `data`, closed afterwards; with `fast`, Stripe retries
    whose waits are tiny (`fast_retries`)."""
    services = services_for(data, clock)
    try:
        if fast:
            fast_retries(services)
        yield services
    finally:
        services.close()


def world_services(
    world: StripeWorld,
    ledger_url: str,
    clock: FixedClock,
    *,
    fast: bool = True,
    **client_overrides: dict[str, Any],
) -> AbstractContextManager[Services]:
    """`open_services` on `world_settings(world, ledger_url, **client_overrides)`."""
    return open_services(world_settings(world, ledger_url, **client_overrides), clock, fast=fast)


def drain(services: Services) -> Any:
    async def run() -> Any:
        try:
            return await services.invoicing.drain()
        finally:
            await services.invoicing.close()

    return asyncio.run(run())


def fast_retries(services: Services) -> None:
    """Keep the gateway's retries but make their waits tiny (tests never sleep long)."""
    from connectors.stripe.gateway import StripeGateway

    settings = services.settings

    def make() -> StripeGateway:
        assert settings.stripe.api_key is not None
        return StripeGateway(
            settings.stripe.api_key.get_secret_value(),
            api_base=settings.stripe.api_base,
            requests_per_second=1000,
            backoff_initial=0.001,
            backoff_max=0.01,
            timeout=5,
        )

    services.invoicing.gateway_factory = make
