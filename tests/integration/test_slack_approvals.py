"""Slack approvals end to end: the ASGI app with genuinely signed interactions, a fake
Slack Web API over real HTTP (the client's base_url points at it) and the fake Stripe.

Invariant checked after every flow: no invoice is finalized without an approval row,
and each approval finalizes exactly one invoice.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select

from connectors.slack import ACTION_ADJUST, ACTION_APPROVE, ACTION_REJECT, ack_for
from connectors.slack.messages import decode_ref
from connectors.slack.verify import decision_from_payload
from sync.approvals import ApprovalDesk
from sync.composition import Services
from sync.intake import drain_inbox
from sync.ledger import schema as t
from sync.web.app import create_app
from tests.builders import snap
from tests.conftest import FixedClock
from tests.fakes.slack_server import (
    FakeSlack,
    serve_fake_slack,
    signed_headers,
    signed_interaction_request,
)
from tests.ledger_support import dump
from tests.slack_support import (
    CHANNEL,
    FAST,
    INTRUDER,
    SIGNING_SECRET,
    post_interaction,
    slack_settings,
    with_slack_desk,
)
from tests.stripe_support import (
    APPROVER,
    StripeWorld,
    drain,
    fake_stripe,
    open_services,
    world_settings,
)

GROUP = "S0FINANCE"
GROUP_MEMBER = "U0GROUP1"
MAX_BODY = 16 * 1024


@dataclass
class Kv:
    services: Services
    desk: ApprovalDesk
    app: FastAPI
    http: TestClient
    slack: FakeSlack
    stripe: StripeWorld
    clock: FixedClock
    ledger_url: str


@contextmanager
def running_kanvoice(
    ledger_url: str, clock: FixedClock, **overrides: dict[str, Any]
) -> Iterator[Kv]:
    fake = FakeSlack(usergroups={GROUP: [GROUP_MEMBER]})
    with fake_stripe({"acme": "eur", "globex": "usd"}) as world, serve_fake_slack(fake) as url:
        data = world_settings(world, ledger_url, **overrides)
        data["server"] = {"max_body_bytes": MAX_BODY}
        data["slack"] = slack_settings(url, approver_group=GROUP)
        with open_services(data, clock) as services:
            desk = with_slack_desk(services)
            app = create_app(services)
            yield Kv(services, desk, app, TestClient(app), fake, world, clock, ledger_url)


@pytest.fixture
def kv(ledger_url: str, clock: FixedClock) -> Iterator[Kv]:
    """On SQLite and on PostgreSQL: decisions that race on the ledger."""
    with running_kanvoice(ledger_url, clock) as world:
        yield world


@pytest.fixture
def kv_lite(sqlite_url: str, clock: FixedClock) -> Iterator[Kv]:
    """SQLite only: flows whose subject is the HTTP edge or Slack, not the database."""
    with running_kanvoice(sqlite_url, clock) as world:
        yield world


# ---- helpers ---------------------------------------------------------------------------


def ingest(kv: Kv) -> None:
    kv.services.engine.ingest(
        [
            # 2.1 h -> 2.25 h x 120 = 270.00; milestone 1500.00; 3 h x 120 = 360.00
            snap("Done", "2.1", 1, item_id="A1", board="acme-board"),
            snap(
                "Done",
                "9",
                1,
                item_id="A2",
                board="acme-board",
                labels=("fixed-price",),
                milestone="1500",
            ),
            snap("Done", "3", 1, item_id="A3", board="acme-board"),
            # USD 99.99/h: 149.99 + 25.00
            snap("Done", "1.5", 1, item_id="G1", board="globex-board"),
            snap("Done", "0.25", 1, item_id="G2", board="globex-board"),
        ]
    )


def rows(kv: Kv, table: Any) -> list[Any]:
    with kv.services.ledger.engine.connect() as conn:
        return list(conn.execute(select(table).order_by(table.c.id)).all())


def invoice(kv: Kv, invoice_id: int) -> Any:
    return next(r for r in rows(kv, t.invoices) if r.id == invoice_id)


def entries_by_item(kv: Kv) -> dict[str, list[Any]]:
    with kv.services.ledger.engine.connect() as conn:
        found = conn.execute(
            select(t.entries, t.items.c.external_id)
            .join(t.items, t.items.c.id == t.entries.c.item_id)
            .order_by(t.entries.c.id)
        ).all()
    result: dict[str, list[Any]] = {}
    for row in found:
        result.setdefault(row.external_id, []).append(row)
    return result


def apply_inbox(kv: Kv) -> int:
    """What the leader's inbox worker does with stored decisions, now."""
    return asyncio.run(drain_inbox(kv.services, everything=True, desk=kv.desk)).deliveries


