"""The finance digest's Block Kit (connectors.slack.messages.digest_*): shape, Slack's
limits, the "Draft all" button only when some client has ready work."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from connectors.slack.messages import (
    ACTION_DRAFT_ALL,
    DRAFT_ALL_VALUE,
    blocks_as_dicts,
    digest_blocks,
    digest_plain,
    digest_text,
)
from mapping.aging import OverdueInvoice
from mapping.digest import DigestClient, DigestDraft, build_digest
from mapping.money import Money

NOW = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


def eur(amount: str) -> Money:
    return Money(Decimal(amount), "EUR")


def test_an_empty_digest_says_so_and_offers_no_button() -> None:
    digest = build_digest(as_of=NOW, timezone="Europe/Berlin", clients=[], drafts=[], overdue=[])
    blocks = blocks_as_dicts(digest_blocks(digest))
    by_id = {b.get("block_id"): b for b in blocks}
    gap = by_id["kv_digest_gap"]["text"]["text"]
    assert gap == "*Unbilled gap*: nothing is waiting to be billed."
    assert "fields" not in by_id["kv_digest_gap"]
    assert "kv_digest_actions" not in by_id
    assert by_id["kv_digest_drafts"]["text"]["text"] == "*Drafts waiting for approval*: none."
    assert digest_text(digest) == "Finance digest: nothing unbilled"
    assert "nothing is waiting" in digest_plain(digest)


def test_many_clients_drafts_and_overdue_stay_within_slack_limits() -> None:
    clients = [
        DigestClient(f"c{i}", f"Client <{i}> & co", eur(str(100 + i)), eur("1"), i)
        for i in range(60)
    ]
    drafts = [DigestDraft(i, f"c{i}", f"Client {i}", eur("10"), i % 5) for i in range(30)]
    overdue = [
        OverdueInvoice(100 + i, f"c{i}", f"Client {i}", f"INV-{i}", eur("5"), NOW, i)
        for i in range(25)
    ]
    digest = build_digest(
        as_of=NOW, timezone="UTC", clients=clients, drafts=drafts, overdue=overdue,
        dashboard_url="https://billing.example.com/",
    )  # fmt: skip
    blocks = blocks_as_dicts(digest_blocks(digest))  # validates Slack's limits
    assert len(blocks) <= 50
    by_id = {b.get("block_id"): b for b in blocks}
    waiting = by_id["kv_digest_waiting"]["text"]["text"]
    assert waiting.startswith("*Waiting longest*\n• *Client &lt;59&gt; &amp; co*")
    assert "… and 55 more clients" in waiting
    assert "… and 20 more drafts" in by_id["kv_digest_drafts"]["text"]["text"]
    assert "(30, *300.00 EUR*)" in by_id["kv_digest_drafts"]["text"]["text"]
    overdue_text = by_id["kv_digest_overdue"]["text"]["text"]
    assert "… and 15 more invoices" in overdue_text and "24 days overdue" in overdue_text
    button = by_id["kv_digest_actions"]["elements"][0]
    assert (button["action_id"], button["value"]) == (ACTION_DRAFT_ALL, DRAFT_ALL_VALUE)
    assert button["confirm"]["title"]["text"] == "Draft every client?"
    assert digest_text(digest).startswith("Finance digest: unbilled 7,770.00 EUR, 30 drafts")


def test_one_gap_field_per_currency() -> None:
    clients = [
        DigestClient("a", "A", eur("10"), eur("10"), 1),
        DigestClient("b", "B", Money(Decimal("1500"), "JPY"), Money(Decimal(0), "JPY"), None),
    ]
    digest = build_digest(as_of=NOW, timezone="UTC", clients=clients, drafts=[], overdue=[])
    gap = {b.get("block_id"): b for b in blocks_as_dicts(digest_blocks(digest))}["kv_digest_gap"]
    assert [f["text"] for f in gap["fields"]] == [
        "*Unbilled (EUR)*\n10.00 EUR",
        "*Unbilled (JPY)*\n1,500 JPY",
    ]
    assert "across 2 clients" in gap["text"]["text"]
