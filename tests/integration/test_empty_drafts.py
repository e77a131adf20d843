"""A weekly client with nothing ready to bill gets no draft: no 0-line Stripe invoice,
no approval request in Slack, every period. The daemon's scheduled jobs (the draft
refresh and the "period closed" approval request) against the fake Stripe and Slack."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from sync.approvals import desk_for
from sync.cli import app as cli
from sync.composition import Services
from sync.daemon import Daemon
from sync.ledger import schema as t
from tests.builders import snap
from tests.conftest import FixedClock
from tests.fakes.slack_server import DEFAULT_TOKEN, FakeSlack, serve_fake_slack
from tests.stripe_support import StripeWorld, fake_stripe, services_for, world_settings

CHANNEL = "C0FINANCE"


@dataclass
class Weekly:
    services: Services
    daemon: Daemon
    slack: FakeSlack
    stripe: StripeWorld


@contextmanager
def weekly_client(ledger_url: str, clock: FixedClock) -> Iterator[Weekly]:
    slack = FakeSlack()
    with fake_stripe({"acme": "eur"}) as world, serve_fake_slack(slack) as url:
        data = world_settings(world, ledger_url, acme={"cadence": "weekly"})
        data["slack"] = {
            "bot_token": DEFAULT_TOKEN,
            "signing_secret": "secret",
            "channel": CHANNEL,
            "approvers": ["U0FINANCE"],
            "api_url": url,
        }
        services = services_for(data, clock)
        desk = desk_for(services)
        daemon = Daemon(services, app=None, request_approval=desk.post_for_approval)
        daemon.schedule()
        assert daemon.leader.try_acquire()
        try:
            yield Weekly(services, daemon, slack, world)
        finally:
            daemon.leader.release()
            services.close()


async def run_job(daemon: Daemon, job_id: str) -> None:
    job = daemon.scheduler.get_job(job_id)
    assert job is not None, job_id
    await job.func()


def invoices(services: Services) -> int:
    with services.ledger.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(t.invoices)).scalar_one())


async def test_a_weekly_client_with_nothing_ready_gets_no_draft_and_no_slack_post(
    sqlite_url: str, clock: FixedClock
) -> None:
    with weekly_client(sqlite_url, clock) as kv:
        # Work in progress only: nothing is ready to bill.
        kv.services.engine.ingest([snap("In progress", "3", 1, item_id="W1", board="acme-board")])
        await run_job(kv.daemon, "draft:acme")
        await run_job(kv.daemon, "drain")
        await run_job(kv.daemon, "due:acme")
        assert invoices(kv.services) == 0
        assert kv.stripe.fake.list_objects("invoice") == []
        assert kv.slack.calls_to("chat.postMessage") == []

        # Once something is ready, the same jobs draft it and ask for approval.
        kv.services.engine.ingest([snap("Done", "3", 2, item_id="W1", board="acme-board")])
        await run_job(kv.daemon, "draft:acme")
        await run_job(kv.daemon, "drain")
        await run_job(kv.daemon, "due:acme")
        assert invoices(kv.services) == 1
        (remote,) = kv.stripe.fake.list_objects("invoice")
        assert remote["total"] == 36000
        assert len(kv.slack.calls_to("chat.postMessage")) == 1
        await kv.services.invoicing.close()


def test_an_open_draft_left_without_lines_is_not_sent_for_approval(
    sqlite_url: str, clock: FixedClock
) -> None:
    with weekly_client(sqlite_url, clock) as kv:
        kv.services.engine.ingest([snap("Done", "1", 1, item_id="W2", board="acme-board")])
        invoice_id = kv.services.invoicing.create_or_refresh_draft("acme").invoice_id
        assert invoice_id is not None
        # The item is removed from the board before approval: its line leaves the draft.
        kv.services.engine.ingest([snap("Done", "0", 2, item_id="W2", board="acme-board")])
        assert desk_for(kv.services).request_approval(invoice_id) is False


@pytest.mark.parametrize("cadence", ["weekly", "monthly", "on_demand"])
def test_cli_invoice_with_nothing_ready_creates_nothing(
    cadence: str, tmp_path: Path, clock: FixedClock
) -> None:
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with fake_stripe({"acme": "eur"}) as world:
        data = world_settings(world, ledger_url, acme={"cadence": cadence})
        config = tmp_path / "kanvoice.toml"
        config.write_text(
            f'[ledger]\nurl = "{ledger_url}"\n'
            f'[stripe]\napi_base = "{world.base_url}"\n'
            "[[clients]]\n"
            'key = "acme"\n'
            f'stripe_customer_id = "{data["clients"][0]["stripe_customer_id"]}"\n'
            f'currency = "EUR"\nrate = "120"\ncadence = "{cadence}"\n'
        )
        result = CliRunner().invoke(
            cli,
            ["invoice", "acme", "-c", str(config)],
            env={"KANVOICE_STRIPE__API_KEY": "sk_test_kanvoice"},
        )
        assert result.exit_code == 0, result.output
        assert "nothing to bill for acme" in result.output
        assert world.fake.list_objects("invoice") == []
