"""The real flow in Chromium: the full app (real invoicing code, fake Stripe), where
"Create draft now" puts the ready lines on a Stripe draft and Approve finalizes it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest

from connectors.simulated import SimulatedBoard, demo_scripts
from sync.composition import Services, build_services
from sync.demo import DEMO_API_KEY, DEMO_START, DEMO_WEBHOOK_SECRET, _customers, demo_settings
from sync.web.app import create_app
from tests.e2e.test_dashboard_browser import CHROMIUM, CHROMIUM_ARGS, require_browser, serve
from tests.fakes.stripe_server import FakeStripe, run_fake_stripe_in_thread

pytestmark = pytest.mark.browser


@pytest.fixture
def world(sqlite_url: str) -> Iterator[tuple[Services, FakeStripe]]:
    fake = FakeStripe(api_key=DEMO_API_KEY, webhook_secret=DEMO_WEBHOOK_SECRET)
    with run_fake_stripe_in_thread(fake) as base:
        services = build_services(
            demo_settings(sqlite_url, stripe_base=base, customers=_customers(base))
        )
        boards = [SimulatedBoard(s, DEMO_START, timedelta(hours=4)) for s in demo_scripts()]
        for step in range(max(b.script.last_step for b in boards) + 1):
            services.engine.ingest([s for b in boards for s in b.snapshots_at(step)])
        yield services, fake
        services.close()
    fake.close()


def drain(services: Services) -> Any:
    async def run() -> Any:
        try:
            return await services.invoicing.drain()
        finally:
            await services.invoicing.close()

    # Playwright's sync API owns this thread's event loop: drain on another thread.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result()


def test_create_draft_and_approve_reach_stripe(world: tuple[Services, FakeStripe]) -> None:
    require_browser()
    from playwright.sync_api import expect, sync_playwright

    services, fake = world
    app = create_app(services)
    with serve(app) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("dialog", lambda dialog: dialog.accept())
            page.goto(f"{base}/")
            testid = page.get_by_test_id
            expect(testid("gap-acme")).to_have_text("4,000.00 EUR")

            testid("create-draft-acme").click()
            expect(testid("draft-state-1")).to_have_text("draft", timeout=5000)
            expect(testid("draft-total-1")).to_have_text("4,000.00 EUR")
            expect(testid("cell-acme-drafted-amount")).to_have_text("4,000.00 EUR", timeout=5000)
            assert drain(services).errors == []
            (invoice,) = fake.list_objects("invoice")
            assert invoice["status"] == "draft" and invoice["total"] == 400000

            testid("approve-1").click()
            expect(testid("cell-acme-approved-amount")).to_have_text("4,000.00 EUR", timeout=5000)
            assert drain(services).errors == []
            (invoice,) = fake.list_objects("invoice")
            assert invoice["status"] == "open"
            app.state.notify()
            expect(testid("cell-acme-invoiced-amount")).to_have_text("4,000.00 EUR", timeout=5000)
            expect(testid("gap-acme")).to_have_text("0.00 EUR")
        finally:
            browser.close()