def send(
    kv: Kv, payload: dict[str, Any], *, secret: str = SIGNING_SECRET, at: int | None = None
) -> Any:
    """Post the interaction; once it is answered 200, the inbox worker runs (approve and
    reject are stored and answered, then applied by the worker)."""
    response = post_interaction(kv.http, payload, secret=secret, at=at)
    if response.status_code == 200:
        apply_inbox(kv)
    return response


def send_raw(kv: Kv, body: bytes, content_type: str = "application/x-www-form-urlencoded") -> Any:
    headers = signed_headers(SIGNING_SECRET, body, int(time.time()), content_type)
    return kv.http.post("/slack/interactions", content=body, headers=headers)


def drain_slack(kv: Kv) -> Any:
    return asyncio.run(kv.desk.drain_slack())


def draft_and_post(kv: Kv, client: str = "acme") -> tuple[int, str, str]:
    """The client's draft on Stripe and its approval message in Slack."""
    invoice_id = kv.services.invoicing.create_or_refresh_draft(client).invoice_id
    assert drain(kv.services).errors == []
    assert kv.desk.request_approval(invoice_id)
    assert drain_slack(kv).done == 1
    row = invoice(kv, invoice_id)
    assert row.slack_channel == CHANNEL and row.slack_ts
    return invoice_id, row.slack_channel, row.slack_ts


def ephemerals_for(kv: Kv, user: str) -> list[str]:
    return [str(e["text"]) for e in kv.slack.ephemerals if e["user"] == user]


def finalize_requests(kv: Kv) -> list[Any]:
    return [
        r
        for r in kv.stripe.fake.requests
        if r.method == "POST" and r.path.endswith("/finalize") and not r.replayed
    ]


def stripe_invoice(kv: Kv, invoice_id: int) -> dict[str, Any]:
    sid = invoice(kv, invoice_id).stripe_invoice_id
    found = kv.stripe.fake.get_object(sid)
    assert found is not None
    return found


def assert_invariant(kv: Kv, *, settled: bool = True) -> None:
    """No invoice finalized without an approval row; each approval finalizes one invoice."""
    approvals = {r.invoice_id: r for r in rows(kv, t.approvals)}
    by_stripe_id = {r.stripe_invoice_id: r for r in rows(kv, t.invoices) if r.stripe_invoice_id}
    finalized = Counter(r.path.split("/")[3] for r in finalize_requests(kv) if r.status == 200)
    for stripe_id, count in finalized.items():
        assert count == 1, f"{stripe_id} finalized {count} times"
        assert by_stripe_id[stripe_id].id in approvals, f"{stripe_id} finalized unapproved"
    for remote in kv.stripe.fake.list_objects("invoice"):
        if remote["status"] != "draft":
            assert by_stripe_id[remote["id"]].id in approvals
    if settled:
        finalized_ids = {by_stripe_id[sid].id for sid in finalized}
        assert finalized_ids == set(approvals)
        for invoice_id in approvals:
            assert stripe_invoice(kv, invoice_id)["status"] == "open"


# ---- approve ---------------------------------------------------------------------------


