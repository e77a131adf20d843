"""Debian's Chromium, driven by Playwright, against the dashboard over a real ledger.

The figures on the page, a ledger change appearing without a reload, and the
"Create draft now" and Approve buttons. Skipped when the browser is missing, unless
`KANVOICE_REQUIRE_BROWSER=1` (then it fails).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from connectors.simulated import SimulatedBoard, demo_scripts
from mapping.domain import BoardItem, Source, StateCategory
from sync.composition import Services, build_services
from sync.demo import DEMO_START, demo_settings
from sync.web.breakdown import ledger_payload_source
from sync.web.dashboard import DashboardAuth, dashboard_router
from sync.web.events import ChangeBroker
from tests.net import serve_app as serve

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("KANVOICE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require_browser() -> None:
    problem = None
    if not Path(CHROMIUM).exists():
        problem = f"Chromium not found at {CHROMIUM} (set KANVOICE_CHROMIUM)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "the playwright package is not installed"
    if problem:
        if os.environ.get("KANVOICE_REQUIRE_BROWSER") == "1":
            pytest.fail(problem)
        pytest.skip(problem)


class RecordingActions:
    """A stand-in for the invoicing code: records every call, keeps drafts in memory."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.drafts: dict[str, dict[str, Any]] = {}

    def draft_all(self) -> dict[str, Any]:
        self.calls.append(("draft_all",))
        drafted = sorted(self.drafts)
        return {"drafted": drafted, "message": f"Draft all due: {len(drafted)} drafted"}

    def create_draft(self, client: str) -> dict[str, Any]:
        self.calls.append(("create_draft", client))
        invoice_id = f"in_{client}_1"
        draft: dict[str, Any] = {
            "id": invoice_id,
            "client": client,
            "period": "2026-11",
            "total": "4510.00",
            "currency": "EUR",
            "state": "draft",
            "version": 1,
            "client_name": "Acme GmbH",
            "auto_send": False,
        }
        self.drafts[invoice_id] = draft
        return draft

    def approve(self, invoice_id: str, approver: str, force: bool = False) -> dict[str, Any]:
        self.calls.append(("approve", invoice_id, approver))
        draft = self.drafts[invoice_id]
        draft["state"] = "approved"
        return dict(draft)

    def reject(self, invoice_id: str, approver: str, reason: str) -> dict[str, Any]:
        self.calls.append(("reject", invoice_id, approver, reason))
        raise ValueError("not expected in this test")

    def list_drafts(self, client: str) -> list[dict[str, Any]]:
        return [dict(d) for d in self.drafts.values() if d["client"] == client]


@pytest.fixture
def services(sqlite_url: str) -> Iterator[Services]:
    """The demo's three clients (EUR, USD, JPY) after the simulated boards' whole story."""
    services = build_services(demo_settings(sqlite_url))
    boards = [SimulatedBoard(s, DEMO_START, timedelta(hours=4)) for s in demo_scripts()]
    last = max(b.script.last_step for b in boards)
    for step in range(last + 1):
        services.engine.ingest([s for b in boards for s in b.snapshots_at(step)])
    yield services
    services.close()


def acme_5_done() -> BoardItem:
    """ACME-5 (in progress, 4.25 h) reaches Done: 4.25 h x 120.00 more ready to bill."""
    at = DEMO_START + timedelta(days=3)
    return BoardItem(
        source=Source.SIMULATED,
        board="acme-web",
        item_id="ACME-5",
        title="Search filters",
        url="https://boards.example/acme-web/ACME-5",
        column="Done",
        state_category=StateCategory.DONE,
        updated_at=at,
        revision=100,
        hours=Decimal("4.25"),
        assignees=("sam",),
        iteration="Sprint 1",
        done_at=at,
    )


TEXTS_JS = """
els => els.map(e => {
  const walker = document.createTreeWalker(e, NodeFilter.SHOW_TEXT);
  const parts = [];
  while (walker.nextNode()) {
    const text = walker.currentNode.nodeValue.replace(/\\s+/g, " ").trim();
    if (text) parts.push(text);
  }
  return [e.dataset.testid, parts.join(" ")];
})
"""


def texts_by_testid(page: Any) -> dict[str, str]:
    """Every element with a data-testid, by test id: its text nodes, each with spaces
    collapsed, joined by one space (so markup whitespace between elements is ignored)."""
    pairs = page.eval_on_selector_all("[data-testid]", TEXTS_JS)
    result = {str(k): str(v) for k, v in pairs}
    assert len(result) == len(pairs), "data-testid values must be unique"
    return result


