"""Money Stripe accepts and the ledger agrees with, against the fake Stripe (which
refuses what Stripe refuses): a KWD, a JPY and a EUR client from board to paid; the
minimum charge; 250 items per invoice; the limits of the fields kanvoice writes."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from connectors.slack.messages import format_money
from mapping.domain import EntryState
from sync.composition import Services
from sync.invoicing import BelowMinimumCharge
from sync.ledger import schema as t
from sync.pipeline import client_pipelines
from tests.builders import snap
from tests.conftest import FixedClock
from tests.stripe_support import (
    API_KEY,
    APPROVER,
    StripeWorld,
    drain,
    fake_stripe,
    world_services,
)

CURRENCIES = {"qahwa": "kwd", "kaiju": "jpy", "acme": "eur"}


@pytest.fixture
def world() -> Iterator[StripeWorld]:
    with fake_stripe(CURRENCIES) as w:
        yield w


@pytest.fixture
def services(world: StripeWorld, ledger_url: str, clock: FixedClock) -> Iterator[Services]:
    with world_services(world, ledger_url, clock) as s:
        yield s


def invoices_by_client(world: StripeWorld) -> dict[str, list[dict[str, Any]]]:
    by_customer = {v: k for k, v in world.customers.items()}
    found: dict[str, list[dict[str, Any]]] = {}
    for invoice in world.fake.list_objects("invoice"):
        found.setdefault(by_customer[invoice["customer"]], []).append(invoice)
    return found


def entries(services: Services, client: str) -> list[Any]:
    with services.ledger.engine.connect() as conn:
        return list(
            conn.execute(
                select(t.entries).where(t.entries.c.client == client).order_by(t.entries.c.id)
            ).all()
        )


def figures(services: Services) -> dict[str, dict[str, Any]]:
    with services.ledger.read(services.clock()) as uow:
        return {
            p.client: p.as_dict()["stages"] for p in client_pipelines(uow, services.client_names())
        }


def pay(world: StripeWorld, invoice_id: str) -> None:
    httpx.post(
        f"{world.base_url}/v1/invoices/{invoice_id}/pay",
        headers={"Authorization": f"Bearer {API_KEY}"},
    ).raise_for_status()


async def _reconcile(services: Services) -> Any:
    try:
        return await services.invoicing.reconcile(None, True)
    finally:
        await services.invoicing.close()


def reconcile(services: Services) -> Any:
    import asyncio

    return asyncio.run(_reconcile(services))


def test_kwd_jpy_and_eur_clients_from_board_to_paid(services: Services, world: StripeWorld) -> None:
    services.engine.ingest(
        [
            # KWD 14/h, 1-minute rounding up: 3.3333 h -> 200 min = 46.666662 KWD, which
            # Stripe refused as 46666 fils: billed as 46.670.
            snap("Done", "3.3333", 1, item_id="Q1", board="qahwa-board"),
            snap("Done", "1", 1, item_id="Q2", board="qahwa-board", rate="5.124"),
            snap(
                "Done",
                "1",
                1,
                item_id="Q3",
                board="qahwa-board",
                labels=("fixed-price",),
                milestone="1234.5678",
            ),
            snap("Done", "1.5", 1, item_id="K1", board="kaiju-board"),  # 18517.5 -> 18518
            snap("Done", "2.1", 1, item_id="A1", board="acme-board"),  # 2.25 h x 120 = 270
        ]
    )
    expected = {"qahwa": 46670 + 5120 + 1234570, "kaiju": 18518, "acme": 27000}
    ids = {c: services.invoicing.create_or_refresh_draft(c).invoice_id for c in expected}
    report = drain(services)
    assert report.errors == [] and report.parked == 0
    drafts = invoices_by_client(world)
    assert {c: d[0]["total"] for c, d in drafts.items()} == expected
    assert sorted(i["amount"] for i in world.fake.list_objects("invoiceitem")) == sorted(
        [46670, 5120, 1234570, 18518, 27000]
    )
    # The ledger, `kanvoice status` and Slack show the same amount to the minor unit.
    stages = figures(services)
    assert stages["qahwa"]["drafted"]["amount"] == "1286.360"
    assert stages["kaiju"]["drafted"]["amount"] == "18518"
    assert stages["acme"]["drafted"]["amount"] == "270.00"
    assert format_money(Decimal("1286.360"), "KWD") == "1,286.360 KWD"

    for client, invoice_id in ids.items():
        result = services.invoicing.approve(invoice_id, APPROVER, "cli")
        assert result["total_minor"] == expected[client]
    report = drain(services)
    assert report.errors == []
    for client, (invoice,) in invoices_by_client(world).items():
        assert invoice["status"] == "open", client
        pay(world, invoice["id"])
    reconcile(services)
    for client in expected:
        assert {e.state for e in entries(services, client)} == {EntryState.PAID.value}
    stages = figures(services)
    assert stages["qahwa"]["paid"]["amount"] == "1286.360"
    assert stages["kaiju"]["paid"]["amount"] == "18518"
    assert stages["acme"]["paid"]["amount"] == "270.00"
    paid = {c: i[0]["amount_paid"] for c, i in invoices_by_client(world).items()}
    assert paid == expected


def test_a_draft_under_the_minimum_charge_waits_for_more_lines_unless_forced(
    world: StripeWorld, ledger_url: str, clock: FixedClock
) -> None:
    with world_services(world, ledger_url, clock, acme={"rate": "1"}) as services:
        services.engine.ingest([snap("Done", "0.25", 1, item_id="A1", board="acme-board")])
        first = services.invoicing.create_or_refresh_draft("acme")
        drain(services)
        with pytest.raises(BelowMinimumCharge, match=r"below Stripe's minimum charge of 0\.50"):
            services.invoicing.approve(first.invoice_id, APPROVER, "cli")
        # Nothing finalized; the line stays queued, on the open draft.
        (invoice,) = invoices_by_client(world)["acme"]
        assert invoice["status"] == "draft"
        assert [e.state for e in entries(services, "acme")] == ["drafted"]
        with services.ledger.engine.connect() as conn:
            actions = [r.action for r in conn.execute(select(t.audit_log.c.action)).all()]
        assert "approve_held_below_minimum" in actions

        # More work arrives: the next invoice carries both lines and is charged.
        services.engine.ingest([snap("Done", "1", 1, item_id="A2", board="acme-board")])
        again = services.invoicing.create_or_refresh_draft("acme")
        assert again.invoice_id == first.invoice_id and again.lines == 2
        drain(services)
        services.invoicing.approve(again.invoice_id, APPROVER, "cli")
        drain(services)
        (invoice,) = invoices_by_client(world)["acme"]
        assert (invoice["status"], invoice["total"]) == ("open", 125)


def test_finance_can_force_a_draft_under_the_minimum(
    world: StripeWorld, ledger_url: str, clock: FixedClock
) -> None:
    with world_services(world, ledger_url, clock, kaiju={"rate": "40"}) as services:
        services.engine.ingest([snap("Done", "1", 1, item_id="K1", board="kaiju-board")])
        draft = services.invoicing.create_or_refresh_draft("kaiju")
        drain(services)
        result = services.invoicing.approve(draft.invoice_id, APPROVER, "cli", force=True)
        assert result["forced_below_minimum"] is True
        drain(services)
        (invoice,) = invoices_by_client(world)["kaiju"]
        # Stripe marks it paid and moves the 40 JPY to the customer's balance.
        assert invoice["status"] == "paid"
        customer = world.fake.get_object(world.customers["kaiju"])
        assert customer is not None and customer["balance"] == 40


def test_the_finalize_guard_holds_a_total_under_the_minimum_without_a_forced_approval(
    world: StripeWorld, ledger_url: str, clock: FixedClock
) -> None:
    with world_services(world, ledger_url, clock, kaiju={"rate": "40"}) as services:
        services.engine.ingest([snap("Done", "1", 1, item_id="K1", board="kaiju-board")])
        draft = services.invoicing.create_or_refresh_draft("kaiju")
        drain(services)
        assert draft.invoice_id is not None
        services.invoicing.approve(draft.invoice_id, APPROVER, "cli", force=True)
        with services.ledger.engine.connect() as conn:
            forced = conn.execute(select(t.approvals.c.forced_below_minimum)).scalar_one()
        assert forced is True  # the decision's flag, on the approval the finalize reads
        # An approval without it (as written before the flag existed, or by hand).
        with services.ledger.engine.begin() as conn:
            conn.execute(update(t.approvals).values(forced_below_minimum=False))
        report = drain(services)
        assert report.parked == 1
        (invoice,) = invoices_by_client(world)["kaiju"]
        assert invoice["status"] == "draft"  # never finalized under the minimum
        with services.ledger.engine.connect() as conn:
            reason = conn.execute(
                select(t.outbox.c.last_error).where(t.outbox.c.operation == "finalize_invoice")
            ).scalar_one()
        assert "minimum" in str(reason)


def test_more_than_250_lines_go_on_a_second_draft_never_a_refusal(
    services: Services, world: StripeWorld
) -> None:
    services.engine.ingest(
        [snap("Done", "1", 1, item_id=f"A{n}", board="acme-board") for n in range(251)]
    )
    first = services.invoicing.create_or_refresh_draft("acme")
    assert (first.lines, first.left) == (250, 1)
    report = drain(services)
    assert report.errors == [] and report.parked == 0
    (invoice,) = invoices_by_client(world)["acme"]
    assert len(invoice["lines"]["data"]) == 250
    assert [e.state for e in entries(services, "acme")].count("ready") == 1
    services.invoicing.approve(first.invoice_id, APPROVER, "cli")
    drain(services)
    second = services.invoicing.create_or_refresh_draft("acme")
    assert second.invoice_id != first.invoice_id and (second.lines, second.left) == (1, 0)
    report = drain(services)
    assert report.errors == []
    totals = sorted(i["total"] for i in invoices_by_client(world)["acme"])
    assert totals == [12000, 250 * 12000]


def test_long_titles_and_keys_fit_stripes_field_limits(
    services: Services, world: StripeWorld
) -> None:
    long = snap("Done", "1", 1, item_id="A1", board="acme-board")
    from dataclasses import replace

    services.engine.ingest([replace(long, title="Refactor " * 200)])
    services.invoicing.create_or_refresh_draft("acme")
    report = drain(services)
    assert report.errors == []
    (item,) = world.fake.list_objects("invoiceitem")
    assert len(item["description"]) <= 500
    assert item["description"].endswith("[acme-board A1] 1 h × 120.00 EUR https://example.test/A1")
    (entry,) = entries(services, "acme")
    assert item["metadata"]["kanvoice_entry"] == entry.entry_key
    assert all(len(k) <= 40 and len(v) <= 500 for k, v in item["metadata"].items())


def test_cli_approve_says_why_under_the_minimum_and_force_finalizes(
    world: StripeWorld, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from sync.cli import app
    from tests.stripe_support import WEBHOOK_SECRET

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with world_services(world, url, FixedClock(), acme={"rate": "1"}) as seed:
        seed.engine.ingest([snap("Done", "0.25", 1, item_id="A1", board="acme-board")])
    config = tmp_path / "kanvoice.toml"
    config.write_text(
        f'[ledger]\nurl = "{url}"\n[stripe]\napi_base = "{world.base_url}"\n'
        f'requests_per_second = 1000\n[slack]\napprovers = ["{APPROVER}"]\n'
        f'[[clients]]\nkey = "acme"\nstripe_customer_id = "{world.customers["acme"]}"\n'
        'currency = "EUR"\nrate = "1"\n[[boards]]\nkey = "acme-board"\nsource = "file"\n'
        'client = "acme"\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("KANVOICE_STRIPE__API_KEY", API_KEY)
    monkeypatch.setenv("KANVOICE_STRIPE__WEBHOOK_SECRET", WEBHOOK_SECRET)
    runner = CliRunner()
    drafted = runner.invoke(app, ["invoice", "acme", "-c", str(config)])
    assert drafted.exit_code == 0, drafted.output
    held = runner.invoke(app, ["approve", "1", "--as", APPROVER, "-c", str(config)])
    assert held.exit_code == 2
    assert "below Stripe's minimum charge of 0.50 EUR" in held.output
    assert invoices_by_client(world)["acme"][0]["status"] == "draft"
    forced = runner.invoke(app, ["approve", "1", "--as", APPROVER, "--force", "-c", str(config)])
    assert forced.exit_code == 0, forced.output
    assert invoices_by_client(world)["acme"][0]["status"] == "paid"