def test_approve_updates_the_message_and_finalizes_once(kv: Kv) -> None:
    ingest(kv)
    invoice_id, channel, ts = draft_and_post(kv)
    message = kv.slack.message(channel, ts)
    shown = message.all_text()
    assert "Acme" in shown and "2,130.00 EUR" in shown and "Ticket A1" in shown
    assert "https://dashboard.stripe.com/test/invoices/in_" in shown
    assert set(message.action_values()) == {ACTION_APPROVE, ACTION_ADJUST, ACTION_REJECT}
    assert (
        decode_ref(message.action_values()[ACTION_APPROVE]).version
        == invoice(kv, invoice_id).version
    )
    # Requesting again for the same version posts nothing new.
    assert not kv.desk.request_approval(invoice_id)

    started = time.monotonic()
    response = send(kv, kv.slack.click(channel, ts, ACTION_APPROVE, APPROVER))
    assert response.status_code == 200 and response.content == b""
    assert time.monotonic() - started < 3
    [approval] = rows(kv, t.approvals)
    assert (approval.invoice_id, approval.approver, approval.channel) == (
        invoice_id,
        APPROVER,
        "slack",
    )
    assert approval.total_minor == 213000
    decided = kv.slack.message(channel, ts)
    assert "Approved" in decided.all_text() and f"<@{APPROVER}>" in decided.all_text()
    assert "<!date^" in decided.all_text()  # when, in the reader's time zone
    assert decided.action_values() == {}
    assert stripe_invoice(kv, invoice_id)["status"] == "draft"  # Stripe only via the outbox

    assert drain(kv.services).errors == []
    assert stripe_invoice(kv, invoice_id)["status"] == "open"
    assert len(finalize_requests(kv)) == 1
    assert len(kv.slack.channel_messages(CHANNEL)) == 1
    assert_invariant(kv)


def test_double_approve_is_refused_with_an_ephemeral(kv: Kv) -> None:
    ingest(kv)
    invoice_id, channel, ts = draft_and_post(kv)
    # A group member (not on the list) clicks first; the listed approver clicks too.
    first = kv.slack.click(channel, ts, ACTION_APPROVE, GROUP_MEMBER)
    second = kv.slack.click(channel, ts, ACTION_APPROVE, APPROVER)
    assert send(kv, first).status_code == 200
    updates = len(kv.slack.calls_to("chat.update"))
    assert send(kv, second).status_code == 200
    assert [r.approver for r in rows(kv, t.approvals)] == [GROUP_MEMBER]
    [notice] = ephemerals_for(kv, APPROVER)
    assert "already approved" in notice and GROUP_MEMBER in notice
    assert len(kv.slack.calls_to("chat.update")) == updates  # message unchanged
    drain(kv.services)
    drain(kv.services)
    assert len(finalize_requests(kv)) == 1
    assert stripe_invoice(kv, invoice_id)["status"] == "open"
    assert_invariant(kv)


