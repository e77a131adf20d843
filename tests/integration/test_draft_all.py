""""Draft all due" (issue #19, item 2) end to end: three clients (acme in EUR and globex
in USD with ready work, kaiju in JPY with none), the fake Stripe and the fake Slack Web
API over real HTTP, and the three entrypoints: the Slack button (genuinely signed
interactions), the dashboard button (`POST /api/draft-all` over HTTP) and
`kanvoice invoice --all`.

What a user would notice, checked every time: one Stripe draft per client with ready
work, each ready line on Stripe once, and one approval message per draft, however
often and however concurrently the action is taken.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from slack_sdk.models.blocks import ActionsBlock, SectionBlock
from sqlalchemy import func, select
from typer.testing import CliRunner

from connectors.slack import ACTION_DRAFT_ALL
from connectors.slack.messages import draft_all_button
from sync.approvals import OP_POST, ApprovalDesk
from sync.cli import app as cli
from sync.composition import Services
from sync.draft_all import DraftAllReport
from sync.ledger import schema as t
from sync.web.app import create_app
from tests.builders import snap
from tests.conftest import FixedClock
from tests.fakes.slack_server import DEFAULT_TOKEN, FakeSlack, serve_fake_slack
from tests.net import serve_app
from tests.slack_support import (
    CHANNEL,
    INTRUDER,
    post_interaction,
    slack_settings,
    with_slack_desk,
)
from tests.stripe_support import (
    API_KEY,
    APPROVER,
    StripeWorld,
    drain,
    fake_stripe,
    fast_retries,
    services_for,
    world_settings,
)

CSRF = {"X-Kanvoice-Dashboard": "1"}
# acme (EUR, 120/h, 15 min): 2 h + 1 h = 360.00 EUR; globex (USD 99.99/h): 149.99 USD.
READY_LINES = {"acme": 2, "globex": 1}


@dataclass
class World:
    services: Services
    desk: ApprovalDesk
    slack: FakeSlack
    slack_url: str
    stripe: StripeWorld
    data: dict[str, Any]
    clock: FixedClock
    ledger_url: str


@contextmanager
def three_clients(ledger_url: str, clock: FixedClock) -> Iterator[World]:
    fake = FakeSlack()
    currencies = {"acme": "eur", "globex": "usd", "kaiju": "jpy"}
    with fake_stripe(currencies) as stripe, serve_fake_slack(fake) as url:
        data = world_settings(stripe, ledger_url)
        data["slack"] = slack_settings(url)
        services = instance(data, clock)
        services.engine.ingest(
            [
                snap("Done", "2", 1, item_id="A1", board="acme-board"),
                snap("Done", "1", 1, item_id="A2", board="acme-board"),
                snap("Done", "1.5", 1, item_id="G1", board="globex-board"),
                # kaiju: hours in progress, nothing ready to bill
                snap("In progress", "3", 1, item_id="K1", board="kaiju-board"),
            ]
        )
        try:
            yield World(services, services.desk, fake, url, stripe, data, clock, ledger_url)
        finally:
            services.close()


def instance(data: dict[str, Any], clock: FixedClock) -> Services:
    """One kanvoice instance on the world's ledger (a second call: another instance)."""
    services = services_for(data, clock)
    fast_retries(services)
    with_slack_desk(services)
    return services


@pytest.fixture
def world(ledger_url: str, clock: FixedClock) -> Iterator[World]:
    """On SQLite and on PostgreSQL."""
    with three_clients(ledger_url, clock) as w:
        yield w


@pytest.fixture
def world_lite(sqlite_url: str, clock: FixedClock) -> Iterator[World]:
    """SQLite only: the subject is an entrypoint, not the database."""
    with three_clients(sqlite_url, clock) as w:
        yield w


# ---- what the user sees ----------------------------------------------------------------


def settle(w: World) -> None:
    """The outbox drains, Stripe first (each approval message links its Stripe draft)."""
    assert drain(w.services).errors == []
    assert asyncio.run(w.desk.drain_slack()).errors == []


def stripe_drafts(w: World) -> dict[str, dict[str, Any]]:
    """Stripe's invoices by client key (the customer's name)."""
    names = {cid: key for key, cid in w.stripe.customers.items()}
    found: dict[str, dict[str, Any]] = {}
    for invoice in w.stripe.fake.list_objects("invoice"):
        key = names[invoice["customer"]]
        assert key not in found, f"two Stripe invoices for {key}"
        found[key] = invoice
    return found


def stripe_lines(w: World) -> dict[str, int]:
    """Invoice items on Stripe per client."""
    names = {cid: key for key, cid in w.stripe.customers.items()}
    counts: dict[str, int] = {}
    for item in w.stripe.fake.list_objects("invoiceitem"):
        key = names[item["customer"]]
        counts[key] = counts.get(key, 0) + 1
    return counts


