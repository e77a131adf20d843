"""`kanvoice status --lines CLIENT` and `kanvoice audit`: the same rows as the
dashboard's `GET /api/invoices/{id}` and `GET /api/audit`."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest
from typer.testing import CliRunner

from sync.cli import app
from sync.composition import build_services
from sync.review import Review
from sync.settings import load_settings
from tests.conftest import DATA_DIR

CONFIG = DATA_DIR / "kanvoice.test.toml"
MIXED = DATA_DIR / "mixed_board.json"


@pytest.fixture
def cli(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("KANVOICE_LEDGER__URL", sqlite_url)
    monkeypatch.setenv("KANVOICE_SLACK__APPROVERS", '["fin"]')
    monkeypatch.setenv("KANVOICE_FINANCE__TIMEZONE", "Europe/Berlin")
    return CliRunner()


def invoke(runner: CliRunner, *args: str) -> Any:
    return runner.invoke(app, [*args, "-c", str(CONFIG)], catch_exceptions=False)


def test_status_lines_and_audit_match_the_dashboard(cli: CliRunner) -> None:
    assert invoke(cli, "ingest", str(MIXED)).exit_code == 0
    drafted = invoke(cli, "invoice", "acme", "--no-stripe")
    assert drafted.exit_code == 0, drafted.output

    shown = invoke(cli, "status", "--lines", "acme", "--json")
    assert shown.exit_code == 0, shown.output
    (draft,) = json.loads(shown.output)["drafts"]
    services = build_services(load_settings(CONFIG), boards=False)
    try:
        review = Review(services.desk)
        assert draft == json.loads(json.dumps(review.detail(draft["id"]), default=str))
        assert draft["total"] == "2610.00" and len(draft["lines"]) == 5
        table = invoke(cli, "status", "--lines", "acme")
        assert table.exit_code == 0
        for line in draft["lines"]:
            assert line["title"] in table.output
        assert "2,610.00 EUR before tax" in table.output
        assert "not on Stripe yet" in table.output

        rejected = invoke(cli, "reject", str(draft["id"]), "--as", "fin", "--reason", "typo")
        assert rejected.exit_code == 0, rejected.output
        rows = json.loads(invoke(cli, "audit", "--client", "acme", "--json").output)["rows"]
        assert [r["action"] for r in rows] == ["drafted", "rejected"]
        assert rows[1]["actor"] == "fin" and rows[1]["reason"] == "typo"
        assert rows == json.loads(json.dumps(review.audit_log("acme"), default=str))
        (row,) = review.history("acme")
        assert row["status"] == "rejected"
        assert (row["rejected_by"], row["rejected_reason"]) == ("fin", "typo")
        assert rows[0]["at_local"].endswith(("CET", "CEST"))  # finance.timezone
        exported = list(csv.DictReader(io.StringIO(invoke(cli, "audit", "--csv").output)))
        assert [r["action"] for r in exported] == ["drafted", "rejected"]
        assert (
            invoke(cli, "audit", "--client", "globex", "--json")
            .output.strip()
            .endswith('"rows": []\n}'.strip())
        )
        future = json.loads(invoke(cli, "audit", "--since", "2999-01-01", "--json").output)
        assert future["rows"] == []
        human = invoke(cli, "audit", "--client", "acme")
        assert "rejected" in human.output and "typo" in human.output
    finally:
        services.close()


def test_bad_review_input_is_one_line(cli: CliRunner) -> None:
    bad_since = invoke(cli, "audit", "--since", "last week")
    assert bad_since.exit_code == 2 and "--since" in bad_since.output
    unknown = invoke(cli, "status", "--lines", "nobody")
    assert unknown.exit_code == 2 and "unknown client 'nobody'" in unknown.output
    empty = invoke(cli, "status", "--lines", "globex")
    assert empty.exit_code == 0 and "no open drafts" in empty.output
