"""The Slack operations on the one outbox: a refused call parks its row, a token Slack
refuses stops the drain with every row still pending (each would fail alike)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select

from connectors.slack.client import SlackCallFailed
from connectors.slack.memory import InMemorySlack
from connectors.slack.model import DraftSummary
from sync.approvals import desk_for
from sync.composition import Services
from sync.ledger import schema as t
from tests.builders import snap
from tests.conftest import FixedClock
from tests.stripe_support import APPROVER, StripeWorld, fake_stripe, services_for, world_settings

CHANNELS = {"finance": "C0FINANCE"}


class RefusingSlack(InMemorySlack):
    """Slack answering every post with ``ok: false`` and `error`."""

    error: str = "channel_not_found"

    async def post_draft(self, channel: str, summary: DraftSummary) -> tuple[str, str]:
        raise SlackCallFailed("chat.postMessage", self.error)


@pytest.fixture
def services(sqlite_url: str, clock: FixedClock) -> Iterator[Services]:
    with fake_stripe({"acme": "eur"}) as world:
        services = _services(world, sqlite_url, clock)
        yield services
        services.close()


def _services(world: StripeWorld, ledger_url: str, clock: FixedClock) -> Services:
    data = world_settings(world, ledger_url)
    data["slack"] = {"channel": "finance", "approvers": [APPROVER], "signing_secret": "s"}
    services = services_for(data, clock)
    services.engine.ingest([snap("Done", "2", 1, item_id="S1", board="acme-board")])
    return services


def slack_rows(services: Services) -> list[tuple[str, int]]:
    with services.ledger.engine.connect() as conn:
        rows = conn.execute(
            select(t.outbox.c.status, t.outbox.c.attempts).where(
                t.outbox.c.operation == "slack_post_draft"
            )
        ).all()
    return [(r.status, r.attempts) for r in rows]


@pytest.mark.parametrize(
    ("error", "parked", "status"),
    [("channel_not_found", 1, "parked"), ("invalid_auth", 0, "pending")],
)
async def test_a_refused_post_parks_and_a_refused_token_stops_the_drain(
    services: Services, error: str, parked: int, status: str
) -> None:
    slack = RefusingSlack(channels=CHANNELS)
    slack.error = error
    desk = desk_for(services, lambda: slack)
    invoice_id = services.invoicing.create_or_refresh_draft("acme").invoice_id
    assert invoice_id is not None
    assert desk.request_approval(invoice_id)
    report = await desk.drain_slack()
    assert report.parked == parked and report.done == 0
    assert any(error in line for line in report.errors)
    assert slack_rows(services) == [(status, 1)]
