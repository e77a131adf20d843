"""Table tests for the invoicing core (mapping.invoices): states, periods, decisions,
the finalize guard."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mapping.domain import EntryKind, EntryState
from mapping.invoices import (
    Adjust,
    ApprovalView,
    Approve,
    BillingPeriod,
    Cadence,
    DraftView,
    FinalizeStep,
    FollowState,
    Ignore,
    InvoiceState,
    LineChange,
    LineView,
    OpenDraft,
    Refusal,
    Refused,
    Reject,
    Release,
    billing_period,
    decide_adjust,
    decide_approve,
    decide_reject,
    finalize_guard,
    follow,
    follow_event,
    moves_forward,
    place_ready_lines,
    state_from_stripe,
    state_rank,
    write_off,
)
from mapping.money import Money

S = InvoiceState

# --- states -------------------------------------------------------------------------------


def test_ranking_matches_the_ledgers_historic_table() -> None:
    legacy = {
        "draft": 0,
        "finalized": 1,
        "sent": 2,
        "uncollectible": 3,
        "paid": 4,
        "void": 5,
        "deleted": 5,
    }
    assert {s.value: s.rank for s in InvoiceState} == legacy
    assert state_rank("something else") == 0  # as INVOICE_RANK.get(state, 0)


FOLLOW_CASES = [
    # current, event, expected (target, record_finalized, release, paid) or "stale"/"ignored"
    (S.DRAFT, "invoice.finalized", (S.FINALIZED, True, False, False)),
    (S.DRAFT, "invoice.paid", (S.PAID, True, False, True)),
    (S.DRAFT, "invoice.sent", (S.SENT, True, False, False)),
    (S.DRAFT, "invoice.deleted", (S.DELETED, False, True, False)),
    (S.FINALIZED, "invoice.sent", (S.SENT, False, False, False)),
    (S.FINALIZED, "invoice.paid", (S.PAID, False, False, True)),
    (S.FINALIZED, "invoice.voided", (S.VOID, False, True, False)),
    (S.SENT, "invoice.marked_uncollectible", (S.UNCOLLECTIBLE, False, False, False)),
    (S.UNCOLLECTIBLE, "invoice.paid", (S.PAID, False, False, True)),
    (S.FINALIZED, "invoice.finalized", "stale"),  # repeated
    (S.PAID, "invoice.sent", "stale"),  # late
    (S.PAID, "invoice.voided", "stale"),  # a paid invoice is never voided
    (S.VOID, "invoice.deleted", "stale"),
    (S.FINALIZED, "invoice.deleted", "stale"),  # only drafts are deleted
    (S.DRAFT, "invoice.created", "ignored"),
]


@pytest.mark.parametrize(("current", "event", "expected"), FOLLOW_CASES)
def test_following_stripe_events(current: S, event: str, expected: object) -> None:
    got = follow_event(current, event)
    if isinstance(expected, str):
        assert got == Ignore(expected)
    else:
        assert isinstance(expected, tuple)
        assert got == FollowState(*expected)


@given(st.sampled_from(list(S)), st.sampled_from(list(S)))
def test_following_never_moves_backwards(current: S, target: S) -> None:
    got = follow(current, target)
    if isinstance(got, FollowState):
        assert got.target.rank > current.rank
    assert isinstance(follow(target, target), Ignore)


@pytest.mark.parametrize(
    ("status", "deleted", "state"),
    [
        ("draft", False, S.DRAFT),
        ("open", False, S.FINALIZED),
        ("paid", False, S.PAID),
        ("void", False, S.VOID),
        ("uncollectible", False, S.UNCOLLECTIBLE),
        (None, False, S.DRAFT),
        ("draft", True, S.DELETED),
    ],
)
def test_stripe_status_to_state(status: str | None, deleted: bool, state: S) -> None:
    assert state_from_stripe(status, deleted) is state
    assert moves_forward("draft", state) is (state is not S.DRAFT)


# --- billing periods ---------------------------------------------------------------------------


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


PERIOD_CASES = [
    (Cadence.MONTHLY, utc(2026, 11, 15, 12), "UTC", 0, "2026-11", "November 2026"),
    # 23:30 UTC on Nov 30 is already December in Berlin
    (Cadence.MONTHLY, utc(2026, 11, 30, 23, 30), "Europe/Berlin", 0, "2026-12", "December 2026"),
    (Cadence.MONTHLY, utc(2026, 12, 31, 12), "UTC", 0, "2026-12", "December 2026"),
    (Cadence.WEEKLY, utc(2026, 11, 26, 12), "UTC", 0, "week-2026-11-23", "week of 23 Nov 2026"),
    (Cadence.WEEKLY, utc(2026, 11, 26, 12), "UTC", 6, "week-2026-11-22", "week of 22 Nov 2026"),
    (Cadence.ON_DEMAND, utc(2026, 11, 26, 12), "UTC", 0, "on-demand", "on demand"),
]


@pytest.mark.parametrize(("cadence", "now", "zone", "week", "key", "label"), PERIOD_CASES)
def test_billing_periods(
    cadence: Cadence, now: datetime, zone: str, week: int, key: str, label: str
) -> None:
    period = billing_period(cadence, now, zone, week)
    assert (period.key, period.label) == (key, label)
    assert period.contains(now)


def test_billing_period_bounds_are_local_midnights_in_utc() -> None:
    period = billing_period("monthly", utc(2026, 11, 15), "Europe/Berlin")
    assert period == BillingPeriod(
        "2026-11", "November 2026", utc(2026, 10, 31, 23), utc(2026, 11, 30, 23)
    )
    with pytest.raises(ValueError):
        billing_period(Cadence.MONTHLY, datetime(2026, 11, 1), "UTC")


@given(
    st.datetimes(
        min_value=datetime(2001, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)
    ),
    st.sampled_from([Cadence.MONTHLY, Cadence.WEEKLY]),
    st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo"]),
    st.integers(0, 6),
)
def test_every_moment_is_in_exactly_its_period(
    now: datetime, cadence: Cadence, zone: str, week: int
) -> None:
    period = billing_period(cadence, now, zone, week)
    assert period.contains(now)
    before = billing_period(cadence, period.start - timedelta(seconds=1), zone, week)
    assert before.key != period.key and before.end == period.start


# --- decisions ------------------------------------------------------------------------------


def line(
    entry_id: int,
    hours: str = "2",
    rate: str | None = "100",
    state: EntryState = EntryState.DRAFTED,
    kind: EntryKind = EntryKind.TIME,
    item: str = "gh:web:1",
    seq: int = 1,
    stripe: str | None = None,
) -> LineView:
    amount = Decimal(hours) * Decimal(rate) if rate is not None else Decimal(500)
    return LineView(
        entry_id=entry_id,
        item_key=item,
        kind=kind,
        seq=seq,
        state=state,
        hours=Decimal(hours),
        rate=Decimal(rate) if rate is not None else None,
        amount=amount,
        currency="EUR",
        description=f"line {entry_id}",
        invoice_id=7,
        stripe_item_id=stripe,
    )


DRAFT = DraftView(
    invoice_id=7,
    client="acme",
    state=S.DRAFT,
    version=3,
    currency="EUR",
    lines=(line(1, stripe="ii_1"), line(2, "1.5", "80")),
)


@dataclass(frozen=True)
class Verdict:
    below_minimum: bool
    reason: str = "below Stripe's minimum charge"


def minimum(at: str) -> object:
    def rule(total: Money) -> Verdict:
        return Verdict(total.amount < Decimal(at))

    return rule


APPROVE_CASES = [
    pytest.param(DRAFT, True, 3, None, False, "approve", id="approve at the seen version"),
    pytest.param(DRAFT, True, None, None, False, "approve", id="CLI: no version"),
    pytest.param(DRAFT, False, 3, None, False, Refusal.NOT_APPROVER, id="not an approver"),
    pytest.param(DRAFT, True, 2, None, False, Refusal.STALE, id="changed since seen"),
    pytest.param(
        replace(DRAFT, approved_by="U1"), True, 3, None, False, Refusal.ALREADY_APPROVED, id="twice"
    ),
    pytest.param(replace(DRAFT, state=S.FINALIZED), True, 3, None, False, Refusal.NOT_A_DRAFT),
    pytest.param(replace(DRAFT, lines=()), True, 3, None, False, Refusal.EMPTY, id="empty"),
    pytest.param(
        replace(DRAFT, lines=(line(1, state=EntryState.VOIDED),)),
        True,
        3,
        None,
        False,
        Refusal.EMPTY,
        id="only voided lines",
    ),
    pytest.param(None, True, 3, None, False, Refusal.NOT_A_DRAFT, id="no such invoice"),
    pytest.param(DRAFT, True, 3, "1000", False, Refusal.BELOW_MINIMUM, id="below minimum"),
    pytest.param(DRAFT, True, 3, "1000", True, "forced", id="below minimum, forced"),
    pytest.param(DRAFT, True, 3, "1", False, "approve", id="above minimum"),
]


@pytest.mark.parametrize(("draft", "allowed", "version", "floor", "force", "want"), APPROVE_CASES)
def test_approve(
    draft: DraftView | None,
    allowed: bool,
    version: int | None,
    floor: str | None,
    force: bool,
    want: object,
) -> None:
    rule = minimum(floor) if floor else None
    got = decide_approve(
        draft,
        "U1",
        is_approver=allowed,
        version=version,
        charge_rule=rule,
        force=force,  # type: ignore[arg-type]
    )
    if isinstance(want, Refusal):
        assert isinstance(got, Refused) and got.refusal is want
        return
    assert got == Approve(7, "U1", 32000, "EUR", (1, 2), forced_below_minimum=want == "forced")


REJECT_CASES = [
    pytest.param(DRAFT, "wrong client", True, 3, "reject", id="reject"),
    pytest.param(DRAFT, "   ", True, 3, Refusal.NO_REASON, id="a reason is required"),
    pytest.param(DRAFT, "x", False, 3, Refusal.NOT_APPROVER, id="not an approver"),
    pytest.param(DRAFT, "x", True, 1, Refusal.STALE, id="stale"),
    pytest.param(replace(DRAFT, approved_by="U2"), "x", True, 3, Refusal.ALREADY_APPROVED),
]


@pytest.mark.parametrize(("draft", "reason", "allowed", "version", "want"), REJECT_CASES)
def test_reject(draft: DraftView, reason: str, allowed: bool, version: int, want: object) -> None:
    got = decide_reject(draft, "U1", reason, is_approver=allowed, version=version)
    if isinstance(want, Refusal):
        assert isinstance(got, Refused) and got.refusal is want
        return
    assert got == Reject(7, "U1", reason, (Release(1, "ii_1"), Release(2, None)))


def adjust(*changes: LineChange, draft: DraftView = DRAFT) -> Adjust | Refused:
    return decide_adjust(
        draft, "U1", changes, is_approver=True, version=3, time_seqs={"gh:web:1": [1, 2]}
    )


def test_adjust_lowering_hours_writes_off_the_rest_at_the_next_seq() -> None:
    got = adjust(LineChange(1, hours=Decimal("1.25")))
    assert isinstance(got, Adjust)
    (off,) = got.write_offs
    assert (off.from_entry_id, off.seq, off.hours, off.amount) == (
        1,
        3,
        Decimal("0.75"),
        Money(Decimal("75.00"), "EUR"),
    )
    assert off.reason == "written off by U1"
    (price,) = got.repriced
    assert (price.hours, price.amount, price.what) == (
        Decimal("1.25"),
        Money(Decimal("125.00"), "EUR"),
        ("hours",),
    )
    assert got.changed_entry_ids == (1,)


def test_adjust_two_write_offs_on_one_item_take_distinct_seqs() -> None:
    got = adjust(LineChange(1, hours=Decimal(1)), LineChange(2, hours=Decimal(1)))
    assert isinstance(got, Adjust)
    assert [w.seq for w in got.write_offs] == [3, 4]


ADJUST_CASES = [
    pytest.param(LineChange(1, exclude=True), "excluded", id="exclude"),
    pytest.param(LineChange(1, hours=Decimal(0)), "excluded", id="zero hours is excluding"),
    pytest.param(LineChange(2, rate=Decimal(90)), "repriced", id="new rate"),
    pytest.param(LineChange(2, description="Login page"), "repriced", id="new text"),
    pytest.param(LineChange(1, hours=Decimal(3)), (1, "hours"), id="raising hours is refused"),
    pytest.param(LineChange(9, exclude=True), (9, "description"), id="not on the draft"),
    pytest.param(LineChange(1, hours=Decimal(2)), (1, "description"), id="nothing differs"),
]


@pytest.mark.parametrize(("change", "want"), ADJUST_CASES)
def test_adjust(change: LineChange, want: object) -> None:
    got = adjust(change)
    if isinstance(want, tuple):
        assert isinstance(got, Refused) and got.refusal is Refusal.INVALID
        assert got.errors is not None and want in got.errors
        return
    assert isinstance(got, Adjust)
    assert bool(getattr(got, str(want))) and got.changed_entry_ids == (change.entry_id,)


def test_adjust_refuses_milestone_hours_and_lines_without_a_rate() -> None:
    milestone = line(5, rate=None, kind=EntryKind.MILESTONE)
    draft = replace(DRAFT, lines=(*DRAFT.lines, milestone))
    got = adjust(LineChange(5, hours=Decimal(1)), draft=draft)
    assert isinstance(got, Refused) and got.errors == {
        (5, "description"): "Only time lines have hours and a rate to change."
    }
    got = adjust(LineChange(5, description="Milestone 1"), draft=draft)
    assert isinstance(got, Adjust) and got.repriced[0].amount == Money(Decimal(500), "EUR")


def test_an_approved_draft_is_immutable() -> None:
    approved = replace(DRAFT, approved_by="U2")
    assert isinstance(adjust(LineChange(1, exclude=True), draft=approved), Refused)
    assert isinstance(decide_reject(approved, "U1", "x", is_approver=True), Refused)
    with pytest.raises(ValueError):
        write_off(line(1), Decimal(3), "U1", [1])


PLACE_CASES = [
    pytest.param(None, (1, 2), None, (None, None, (1, 2), 0), id="no draft yet: open one"),
    pytest.param(
        OpenDraft(7, S.DRAFT, False, 3), (1, 2), None, (7, None, (1, 2), 0), id="open draft"
    ),
    pytest.param(
        OpenDraft(7, S.DRAFT, True, 3),
        (1, 2),
        None,
        (None, 7, (1, 2), 0),
        id="approved: new lines go to the next draft",
    ),
    pytest.param(
        OpenDraft(7, S.FINALIZED, True, 3), (1,), None, (None, 7, (1,), 0), id="finalized"
    ),
    pytest.param(
        OpenDraft(7, S.DRAFT, False, 249), (1, 2, 3), 250, (7, None, (1,), 2), id="250 per invoice"
    ),
    pytest.param(
        OpenDraft(7, S.DRAFT, True, 250), (1, 2), 250, (None, 7, (1, 2), 0), id="next draft room"
    ),
]


@pytest.mark.parametrize(("slot", "ready", "cap", "want"), PLACE_CASES)
def test_place_ready_lines(
    slot: OpenDraft | None, ready: tuple[int, ...], cap: int | None, want: tuple[object, ...]
) -> None:
    plan = place_ready_lines(slot, ready, cap)
    assert (plan.invoice_id, plan.close_slot_of, plan.add, plan.left) == want


# --- the finalize guard --------------------------------------------------------------------

OK = ApprovalView("U1", 32000)
GUARD_CASES = [
    pytest.param(None, True, 0, "draft", 32000, None, FinalizeStep.REFUSE, "no_approval"),
    pytest.param(OK, False, 0, None, None, None, FinalizeStep.WAIT, "", id="no Stripe draft"),
    pytest.param(OK, True, 2, None, None, None, FinalizeStep.WAIT, "", id="lines pending"),
    pytest.param(OK, True, 0, None, None, None, FinalizeStep.CHECK_STRIPE, "", id="read Stripe"),
    pytest.param(OK, True, 0, "draft", 32000, None, FinalizeStep.FINALIZE, "", id="finalize"),
    pytest.param(OK, True, 0, "draft", 31000, None, FinalizeStep.REFUSE, "total_changed"),
    pytest.param(OK, True, 0, "open", 32000, None, FinalizeStep.RECORD, "", id="already open"),
    pytest.param(OK, True, 0, "draft", 32000, "1000", FinalizeStep.REFUSE, "below_minimum"),
    pytest.param(
        replace(OK, forced_below_minimum=True),
        True,
        0,
        "draft",
        32000,
        "1000",
        FinalizeStep.FINALIZE,
        "",
        id="forced below minimum",
    ),
]


@pytest.mark.parametrize(
    ("approval", "on_stripe", "pending", "status", "total", "floor", "step", "code"), GUARD_CASES
)
def test_finalize_guard(
    approval: ApprovalView | None,
    on_stripe: bool,
    pending: int,
    status: str | None,
    total: int | None,
    floor: str | None,
    step: FinalizeStep,
    code: str,
) -> None:
    got = finalize_guard(
        approval,
        has_stripe_invoice=on_stripe,
        line_ops_pending=pending,
        stripe_status=status,
        stripe_total_minor=total,
        currency="EUR",
        invoice_id=7,
        charge_rule=minimum(floor) if floor else None,  # type: ignore[arg-type]
    )
    assert (got.step, got.code) == (step, code)
