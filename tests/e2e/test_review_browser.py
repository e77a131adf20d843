"""Reviewing before approving, in Chromium, on the full app (real invoicing code, the
demo's in-memory Stripe): expand a draft to its lines, adjust a line and see Stripe and
the ledger agree, approve through the confirmation, a rejection without a reason
refused, and the history naming the approver; at desktop width and at 390 px."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from connectors.stripe.memory import InMemoryStripe
from sync.composition import Services
from sync.web.app import create_app
from tests.e2e.test_dashboard_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    require_browser,
    serve,
    texts_by_testid,
)
from tests.e2e.test_demo_flow_browser import drain, world  # noqa: F401 (fixture)

pytestmark = pytest.mark.browser

PHONE = {"width": 390, "height": 844}


def ledger_total(services: Services, invoice_id: int) -> Decimal:
    detail = services.desk.summary(invoice_id)
    return Decimal(detail.total)


def no_sideways_scroll(page: Any) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"], f"the page scrolls sideways ({width} px)"


def same_as_first_paint(browser: Any, base: str, page: Any) -> None:
    """The server's page (no script) and the script's rendering say the same things,
    draft lines and history included."""
    static = browser.new_context(java_script_enabled=False)
    first = texts_by_testid(static.new_page().goto(f"{base}/") and static.pages[0])
    static.close()
    live = texts_by_testid(page)
    for texts in (first, live):
        for key in [k for k in texts if k.startswith("bar-")]:
            texts.pop(key)
        volatile = ("generated-at", "live-status", "chart", "chart-section", "pipeline")
        for key in (*volatile, "action-status"):
            texts.pop(key, None)
    assert live == first


@pytest.mark.parametrize("viewport", [None, PHONE], ids=["desktop", "390px"])
def test_review_adjust_approve_history(
    world: tuple[Services, InMemoryStripe],  # noqa: F811
    viewport: dict[str, int] | None,
) -> None:
    require_browser()
    from playwright.sync_api import expect, sync_playwright

    services, stripe = world
    app = create_app(services)
    problems: list[str] = []
    with serve(app) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(**({"viewport": viewport} if viewport else {}))
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            dialogs: list[str] = []

            def answer(dialog: Any) -> None:
                dialogs.append(dialog.message)
                dialog.accept()

            page.on("dialog", answer)
            page.goto(f"{base}/")
            testid = page.get_by_test_id
            expect(testid("live-status")).to_have_text("live", timeout=5000)
            no_sideways_scroll(page)

            testid("create-draft-acme").click()
            expect(testid("draft-state-1")).to_have_text("draft", timeout=5000)
            assert drain(services).errors == []
            app.state.notify()

            # Expand the draft: its lines, with the board item's link and the Stripe draft.
            expect(testid("stripe-link-1")).to_have_attribute(
                "href", "https://dashboard.stripe.com/invoices/in_mem000001", timeout=5000
            )
            if viewport is None:
                same_as_first_paint(browser, base, page)
            expect(testid("lines-1")).to_be_hidden()
            testid("details-summary-1").focus()
            page.keyboard.press("Enter")  # keyboard, not only the mouse
            expect(testid("lines-1")).to_be_visible()
            detail = services.desk.summary(1)
            first = detail.lines[0]
            expect(testid(f"line-link-{first.entry_id}")).to_have_attribute("href", first.url)
            expect(testid(f"line-state-{first.entry_id}")).to_have_text("drafted")
            expect(testid("lines-total-1")).to_have_text("4,000.00 EUR")
            no_sideways_scroll(page)

            # Adjust: lower a time line by one hour; Stripe follows, the total with it.
            line = next(x for x in detail.lines if x.kind == "time" and x.hours > 1)
            assert line.rate is not None
            lower = line.hours - 1
            testid(f"line-hours-input-{line.entry_id}").fill(str(lower))
            testid(f"line-save-{line.entry_id}").click()
            expect(testid(f"line-hours-{line.entry_id}")).to_have_text(f"{lower} h", timeout=5000)
            expected = Decimal("4000.00") - line.rate
            expect(testid("draft-total-1")).to_have_text(f"{expected:,.2f} EUR")
            expect(testid("lines-1")).to_be_visible()  # still open after the live update

            # Defer another line to the next draft: it leaves this one.
            other = next(x for x in detail.lines if x.entry_id != line.entry_id)
            testid(f"line-defer-{other.entry_id}").click()
            expect(testid(f"line-{other.entry_id}")).to_have_count(0, timeout=5000)
            expected -= other.amount
            expect(testid("draft-total-1")).to_have_text(f"{expected:,.2f} EUR")
            assert drain(services).errors == []
            (remote,) = stripe.invoices.values()
            assert remote["total"] == int(expected * 100) == int(ledger_total(services, 1) * 100)

            # Reject without a reason: refused, nothing changes.
            testid("reject-1").click()
            expect(testid("action-status")).to_contain_text("give a reason first")
            expect(testid("draft-state-1")).to_have_text("draft")
            assert services.desk.summary(1).lines

            # Approve through the confirmation naming client, total and sending.
            testid("approve-1").click()
            expect(testid("draft-state-1")).to_have_text("approved", timeout=5000)
            assert "Acme GmbH" in dialogs[-1] and f"{expected:,.2f} EUR" in dialogs[-1]
            assert "not emailed" in dialogs[-1]
            assert drain(services).errors == []
            stripe.deliver_events()
            app.state.notify()

            # The history: the approved invoice, its approver and time, Stripe's number.
            expect(testid("history-status-1")).to_have_text("finalized", timeout=5000)
            expect(testid("history-approved-1")).to_contain_text("dashboard · ")
            expect(testid("history-1")).to_contain_text(remote["number"])
            testid("history-search").fill("globex")
            expect(testid("history-1")).to_be_hidden()
            testid("history-search").fill("acme")
            expect(testid("history-1")).to_be_visible()
            no_sideways_scroll(page)
        finally:
            browser.close()
    assert problems == []
