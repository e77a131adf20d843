"""`kanvoice report profitability` (tables and CSV), `kanvoice status` with cost and
margin, and `check-config` listing people without a rate: from a snapshot file with
two people at different rates, a fixed-price milestone that lost money and
non-billable work."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sync.cli import app

CONFIG = """
[defaults]
rate = "90"

[[clients]]
key = "acme"
name = "Acme GmbH"
stripe_customer_id = "cus_AcmeTest01"
currency = "EUR"
rate = "100"
line_grouping = "item_person"
rounding = { increment_minutes = 15, mode = "up" }

[[boards]]
key = "acme-web"
source = "file"
client = "acme"

[[roles]]
key = "senior"
name = "Senior developer"
rate = "150"
cost_rate = "70"

[[roles]]
key = "junior"
rate = "90"
cost_rate = "40"

[[people]]
key = "alice"
identities = ["alice-gh"]
role = "senior"
rate = "160"
cost_rate = "80"

[[people]]
key = "bob"
identities = ["bob-gh"]
role = "junior"

[[people]]
key = "dora"
identities = ["dora-gh"]
"""


def snapshot(item: str, hours: float, sprint: str, *who: str, **extra: Any) -> dict[str, Any]:
    return {
        "board": "acme-web",
        "item_id": item,
        "title": f"Ticket {item}",
        "column": "Done",
        "state_category": "done",
        "updated_at": "2026-11-10T10:00:00Z",
        "revision": 1,
        "hours": hours,
        "assignees": list(who),
        "iteration": sprint,
        **extra,
    }


SNAPSHOTS = [
    # T&M: 4 h split 2/2: alice 2 × 160 = 320 (cost 160), bob 2 × 90 = 180 (cost 80)
    snapshot("A1", 4, "Sprint 1", "alice-gh", "bob-gh"),
    # fixed price 300 for 10 h of bob: cost 400, it lost 100
    snapshot("A2", 10, "Sprint 1", "bob-gh", labels=["fixed-price"], milestone_amount=300),
    # non-billable: 1 h of alice, cost 80
    snapshot("A3", 1, "Sprint 2", "alice-gh", labels=["internal"]),
    # an assignee nobody configured: billed at the client's rate, no cost
    snapshot("A4", 1, "Sprint 2", "zed-gh"),
]


@pytest.fixture
def config(tmp_path: Path, ledger_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KANVOICE_LEDGER__URL", ledger_url)
    path = tmp_path / "kanvoice.toml"
    path.write_text(CONFIG, encoding="utf-8")
    data = tmp_path / "snapshots.json"
    data.write_text(json.dumps({"snapshots": SNAPSHOTS}), encoding="utf-8")
    result = invoke("ingest", str(data), "-c", str(path))
    assert result.exit_code == 0, result.output
    return path


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


EXPECTED_CSV = """\
dimension,key,currency,hours,billable_hours,uncosted_hours,revenue,cost,margin,margin_percent,effective_hourly_rate,result
client,acme,EUR,16,15,1,900.00,720.00,180.00,20.0,56.25,made money
board,acme-web,EUR,16,15,1,900.00,720.00,180.00,20.0,56.25,made money
sprint,Sprint 1,EUR,14,14,0,800.00,640.00,160.00,20.0,57.14,made money
sprint,Sprint 2,EUR,2,1,1,100.00,80.00,20.00,20.0,50.00,made money
person,alice,EUR,3,2,0,320.00,240.00,80.00,25.0,106.67,made money
person,bob,EUR,12,12,0,480.00,480.00,0.00,0.0,40.00,made money
person,zed-gh,EUR,1,1,1,100.00,0.00,100.00,100.0,100.00,made money
milestone,acme-web Ticket A2,EUR,10,10,0,300.00,400.00,-100.00,-33.3,30.00,lost money
"""


def test_profitability_csv(config: Path) -> None:
    result = invoke("report", "profitability", "-c", str(config), "--csv")
    assert result.exit_code == 0, result.output
    assert result.output == EXPECTED_CSV


def test_profitability_filters(config: Path) -> None:
    result = invoke(
        "report",
        "profitability",
        "-c",
        str(config),
        "--csv",
        "--sprint",
        "Sprint 2",
        "--by",
        "person",
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()[1:]
    assert lines == [
        "person,alice,EUR,1,0,0,0.00,80.00,-80.00,,0.00,lost money",
        "person,zed-gh,EUR,1,1,1,100.00,0.00,100.00,100.0,100.00,made money",
    ]
    none = invoke("report", "profitability", "-c", str(config), "--csv", "--to", "2026-11-01")
    assert none.output.splitlines()[1:] == []
    bad = invoke("report", "profitability", "-c", str(config), "--from", "yesterday")
    assert bad.exit_code == 2 and "expected a date" in bad.output
    unknown = invoke("report", "profitability", "-c", str(config), "--client", "nope")
    assert unknown.exit_code == 2 and "expected one of ['acme']" in unknown.output


def test_profitability_tables_and_status(config: Path) -> None:
    result = invoke("report", "profitability", "-c", str(config))
    assert result.exit_code == 0, result.output
    for text in ("Profitability by person", "Fixed-price milestones", "lost money", "alice"):
        assert text in result.output
    status = invoke("status", "-c", str(config), "--json")
    figures = json.loads(status.output)["profitability"]
    assert figures == [
        {
            "key": "acme",
            "currency": "EUR",
            "hours": "16",
            "billable_hours": "15",
            "uncosted_hours": "1",
            "revenue": "900.00",
            "cost": "720.00",
            "margin": "180.00",
            "margin_percent": "20.0",
            "effective_hourly_rate": "56.25",
        }
    ]
    table = invoke("status", "-c", str(config))
    assert "Profitability by client" in table.output and "180.00 EUR" in table.output


def test_check_config_lists_people_without_a_rate(config: Path) -> None:
    result = invoke("check-config", "-c", str(config), "--offline")
    # (the only problem is the missing Stripe key: people without a rate are listed)
    assert "1 problem(s) found" in result.output and "stripe.api_key" in result.output
    assert "zed-gh: not a configured person (seen on acme-web)" in result.output
    assert "person without a rate: dora: no bill rate" in result.output
    assert "person without a rate: dora: no cost rate" in result.output
    assert "alice:" not in result.output
