"""The four promises every fault test ends with, checked from the ledger and the fake
Stripe after a final drain:

1. no entry billed twice: no two live Stripe lines name the same ledger entry, no
   ledger invoice has two Stripe invoices, and per item the settled hours are exactly
   the rounding of its hours at its last Done (a fixed price: one milestone);
2. none lost: every Done billable item has its settled entries, and every drafted /
   approved / invoiced / paid entry has exactly one Stripe line, on its own invoice,
   for its amount; every kanvoice line on Stripe belongs to such an entry;
3. no invoice finalized without approval: every non-draft Stripe invoice (and every
   non-draft ledger invoice) has an approvals row, for the total Stripe shows;
4. ledger and Stripe reconciled: nothing left pending in the outbox and
   `Invoicing.reconcile(repair=False)` finds no drift.

`assert_invariants` is a coroutine (the Stripe gateway lives in an event loop); from a
synchronous test call `check_invariants`, which runs it in a loop of its own.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from mapping.domain import SETTLED_STATES, BillingType, EntryKind, EntryState
from mapping.money import Money
from sync.composition import Services
from sync.ledger import schema as t
from sync.ledger.ops import ledger_id
from tests.fakes.stripe_server import FakeStripe

#: Outbox operations the Stripe writer performs (others, e.g. Slack, drain elsewhere).
STRIPE_OPERATIONS = frozenset(
    {
        "create_invoice",
        "create_invoice_item",
        "update_invoice_item",
        "delete_invoice_item",
        "finalize_invoice",
        "send_invoice",
    }
)
#: Entry states that must be on a Stripe invoice, with exactly one line.
ON_STRIPE = frozenset(
    {EntryState.DRAFTED, EntryState.APPROVED, EntryState.INVOICED, EntryState.PAID}
)
#: Ledger invoice states that only an approved finalize (or Stripe after it) can reach.
PAST_DRAFT = frozenset({"finalized", "sent", "paid", "uncollectible", "void"})
#: Stripe invoice states whose lines no longer bill anyone.
DEAD_STRIPE_INVOICES = frozenset({"void", "deleted"})


def _rows(services: Services) -> dict[str, list[Any]]:
    with services.ledger.engine.connect() as conn:
        return {
            "items": list(conn.execute(select(t.items)).all()),
            "entries": list(conn.execute(select(t.entries).order_by(t.entries.c.id)).all()),
            "invoices": list(conn.execute(select(t.invoices).order_by(t.invoices.c.id)).all()),
            "approvals": list(conn.execute(select(t.approvals)).all()),
            "outbox": list(conn.execute(select(t.outbox).order_by(t.outbox.c.id)).all()),
            "ledger_id": [ledger_id(conn)],
        }


def _minor(amount: Decimal | None, currency: str) -> int:
    return Money(amount or Decimal(0), currency).to_minor_units()


def _assert_outbox_settled(rows: dict[str, list[Any]], allow_parked: bool) -> None:
    left = [
        (op.id, op.operation, op.status, op.last_error)
        for op in rows["outbox"]
        if op.operation in STRIPE_OPERATIONS
        and (op.status == "pending" or (op.status == "parked" and not allow_parked))
    ]
    assert not left, f"Stripe work left undone after the final drain: {left}"


def _assert_items_settled(services: Services, rows: dict[str, list[Any]]) -> None:
    """Per Done item: settled hours = rounding(hours at its last Done); one milestone."""
    policies = services.settings.board_policies()
    by_item: dict[int, list[Any]] = defaultdict(list)
    for entry in rows["entries"]:
        by_item[entry.item_id].append(entry)
    for item in rows["items"]:
        entries = by_item.get(item.id, [])
        settled = [e for e in entries if EntryState(e.state) in SETTLED_STATES]
        if not item.is_done:
            continue
        where = f"item {item.item_key} ({item.billing_type}, {item.hours} h)"
        if item.billing_type == BillingType.TIME_AND_MATERIALS.value:
            target = policies[item.board].effective_rounding.apply(item.hours or Decimal(0))
            hours = sum(
                (
                    e.hours
                    for e in settled
                    if e.kind in (EntryKind.TIME.value, EntryKind.ADJUSTMENT.value)
                ),
                Decimal(0),
            )
            assert hours == target, (
                f"{where}: {hours} h settled, expected {target} h "
                f"({'billed twice' if hours > target else 'lost'}): "
                f"{[(e.entry_key, e.state, e.hours) for e in entries]}"
            )
        elif item.billing_type == BillingType.FIXED_PRICE.value:
            milestones = [
                e
                for e in settled
                if e.kind == EntryKind.MILESTONE.value and e.state != EntryState.VOIDED.value
            ]
            assert len(milestones) == 1, f"{where}: {len(milestones)} milestone entries"
        else:
            billed = [e for e in entries if EntryState(e.state) in ON_STRIPE | {EntryState.READY}]
            assert not billed, f"{where}: non-billable work billed: {billed}"


def _assert_lines(rows: dict[str, list[Any]], fake: FakeStripe) -> None:
    """One live Stripe line per billed entry, on its own invoice, for its amount."""
    invoices = {i["id"]: i for i in fake.list_objects("invoice")}
    ledger_invoices = {i.id: i for i in rows["invoices"]}
    live_lines = [
        line
        for line in fake.list_objects("invoiceitem")
        if (line.get("metadata") or {}).get("kanvoice_entry")
        and (
            line.get("invoice") is None
            or invoices.get(line["invoice"], {}).get("status") not in DEAD_STRIPE_INVOICES
        )
    ]
    named = Counter(line["metadata"]["kanvoice_entry"] for line in live_lines)
    twice = {key: n for key, n in named.items() if n > 1}
    assert not twice, f"entries billed twice on Stripe (live lines per entry): {twice}"
    lines_by_entry = {line["metadata"]["kanvoice_entry"]: line for line in live_lines}

    expected: set[str] = set()
    for entry in rows["entries"]:
        if EntryState(entry.state) not in ON_STRIPE:
            continue
        expected.add(entry.entry_key)
        where = f"entry {entry.entry_key} ({entry.state})"
        assert entry.invoice_id is not None, f"{where} is on no invoice"
        invoice = ledger_invoices[entry.invoice_id]
        assert invoice.stripe_invoice_id, f"{where}: invoice {invoice.id} never reached Stripe"
        line = lines_by_entry.get(entry.entry_key)
        assert line is not None, f"{where} has no Stripe line (lost)"
        assert line["invoice"] == invoice.stripe_invoice_id, (
            f"{where}: its line {line['id']} is on {line['invoice']}, "
            f"not on {invoice.stripe_invoice_id}"
        )
        assert entry.stripe_invoice_item_id == line["id"], (
            f"{where} links {entry.stripe_invoice_item_id}, Stripe has {line['id']}"
        )
        assert int(line["amount"]) == _minor(entry.amount, entry.currency), (
            f"{where}: Stripe line {line['amount']} ≠ ledger {entry.amount} {entry.currency}"
        )
    orphans = sorted(set(lines_by_entry) - expected)
    assert not orphans, f"Stripe lines the ledger does not bill (orphans): {orphans}"

    # One Stripe invoice per ledger invoice: the create step never ran twice.
    markers = Counter(
        (inv.get("metadata") or {}).get("kanvoice_invoice")
        for inv in invoices.values()
        if (inv.get("metadata") or {}).get("kanvoice_invoice")
    )
    doubled = {m: n for m, n in markers.items() if n > 1}
    assert not doubled, f"ledger invoices created twice on Stripe: {doubled}"
    prefix = rows["ledger_id"][0]
    for marker in markers:
        lid, _, number = str(marker).partition(":")
        if lid != prefix:
            continue
        invoice = ledger_invoices.get(int(number))
        remote = next(
            i
            for i in invoices.values()
            if (i.get("metadata") or {}).get("kanvoice_invoice") == marker
        )
        assert invoice is not None and invoice.stripe_invoice_id == remote["id"], (
            f"Stripe invoice {remote['id']} ({marker}) is not linked in the ledger"
        )

    # Totals: what Stripe asks for is what the ledger bills on that invoice.
    for invoice in ledger_invoices.values():
        linked = invoices.get(invoice.stripe_invoice_id or "")
        if linked is None or linked["status"] in DEAD_STRIPE_INVOICES:
            continue
        billed = sum(
            _minor(e.amount, e.currency)
            for e in rows["entries"]
            if e.invoice_id == invoice.id and EntryState(e.state) in ON_STRIPE
        )
        assert int(linked["total"]) == billed, (
            f"invoice {invoice.id}: Stripe total {linked['total']} ≠ ledger {billed}"
        )


def _assert_approved(rows: dict[str, list[Any]], fake: FakeStripe) -> None:
    """Nothing left draft without an approval row, on either side."""
    approvals = {a.invoice_id: a for a in rows["approvals"]}
    by_stripe_id = {i.stripe_invoice_id: i for i in rows["invoices"] if i.stripe_invoice_id}
    for remote in fake.list_objects("invoice"):
        if remote["status"] == "draft":
            continue
        invoice = by_stripe_id.get(remote["id"])
        assert invoice is not None, (
            f"Stripe invoice {remote['id']} is {remote['status']} and the ledger does not know it"
        )
        approval = approvals.get(invoice.id)
        assert approval is not None, (
            f"invoice {invoice.id} ({remote['id']}) is {remote['status']} without an approval"
        )
        if remote["status"] != "void":
            assert approval.total_minor == int(remote["total"]), (
                f"invoice {invoice.id}: approved {approval.total_minor}, Stripe bills "
                f"{remote['total']}"
            )
    for invoice in rows["invoices"]:
        if invoice.state in PAST_DRAFT:
            assert invoice.id in approvals, (
                f"ledger invoice {invoice.id} is {invoice.state} without an approval"
            )


async def assert_invariants(
    services: Services, fake_stripe: FakeStripe, *, allow_parked: bool = False
) -> None:
    """Drain once more, then check the four promises (see the module docstring).

    Closes the Stripe gateway at the end (it belongs to the running event loop)."""
    invoicing = services.invoicing
    try:
        report = await invoicing.drain()
        assert not report.errors, f"the final drain failed: {report.errors}"
        rows = _rows(services)
        _assert_outbox_settled(rows, allow_parked)
        _assert_items_settled(services, rows)
        _assert_lines(rows, fake_stripe)
        _assert_approved(rows, fake_stripe)
        drifts = await invoicing.reconcile(repair=False)
        assert drifts == [], f"ledger and Stripe disagree: {drifts}"
    finally:
        await invoicing.close()


def check_invariants(
    services: Services, fake_stripe: FakeStripe, *, allow_parked: bool = False
) -> None:
    """`assert_invariants` for synchronous tests (no event loop running)."""
    asyncio.run(assert_invariants(services, fake_stripe, allow_parked=allow_parked))
