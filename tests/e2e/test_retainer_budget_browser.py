"""A retainer client over its budget, in Chromium: the client card shows the retainer's
used / included hours and the draft's detail says "over budget" before the Approve
button, the same on the server's first paint (no script) and after the script renders."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sync.composition import Services
from sync.web.app import create_app
from tests.builders import snap
from tests.conftest import FixedClock
from tests.e2e.test_dashboard_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    require_browser,
    serve,
    texts_by_testid,
)
from tests.stripe_support import drain, fake_stripe, fast_retries, services_for, world_settings

pytestmark = pytest.mark.browser


@pytest.fixture
def services(sqlite_url: str, clock: FixedClock) -> Iterator[Services]:
    with fake_stripe({"acme": "eur"}) as world:
        terms = {
            "retainer": {"hours": 10, "amount": "1500", "overage_rate": "175"},
            "budget": {"hours": 10},
        }
        s = services_for(world_settings(world, sqlite_url, acme=terms), clock)
        fast_retries(s)
        yield s
        s.close()


def test_retainer_and_over_budget_on_the_dashboard(services: Services) -> None:
    require_browser()
    from playwright.sync_api import sync_playwright

    services.engine.ingest(
        [
            snap("Done", "6", 1, item_id="A1", board="acme-board"),
            snap("Done", "6", 1, item_id="A2", board="acme-board"),
        ]
    )
    invoice_id = services.invoicing.create_or_refresh_draft("acme").invoice_id
    assert drain(services).errors == []
    retainer = (
        "Retainer, November 2026: 10 h of 10 h used (100 %) · 1,500.00 EUR of 1,500.00 EUR"
        " · 2 h overage"
    )
    flag = f"budget-flags-{invoice_id}"
    problems: list[str] = []
    with serve(create_app(services)) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            static = browser.new_context(java_script_enabled=False).new_page()
            static.goto(f"{base}/")
            first = texts_by_testid(static)
            page = browser.new_page()
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.goto(f"{base}/")
            page.get_by_test_id(f"details-{invoice_id}").wait_for(state="attached")
            live = texts_by_testid(page)
            meter = page.get_by_test_id("budget-meter-acme-client-acme")
            meter_value = meter.get_attribute("value")
        finally:
            browser.close()
    assert problems == []
    assert meter_value == "100"  # the bar is full; the figure says 120.0 %
    for texts in (first, live):
        assert texts["retainer-acme"] == retainer
        # The budget's spend on the client card, not only the draft's flag.
        assert texts["budget-acme-client-acme"] == (
            "Budget client:acme, November 2026: 12 h of 10 h (120.0 %)"
            " · 80 %, 100 % reached · over budget"
        )
        assert texts[flag] == (
            "⚠ Check before approving: over budget: client:acme: 12 h of 10 h (120.0 %)"
        )
    # The line past the cap carries its own flag: the 2 h overage (12 h of 10).
    flagged = [k for k, v in live.items() if k.startswith("line-flags-") and "over budget" in v]
    assert len(flagged) == 1