def item_creates(w: World) -> int:
    """Invoice-item creations Stripe performed (replays of a key excluded)."""
    return sum(
        1
        for r in w.stripe.fake.requests
        if r.method == "POST" and r.path == "/v1/invoiceitems" and not r.replayed
    )


def ledger_counts(w: World) -> tuple[int, int, int]:
    """(invoices, queued Slack approval posts, invoice-item creations queued)."""
    with w.services.ledger.engine.connect() as conn:
        invoices = conn.execute(select(func.count()).select_from(t.invoices)).scalar_one()
        posts = conn.execute(
            select(func.count()).select_from(t.outbox).where(t.outbox.c.operation == OP_POST)
        ).scalar_one()
        items = conn.execute(
            select(func.count())
            .select_from(t.outbox)
            .where(t.outbox.c.operation == "create_invoice_item")
        ).scalar_one()
    return int(invoices), int(posts), int(items)


def assert_billed_once(w: World) -> None:
    """Two Stripe drafts (EUR and USD), every ready line on them once, one approval
    message per draft, nothing for kaiju."""
    drafts = stripe_drafts(w)
    assert sorted(drafts) == ["acme", "globex"]
    assert drafts["acme"]["currency"] == "eur" and drafts["globex"]["currency"] == "usd"
    assert drafts["acme"]["status"] == "draft" and drafts["globex"]["status"] == "draft"
    assert stripe_lines(w) == READY_LINES
    assert item_creates(w) == sum(READY_LINES.values())
    messages = w.slack.channel_messages(CHANNEL)
    drafts_posted = [m for m in messages if "Acme" in m.all_text() or "Globex" in m.all_text()]
    assert len(drafts_posted) == 2, [m.all_text() for m in messages]
    assert ledger_counts(w) == (2, 2, 3)


# ---- the operation ---------------------------------------------------------------------


def test_draft_all_drafts_each_client_with_ready_work_and_asks_approval_once(
    world: World,
) -> None:
    report = world.desk.draft_all("cli")
    assert report.drafted == ["acme", "globex"]
    assert report.skipped == ["kaiju"] and report.unchanged == [] and report.failed == []
    assert report.approvals_requested == 2
    by_client = {c.client: c for c in report.clients}
    assert str(by_client["acme"].total) == "360.00 EUR"
    assert str(by_client["globex"].total) == "149.99 USD"
    assert "nothing to bill for kaiju" in by_client["kaiju"].message
    settle(world)
    assert_billed_once(world)
    shown = " ".join(m.all_text() for m in world.slack.channel_messages(CHANNEL))
    assert "360.00 EUR" in shown and "149.99 USD" in shown
    assert "https://dashboard.stripe.com/test/invoices/in_" in shown

    # The second click: nothing new on Stripe, no second approval message.
    again = world.desk.draft_all("cli")
    assert again.drafted == [] and again.unchanged == ["acme", "globex"]
    assert again.skipped == ["kaiju"] and again.approvals_requested == 0
    settle(world)
    assert_billed_once(world)


def test_new_work_after_draft_all_is_drafted_and_asked_about_again(world_lite: World) -> None:
    w = world_lite
    w.desk.draft_all("cli")
    settle(w)
    w.services.engine.ingest([snap("Done", "1", 1, item_id="G2", board="globex-board")])
    report = w.desk.draft_all("cli")
    assert report.drafted == ["globex"] and report.unchanged == ["acme"]
    assert report.approvals_requested == 1  # the new version of globex's draft
    settle(w)
    assert stripe_lines(w) == {"acme": 2, "globex": 2}
    assert len(stripe_drafts(w)) == 2


