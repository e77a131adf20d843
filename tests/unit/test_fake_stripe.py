"""The fake Stripe server, driven through the real stripe-python SDK over loopback HTTP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from tests.fakes.stripe_server import (
    FakeStripe,
    parse_stripe_form,
    run_fake_stripe_in_thread,
    serve_asgi_in_thread,
    sign_stripe_payload,
)

API_KEY = "sk_test_fake"
WEBHOOK_SECRET = "whsec_test_secret"
REPO_ROOT = Path(__file__).resolve().parents[2]

# stripe-python's HTTPXClient posts form data with httpx's deprecated ``data=<str>``.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[FakeStripe, str]]:
    fake = FakeStripe(API_KEY, WEBHOOK_SECRET, webhook_retry_delay=0.05)
    with run_fake_stripe_in_thread(fake) as base_url:
        yield fake, base_url
    fake.close()


@pytest.fixture
def fake(server: tuple[FakeStripe, str]) -> Iterator[FakeStripe]:
    fake = server[0]
    fake.reset()
    fake.webhook_url = None
    yield fake
    fake.reset()
    fake.webhook_url = None


@pytest.fixture
def base_url(server: tuple[FakeStripe, str]) -> str:
    return server[1]


_OPEN_CLIENTS: list[stripe.HTTPXClient] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    """Each test's SDK clients are closed after it: a connection left to the garbage
    collector warns (an error here) in whichever later test collects it."""
    yield
    while _OPEN_CLIENTS:
        _OPEN_CLIENTS.pop().close()  # type: ignore[no-untyped-call]


def make_client(
    base_url: str, *, retries: int = 0, timeout: float = 10.0, api_key: str = API_KEY
) -> stripe.StripeClient:
    http = stripe.HTTPXClient(timeout=timeout, allow_sync_methods=True)
    _OPEN_CLIENTS.append(http)
    return stripe.StripeClient(
        api_key,
        base_addresses={"api": base_url},
        http_client=http,
        max_network_retries=retries,
    )


@pytest.fixture
def client(fake: FakeStripe, base_url: str) -> stripe.StripeClient:
    return make_client(base_url)


def new_customer(
    client: stripe.StripeClient, options: dict[str, str] | None = None, **params: Any
) -> stripe.Customer:
    return client.v1.customers.create(
        params={"name": "ACME GmbH", **params},
        options=options or {},  # type: ignore[arg-type]
    )


def new_draft(
    client: stripe.StripeClient, customer: str, currency: str = "eur", **params: Any
) -> stripe.Invoice:
    return client.v1.invoices.create(
        params={
            "customer": customer,
            "auto_advance": False,
            "collection_method": "send_invoice",
            "days_until_due": 30,
            "currency": currency,
            **params,
        }
    )


def replayed(obj: stripe.StripeObject) -> bool:
    response = obj.last_response
    assert response is not None
    return response.headers.get("Idempotent-Replayed") == "true"


# ----------------------------------------------------------------------------- flows


def test_draft_items_totals_finalize_pay_in_eur(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    customer = new_customer(client, email="billing@acme.test")
    vat = client.v1.tax_rates.create(
        params={"display_name": "VAT", "percentage": "19", "inclusive": False}
    )
    invoice = new_draft(client, customer.id, metadata={"period": "2025-01"})
    assert (invoice.status, invoice.auto_advance, invoice.total) == ("draft", False, 0)
    assert invoice.automatically_finalizes_at is None and invoice.number is None

    hours = client.v1.invoice_items.create(
        params={
            "customer": customer.id,
            "invoice": invoice.id,
            "description": "KAN-1 Login page (3 h)",
            "quantity": 3,
            "unit_amount_decimal": Decimal("12550"),
            "period": {"start": 1735689600, "end": 1738367999},
            "metadata": {"entry_id": "e-1", "item": "KAN-1", "board": "web"},
            "tax_rates": [vat.id],
        }
    )
    fixed = client.v1.invoice_items.create(
        params={"customer": customer.id, "invoice": invoice.id, "amount": 1999}
    )
    assert hours.amount == 37650 and hours.pricing.unit_amount_decimal == Decimal("12550")
    assert hours.metadata["entry_id"] == "e-1" and hours.period.start == 1735689600
    assert hours.tax_rates[0].id == vat.id and fixed.quantity == 1

    invoice = client.v1.invoices.retrieve(invoice.id)
    assert [line.amount for line in invoice.lines.data] == [37650, 1999]
    assert invoice.lines.data[0].parent.invoice_item_details.invoice_item == hours.id
    assert invoice.lines.data[0].metadata["entry_id"] == "e-1"
    assert invoice.subtotal == 39649
    assert invoice.total_taxes[0].amount == 7154  # 19 % of 376.50, rounded half up
    assert (invoice.total, invoice.amount_due, invoice.amount_remaining) == (46803, 46803, 46803)

    invoice = client.v1.invoices.finalize_invoice(invoice.id)
    assert invoice.status == "open"
    assert invoice.number == f"{customer.invoice_prefix}-0001"
    assert invoice.status_transitions.finalized_at is not None
    assert invoice.hosted_invoice_url and invoice.due_date == invoice.created + 30 * 86400
    invoice = client.v1.invoices.send_invoice(invoice.id)
    invoice = client.v1.invoices.pay(invoice.id, params={"paid_out_of_band": True})
    assert (invoice.status, invoice.amount_paid, invoice.amount_remaining) == ("paid", 46803, 0)
    assert invoice.status_transitions.paid_at is not None
    assert httpx.get(invoice.hosted_invoice_url).status_code == 200

    types = [e.type for e in client.v1.events.list(params={"limit": 100}).data]
    for expected in (
        "invoice.created",
        "invoiceitem.created",
        "invoice.finalized",
        "invoice.sent",
        "invoice.paid",
    ):
        assert expected in types
    assert fake.created["invoice"] == 1 and fake.created["invoiceitem"] == 2


def test_zero_decimal_currency_totals_in_jpy(client: stripe.StripeClient) -> None:
    customer = new_customer(client)
    invoice = new_draft(client, customer.id, currency="jpy")
    client.v1.invoice_items.create(
        params={"invoice": invoice.id, "quantity": 3, "unit_amount_decimal": "12000"}
    )
    third = client.v1.invoice_items.create(
        params={
            "invoice": invoice.id,
            "quantity_decimal": Decimal("3"),
            "unit_amount_decimal": "8333.3333",
        }
    )
    assert third.amount == 25000 and third.currency == "jpy"
    invoice = client.v1.invoices.finalize_invoice(invoice.id)
    assert (invoice.currency, invoice.subtotal, invoice.total) == ("jpy", 61000, 61000)
    invoice = client.v1.invoices.pay(invoice.id)
    assert invoice.status == "paid" and invoice.amount_paid == 61000
    assert client.v1.customers.retrieve(customer.id).currency == "jpy"


async def test_async_sdk_calls(fake: FakeStripe, base_url: str) -> None:
    http = stripe.HTTPXClient()  # async only
    client = stripe.StripeClient(
        API_KEY, base_addresses={"api": base_url}, http_client=http, max_network_retries=0
    )
    try:
        customer = await client.v1.customers.create_async(params={"name": "Async Ltd"})
        invoice = await client.v1.invoices.create_async(
            params={"customer": customer.id, "auto_advance": False, "currency": "eur"}
        )
        item = await client.v1.invoice_items.create_async(
            params={"invoice": invoice.id, "amount": 5000, "metadata": {"entry_id": "a-1"}},
            options={"idempotency_key": "entry-a-1"},
        )
        again = await client.v1.invoice_items.create_async(
            params={"invoice": invoice.id, "amount": 5000, "metadata": {"entry_id": "a-1"}},
            options={"idempotency_key": "entry-a-1"},
        )
        assert again.id == item.id and replayed(again)
        finalized = await client.v1.invoices.finalize_invoice_async(invoice.id)
        assert finalized.status == "open" and finalized.total == 5000
    finally:
        await http.close_async()
    assert fake.created["invoiceitem"] == 1


def test_lists_filter_and_paginate(client: stripe.StripeClient) -> None:
    customer = new_customer(client)
    other = new_customer(client, name="Other")
    invoice = new_draft(client, customer.id)
    ids = [
        client.v1.invoice_items.create(params={"invoice": invoice.id, "amount": n}).id
        for n in (100, 200, 300)
    ]
    new_draft(client, other.id)
    page = client.v1.invoice_items.list(params={"invoice": invoice.id, "limit": 2})
    assert page.has_more and [i.id for i in page.data] == ids[::-1][:2]  # newest first
    rest = client.v1.invoice_items.list(
        params={"invoice": invoice.id, "limit": 2, "starting_after": page.data[-1].id}
    )
    assert not rest.has_more and [i.id for i in rest.data] == [ids[0]]
    all_ids = [i.id for i in client.v1.invoice_items.list(params={"limit": 1}).auto_paging_iter()]
    assert sorted(all_ids) == sorted(ids)
    drafts = client.v1.invoices.list(params={"customer": customer.id, "status": "draft"})
    assert [i.id for i in drafts.data] == [invoice.id]
    assert client.v1.invoices.list(params={"status": "paid"}).data == []
    found = client.v1.invoices.search(params={"query": f"customer:'{other.id}'"})
    assert len(found.data) == 1 and found.data[0].customer == other.id


# ----------------------------------------------------------------------------- idempotency


def test_idempotent_replay_returns_the_same_object_and_creates_nothing(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    customer = new_customer(client)
    invoice = new_draft(client, customer.id)
    params = {"invoice": invoice.id, "amount": 4200, "metadata": {"entry_id": "e-42"}}
    first = client.v1.invoice_items.create(params=params, options={"idempotency_key": "ii-e-42"})
    events_before = len(fake.events)
    second = client.v1.invoice_items.create(params=params, options={"idempotency_key": "ii-e-42"})
    assert second.id == first.id and second.to_dict() == first.to_dict()
    assert replayed(second) and not replayed(first)
    assert fake.created["invoiceitem"] == 1 and len(fake.events) == events_before
    assert client.v1.invoices.retrieve(invoice.id).total == 4200
    assert [r.replayed for r in fake.requests if r.idempotency_key == "ii-e-42"] == [False, True]


def test_errors_are_replayed_too(client: stripe.StripeClient) -> None:
    invoice = new_draft(client, new_customer(client).id)
    client.v1.invoices.finalize_invoice(invoice.id)
    for _ in range(2):
        with pytest.raises(stripe.InvalidRequestError) as caught:
            client.v1.invoices.finalize_invoice(invoice.id, options={"idempotency_key": "fin-1"})
        assert caught.value.http_status == 400 and caught.value.code == "invoice_not_editable"
    assert caught.value.headers.get("Idempotent-Replayed") == "true"


def test_key_reused_with_other_parameters_is_an_idempotency_error(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    invoice = new_draft(client, new_customer(client).id)
    client.v1.invoice_items.create(
        params={"invoice": invoice.id, "amount": 100}, options={"idempotency_key": "k-1"}
    )
    with pytest.raises(stripe.IdempotencyError) as caught:
        client.v1.invoice_items.create(
            params={"invoice": invoice.id, "amount": 999}, options={"idempotency_key": "k-1"}
        )
    assert caught.value.http_status == 400
    assert caught.value.error is not None and caught.value.error.type == "idempotency_error"
    with pytest.raises(stripe.IdempotencyError):  # another endpoint, same key
        client.v1.customers.create(params={"name": "x"}, options={"idempotency_key": "k-1"})
    assert fake.created["invoiceitem"] == 1


def test_validation_errors_are_not_saved_so_the_key_can_be_retried(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    invoice = new_draft(client, new_customer(client).id)
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.invoice_items.create(
            params={"invoice": invoice.id, "unit_amount": 100}, options={"idempotency_key": "v-1"}
        )
    assert caught.value.code == "parameter_unknown" and caught.value.param == "unit_amount"
    item = client.v1.invoice_items.create(
        params={"invoice": invoice.id, "unit_amount_decimal": "100"},
        options={"idempotency_key": "v-1"},
    )
    assert item.amount == 100 and not replayed(item)


def test_forgotten_keys_let_a_retry_create_a_duplicate(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    """Stripe prunes keys after 24 h: a writer resuming a day-old outbox row must first look
    for the item by its metadata (here: list the draft's items), never trust the key alone."""
    invoice = new_draft(client, new_customer(client).id)
    params = {"invoice": invoice.id, "amount": 700, "metadata": {"entry_id": "e-7"}}
    first = client.v1.invoice_items.create(params=params, options={"idempotency_key": "e-7"})
    assert fake.forget_idempotency_keys(older_than=24 * 3600) == 0  # nothing is that old yet
    assert fake.forget_idempotency_keys() >= 1
    second = client.v1.invoice_items.create(params=params, options={"idempotency_key": "e-7"})
    assert second.id != first.id and not replayed(second)
    items = client.v1.invoice_items.list(params={"invoice": invoice.id}).data
    assert [i.metadata["entry_id"] for i in items] == ["e-7", "e-7"]
    assert fake.created["invoiceitem"] == 2


# ----------------------------------------------------------------------------- state rules


def test_items_on_a_finalized_invoice_cannot_change(client: stripe.StripeClient) -> None:
    invoice = new_draft(client, new_customer(client).id)
    item = client.v1.invoice_items.create(params={"invoice": invoice.id, "amount": 1000})
    client.v1.invoices.finalize_invoice(invoice.id)
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.invoice_items.update(item.id, params={"amount": 1})
    assert caught.value.http_status == 400 and caught.value.code == "invoice_not_editable"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoice_items.delete(item.id)
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoice_items.create(params={"invoice": invoice.id, "amount": 5})
    with pytest.raises(stripe.InvalidRequestError):  # finalized: void it, don't delete it
        client.v1.invoices.delete(invoice.id)
    assert client.v1.invoice_items.retrieve(item.id).amount == 1000
    invoice = client.v1.invoices.update(invoice.id, params={"metadata": {"approved_by": "ann"}})
    assert invoice.metadata["approved_by"] == "ann"  # metadata stays editable
    voided = client.v1.invoices.void_invoice(invoice.id)
    assert voided.status == "void" and voided.status_transitions.voided_at is not None
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoices.pay(invoice.id)


def test_draft_rules(fake: FakeStripe, client: stripe.StripeClient) -> None:
    customer = new_customer(client)
    invoice = new_draft(client, customer.id)
    item = client.v1.invoice_items.create(params={"invoice": invoice.id, "amount": 1000})
    updated = client.v1.invoice_items.update(
        item.id, params={"quantity": 2, "unit_amount_decimal": "750", "metadata": {"a": "b"}}
    )
    assert updated.amount == 1500 and updated.metadata["a"] == "b"
    with pytest.raises(stripe.InvalidRequestError):  # void only open/uncollectible
        client.v1.invoices.void_invoice(invoice.id)
    with pytest.raises(stripe.InvalidRequestError) as caught:  # currency mismatch
        client.v1.invoice_items.create(
            params={"invoice": invoice.id, "amount": 1, "currency": "usd"}
        )
    assert caught.value.param == "currency"
    with pytest.raises(stripe.InvalidRequestError):  # pending item, customer bills in EUR
        client.v1.invoice_items.create(
            params={"customer": customer.id, "amount": 1, "currency": "usd"}
        )
    assert client.v1.invoices.delete(invoice.id).deleted is True
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.invoices.retrieve(invoice.id)
    assert caught.value.http_status == 404 and caught.value.code == "resource_missing"
    assert "invoice.deleted" in [e["type"] for e in fake.events]


def test_pending_items_are_excluded_unless_asked(client: stripe.StripeClient) -> None:
    customer = new_customer(client)
    pending = client.v1.invoice_items.create(
        params={"customer": customer.id, "amount": 300, "currency": "eur"}
    )
    assert pending.invoice is None
    excluded = new_draft(client, customer.id)
    assert excluded.lines.data == [] and excluded.total == 0
    included = new_draft(client, customer.id, pending_invoice_items_behavior="include")
    assert [line.amount for line in included.lines.data] == [300]
    assert client.v1.invoice_items.retrieve(pending.id).invoice == included.id


def test_clock_drives_auto_advance_and_key_expiry(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    now = [1_800_000_000.0]
    real_clock, fake.clock = fake.clock, lambda: now[0]
    try:
        customer = new_customer(client, options={"idempotency_key": "c-1"})
        auto = client.v1.invoices.create(params={"customer": customer.id, "auto_advance": True})
        client.v1.invoice_items.create(params={"invoice": auto.id, "amount": 100})
        manual = new_draft(client, customer.id)
        assert auto.automatically_finalizes_at == auto.created + 3600
        now[0] += 3600
        assert client.v1.invoices.retrieve(auto.id).status == "open"  # finalized by "Stripe"
        assert client.v1.invoices.retrieve(manual.id).status == "draft"
        now[0] += 24 * 3600
        again = client.v1.customers.create(
            params={"name": "ACME GmbH"}, options={"idempotency_key": "c-1"}
        )
        assert again.id != customer.id  # the day-old key was pruned
    finally:
        fake.clock = real_clock


def test_wrong_api_key_is_401(base_url: str, fake: FakeStripe) -> None:
    with pytest.raises(stripe.AuthenticationError) as caught:
        make_client(base_url, api_key="sk_test_wrong").v1.customers.list()
    assert caught.value.http_status == 401
    response = httpx.get(f"{base_url}/v1/customers")
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_form_decoding() -> None:
    pairs = [
        ("metadata[entry_id]", "e-1"),
        ("metadata[0]", "kept as a key"),
        ("period[start]", "1"),
        ("period[end]", "2"),
        ("tax_rates[0]", "txr_a"),
        ("tax_rates[1]", "txr_b"),
        ("expand[]", "customer"),
        ("expand[]", "invoice"),
        ("description", ""),
    ]
    assert parse_stripe_form(pairs) == {
        "metadata": {"entry_id": "e-1", "0": "kept as a key"},
        "period": {"start": "1", "end": "2"},
        "tax_rates": ["txr_a", "txr_b"],
        "expand": ["customer", "invoice"],
        "description": "",
    }


# ----------------------------------------------------------------------------- faults


def test_injected_500_is_seen_and_does_no_work(fake: FakeStripe, base_url: str) -> None:
    client = make_client(base_url)
    invoice = new_draft(client, new_customer(client).id)
    fake.fail_next("POST", "/v1/invoiceitems", should_retry=True)
    with pytest.raises(stripe.APIError) as caught:
        client.v1.invoice_items.create(
            params={"invoice": invoice.id, "amount": 1}, options={"idempotency_key": "f-1"}
        )
    assert caught.value.http_status == 500
    assert caught.value.headers.get("Stripe-Should-Retry") == "true"
    assert fake.created["invoiceitem"] == 0
    item = client.v1.invoice_items.create(  # same key: nothing was saved, so it runs
        params={"invoice": invoice.id, "amount": 1}, options={"idempotency_key": "f-1"}
    )
    assert not replayed(item) and fake.created["invoiceitem"] == 1


def test_injected_429_carries_retry_after(fake: FakeStripe, client: stripe.StripeClient) -> None:
    fake.rate_limit_next("GET", "/v1/customers", retry_after=2)
    with pytest.raises(stripe.RateLimitError) as caught:
        client.v1.customers.list()
    assert caught.value.http_status == 429 and caught.value.headers.get("Retry-After") == "2"
    assert client.v1.customers.list().data == []  # only the next request was affected


def test_dropped_response_after_the_work_then_retry_replays(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    invoice = new_draft(client, new_customer(client).id)
    params = {"invoice": invoice.id, "amount": 250, "metadata": {"entry_id": "d-1"}}
    fake.drop_next("POST", "/v1/invoiceitems")
    with pytest.raises(stripe.APIError) as caught:
        client.v1.invoice_items.create(params=params, options={"idempotency_key": "d-1"})
    assert caught.value.http_status == 500
    assert fake.created["invoiceitem"] == 1  # the work happened; only the answer was lost
    fake.drop_next("POST", "/v1/invoiceitems", mode="close")
    with pytest.raises(stripe.APIConnectionError):
        client.v1.invoice_items.create(params=params, options={"idempotency_key": "d-1"})
    item = client.v1.invoice_items.create(params=params, options={"idempotency_key": "d-1"})
    assert replayed(item) and fake.created["invoiceitem"] == 1
    assert client.v1.invoices.retrieve(invoice.id).total == 250


def test_sdk_retries_recover_from_a_dropped_response(fake: FakeStripe, base_url: str) -> None:
    client = make_client(base_url, retries=1)  # the SDK adds an idempotency key itself
    customer = new_customer(client)
    fake.drop_next("POST", "/v1/invoices")
    invoice = new_draft(client, customer.id)
    assert replayed(invoice) and fake.created["invoice"] == 1
    attempts = [r for r in fake.requests if r.path == "/v1/invoices"]
    assert [r.fault for r in attempts] == ["drop", None]
    assert attempts[0].idempotency_key == attempts[1].idempotency_key


def test_client_timeout_then_retry_never_duplicates(fake: FakeStripe, base_url: str) -> None:
    client = make_client(base_url, timeout=0.3)
    invoice = new_draft(client, new_customer(client).id)
    params = {"invoice": invoice.id, "amount": 1000}
    fake.delay_next("POST", "/v1/invoiceitems", seconds=0.8)  # delayed before the work
    with pytest.raises(stripe.APIConnectionError):
        client.v1.invoice_items.create(params=params, options={"idempotency_key": "t-1"})
    retry = client.v1.invoice_items.create(params=params, options={"idempotency_key": "t-1"})
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and not any(r.replayed for r in fake.requests):
        time.sleep(0.05)
    late = [r for r in fake.requests if r.idempotency_key == "t-1"]
    assert [r.fault for r in late] == ["delay", None] and late[0].replayed  # late one replayed
    assert fake.created["invoiceitem"] == 1 and not replayed(retry)

    fake.delay_next("POST", "/v1/invoices", seconds=0.8, after_work=True)
    with pytest.raises(stripe.APIConnectionError):
        client.v1.invoices.finalize_invoice(invoice.id, options={"idempotency_key": "t-2"})
    assert client.v1.invoices.retrieve(invoice.id).status == "open"  # work was done
    again = client.v1.invoices.finalize_invoice(invoice.id, options={"idempotency_key": "t-2"})
    assert replayed(again) and again.status == "open"


def test_faults_over_http_from_another_process() -> None:
    """``python -m tests.fakes.stripe_server`` driven through ``/_fake`` routes."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.stripe_server", "--port", str(port)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                httpx.get(f"{base_url}/_fake/state").raise_for_status()
                break
            except httpx.HTTPError:
                assert process.poll() is None, "fake Stripe process exited"
                assert time.monotonic() < deadline, "fake Stripe process did not start"
                time.sleep(0.05)
        fault = {"method": "POST", "path": "/v1/customers", "kind": "error", "status": 503}
        assert httpx.post(f"{base_url}/_fake/faults", json=fault).status_code == 200
        client = make_client(base_url)
        with pytest.raises(stripe.APIError) as caught:
            client.v1.customers.create(params={"name": "x"})
        assert caught.value.http_status == 503
        client.v1.customers.create(params={"name": "x"})
        state = httpx.get(f"{base_url}/_fake/state").json()
        assert state["created"]["customer"] == 1
        assert [r["status"] for r in state["requests"]] == [503, 200]
        bad = httpx.post(f"{base_url}/_fake/faults", json={"kind": "explode"})
        assert bad.status_code == 400
        assert httpx.post(f"{base_url}/_fake/reset").status_code == 200
        assert httpx.get(f"{base_url}/_fake/state").json()["created"] == {}
    finally:
        process.terminate()
        process.wait(10)


# ----------------------------------------------------------------------------- webhooks


class Receiver:
    def __init__(self, failures: int = 0, delay: float = 0.0) -> None:
        self.failures = failures
        self.delay = delay
        self.received: list[tuple[bytes, str]] = []
        self.lock = threading.Lock()
        self.app = Starlette(routes=[Route("/webhooks/stripe", self.hook, methods=["POST"])])

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        with self.lock:
            if self.failures > 0:
                self.failures -= 1
                return PlainTextResponse("not now", 503)
            self.received.append((body, request.headers.get("stripe-signature", "")))
        if self.delay:  # only the first delivery is slow
            delay, self.delay = self.delay, 0.0
            time.sleep(delay)  # noqa: ASYNC251 - a deliberately slow receiver
        return PlainTextResponse("ok")


def test_webhooks_are_signed_like_stripe_and_delivered_after_the_response(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    receiver = Receiver(failures=1, delay=1.0)
    with serve_asgi_in_thread(receiver.app) as receiver_url:
        fake.webhook_url = f"{receiver_url}/webhooks/stripe"
        started = time.monotonic()
        customer = new_customer(client)
        invoice = new_draft(client, customer.id)
        assert time.monotonic() - started < 0.5  # not waiting for the slow receiver
        client.v1.invoices.finalize_invoice(invoice.id)
        assert fake.flush_webhooks(timeout=10)
    events = [
        stripe.Webhook.construct_event(body, header, WEBHOOK_SECRET)
        for body, header in receiver.received
    ]
    assert [e.type for e in events] == [
        "customer.created",
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",  # nothing to pay: Stripe marks it paid on finalization
        "invoice.payment_succeeded",
    ]
    assert events[2].data.object.id == invoice.id and events[2].data.object.status == "open"
    first = [d for d in fake.webhook_deliveries if d.event_type == "customer.created"]
    assert [(d.attempt, d.status) for d in first] == [(1, 503), (2, 200)]
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(receiver.received[0][0], receiver.received[0][1], "whsec_x")


def test_signing_helpers_match_stripe_python(fake: FakeStripe) -> None:
    payload = b'{"id": "evt_1", "object": "event"}'
    assert sign_stripe_payload(payload, WEBHOOK_SECRET, 1700000000) == (
        stripe.WebhookSignature.generate_signature_header(
            payload.decode(), WEBHOOK_SECRET, 1700000000
        )
    )
    signed = fake.build_signed_event(
        "invoice.paid", {"id": "in_123", "object": "invoice", "status": "paid"}
    )
    event = stripe.Webhook.construct_event(signed.payload, signed.signature_header, WEBHOOK_SECRET)
    assert event.type == "invoice.paid" and event.data.object.id == "in_123"
    assert signed.headers["Stripe-Signature"] == signed.signature_header
    assert json.loads(signed.payload)["id"] not in {e["id"] for e in fake.events}  # not stored


# ------------------------------------------------------- Stripe's rules on amounts and fields


def refusal(exc: pytest.ExceptionInfo[stripe.StripeError]) -> dict[str, Any]:
    """Stripe's error shape: {"error": {"type", "message", "code", "param"}}."""
    body = exc.value.json_body
    assert body is not None and set(body) == {"error"}
    assert body["error"]["type"] == "invalid_request_error"
    assert exc.value.http_status == 400
    return dict(body["error"])


@pytest.mark.parametrize("currency", ["kwd", "bhd", "jod", "omr", "tnd"])
def test_three_decimal_amounts_must_end_in_zero(client: stripe.StripeClient, currency: str) -> None:
    invoice = new_draft(client, new_customer(client).id, currency=currency)
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.invoice_items.create(params={"invoice": invoice.id, "amount": 46666})
    error = refusal(exc)
    assert error["param"] == "amount" and "46666" in error["message"]
    item = client.v1.invoice_items.create(params={"invoice": invoice.id, "amount": 46670})
    assert item.amount == 46670
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoice_items.update(item.id, params={"amount": 5124})
    assert client.v1.invoice_items.update(item.id, params={"amount": 5120}).amount == 5120


def test_zero_and_two_decimal_amounts_take_any_last_digit(client: stripe.StripeClient) -> None:
    for currency in ("jpy", "eur"):
        invoice = new_draft(client, new_customer(client).id, currency=currency)
        item = client.v1.invoice_items.create(params={"invoice": invoice.id, "amount": 46667})
        assert item.amount == 46667


def test_an_invoice_takes_at_most_250_items(client: stripe.StripeClient) -> None:
    invoice = new_draft(client, new_customer(client).id)
    for _ in range(250):
        client.v1.invoice_items.create(params={"invoice": invoice.id, "amount": 100})
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.invoice_items.create(params={"invoice": invoice.id, "amount": 100})
    assert refusal(exc)["param"] == "invoice"
    assert client.v1.invoices.retrieve(invoice.id).total == 25000


def test_descriptions_over_500_characters_are_refused(client: stripe.StripeClient) -> None:
    invoice = new_draft(client, new_customer(client).id)
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.invoice_items.create(
            params={"invoice": invoice.id, "amount": 100, "description": "d" * 501}
        )
    assert refusal(exc)["param"] == "description"
    item = client.v1.invoice_items.create(
        params={"invoice": invoice.id, "amount": 100, "description": "d" * 500}
    )
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoice_items.update(item.id, params={"description": "d" * 501})


def test_metadata_limits_are_refused(client: stripe.StripeClient) -> None:
    invoice = new_draft(client, new_customer(client).id)
    for metadata, param in (
        ({"k" * 41: "v"}, "metadata[" + "k" * 41 + "]"),
        ({"k": "v" * 501}, "metadata[k]"),
        ({f"k{i}": "v" for i in range(51)}, "metadata"),
    ):
        with pytest.raises(stripe.InvalidRequestError) as exc:
            client.v1.invoice_items.create(
                params={"invoice": invoice.id, "amount": 100, "metadata": metadata}
            )
        assert refusal(exc)["param"] == param


@pytest.mark.parametrize(
    ("currency", "amount", "charged"),
    [
        ("usd", 49, False),
        ("usd", 50, True),
        ("gbp", 29, False),
        ("jpy", 49, False),
        ("jpy", 50, True),
        ("kwd", 160, False),
    ],
)
def test_below_the_minimum_charge_stripe_marks_paid_and_moves_it_to_the_balance(
    client: stripe.StripeClient, currency: str, amount: int, charged: bool
) -> None:
    customer = new_customer(client)
    invoice = new_draft(client, customer.id, currency=currency)
    client.v1.invoice_items.create(params={"invoice": invoice.id, "amount": amount})
    invoice = client.v1.invoices.finalize_invoice(invoice.id)
    balance = client.v1.customers.retrieve(customer.id).balance
    if charged:
        assert (invoice.status, balance) == ("open", 0)
    else:
        assert (invoice.status, invoice.amount_paid, balance) == ("paid", 0, amount)
