"""The demo's flow in Chromium: the full app (real invoicing code, the demo's in-memory
Stripe), where
"Create draft now" puts the ready lines on a Stripe draft and Approve finalizes it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest

from connectors.simulated import SimulatedBoard, demo_scripts
from connectors.stripe.memory import InMemoryStripe
from sync.composition import Services
from sync.demo import DEMO_START, demo_services, demo_settings
from sync.web.app import create_app
from tests.e2e.test_dashboard_browser import CHROMIUM, CHROMIUM_ARGS, require_browser, serve

pytestmark = pytest.mark.browser


@pytest.fixture
def world(sqlite_url: str) -> Iterator[tuple[Services, InMemoryStripe]]:
    demo = demo_services(demo_settings(sqlite_url))
    services = demo.services
    boards = [SimulatedBoard(s, DEMO_START, timedelta(hours=4)) for s in demo_scripts()]
    for step in range(max(b.script.last_step for b in boards) + 1):
        services.engine.ingest([s for b in boards for s in b.snapshots_at(step)])
    yield services, demo.stripe
    services.close()


def drain(services: Services) -> Any:
    async def run() -> Any:
        try:
            return await services.invoicing.drain()
        finally:
            await services.invoicing.close()

    # Playwright's sync API owns this thread's event loop: drain on another thread.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result()


def test_create_draft_and_approve_reach_stripe(world: tuple[Services, InMemoryStripe]) -> None:
    require_browser()
    from playwright.sync_api import expect, sync_playwright

    services, stripe = world
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
            (invoice,) = stripe.invoices.values()
            assert invoice["status"] == "draft" and invoice["total"] == 400000

            testid("approve-1").click()
            expect(testid("cell-acme-approved-amount")).to_have_text("4,000.00 EUR", timeout=5000)
            assert drain(services).errors == []
            (invoice,) = stripe.invoices.values()
            assert invoice["status"] == "open"
            app.state.notify()
            expect(testid("cell-acme-invoiced-amount")).to_have_text("4,000.00 EUR", timeout=5000)
            expect(testid("gap-acme")).to_have_text("0.00 EUR")
        finally:
            browser.close()
