"""The composition root: the one place that builds the ledger, engine and services
from settings. Everything else receives what it needs (including the clock)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from connectors.base import BoardConnector, CallObserver
from connectors.stripe.gateway import StripeGateway
from sync.engine import Clock, Engine
from sync.invoicing import Invoicing
from sync.ledger.store import Ledger
from sync.metrics import ExternalCalls
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
    #: Every call to an outside service, counted (metrics) and its latest outcome (readyz).
    calls: ExternalCalls = field(default_factory=lambda: ExternalCalls(system_clock))

    def client_names(self) -> dict[str, tuple[str, str]]:
        return {c.key: (c.name or c.key, c.currency) for c in self.settings.clients}

    def close(self) -> None:
        self.ledger.dispose()


def build_services(
    settings: Settings, clock: Clock = system_clock, *, migrate: bool = True
) -> Services:
    """Wire the ledger (migrated to the latest schema unless told not to) and engine."""
    ledger = Ledger(settings.ledger.url)
    if migrate:
        ledger.upgrade()
    engine = Engine(ledger, settings.board_policies(), clock)
    from sync.boards import build_connectors

    calls = ExternalCalls(clock)
    return Services(
        settings=settings,
        ledger=ledger,
        engine=engine,
        clock=clock,
        invoicing=Invoicing(ledger, settings, clock, stripe_gateway_factory(settings, calls)),
        connectors=build_connectors(settings, calls),
        calls=calls,
    )


def stripe_gateway_factory(
    settings: Settings, observer: CallObserver | None = None
) -> Callable[[], StripeGateway] | None:
    """How to reach Stripe, or None when no API key is configured. `observer` is told
    of every call (the external-call metrics)."""
    key = settings.stripe.api_key
    if key is None:
        return None

    def make() -> StripeGateway:
        assert key is not None
        return StripeGateway(
            key.get_secret_value(),
            api_base=settings.stripe.api_base,
            requests_per_second=settings.stripe.requests_per_second,
            observer=observer,
        )

    return make