def test_concurrent_approvals_record_one_and_finalize_once(
    kv: Kv, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest(kv)
    invoice_id, channel, ts = draft_and_post(kv)
    clicks = [
        kv.slack.click(channel, ts, ACTION_APPROVE, APPROVER),
        kv.slack.click(channel, ts, ACTION_APPROVE, GROUP_MEMBER),
    ]
    # Both requests are inside Invoicing.approve at the same moment.
    barrier = threading.Barrier(2, timeout=5)
    approve = kv.services.invoicing.approve

    def approve_together(*args: Any, **kwargs: Any) -> Any:
        barrier.wait()
        return approve(*args, **kwargs)

    monkeypatch.setattr(kv.services.invoicing, "approve", approve_together)

    # Through HTTP both clicks are stored and answered at once; the worker applies them
    # one after the other. The race is between the worker and another process (CLI,
    # dashboard): two decisions inside Invoicing.approve at the same moment.
    async def at_once() -> list[Any]:
        decisions = [decision_from_payload(p) for p in clicks]
        return list(await asyncio.gather(*(kv.desk.decide(d) for d in decisions if d)))

    replies = asyncio.run(at_once())
    assert sorted(r.outcome for r in replies)[0] != sorted(r.outcome for r in replies)[1]
    for reply in replies:
        asyncio.run(kv.desk.follow_up(reply))
    [approval] = rows(kv, t.approvals)
    loser = GROUP_MEMBER if approval.approver == APPROVER else APPROVER
    assert any("already approved" in n for n in ephemerals_for(kv, loser))
    assert f"<@{approval.approver}>" in kv.slack.message(channel, ts).all_text()
    assert [a.action for a in rows(kv, t.audit_log)].count("approved") == 1
    drain(kv.services)
    drain(kv.services)
    assert len(finalize_requests(kv)) == 1
    assert stripe_invoice(kv, invoice_id)["status"] == "open"
    assert_invariant(kv)


# ---- authorization ---------------------------------------------------------------------


def test_someone_else_is_refused_and_audited_and_nothing_changes(kv_lite: Kv) -> None:
    kv = kv_lite
    ingest(kv)
    invoice_id, channel, ts = draft_and_post(kv)
    before = dump(kv.ledger_url)
    message_before = kv.slack.message(channel, ts).blocks
    for action in (ACTION_APPROVE, ACTION_ADJUST, ACTION_REJECT):
        response = send(kv, kv.slack.click(channel, ts, action, INTRUDER))
        assert response.status_code == 200
    after = dump(kv.ledger_url)
    # Only the refusals' audit rows, and the approve click's inbox row (kept, bodiless,
    # for dedupe: the approver check runs in the worker, it may ask Slack).
    kept = ("audit_log", "inbox")
    assert {k: v for k, v in after.items() if k not in kept} == {
        k: v for k, v in before.items() if k not in kept
    }
    refused = [a for a in rows(kv, t.audit_log) if a.actor == INTRUDER]
    assert [a.action for a in refused] == ["approve_refused", "adjust_refused", "reject_refused"]
    assert all(a.subject == f"invoice:{invoice_id}" for a in refused)
    notices = ephemerals_for(kv, INTRUDER)
    assert len(notices) == 3 and all("only finance approvers" in n for n in notices)
    assert kv.slack.views == {}  # no modal for them
    assert kv.slack.message(channel, ts).blocks == message_before
    assert kv.slack.message(channel, ts).history == []
    drain(kv.services)
    assert finalize_requests(kv) == []
    assert_invariant(kv)


# ---- reject ----------------------------------------------------------------------------


def test_reject_asks_a_reason_and_returns_the_lines_to_ready(kv: Kv) -> None:
    ingest(kv)
    invoice_id, channel, ts = draft_and_post(kv)
    assert send(kv, kv.slack.click(channel, ts, ACTION_REJECT, APPROVER)).status_code == 200
    [view_id] = list(kv.slack.views)
    assert kv.slack.views[view_id]["callback_id"] == "kanvoice_reject"
    assert {e.state for e in rows(kv, t.entries) if e.client == "acme"} == {"drafted"}

    blank = send(kv, kv.slack.submit_view(view_id, {"reason": "  "}, APPROVER))
    assert blank.status_code == 200 and blank.json()["response_action"] == "errors"
    assert "reason" in blank.json()["errors"]

    done = send(kv, kv.slack.submit_view(view_id, {"reason": "wrong rate for A3"}, APPROVER))
    assert done.status_code == 200 and done.content == b""
    acme = [e for e in rows(kv, t.entries) if e.client == "acme"]
    assert {e.state for e in acme} == {"ready"} and {e.invoice_id for e in acme} == {None}
    assert any("wrong rate for A3" in ev.reason for ev in rows(kv, t.entry_events))
    [rejected] = [a for a in rows(kv, t.audit_log) if a.action == "rejected"]
    assert rejected.actor == APPROVER and rejected.detail["reason"] == "wrong rate for A3"
    shown = kv.slack.message(channel, ts).all_text()
    assert "Rejected" in shown and "wrong rate for A3" in shown
    assert kv.slack.message(channel, ts).action_values() == {}

    drain(kv.services)
    remote = stripe_invoice(kv, invoice_id)
    assert remote["status"] == "draft" and remote["total"] == 0
    assert invoice(kv, invoice_id).state == "draft" and rows(kv, t.approvals) == []
    # A click on the rejected message (a stale client) changes nothing.
    again = send(kv, kv.slack.submit_view(view_id, {"reason": "twice"}, APPROVER))
    assert again.status_code == 200
    assert "already rejected" in ephemerals_for(kv, APPROVER)[-1]
    assert finalize_requests(kv) == []
    assert_invariant(kv)


# ---- adjust ----------------------------------------------------------------------------


def test_adjust_via_modal_changes_ledger_and_draft_and_reposts(kv: Kv) -> None:
    ingest(kv)
    invoice_id, channel, ts = draft_and_post(kv)
    old_version = invoice(kv, invoice_id).version
    items = entries_by_item(kv)
    a1, a2, a3 = items["A1"][0].id, items["A2"][0].id, items["A3"][0].id
    stale_click = kv.slack.click(channel, ts, ACTION_APPROVE, APPROVER)

    assert send(kv, kv.slack.click(channel, ts, ACTION_ADJUST, APPROVER)).status_code == 200
    [view_id] = list(kv.slack.views)
    assert kv.slack.views[view_id]["callback_id"] == "kanvoice_adjust"

    def submit(values: dict[str, Any]) -> Any:
        return send(kv, kv.slack.submit_view(view_id, values, APPROVER))

    before = dump(kv.ledger_url)
    bad = submit({f"line:{a1}:hours": "1,5"})
    assert bad.status_code == 200 and f"line:{a1}:hours" in bad.json()["errors"]
    more = submit({f"line:{a1}:hours": "5"})
    assert "lowered" in more.json()["errors"][f"line:{a1}:hours"]
    assert dump(kv.ledger_url) == before

    applied = submit(
        {
            f"line:{a1}:hours": "1.5",
            f"line:{a3}:exclude": True,
            f"line:{a2}:description": "Launch milestone",
        }
    )
    assert applied.status_code == 200 and applied.content == b""
    items = entries_by_item(kv)
    line = items["A1"][0]
    assert (line.state, line.hours, line.amount) == ("drafted", Decimal("1.5"), Decimal(180))
    [write_off] = items["A1"][1:]
    assert (write_off.state, write_off.kind, write_off.hours, write_off.invoice_id) == (
        "voided",
        "time",
        Decimal("0.75"),
        None,
    )
    assert write_off.description == f"written off by {APPROVER}"
    excluded = items["A3"][0]
    assert (excluded.state, excluded.invoice_id) == ("voided", None)
    assert items["A2"][0].description == "Launch milestone"
    reasons = {(ev.entry_id, ev.reason) for ev in rows(kv, t.entry_events)}
    assert (a3, f"excluded by {APPROVER}") in reasons
    ops = {(o.operation, o.entry_id) for o in rows(kv, t.outbox) if o.status == "pending"}
    assert {("update_invoice_item", a1), ("update_invoice_item", a2)} <= ops
    assert ("delete_invoice_item", a3) in ops
    new_version = invoice(kv, invoice_id).version
    assert new_version > old_version
    assert [a.action for a in rows(kv, t.audit_log)].count("adjusted") == 1

    # The draft is posted again; the old message says it was adjusted.
    messages = kv.slack.channel_messages(CHANNEL)
    assert len(messages) == 2
    old, new = messages
    assert old.ts == ts and "Adjusted" in old.all_text() and old.action_values() == {}
    assert decode_ref(new.action_values()[ACTION_APPROVE]).version == new_version
    assert "1,680.00 EUR" in new.all_text()
    assert invoice(kv, invoice_id).slack_ts == new.ts

    # Stripe follows after the drain.
    assert drain(kv.services).errors == []
    remote = stripe_invoice(kv, invoice_id)
    assert remote["total"] == 168000
    lines = [
        i for i in kv.stripe.fake.list_objects("invoiceitem") if i.get("invoice") == remote["id"]
    ]
    assert sorted(i["amount"] for i in lines) == [18000, 150000]
    assert any("Launch milestone" in i["description"] for i in lines)

    # The board never bills the written-off or excluded hours again.
    kv.services.engine.ingest(
        [
            snap("Done", "2.1", 2, item_id="A1", board="acme-board"),
            snap("Done", "3", 2, item_id="A3", board="acme-board"),
        ]
    )
    assert [e for e in rows(kv, t.entries) if e.client == "acme" and e.state == "ready"] == []

    # Approving from the old message is refused as stale; nothing changes.
    history = len(kv.slack.message(channel, ts).history)
    assert send(kv, stale_click).status_code == 200
    assert rows(kv, t.approvals) == []
    assert "has changed since" in ephemerals_for(kv, APPROVER)[-1]
    assert len(kv.slack.message(channel, ts).history) == history

    # The new message approves the adjusted draft.
    assert send(kv, kv.slack.click(channel, new.ts, ACTION_APPROVE, APPROVER)).status_code == 200
    [approval] = rows(kv, t.approvals)
    assert approval.total_minor == 168000
    assert drain(kv.services).errors == []
    assert stripe_invoice(kv, invoice_id)["status"] == "open"
    assert_invariant(kv)


# ---- bad requests ----------------------------------------------------------------------


def test_forged_stale_and_malformed_requests_change_nothing(kv_lite: Kv) -> None:
    kv = kv_lite
    ingest(kv)
    _, channel, ts = draft_and_post(kv)
    click = kv.slack.click(channel, ts, ACTION_APPROVE, APPROVER)
    before = dump(kv.ledger_url)
    calls = len(kv.slack.calls)

    assert send(kv, click, secret="not-the-secret").status_code == 401
    headers, body = signed_interaction_request(SIGNING_SECRET, click, int(time.time()))
    tampered = body.replace(APPROVER.encode(), INTRUDER.encode())
    forged = kv.http.post("/slack/interactions", content=tampered, headers=headers)
    assert forged.status_code == 401
    unsigned = kv.http.post(
        "/slack/interactions",
        content=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert unsigned.status_code == 401
    assert send(kv, click, at=int(time.time()) - 301).status_code == 401
    assert send(kv, click, at=int(time.time()) + 301).status_code == 401

    assert send_raw(kv, b"payload=%7Bnot-json").status_code == 400
    assert (
        send_raw(kv, urlencode({"payload": json.dumps({"no": "type"})}).encode()).status_code == 400
    )
    broken = dict(click, actions=[dict(click["actions"][0], value="not a ref")])
    assert send(kv, broken).status_code == 400
    assert send_raw(kv, b"<xml/>", "text/xml").status_code == 400
    huge = send_raw(kv, b"payload=" + b"x" * (MAX_BODY + 1))
    assert huge.status_code == 413

    unknown = dict(click, actions=[dict(click["actions"][0], action_id="someone_elses_button")])
    response = send(kv, unknown)
    assert response.status_code == 200 and response.content == b""

    assert dump(kv.ledger_url) == before
    assert len(kv.slack.calls) == calls
    assert_invariant(kv)


# ---- Slack down ------------------------------------------------------------------------


def test_slack_rate_limited_or_down_retries_later_and_blocks_nothing(kv_lite: Kv) -> None:
    kv = kv_lite
    ingest(kv)
    invoice_id = kv.services.invoicing.create_or_refresh_draft("acme").invoice_id
    assert drain(kv.services).errors == []
    kv.slack.inject_fault(429, method="chat.postMessage", retry_after=120)
    assert kv.desk.request_approval(invoice_id)
    report = drain_slack(kv)
    assert (report.done, report.retried) == (0, 1)
    [op] = [o for o in rows(kv, t.outbox) if o.operation == "slack_post_draft"]
    assert op.status == "pending" and op.attempts == 1 and "429" in op.last_error
    not_before = op.not_before if op.not_before.tzinfo else op.not_before.replace(tzinfo=UTC)
    assert not_before >= kv.clock.now + timedelta(seconds=119)
    assert kv.slack.channel_messages(CHANNEL) == []
    assert drain_slack(kv).retried == 0  # not due yet: no call to Slack
    assert len(kv.slack.calls_to("chat.postMessage")) == 1

    # Ingest and Stripe carry on while Slack waits; nothing is finalized.
    kv.services.engine.ingest([snap("Done", "1", 1, item_id="A9", board="acme-board")])
    assert kv.services.invoicing.create_or_refresh_draft("acme").added == 1
    assert drain(kv.services).errors == []
    assert stripe_invoice(kv, invoice_id)["total"] == 225000

    # Slack answers 500 every time: retried with backoff, still pending.
    kv.clock.now += timedelta(minutes=3)
    kv.slack.inject_fault(500, method="chat.postMessage", times=1 + FAST.max_retries)
    report = drain_slack(kv)
    assert (report.done, report.retried) == (0, 1)
    [op] = [o for o in rows(kv, t.outbox) if o.operation == "slack_post_draft"]
    assert op.status == "pending" and op.attempts == 2

    kv.clock.now += timedelta(minutes=10)
    assert drain_slack(kv).done == 1
    [message] = kv.slack.channel_messages(CHANNEL)
    current = invoice(kv, invoice_id)
    assert current.slack_ts == message.ts
    assert decode_ref(message.action_values()[ACTION_APPROVE]).version == current.version
    assert "2,250.00 EUR" in message.all_text()
    assert drain_slack(kv).done == 0
    assert stripe_invoice(kv, invoice_id)["status"] == "draft"
    assert finalize_requests(kv) == []
    assert_invariant(kv)


# ---- Socket Mode -----------------------------------------------------------------------


@dataclass
class _Envelope:
    type: str
    envelope_id: str
    payload: dict[str, Any]


def test_socket_mode_shares_the_handler(kv_lite: Kv) -> None:
    kv = kv_lite
    ingest(kv)
    invoice_id, channel, ts = draft_and_post(kv)
    assert send(kv, kv.slack.click(channel, ts, ACTION_REJECT, APPROVER)).status_code == 200
    [view_id] = list(kv.slack.views)

    async def run() -> tuple[dict[str, Any], dict[str, Any]]:
        blank = kv.slack.submit_view(view_id, {"reason": ""}, APPROVER)
        invalid = await ack_for(_Envelope("interactive", "e1", blank), kv.desk.handle_payload)
        click = kv.slack.click(channel, ts, ACTION_APPROVE, APPROVER)
        ack = await ack_for(_Envelope("interactive", "e2", click), kv.desk.handle_payload)
        for _ in range(200):  # the message update follows the ack
            if kv.slack.message(channel, ts).history:
                break
            await asyncio.sleep(0.02)
        return invalid, ack

    invalid, ack = asyncio.run(run())
    assert invalid["payload"]["response_action"] == "errors"
    assert ack == {"envelope_id": "e2"}
    assert [r.approver for r in rows(kv, t.approvals)] == [APPROVER]
    assert "Approved" in kv.slack.message(channel, ts).all_text()
    drain(kv.services)
    assert stripe_invoice(kv, invoice_id)["status"] == "open"
    assert_invariant(kv)


# ---- the invariant over several drafts -------------------------------------------------


def test_every_finalized_invoice_has_exactly_one_approval(kv: Kv) -> None:
    ingest(kv)
    acme, acme_channel, acme_ts = draft_and_post(kv, "acme")
    globex, globex_channel, globex_ts = draft_and_post(kv, "globex")
    assert len(kv.slack.channel_messages(CHANNEL)) == 2

    # globex is rejected, drafted again, posted again and then approved; acme approved.
    send(kv, kv.slack.click(globex_channel, globex_ts, ACTION_REJECT, APPROVER))
    [view_id] = list(kv.slack.views)
    send(kv, kv.slack.submit_view(view_id, {"reason": "split per project"}, APPROVER))
    drain(kv.services)
    assert_invariant(kv, settled=False)
    assert kv.services.invoicing.create_or_refresh_draft("globex").invoice_id == globex
    assert drain(kv.services).errors == []
    assert kv.desk.request_approval(globex)
    assert drain_slack(kv).done == 1
    reposted = invoice(kv, globex).slack_ts
    assert reposted and reposted != globex_ts
    assert "Rejected" in kv.slack.message(globex_channel, globex_ts).all_text()

    send(kv, kv.slack.click(acme_channel, acme_ts, ACTION_APPROVE, APPROVER))
    send(kv, kv.slack.click(CHANNEL, reposted, ACTION_APPROVE, GROUP_MEMBER))
    assert_invariant(kv, settled=False)
    for _ in range(3):
        drain(kv.services)
    approvals = rows(kv, t.approvals)
    assert sorted(a.invoice_id for a in approvals) == sorted([acme, globex])
    assert len(finalize_requests(kv)) == 2
    assert stripe_invoice(kv, globex)["total"] == 17499
    assert_invariant(kv)


# ---- the ledger down; decisions from the CLI -------------------------------------------


def test_ledger_unavailable_answers_503_and_the_click_can_be_repeated(
    kv_lite: Kv, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    kv = kv_lite
    ingest(kv)
    _, channel, ts = draft_and_post(kv)
    click = kv.slack.click(channel, ts, ACTION_APPROVE, APPROVER)
    unreachable = create_engine(f"sqlite:///{tmp_path / 'missing-dir' / 'ledger.db'}")
    with monkeypatch.context() as patch:
        patch.setattr(kv.services.ledger, "engine", unreachable)
        patch.setattr(kv.services.ledger, "_intake_engine", unreachable)
        response = send(kv, click)
    assert response.status_code == 503
    assert rows(kv, t.approvals) == []
    assert send(kv, click).status_code == 200
    assert [a.approver for a in rows(kv, t.approvals)] == [APPROVER]
    drain(kv.services)
    assert_invariant(kv)


def test_a_decision_from_the_cli_marks_the_message_and_slack_cannot_decide_again(
    kv_lite: Kv,
) -> None:
    kv = kv_lite
    ingest(kv)
    invoice_id, channel, ts = draft_and_post(kv)
    click = kv.slack.click(channel, ts, ACTION_APPROVE, APPROVER)
    kv.services.invoicing.approve(invoice_id, APPROVER, "cli")  # `kanvoice approve 1 --as …`
    assert kv.desk.announce_decision(kv.desk.summary(invoice_id), "approved", "finance (CLI)")
    assert drain_slack(kv).done == 1
    shown = kv.slack.message(channel, ts).all_text()
    assert "Approved" in shown and "finance (CLI)" in shown
    assert send(kv, click).status_code == 200
    assert "already approved" in ephemerals_for(kv, APPROVER)[-1]
    assert [a.channel for a in rows(kv, t.approvals)] == ["cli"]
    drain(kv.services)
    drain(kv.services)
    assert len(finalize_requests(kv)) == 1
    assert_invariant(kv)


def test_a_draft_under_the_minimum_charge_says_why_and_can_be_forced(
    sqlite_url: str, clock: FixedClock
) -> None:
    from connectors.slack.messages import ACTION_APPROVE_FORCE

    with running_kanvoice(sqlite_url, clock, globex={"rate": "1"}) as kv:
        # 0.25 h x 1 USD = 0.25 USD, under Stripe's 0.50 USD minimum charge.
        kv.services.engine.ingest([snap("Done", "0.25", 1, item_id="G1", board="globex-board")])
        invoice_id, channel, ts = draft_and_post(kv, "globex")
        assert ACTION_APPROVE_FORCE in kv.slack.message(channel, ts).action_values()
        assert send(kv, kv.slack.click(channel, ts, ACTION_APPROVE, APPROVER)).status_code == 200
        [notice] = ephemerals_for(kv, APPROVER)
        assert "below Stripe's minimum charge of 0.50 USD" in notice
        assert "Approve below minimum" in notice
        assert rows(kv, t.approvals) == []
        drain(kv.services)
        assert stripe_invoice(kv, invoice_id)["status"] == "draft"
        assert {e.state for e in rows(kv, t.entries)} == {"drafted"}

        click = kv.slack.click(channel, ts, ACTION_APPROVE_FORCE, APPROVER)
        assert send(kv, click).status_code == 200
        [approval] = rows(kv, t.approvals)
        assert approval.total_minor == 25
        assert drain(kv.services).errors == []
        assert stripe_invoice(kv, invoice_id)["status"] == "paid"  # Stripe: to the balance
