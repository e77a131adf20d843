"""One event loop per CLI command: `kanvoice invoice` drafts on (fake) Stripe, drains
and posts the approval request to (fake) Slack, `kanvoice approve` finalizes and updates
the message, `kanvoice demo --fast` plays the whole story, each inside one
`asyncio.run`, its HTTP clients and ledger engine opened and closed in that loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sync.cli import app
from tests.builders import snap
from tests.conftest import FixedClock
from tests.fakes.slack_server import DEFAULT_TOKEN, FakeSlack, serve_fake_slack
from tests.stripe_support import (
    API_KEY,
    WEBHOOK_SECRET,
    StripeWorld,
    fake_stripe,
    services_for,
    world_settings,
)

CHANNEL = "C0FINANCE"
APPROVER = "U0FINANCE"


class LoopCounter:
    """Counts the event loops the test's own thread creates (the fakes' server threads
    run loops of their own, not counted)."""

    def __init__(self) -> None:
        self.created = 0
        self.thread = threading.get_ident()

    def wrap(self, make: object) -> object:
        assert callable(make)

        def new_event_loop() -> asyncio.AbstractEventLoop:
            if threading.get_ident() == self.thread:
                self.created += 1
            loop = make()
            assert isinstance(loop, asyncio.AbstractEventLoop)
            return loop

        return new_event_loop


@pytest.fixture
def loops(monkeypatch: pytest.MonkeyPatch) -> LoopCounter:
    counter = LoopCounter()
    # asyncio.run (asyncio.Runner) makes its loop with asyncio.events.new_event_loop.
    monkeypatch.setattr(
        asyncio.events, "new_event_loop", counter.wrap(asyncio.events.new_event_loop)
    )
    monkeypatch.setattr(asyncio, "new_event_loop", counter.wrap(asyncio.new_event_loop))
    return counter


@pytest.fixture
def world() -> Iterator[StripeWorld]:
    with fake_stripe({"acme": "eur"}) as running:
        yield running


@pytest.fixture
def slack() -> Iterator[tuple[FakeSlack, str]]:
    fake = FakeSlack()
    with serve_fake_slack(fake) as url:
        yield fake, url


def _stripe_invoices(world: StripeWorld) -> list[dict[str, Any]]:
    return list(world.fake.list_objects("invoice"))


def _config(tmp_path: Path, world: StripeWorld, slack_url: str) -> Path:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    seed = services_for(world_settings(world, url), FixedClock())
    seed.engine.ingest([snap("Done", "2", 1, item_id="A1", board="acme-board")])
    seed.close()
    config = tmp_path / "kanvoice.toml"
    config.write_text(
        f'[ledger]\nurl = "{url}"\n[stripe]\napi_base = "{world.base_url}"\n'
        f'requests_per_second = 1000\n[slack]\napprovers = ["{APPROVER}"]\n'
        f'channel = "{CHANNEL}"\napi_url = "{slack_url}"\n'
        f'[[clients]]\nkey = "acme"\nstripe_customer_id = "{world.customers["acme"]}"\n'
        'currency = "EUR"\nrate = "120"\n[[boards]]\nkey = "acme-board"\nsource = "file"\n'
        'client = "acme"\n',
        encoding="utf-8",
    )
    return config


def test_invoice_and_approve_each_run_one_event_loop(
    world: StripeWorld,
    slack: tuple[FakeSlack, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    loops: LoopCounter,
) -> None:
    fake_slack, slack_url = slack
    config = _config(tmp_path, world, slack_url)
    monkeypatch.setenv("KANVOICE_STRIPE__API_KEY", API_KEY)
    monkeypatch.setenv("KANVOICE_STRIPE__WEBHOOK_SECRET", WEBHOOK_SECRET)
    monkeypatch.setenv("KANVOICE_SLACK__BOT_TOKEN", DEFAULT_TOKEN)
    monkeypatch.setenv("KANVOICE_SLACK__SIGNING_SECRET", "signing-secret")
    runner = CliRunner()
    loops.created = 0

    drafted = runner.invoke(app, ["invoice", "acme", "-c", str(config)], catch_exceptions=False)
    assert drafted.exit_code == 0, drafted.output
    # Stripe drained and Slack asked, in the same command and the same loop.
    assert "Stripe: " in drafted.output and "Slack: " in drafted.output
    assert _stripe_invoices(world)[0]["status"] == "draft"
    assert len(fake_slack.channel_messages(CHANNEL)) == 1
    assert loops.created == 1

    approved = runner.invoke(
        app, ["approve", "1", "--as", APPROVER, "-c", str(config)], catch_exceptions=False
    )
    assert approved.exit_code == 0, approved.output
    assert _stripe_invoices(world)[0]["status"] == "open"
    assert loops.created == 2


def test_the_fast_demo_runs_one_event_loop(loops: LoopCounter) -> None:
    result = CliRunner().invoke(app, ["demo", "--fast"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "approved invoice 1" in result.output and "Billing pipeline" in result.output
    assert loops.created == 1


def test_a_user_error_inside_the_loop_is_one_line_and_exit_2(
    tmp_path: Path, loops: LoopCounter
) -> None:
    missing = tmp_path / "nope.toml"
    result = CliRunner().invoke(app, ["status", "-c", str(missing)])
    assert result.exit_code == 2
    assert "error:" in result.output and "Traceback" not in result.output
    assert loops.created == 1
