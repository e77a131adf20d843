"""Table tests for Stripe lines (mapping.stripe_lines): the amount and sequence rules,
the invoice item, the create step and reconcile's diff."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mapping.domain import EntryKind, EntryState
from mapping.money import Money
from mapping.stripe_lines import (
    AlreadyLinked,
    AmountDrift,
    CancelCreate,
    CreateLine,
    DeleteStray,
    DeleteStrayItem,
    EntryOnDraft,
    LedgerLine,
    LineSource,
    Link,
    LinkedEntry,
    LinkItem,
    Requeue,
    StripeCustomer,
    StripeItem,
    Unlink,
    WaitForDraft,
    after_create,
    before_create,
    diff_lines,
    item_create_key,
    line_amount,
    next_seq,
    stripe_line,
)

AMOUNT_CASES = [
    ("2", "100", "EUR", "200.00"),
    ("1.25", "90", "EUR", "112.50"),
    ("0.333333", "100", "EUR", "33.33"),
    ("0.125", "1", "EUR", "0.13"),  # half-up at the cent
    ("1.5", "1001", "JPY", "1502"),  # zero-decimal currency
    ("-0.5", "100", "EUR", "-50.00"),  # a negative adjustment
]


@pytest.mark.parametrize(("hours", "rate", "currency", "amount"), AMOUNT_CASES)
def test_line_amount(hours: str, rate: str, currency: str, amount: str) -> None:
    got = line_amount(Decimal(hours), Decimal(rate), currency)
    assert got == Money(Decimal(amount), currency)
    assert str(got.amount) == amount if got else False
    assert line_amount(Decimal(hours), None, currency) is None


@given(st.lists(st.integers(1, 10_000), max_size=20))
def test_next_seq_is_never_used(seqs: list[int]) -> None:
    assert next_seq(seqs) not in seqs and next_seq(seqs) >= 1
    assert next_seq([]) == 1


T0 = datetime(2026, 11, 2, 9, tzinfo=UTC)
SOURCE = LineSource(
    entry_id=12,
    entry_key="github:web:1#time-1",
    item_key="github:web:1",
    kind=EntryKind.TIME,
    hours=Decimal("2.5"),
    rate=Decimal(120),
    amount=Decimal(300),
    currency="EUR",
    description="",
    title="Login page",
    board="web",
    external_id="1",
    url="https://example.test/1",
    created_at=T0,
    done_at=datetime(2026, 11, 3, 9, tzinfo=UTC),
)


def test_the_invoice_item_names_the_entry_and_says_what_the_money_is_for() -> None:
    line = stripe_line(SOURCE, StripeCustomer("acme", "cus_1", ("txr_1",)), invoice_ref="L:7")
    params = line.params()
    assert params["amount"] == 30000 and params["currency"] == "eur"
    assert params["description"] == ("Login page [web 1] 2.5 h × 120.00 EUR https://example.test/1")
    assert params["period"] == {"start": int(T0.timestamp()), "end": int(T0.timestamp()) + 86400}
    assert params["metadata"]["kanvoice_entry"] == "github:web:1#time-1"
    assert params["metadata"]["kanvoice_invoice"] == "L:7"
    assert params["tax_rates"] == ["txr_1"]


def test_the_invoice_item_of_a_milestone_and_the_limit_hooks() -> None:
    source = replace(SOURCE, kind=EntryKind.MILESTONE, description="M1")
    line = stripe_line(
        source,
        StripeCustomer("acme", "cus_1"),
        fit_description=lambda text, keep: (text + keep)[:20],
        fit_metadata=lambda m: {k: v for k, v in m.items() if v},
    )
    assert line.description == "M1 [web 1] fixed pri"
    assert "tax_rates" not in line.params()
    assert dict(line.metadata).get("kanvoice_invoice") is None


DESCRIPTION_CASES = [
    pytest.param({}, "Login page [web 1] 2.5 h × 120.00 EUR https://example.test/1", id="time"),
    pytest.param(
        {"rate": Decimal("5.1245"), "currency": "KWD"},
        "Login page [web 1] 2.5 h × 5.1245 KWD https://example.test/1",
        id="a rate is never rounded for show",
    ),
    pytest.param(
        {"rate": Decimal(1500), "currency": "JPY"},
        "Login page [web 1] 2.5 h × 1,500 JPY https://example.test/1",
        id="zero-decimal rate",
    ),
    pytest.param(
        {"description": "Reworded by finance"},
        "Reworded by finance [web 1] 2.5 h × 120.00 EUR https://example.test/1",
        id="the entry's own text wins",
    ),
    pytest.param({"url": ""}, "Login page [web 1] 2.5 h × 120.00 EUR", id="no url"),
    pytest.param(
        {"url": "https://example.test/" + "x" * 480},
        "Login page [web 1] 2.5 h × 120.00 EUR",
        id="a url that does not fit whole is left out",
    ),
]


@pytest.mark.parametrize(("change", "description"), DESCRIPTION_CASES)
def test_the_description_says_what_the_money_is_for(
    change: dict[str, object], description: str
) -> None:
    source = replace(SOURCE, **change)  # type: ignore[arg-type]
    assert stripe_line(source, StripeCustomer("acme", "cus_1")).description == description


D = EntryState.DRAFTED
CREATE_CASES = [
    pytest.param(EntryOnDraft(1, D, 7, None), True, CreateLine(), id="create"),
    pytest.param(EntryOnDraft(1, D, 7, None), False, WaitForDraft(), id="draft not on Stripe"),
    pytest.param(EntryOnDraft(1, D, 7, "ii_1"), True, AlreadyLinked("ii_1"), id="linked"),
    pytest.param(
        EntryOnDraft(1, EntryState.READY, None, None), True, CancelCreate("entry is ready")
    ),
    pytest.param(EntryOnDraft(1, D, 8, None), True, CancelCreate("entry is drafted")),
]


@pytest.mark.parametrize(("entry", "on_stripe", "want"), CREATE_CASES)
def test_before_create(entry: EntryOnDraft, on_stripe: bool, want: object) -> None:
    assert before_create(entry, 7, on_stripe) == want


AFTER_CASES = [
    pytest.param(EntryOnDraft(1, D, 7, None), LinkItem, id="still on the draft: link"),
    pytest.param(EntryOnDraft(1, EntryState.APPROVED, 7, None), LinkItem, id="approved: link"),
    pytest.param(
        EntryOnDraft(1, EntryState.READY, None, None), DeleteStrayItem, id="rejected meanwhile"
    ),
    pytest.param(
        EntryOnDraft(1, EntryState.VOIDED, 7, None), DeleteStrayItem, id="excluded meanwhile"
    ),
    pytest.param(EntryOnDraft(1, D, 9, None), DeleteStrayItem, id="moved to another draft"),
    pytest.param(EntryOnDraft(1, D, 7, "ii_0"), DeleteStrayItem, id="linked to another line"),
    pytest.param(None, DeleteStrayItem, id="entry gone"),
]


@pytest.mark.parametrize(("entry", "want"), AFTER_CASES)
def test_after_create_never_links_an_entry_that_left_the_draft(
    entry: EntryOnDraft | None, want: type
) -> None:
    got = after_create(entry, 7, "ii_new")
    assert isinstance(got, want) and got.stripe_item_id == "ii_new"


def L(entry_id: int, item: str | None, amount: int = 100, pending: bool = False) -> LedgerLine:
    return LedgerLine(entry_id, f"e{entry_id}", amount, item, pending)


def I(item: str, entry: int | None, amount: int = 100) -> StripeItem:  # noqa: E743
    return StripeItem(item, f"e{entry}" if entry is not None else None, amount)


DIFF_CASES = [
    pytest.param([L(1, "ii_1")], [I("ii_1", 1)], [], (), id="in sync"),
    pytest.param([L(1, None)], [], [], (Requeue(1, "e1"),), id="line missing on Stripe"),
    pytest.param([L(1, None, pending=True)], [], [], (), id="its create is on the way"),
    pytest.param(
        [L(1, "ii_gone")], [], [], (Requeue(1, "e1"),), id="linked item deleted on Stripe"
    ),
    pytest.param([L(1, None)], [I("ii_1", 1)], [], (Link(1, "e1", "ii_1"),), id="not linked"),
    pytest.param(
        [L(1, "ii_1", 100)], [I("ii_1", 1, 90)], [], (AmountDrift(1, "e1", 90, 100),), id="amount"
    ),
    pytest.param([], [I("ii_9", None)], [], (), id="a hand-made line is left alone"),
    pytest.param(
        [L(1, "ii_1")],
        [I("ii_1", 1), I("ii_2", 2)],
        [LinkedEntry(2, "ii_2")],
        (DeleteStray("ii_2", "e2"), Unlink(2, "ii_2")),
        id="stray line of a rejected entry: delete it and unlink its entry",
    ),
    pytest.param(
        [],
        [],
        [LinkedEntry(2, "ii_2")],
        (Unlink(2, "ii_2"),),
        id="stray already deleted: the entry is still unlinked",
    ),
    pytest.param(
        [L(1, "ii_2")],
        [I("ii_1", 1), I("ii_2", 1)],
        [],
        (DeleteStray("ii_1", "e1", duplicate_of="ii_2"),),
        id="two lines for one entry: the linked one stays, the other is deleted",
    ),
    pytest.param(
        [L(1, None)],
        [I("ii_1", 1), I("ii_2", 1)],
        [],
        (Link(1, "e1", "ii_1"), DeleteStray("ii_2", "e1", duplicate_of="ii_1")),
        id="two lines for an unlinked entry: the first is adopted",
    ),
    pytest.param(
        [],
        [I("ii_1", 2), I("ii_2", 2)],
        [],
        (DeleteStray("ii_1", "e2"), DeleteStray("ii_2", "e2")),
        id="every stray line of an entry off the draft is deleted",
    ),
]


@pytest.mark.parametrize(("lines", "items", "elsewhere", "want"), DIFF_CASES)
def test_reconcile_diff(
    lines: list[LedgerLine], items: list[StripeItem], elsewhere: list[LinkedEntry], want: tuple
) -> None:
    assert diff_lines(lines, items, elsewhere) == want


@given(
    st.lists(
        st.tuples(st.sampled_from([None, "ii_1", "ii_2", "ii_3"]), st.booleans()),
        max_size=4,
    ),
    st.lists(
        st.tuples(st.sampled_from(["ii_1", "ii_2", "ii_3", "ii_4"]), st.integers(1, 6)),
        max_size=5,
        unique_by=lambda item: item[0],
    ),
)
def test_applying_the_repairs_brings_both_drafts_together(
    ours: list[tuple[str | None, bool]], theirs: list[tuple[str, int]]
) -> None:
    """After the repairs, every line of the draft is linked to the one Stripe line
    naming it (or is re-queued, or its create is on the way), and no Stripe line names
    an entry that is not on the draft, or one that another line already names."""
    lines = [L(n + 1, link, pending=pending) for n, (link, pending) in enumerate(ours)]
    items = [I(item, entry) for item, entry in theirs]
    repairs = diff_lines(lines, items)
    links = {line.entry_id: line.stripe_item_id for line in lines}
    requeued = set()
    deleted = set()
    for fix in repairs:
        if isinstance(fix, Link):
            links[fix.entry_id] = fix.stripe_item_id
        elif isinstance(fix, Requeue):
            requeued.add(fix.entry_id)
        elif isinstance(fix, DeleteStray):
            deleted.add(fix.stripe_item_id)
    live = [item for item in items if item.item_id not in deleted]
    named = {item.entry_ref: item.item_id for item in live}
    assert len(named) == len(live)  # one line per entry: nobody billed twice
    for line in lines:
        if line.entry_id in requeued or (line.pending and line.entry_key not in named):
            continue
        assert links[line.entry_id] == named[line.entry_key]
    on_draft = {line.entry_key for line in lines}
    assert all(item.entry_ref in on_draft for item in live)


def test_reconcile_diff_matches_by_the_metadata_form_of_the_key() -> None:
    line = LedgerLine(1, "k" * 600, 100, None)
    item = StripeItem("ii_1", "short", 100)
    assert diff_lines([line], [item], entry_ref=lambda key: "short") == (
        Link(1, "k" * 600, "ii_1"),
    )


def test_keys() -> None:
    assert item_create_key("kv-L", 5, 7, 2) == "kv-L-e5-inv7-item2"
