"""The composition root: the one place that builds the ledger, engine, board connectors,
invoicing, the approval desk and the Stripe and Slack adapters from settings.

Everything else receives what it needs (including the clock); no module this one
imports imports it back (`tests/unit/test_layering.py` checks). The Stripe and Slack adapters are
chosen here: the real ones from settings (`stripe_gateway_factory`,
`slack_client_factory`), or whatever the caller passes, such as the in-memory ones of
`kanvoice demo` (`connectors.stripe.memory`, `connectors.slack.memory`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from connectors.base import BoardConnector, CallObserver
from connectors.slack.client import RetryPolicy, SlackApprovals
from connectors.slack.port import SlackPort
from connectors.stripe.gateway import StripeGateway
from connectors.stripe.port import StripePort
from sync.approvals import DESK_RETRY, ApprovalDesk
from sync.boards import build_connectors, close_connectors
from sync.engine import Clock, Engine
from sync.invoicing import Invoicing
from sync.ledger.store import Ledger
from sync.metrics import ExternalCalls
from sync.settings import Settings

StripeFactory = Callable[[], StripePort]
SlackFactory = Callable[[], SlackPort]


def system_clock() -> datetime:
    return datetime.now(UTC)


@dataclass
class Services:
    settings: Settings
    ledger: Ledger
    engine: Engine
    clock: Clock
    invoicing: Invoicing
    desk: ApprovalDesk
    connectors: dict[str, BoardConnector] = field(default_factory=dict)
    #: Every call to an outside service, counted (metrics) and its latest outcome (readyz).
    calls: ExternalCalls = field(default_factory=lambda: ExternalCalls(system_clock))

    def client_names(self) -> dict[str, tuple[str, str]]:
        return {c.key: (c.name or c.key, c.currency) for c in self.settings.clients}

    def close(self) -> None:
        """Dispose of the ledger engine (the HTTP clients: `aclose`)."""
        self.ledger.dispose()

    async def aclose(self) -> None:
        """Close what these services opened, inside the event loop that used it: the
        Stripe client, every board connector's HTTP client, then the ledger engine."""
        try:
            await self.invoicing.close()
            await close_connectors(self.connectors)
        finally:
            self.close()


def build_services(
    settings: Settings,
    clock: Clock = system_clock,
    *,
    migrate: bool = True,
    stripe: StripeFactory | None = None,
    slack: SlackFactory | None = None,
    boards: bool = True,
) -> Services:
    """Wire everything: the ledger (migrated to the latest schema unless told not to),
    engine, board connectors, invoicing and the approval desk.

    `stripe` / `slack` build the adapters; by default the real ones from settings
    (None when their credentials are not set: Stripe calls then fail naming the
    setting, and nothing is posted to Slack). ``boards=False`` builds no board
    connectors, so local commands (`status`, `db upgrade`) need no board credentials.
    """
    # Credentials first: a missing one stops the start before the ledger is touched.
    calls = ExternalCalls(clock)
    connectors = build_connectors(settings, calls) if boards else {}
    ledger = Ledger(settings.ledger.url)
    if migrate:
        ledger.upgrade()
    engine = Engine(ledger, settings.board_policies(), clock)
    stripe = stripe or stripe_gateway_factory(settings, calls)
    invoicing = Invoicing(ledger, settings, clock, stripe)
    desk = ApprovalDesk(
        settings, ledger, invoicing, clock, slack or slack_client_factory(settings, observer=calls)
    )
    return Services(
        settings=settings,
        ledger=ledger,
        engine=engine,
        clock=clock,
        invoicing=invoicing,
        desk=desk,
        connectors=connectors,
        calls=calls,
    )


def stripe_gateway_factory(
    settings: Settings, observer: CallObserver | None = None
) -> Callable[[], StripeGateway] | None:
    """How to reach Stripe's API, or None when no API key is configured. `observer` is
    told of every call (the external-call metrics)."""
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


def slack_client_factory(
    settings: Settings, retry: RetryPolicy | None = None, observer: CallObserver | None = None
) -> Callable[[], SlackApprovals] | None:
    """How to reach Slack's Web API (``slack.api_url``), or None without a bot token.
    `observer` is told of every call (the external-call metrics)."""
    token = settings.slack.bot_token
    if token is None:
        return None
    secret = token.get_secret_value()
    base_url = settings.slack.api_url
    policy = retry or DESK_RETRY

    def make() -> SlackApprovals:
        return SlackApprovals(secret, base_url=base_url, retry=policy, observer=observer)

    return make
