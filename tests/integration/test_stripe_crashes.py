"""The drain killed (SIGKILL, a real `kanvoice` process) at each step that talks to
Stripe; a restart ends with exactly one invoice item per entry and the same totals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select

from sync.ledger import schema as t
from tests.builders import snap
from tests.conftest import FixedClock
from tests.stripe_support import (
    API_KEY,
    APPROVER,
    WEBHOOK_SECRET,
    StripeWorld,
    fake_stripe,
    services_for,
    world_settings,
)

KANVOICE = str(Path(sys.executable).parent / "kanvoice")


@pytest.fixture
def world() -> Iterator[StripeWorld]:
    with fake_stripe({"acme": "eur"}) as w:
        yield w


@pytest.fixture
def config(world: StripeWorld, tmp_path: Path) -> Path:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    data = world_settings(world, url)
    services = services_for(data, FixedClock())
    services.engine.ingest(
        [snap("Done", str(h), 1, item_id=f"A{h}", board="acme-board") for h in (1, 2, 3)]
    )
    services.close()
    client = data["clients"][0]
    path = tmp_path / "kanvoice.toml"
    path.write_text(
        f"""
[ledger]
url = "{url}"
[stripe]
api_base = "{world.base_url}"
requests_per_second = 1000
[slack]
approvers = ["{APPROVER}"]
[[clients]]
key = "acme"
stripe_customer_id = "{client["stripe_customer_id"]}"
currency = "EUR"
rate = "120"
[[boards]]
key = "acme-board"
source = "file"
client = "acme"
"""
    )
    return path


def kanvoice(
    config: Path, *args: str, failpoint: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "KANVOICE_STRIPE__API_KEY": API_KEY,
        "KANVOICE_STRIPE__WEBHOOK_SECRET": WEBHOOK_SECRET,
    }
    env.pop("KANVOICE_FAILPOINT", None)
    if failpoint:
        env["KANVOICE_FAILPOINT"] = failpoint
    return subprocess.run(
        [KANVOICE, *args, "-c", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def ledger(config: Path) -> dict[str, list[Any]]:
    url = next(line for line in config.read_text().splitlines() if line.startswith("url"))
    engine = create_engine(json.loads(url.split("=", 1)[1].strip()))
    try:
        with engine.connect() as conn:
            return {
                "entries": list(conn.execute(select(t.entries)).all()),
                "invoices": list(conn.execute(select(t.invoices)).all()),
                "outbox": list(conn.execute(select(t.outbox)).all()),
            }
    finally:
        engine.dispose()


def assert_one_item_per_entry(world: StripeWorld, config: Path) -> None:
    items = world.fake.list_objects("invoiceitem")
    entries = ledger(config)["entries"]
    assert sorted(i["metadata"]["kanvoice_entry"] for i in items) == sorted(
        e.entry_key for e in entries
    )
    assert world.fake.created["invoiceitem"] == 3
    (invoice,) = world.fake.list_objects("invoice")
    assert invoice["total"] == (1 + 2 + 3) * 12000
    assert {e.stripe_invoice_item_id for e in entries} == {i["id"] for i in items}


@pytest.mark.parametrize(
    "point",
    [
        "before_stripe_call:create_invoice",
        "after_stripe_call:create_invoice",
        "before_stripe_call:create_invoice_item@2",
        "after_stripe_call:create_invoice_item@2",
    ],
)
def test_drain_killed_then_restarted_bills_each_entry_once(
    point: str, world: StripeWorld, config: Path
) -> None:
    crashed = kanvoice(config, "invoice", "acme", failpoint=point)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    restarted = kanvoice(config, "invoice", "acme")
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert_one_item_per_entry(world, config)
    assert world.fake.created["invoice"] == 1
    # The repeated call used the same key: Stripe replayed rather than created.
    if point.startswith("after"):
        assert any(r.replayed for r in world.fake.requests)


@pytest.mark.parametrize(
    "point", ["before_stripe_call:finalize_invoice", "after_stripe_call:finalize_invoice"]
)
def test_killed_during_finalize_finalizes_once(
    point: str, world: StripeWorld, config: Path
) -> None:
    assert kanvoice(config, "invoice", "acme").returncode == 0
    crashed = kanvoice(config, "approve", "1", "--as", APPROVER, failpoint=point)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    (invoice,) = world.fake.list_objects("invoice")
    assert invoice["status"] == ("open" if point.startswith("after") else "draft")
    restarted = kanvoice(config, "outbox", "drain")
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    (invoice,) = world.fake.list_objects("invoice")
    assert invoice["status"] == "open"
    finalizes = [r for r in world.fake.requests if r.path.endswith("/finalize") and not r.replayed]
    assert len(finalizes) == 1
    state = ledger(config)
    assert {e.state for e in state["entries"]} == {"invoiced"}
    assert state["invoices"][0].state == "finalized"
    assert_one_item_per_entry(world, config)
