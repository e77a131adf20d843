"""Totals per currency and aging on the dashboard, in Debian's Chromium (Playwright).

Three currencies (never added up), ready work in each age bucket (edges 8, 30, 31,
61 days), sorting by gap and by age from the links, and the order kept across a live
update. Skipped when the browser is missing, unless `KANVOICE_REQUIRE_BROWSER=1`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI

from sync.composition import Services, build_services
from sync.settings import Settings
from sync.web.breakdown import ledger_payload_source
from sync.web.dashboard import DashboardAuth, dashboard_router
from sync.web.events import ChangeBroker
from tests.builders import snap
from tests.conftest import FixedClock
from tests.e2e.test_dashboard_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    RecordingActions,
    require_browser,
    serve,
    texts_by_testid,
)

pytestmark = pytest.mark.browser

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
CLIENTS = {
    "acme": ("EUR", "100"),
    "beta": ("EUR", "100"),
    "globex": ("USD", "100"),
    "kaiju": ("JPY", "10000"),
}


@pytest.fixture
def services(sqlite_url: str) -> Iterator[Services]:
    settings = Settings(
        ledger={"url": sqlite_url},
        clients=[
            {
                "key": key,
                "name": key.title(),
                "stripe_customer_id": f"cus_{key}0001",
                "currency": currency,
                "rate": rate,
            }
            for key, (currency, rate) in CLIENTS.items()
        ],
        boards=[{"key": f"{key}-board", "source": "file", "client": key} for key in CLIENTS],
    )
    services = build_services(settings, FixedClock(NOW))

    def done(item: str, client: str, hours: str, days_ago: int) -> Any:
        item_snap = snap("Done", hours, 1, item_id=item, board=f"{client}-board")
        return replace(item_snap, updated_at=NOW - timedelta(days=days_ago))

    services.engine.ingest(
        [
            done("A1", "acme", "10", 3),  # 1,000.00 EUR, 0–7 d
            done("A2", "acme", "2", 8),  # 200.00 EUR, 8–30 d
            done("B1", "beta", "30", 30),  # 3,000.00 EUR, 8–30 d (edge)
            done("G1", "globex", "5", 61),  # 500.00 USD, > 60 d
            done("K1", "kaiju", "1", 31),  # 10,000 JPY, 31–60 d
        ]
    )
    yield services
    services.close()


def aging_order(page: Any) -> list[str]:
    ids = page.eval_on_selector_all(
        '[data-testid^="aging-row-"]', "els => els.map(e => e.dataset.testid)"
    )
    return [str(i).removeprefix("aging-row-") for i in ids]


def test_totals_per_currency_and_aging_in_chromium(services: Services) -> None:
    require_browser()
    from playwright.sync_api import expect, sync_playwright

    broker = ChangeBroker()
    app = FastAPI()
    get_payload = ledger_payload_source(
        services.ledger, services.client_names(), services.clock, "Europe/Berlin"
    )
    app.include_router(
        dashboard_router(get_payload, broker, RecordingActions(), DashboardAuth(required=False))
    )
    problems: list[str] = []
    with serve(app) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            static_context = browser.new_context(java_script_enabled=False)
            static_page = static_context.new_page()
            static_page.goto(f"{base}/?sort=age")
            first_paint = texts_by_testid(static_page)
            static_context.close()

            page = browser.new_page()
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.goto(f"{base}/")

            def testid(name: str) -> Any:
                return page.get_by_test_id(name)

            expect(testid("live-status")).to_have_text("live", timeout=5000)
            # One row per currency; EUR sums acme and beta, nothing adds EUR to USD.
            expect(testid("totals-EUR-gap")).to_have_text("4,200.00 EUR")
            expect(testid("totals-EUR")).to_contain_text("2")
            expect(testid("totals-USD-gap")).to_have_text("500.00 USD")
            expect(testid("totals-JPY-gap")).to_have_text("10,000 JPY")
            expect(testid("totals-JPY-ready")).to_have_text("10,000 JPY")
            # Aging per client, by days since Done.
            expect(testid("aging-acme-0-7")).to_have_text("1,000.00 EUR")
            expect(testid("aging-acme-8-30")).to_have_text("200.00 EUR")
            expect(testid("aging-acme-oldest")).to_have_text("8 d")
            expect(testid("aging-beta-8-30")).to_have_text("3,000.00 EUR")
            expect(testid("aging-beta-31-60")).to_have_text("0.00 EUR")
            expect(testid("aging-kaiju-31-60")).to_have_text("10,000 JPY")
            expect(testid("aging-globex-over-60")).to_have_text("500.00 USD")
            expect(testid("aging-globex-oldest")).to_have_text("61 d")
            expect(testid("no-overdue")).to_have_text("No overdue invoices.")
            assert aging_order(page) == ["acme", "beta", "globex", "kaiju"]

            # Sort by age: the oldest ready work first.
            testid("sort-age").click()
            page.wait_for_url("**/?sort=age")
            expect(testid("sort-age")).to_have_attribute("aria-current", "true")
            expect(testid("live-status")).to_have_text("live", timeout=5000)
            assert aging_order(page) == ["globex", "kaiju", "beta", "acme"]
            live = texts_by_testid(page)
            live = {k: v for k, v in live.items() if not k.startswith("bar-")}
            for volatile in ("generated-at", "live-status", "chart", "chart-section", "pipeline"):
                first_paint.pop(volatile, None)
                live.pop(volatile, None)
            assert live == first_paint  # the script renders what the server painted

            # A live update keeps the chosen order and shows the new figures.
            more = snap("Done", "1", 1, item_id="A3", board="acme-board")
            services.engine.ingest([replace(more, updated_at=NOW - timedelta(days=90))])
            broker.notify()
            expect(testid("aging-acme-over-60")).to_have_text("100.00 EUR", timeout=2000)
            expect(testid("totals-EUR-gap")).to_have_text("4,300.00 EUR")
            assert aging_order(page) == ["acme", "globex", "kaiju", "beta"]

            # Sort by gap: per currency (EUR, JPY, USD), largest first within each.
            testid("sort-gap").click()
            page.wait_for_url("**/?sort=gap")
            assert aging_order(page) == ["beta", "acme", "kaiju", "globex"]
        finally:
            browser.close()
            broker.close()
    assert problems == []