@pytest.mark.parametrize("drafts", ["no drafts yet", "open drafts"])
def test_two_instances_drafting_all_at_once_draft_and_ask_once(
    world: World, drafts: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two instances on one ledger (or the CLI racing the dashboard), each click
    entering every client's drafting at the same moment as the other: when the drafts
    are yet to be opened, and when both clients already have an open draft (drafted
    earlier, then new work became ready)."""
    lines = dict(READY_LINES)
    if drafts == "open drafts":
        world.desk.draft_all("scheduler")
        world.services.engine.ingest(
            [
                snap("Done", "1", 1, item_id="A3", board="acme-board"),
                snap("Done", "1", 1, item_id="G2", board="globex-board"),
            ]
        )
        lines = {"acme": 3, "globex": 2}
    before = ledger_counts(world)
    second = instance(world.data, world.clock)
    barrier = threading.Barrier(2, timeout=20)
    for services in (world.services, second):
        refresh = services.invoicing.create_or_refresh_draft

        def together(key: str, actor: str = "kanvoice", refresh: Any = refresh) -> Any:
            barrier.wait()
            return refresh(key, actor)

        monkeypatch.setattr(services.invoicing, "create_or_refresh_draft", together)
    reports: list[DraftAllReport] = []
    errors: list[BaseException] = []

    def click(desk: ApprovalDesk, actor: str) -> None:
        try:
            reports.append(desk.draft_all(actor))
        except BaseException as exc:  # surfaced below
            errors.append(exc)
            barrier.abort()

    threads = [
        threading.Thread(target=click, args=(world.desk, "dashboard")),
        threading.Thread(target=click, args=(second.desk, "cli")),
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        second.close()
    assert errors == []
    assert len(reports) == 2
    for key in ("acme", "globex"):
        outcomes = sorted(next(c for c in r.clients if c.client == key).outcome for r in reports)
        assert outcomes == ["drafted", "unchanged"], (key, outcomes)
    assert sum(r.approvals_requested for r in reports) == 2
    invoices, posts, items = ledger_counts(world)
    # One more approval post per draft (its new version), each new line queued once.
    assert (invoices, posts - before[1], items) == (2, 2, sum(lines.values()))
    settle(world)
    assert stripe_lines(world) == lines
    assert item_creates(world) == sum(lines.values())
    assert sorted(stripe_drafts(world)) == ["acme", "globex"]


# ---- the Slack button ------------------------------------------------------------------


def post_digest(w: World) -> str:
    """A message carrying the *Draft all due* button (as the weekly digest does)."""
    blocks = [
        SectionBlock(text="*Due this week:* acme, globex").to_dict(),
        ActionsBlock(block_id="kanvoice:digest", elements=[draft_all_button()]).to_dict(),
    ]
    response = httpx.post(
        f"{w.slack_url}chat.postMessage",
        json={"channel": CHANNEL, "text": "Invoices due this week", "blocks": blocks},
        headers={"Authorization": f"Bearer {DEFAULT_TOKEN}"},
    )
    body = response.json()
    assert body["ok"], body
    return str(body["ts"])


def click(w: World, http: TestClient, ts: str, user: str) -> httpx.Response:
    return post_interaction(http, w.slack.click(CHANNEL, ts, ACTION_DRAFT_ALL, user))


def ephemerals_for(w: World, user: str) -> list[str]:
    return [str(e["text"]) for e in w.slack.ephemerals if e["user"] == user]


def test_the_slack_button_drafts_all_and_a_second_click_asks_nothing_twice(
    world_lite: World,
) -> None:
    w = world_lite
    ts = post_digest(w)
    http = TestClient(create_app(w.services))
    first = click(w, http, ts, APPROVER)
    assert first.status_code == 200 and first.content == b""
    [notice] = ephemerals_for(w, APPROVER)
    assert "2 drafted (acme, globex)" in notice and "1 skipped (kaiju)" in notice
    # The follow-up posted the approval requests; the Stripe calls are the outbox's.
    assert len(w.slack.channel_messages(CHANNEL)) == 1 + 2
    settle(w)
    assert_billed_once(w)

    second = click(w, http, ts, APPROVER)
    assert second.status_code == 200
    assert "2 unchanged (acme, globex)" in ephemerals_for(w, APPROVER)[1]
    assert "0 approval requests queued" in ephemerals_for(w, APPROVER)[1]
    settle(w)
    assert_billed_once(w)
    with w.services.ledger.engine.connect() as conn:
        actors = set(conn.execute(select(t.entry_events.c.actor)).scalars())
    assert "slack" in actors


def test_the_slack_button_is_for_approvers_only(world_lite: World) -> None:
    w = world_lite
    ts = post_digest(w)
    http = TestClient(create_app(w.services))
    response = click(w, http, ts, INTRUDER)
    assert response.status_code == 200
    [notice] = ephemerals_for(w, INTRUDER)
    assert "not" in notice.lower() and "approver" in notice.lower()
    assert ledger_counts(w) == (0, 0, 0)
    assert w.stripe.fake.list_objects("invoice") == []
    with w.services.ledger.engine.connect() as conn:
        refused = conn.execute(
            select(t.audit_log.c.actor, t.audit_log.c.subject).where(
                t.audit_log.c.action == "draft_all_refused"
            )
        ).all()
    assert [(r.actor, r.subject) for r in refused] == [(INTRUDER, "drafts:all")]


def test_a_draft_all_click_with_another_value_is_refused(world_lite: World) -> None:
    w = world_lite
    ts = post_digest(w)
    payload = w.slack.click(CHANNEL, ts, ACTION_DRAFT_ALL, APPROVER)
    payload["actions"][0]["value"] = '{"invoice_id":1,"version":1}'
    response = post_interaction(TestClient(create_app(w.services)), payload)
    assert response.status_code == 400
    assert ledger_counts(w) == (0, 0, 0)


# ---- the dashboard button --------------------------------------------------------------


def test_the_dashboard_button_drafts_all_and_a_double_click_posts_once(
    world_lite: World,
) -> None:
    w = world_lite
    with serve_app(create_app(w.services)) as base:
        page = httpx.get(f"{base}/")
        assert page.status_code == 200
        assert 'data-action="draft-all"' in page.text and "Draft all due" in page.text

        refused = httpx.post(f"{base}/api/draft-all")
        assert refused.status_code == 403 and "X-Kanvoice-Dashboard" in refused.text
        assert ledger_counts(w) == (0, 0, 0)

        async def double_click() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                return list(
                    await asyncio.gather(
                        client.post("/api/draft-all", headers=CSRF),
                        client.post("/api/draft-all", headers=CSRF),
                    )
                )

        answers = [r.json() for r in asyncio.run(double_click())]
    assert all(sorted(a["drafted"] + a["unchanged"]) == ["acme", "globex"] for a in answers)
    # Each client is drafted by exactly one of the two clicks (which one depends on how
    # the clicks interleave; the other sees the draft unchanged).
    assert sorted(c for a in answers for c in a["drafted"]) == ["acme", "globex"]
    assert all(a["skipped"] == ["kaiju"] and a["failed"] == [] for a in answers)
    assert sum(a["approvals_requested"] for a in answers) == 2
    assert all(a["message"].startswith("Draft all due: ") for a in answers)
    assert ledger_counts(w) == (2, 2, 3)
    settle(w)
    assert_billed_once(w)


# ---- the CLI -----------------------------------------------------------------------------


def write_config(w: World, path: Path) -> Path:
    lines = [
        f'[ledger]\nurl = "{w.ledger_url}"\n',
        f'[stripe]\napi_base = "{w.stripe.base_url}"\nrequests_per_second = 1000\n',
        f'[slack]\nchannel = "{CHANNEL}"\napprovers = ["{APPROVER}"]\napi_url = "{w.slack_url}"\n',
    ]
    for client in w.data["clients"]:
        lines.append(
            f'[[clients]]\nkey = "{client["key"]}"\nname = "{client["name"]}"\n'
            f'stripe_customer_id = "{client["stripe_customer_id"]}"\n'
            f'currency = "{client["currency"]}"\nrate = "{client["rate"]}"\n'
            f'timezone = "UTC"\n'
            f'rounding = {{ increment_minutes = {client["rounding"]["increment_minutes"]} }}\n'
        )
    for board in w.data["boards"]:
        lines.append(
            f'[[boards]]\nkey = "{board["key"]}"\nsource = "file"\nclient = "{board["client"]}"\n'
        )
    path.write_text("".join(lines), encoding="utf-8")
    return path


def test_cli_invoice_all_drafts_posts_and_is_safe_to_repeat(
    world_lite: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = world_lite
    config = write_config(w, tmp_path / "kanvoice.toml")
    monkeypatch.setenv("KANVOICE_STRIPE__API_KEY", API_KEY)
    monkeypatch.setenv("KANVOICE_SLACK__BOT_TOKEN", DEFAULT_TOKEN)
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()
    first = runner.invoke(cli, ["invoice", "--all", "-c", str(config)])
    assert first.exit_code == 0, first.output
    assert "2 drafted (acme, globex)" in first.output and "1 skipped (kaiju)" in first.output
    assert "2 approval requests queued" in first.output
    assert "Stripe: " in first.output and "Slack: " in first.output
    assert_billed_once(w)

    again = runner.invoke(cli, ["invoice", "--all", "-c", str(config)])
    assert again.exit_code == 0, again.output
    assert "2 unchanged (acme, globex)" in again.output
    assert "0 approval requests queued" in again.output
    assert_billed_once(w)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["invoice", "acme", "--all"], "give a client key or --all, not both"),
        (["invoice"], "missing CLIENT"),
    ],
)
def test_cli_invoice_takes_a_client_or_all(
    args: list[str], expected: str, world_lite: World, tmp_path: Path
) -> None:
    config = write_config(world_lite, tmp_path / "kanvoice.toml")
    result = CliRunner().invoke(cli, [*args, "-c", str(config)])
    assert result.exit_code == 2
    assert expected in result.output
    assert ledger_counts(world_lite) == (0, 0, 0)