def test_dashboard_in_chromium(services: Services) -> None:
    require_browser()
    from playwright.sync_api import expect, sync_playwright

    broker = ChangeBroker(heartbeat_seconds=0.5)
    actions = RecordingActions()
    app = FastAPI()
    get_payload = ledger_payload_source(services.ledger, services.client_names(), services.clock)
    quota: list[dict[str, Any]] = [
        {
            "board": "acme-web",
            "source": "github",
            "reported": True,
            "resource": "graphql",
            "remaining": 4321,
            "limit": 5000,
            "reset_at": "2026-11-02T10:00:00+00:00",
            "retry_after": None,
            "observed_at": "2026-11-02T09:10:00+00:00",
            "calls_last_hour": 12,
        }
    ]
    app.include_router(
        dashboard_router(
            get_payload,
            broker,
            actions,
            DashboardAuth(required=False),
            quota_source=lambda: [dict(row) for row in quota],
        )
    )
    problems: list[str] = []

    with serve(app) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            # Without JavaScript: the server's first paint.
            static_context = browser.new_context(java_script_enabled=False)
            static_page = static_context.new_page()
            static_page.goto(f"{base}/")
            first_paint = texts_by_testid(static_page)
            static_context.close()

            page = browser.new_page()
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on(
                "console",
                lambda msg: (
                    problems.append(f"console: {msg.text}") if msg.type == "error" else None
                ),
            )
            page.goto(f"{base}/")

            def testid(name: str) -> Any:
                return page.get_by_test_id(name)

            # The figures, server-rendered and then live.
            expect(testid("cell-acme-ready-amount")).to_have_text("4,000.00 EUR")
            expect(testid("cell-acme-ready-hours")).to_have_text("11 h")
            expect(testid("cell-acme-in_progress-hours")).to_have_text("4.25 h")
            expect(testid("cell-acme-non_billable-hours")).to_have_text("2 h")
            expect(testid("fixed-hours-acme")).to_have_text("fixed-price work: 14 h")
            expect(testid("gap-acme")).to_have_text("4,000.00 EUR")
            expect(testid("gap-globex")).to_have_text("1,666.00 USD")
            expect(testid("gap-kaiju")).to_have_text("120,000 JPY")
            expect(testid("cell-kaiju-in_progress-amount")).to_have_text("45,000 JPY")
            expect(testid("board-acme-acme-web-ready-amount")).to_have_text("4,000.00 EUR")
            expect(testid("iteration-globex-Sprint 1-ready-hours")).to_have_text("11.9 h")
            expect(testid("bar-acme-ready")).to_have_count(1)
            expect(testid("live-status")).to_have_text("live", timeout=5000)
            expect(page.get_by_role("columnheader", name="Unbilled gap").first).to_be_visible()
            # The script, re-rendering from the event stream, shows exactly the first paint.
            live = texts_by_testid(page)
            live = {k: v for k, v in live.items() if not k.startswith("bar-")}
            # (Not compared: the clock, the connection state, and the script-drawn chart.)
            for volatile in ("generated-at", "live-status", "chart", "chart-section", "pipeline"):
                first_paint.pop(volatile)
                live.pop(volatile)
            assert live == first_paint
            assert first_paint["cell-acme-ready-amount"] == "4,000.00 EUR"
            assert first_paint["quota-acme-web-remaining"] == "4321 of 5000"

            # A poll changes the board quota: on the page by the next heartbeat.
            quota[0].update(remaining=3990, calls_last_hour=19, retry_after=2)
            expect(testid("quota-acme-web-remaining")).to_contain_text("3990 of 5000")
            expect(testid("quota-acme-web-remaining")).to_contain_text("slowed down 2 s")
            expect(testid("quota-acme-web-calls")).to_have_text("19")

            # A ledger change shows up without a reload, within 2 s.
            page.evaluate("window.__kanvoiceNoReload = true")
            services.engine.ingest([acme_5_done()])
            broker.notify()
            expect(testid("cell-acme-ready-amount")).to_have_text("4,510.00 EUR", timeout=2000)
            expect(testid("gap-acme")).to_have_text("4,510.00 EUR")
            expect(testid("cell-acme-in_progress-hours")).to_have_text("0 h")
            assert page.evaluate("window.__kanvoiceNoReload") is True

            # "Create draft now", then Approve, against the recording actions.
            testid("create-draft-acme").click()
            expect(testid("draft-state-in_acme_1")).to_have_text("draft", timeout=2000)
            expect(testid("draft-total-in_acme_1")).to_have_text("4,510.00 EUR")
            assert actions.calls == [("create_draft", "acme")]

            # Approve asks first, naming the client, the total and whether it is sent.
            dialogs: list[str] = []

            def answer(dialog: Any, accept: bool) -> None:
                dialogs.append(dialog.message)
                dialog.accept() if accept else dialog.dismiss()

            page.once("dialog", lambda dialog: answer(dialog, False))
            testid("approve-in_acme_1").click()
            expect(testid("action-status")).to_contain_text("not approved (cancelled)")
            assert actions.calls == [("create_draft", "acme")]
            assert "Acme GmbH" in dialogs[0] and "4,510.00 EUR" in dialogs[0]
            assert "not emailed" in dialogs[0]
            page.once("dialog", lambda dialog: answer(dialog, True))
            testid("approve-in_acme_1").click()
            expect(testid("draft-state-in_acme_1")).to_have_text("approved", timeout=2000)
            expect(testid("approve-in_acme_1")).to_be_disabled()
            expect(testid("action-status")).to_contain_text("Approve in_acme_1")
            assert actions.calls[-1] == ("approve", "in_acme_1", "dashboard")
            assert page.evaluate("window.__kanvoiceNoReload") is True

            # "Draft all due": a double click asks once and posts once.
            page.on("dialog", lambda dialog: answer(dialog, True))
            testid("draft-all").dblclick()
            expect(testid("action-status")).to_contain_text("Draft all due: 1 drafted")
            expect(testid("draft-all")).to_be_enabled()
            assert actions.calls.count(("draft_all",)) == 1
            assert "ask approval for each draft" in dialogs[-1]

            # The chart: money per client; switching to hours needs no request.
            expect(testid("bar-total-acme")).to_have_text("4,510.00 EUR")
            expect(testid("bar-total-kaiju")).to_have_text("165,000 JPY")
            page.get_by_label("Hours (same scale for all clients)").check()
            expect(page.locator("svg.bars")).to_have_attribute("data-measure", "hours")
            expect(testid("bar-acme-non_billable")).to_have_count(1)
            expect(testid("bar-total-acme")).to_have_text("17.25 h")
        finally:
            browser.close()
            broker.close()

    assert problems == []
