"""Debian's Chromium, driven by Playwright, against the profitability view over a real
ledger: two people at different rates, a fixed-price milestone that lost money, an
assignee nobody configured, and the filter form. Skipped when the browser is missing,
unless `KANVOICE_REQUIRE_BROWSER=1` (then it fails)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from fastapi import FastAPI

from mapping.domain import BillingType
from sync.composition import Services, build_services
from sync.settings import Settings
from sync.web.breakdown import ledger_payload_source
from sync.web.dashboard import DashboardAuth, dashboard_router
from sync.web.events import ChangeBroker
from sync.web.profitability import ledger_profit_source, profitability_router
from tests.builders import snap
from tests.e2e.test_dashboard_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    RecordingActions,
    require_browser,
    serve,
    texts_by_testid,
)

pytestmark = pytest.mark.browser


@pytest.fixture
def services(sqlite_url: str) -> Iterator[Services]:
    data: dict[str, Any] = {
        "ledger": {"url": sqlite_url},
        "clients": [
            {
                "key": "acme",
                "name": "Acme",
                "stripe_customer_id": "cus_Acme01",
                "currency": "EUR",
                "rate": "100",
                "rounding": {"increment_minutes": 15},
            }
        ],
        "boards": [{"key": "web", "source": "file", "client": "acme"}],
        "roles": [{"key": "senior", "rate": "150", "cost_rate": "70"}],
        "people": [
            {"key": "alice", "identities": ["alice-gh"], "role": "senior", "cost_rate": "80"},
            {"key": "bob", "identities": ["bob-gh"], "rate": "90", "cost_rate": "40"},
        ],
    }
    services = build_services(Settings(**data))
    services.engine.ingest(
        [
            replace(
                snap("Done", "4", 1, item_id="T1"),
                assignees=("alice-gh", "bob-gh"),
                iteration="Sprint 1",
            ),
            replace(
                snap(
                    "Done",
                    "10",
                    1,
                    item_id="M1",
                    billing_type=BillingType.FIXED_PRICE,
                    milestone="300",
                ),
                assignees=("bob-gh",),
                iteration="Sprint 1",
            ),
            replace(
                snap("Done", "1", 1, item_id="U1"), assignees=("zed-gh",), iteration="Sprint 2"
            ),
        ]
    )
    yield services
    services.close()


def test_profitability_view_in_chromium(services: Services) -> None:
    require_browser()
    from playwright.sync_api import sync_playwright

    app = FastAPI()
    auth = DashboardAuth(required=False)
    get_payload = ledger_payload_source(services.ledger, services.client_names(), services.clock)
    app.include_router(dashboard_router(get_payload, ChangeBroker(), RecordingActions(), auth))
    app.include_router(
        profitability_router(
            ledger_profit_source(services.ledger, services.clock), services.settings.staff(), auth
        )
    )
    problems: list[str] = []
    with serve(app) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(f"{base}/profitability")
            texts = texts_by_testid(page)
            # alice 2 h × 150 (role) = 300, cost 2 × 80 = 160; bob 2 h × 90 = 180 + the
            # milestone's 300, cost 2 × 40 + 10 × 40 = 480; zed: 1 h × 100, no cost.
            assert texts["row-person-alice"] == (
                "alice 2 h 300.00 EUR 160.00 EUR 140.00 EUR 46.7 % 150.00 EUR/h"
            )
            assert texts["row-person-bob"] == (
                "bob 12 h 480.00 EUR 480.00 EUR 0.00 EUR 0.0 % 40.00 EUR/h"
            )
            assert texts["row-client-acme"].startswith("acme 15 h (1 h without cost rate)")
            assert "880.00 EUR" in texts["row-client-acme"]
            assert texts["milestone-file:web:M1"].endswith("-100.00 EUR lost money")
            assert texts["no-rate-zed-gh"].startswith("zed-gh : not a configured person")
            assert "Sprint 2" in texts["by-sprint"]

            # The filter form narrows the view (a plain GET, no script).
            page.fill("input[name=sprint]", "Sprint 2")
            page.click("button[type=submit]")
            page.wait_for_url("**sprint=Sprint+2**")
            texts = texts_by_testid(page)
            assert "row-person-alice" not in texts
            assert texts["row-person-zed-gh"].startswith("zed-gh 1 h (1 h without cost rate)")
            assert "No fixed-price milestone" in texts["milestones"]

            page.goto(f"{base}/")
            assert page.locator("a[href='profitability']").count() == 1
        finally:
            browser.close()
    assert problems == []
