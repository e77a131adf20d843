"""The composition root: the one place that builds the ledger, engine and services
from settings. Everything else receives what it needs (including the clock)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from connectors.base import BoardConnector
from connectors.stripe.gateway import StripeGateway
from sync.engine import Clock, Engine
from sync.invoicing import Invoicing
from sync.ledger.store import Ledger
from sync.settings import Settings


def system_clock() -> datetime:
    return datetime.now(UTC)


@dataclass
class Services:
    settings: Settings
    ledger: Ledger
    engine: Engine
    clock: Clock
    invoicing: Invoicing
    connectors: dict[str, BoardConnector] = field(default_factory=dict)

    def client_names(self) -> dict[str, tuple[str, str]]:
        return {c.key: (c.name or c.key, c.currency) for c in self.settings.clients}

    def close(self) -> None:
        self.ledger.dispose()


def build_services(
    settings: Settings,
    clock: Clock = system_clock,
    *,
    migrate: bool = True,
    boards: bool = True,
) -> Services:
    """Wire the ledger (migrated to the latest schema unless told not to) and engine.

    ``boards=False`` builds no board connectors, so local commands (`status`,
    `db upgrade`) need no board credentials."""
    from sync.boards import build_connectors

    # Credentials first: a missing one stops the start before the ledger is touched.
    connectors = build_connectors(settings) if boards else {}
    ledger = Ledger(settings.ledger.url)
    if migrate:
        ledger.upgrade()
    engine = Engine(ledger, settings.board_policies(), clock)

    return Services(
        settings=settings,
        ledger=ledger,
        engine=engine,
        clock=clock,
        invoicing=Invoicing(ledger, settings, clock, stripe_gateway_factory(settings)),
        connectors=connectors,
    )


def _count_call(service: str, outcome: str) -> None:
    from sync.metrics import EXTERNAL_CALLS

    EXTERNAL_CALLS.labels(service=service, outcome=outcome).inc()


def stripe_gateway_factory(settings: Settings) -> Callable[[], StripeGateway] | None:
    """How to reach Stripe, or None when no API key is configured."""
    key = settings.stripe.api_key
    if key is None:
        return None

    def make() -> StripeGateway:
        assert key is not None
        return StripeGateway(
            key.get_secret_value(),
            api_base=settings.stripe.api_base,
            requests_per_second=settings.stripe.requests_per_second,
            observer=_count_call,
        )

    return make
