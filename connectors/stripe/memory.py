"""`InMemoryStripe`: a `StripePort` in process, for `kanvoice demo` and unit tests.

Small on purpose: it keeps the rules kanvoice relies on and nothing else (the HTTP
wire fake in ``tests/fakes/stripe_server.py`` is what the real gateway is tested on):

- customers with a currency; drafts and their items in integer minor units, the
  invoice ``total`` the sum of its items (no tax is computed);
- an idempotency key replays the first answer; reused with other parameters it is
  refused (``idempotency_key_in_use``);
- only drafts are edited; ``finalize`` draft → open (numbered; paid at once when the
  total is 0), ``send`` an open invoice (a draft is finalized first, as Stripe does);
  what the customer does (`pay_invoice`, `void_invoice`) moves open invoices on;
- each change Stripe would report by webhook becomes an event (``invoice.finalized``,
  ``invoice.sent``, ``invoice.paid``, ``invoice.voided``), queued until
  `deliver_events` hands them to the subscribers, like webhooks arriving later.

Every object handed out is a copy: callers cannot change what the store holds.
"""

from __future__ import annotations

import copy
import itertools
import json
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from connectors.stripe.port import StripeObject, StripePort, StripeRejected

EventListener = Callable[[StripeObject], object]

_DRAFT_FIELDS = ("auto_advance", "collection_method", "days_until_due", "description")
_ITEM_FIELDS = ("amount", "description", "period", "tax_rates")


class InMemoryStripe:
    """Customers, invoices and invoice items in dictionaries; see the module docstring.

    Thread-safe (one lock): the demo's simulated customer may pay from another thread.
    `now` gives the Unix time stamped on objects and events.
    """

    def __init__(self, now: Callable[[], int] | None = None) -> None:
        self._now = now or (lambda: 1_790_000_000)
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.customers: dict[str, StripeObject] = {}
        self.invoices: dict[str, StripeObject] = {}
        self.items: dict[str, StripeObject] = {}
        self._replays: dict[str, tuple[str, StripeObject]] = {}
        self._pending_events: list[StripeObject] = []
        self.events: list[StripeObject] = []  # every event ever emitted, in order
        self.listeners: list[EventListener] = []
        self.calls: list[tuple[str, str | None]] = []

    # --- the simulation side (not part of the port) ---------------------------------------

    def add_customer(self, name: str, currency: str, customer_id: str | None = None) -> str:
        """A customer billed in `currency`; returns its id."""
        with self._lock:
            cid = customer_id or self._id("cus")
            self.customers[cid] = {
                "id": cid,
                "object": "customer",
                "name": name,
                "currency": currency.lower(),
            }
            return cid

    def subscribe(self, listener: EventListener) -> None:
        """Call `listener(event)` for every event `deliver_events` hands out."""
        self.listeners.append(listener)

    def deliver_events(self) -> int:
        """Hand every queued event to the subscribers, oldest first; returns how many.

        An event whose listener raises stays queued (Stripe redelivers failed
        webhooks), and so do the ones after it.
        """
        delivered = 0
        while True:
            with self._lock:
                if not self._pending_events:
                    return delivered
                event = self._pending_events[0]
            for listener in self.listeners:
                listener(copy.deepcopy(event))
            with self._lock:
                self._pending_events.pop(0)
            delivered += 1

    def pay_invoice(self, invoice_id: str) -> StripeObject:
        """The customer pays an open invoice in full (``invoice.paid``)."""
        with self._lock:
            invoice = self._invoice(invoice_id)
            self._require(invoice, "open", "pay")
            invoice.update(status="paid", amount_paid=invoice["total"], amount_remaining=0)
            invoice["status_transitions"]["paid_at"] = self._now()
            self._emit("invoice.paid", invoice)
            return copy.deepcopy(invoice)

    def mark_overdue(self, invoice_id: str) -> StripeObject:
        """Stripe's overdue automation for an open invoice (``invoice.overdue``)."""
        with self._lock:
            invoice = self._invoice(invoice_id)
            self._require(invoice, "open", "overdue")
            self._emit("invoice.overdue", invoice)
            return copy.deepcopy(invoice)

    def void_invoice(self, invoice_id: str) -> StripeObject:
        """Void an open invoice from Stripe's dashboard (``invoice.voided``)."""
        with self._lock:
            invoice = self._invoice(invoice_id)
            self._require(invoice, "open", "void")
            invoice["status"] = "void"
            self._emit("invoice.voided", invoice)
            return copy.deepcopy(invoice)

    def open_invoice_ids(self) -> list[str]:
        """Finalized invoices not paid or voided yet."""
        with self._lock:
            return [i["id"] for i in self.invoices.values() if i["status"] == "open"]

    # --- reads --------------------------------------------------------------------------

    async def retrieve_customer(self, customer_id: str) -> StripeObject:
        with self._lock:
            self.calls.append(("retrieve_customer", None))
            customer = self.customers.get(customer_id)
            if customer is None:
                raise _missing("customer", customer_id)
            return copy.deepcopy(customer)

    async def retrieve_invoice(self, invoice_id: str) -> StripeObject:
        with self._lock:
            self.calls.append(("retrieve_invoice", None))
            return copy.deepcopy(self._invoice(invoice_id))

    async def list_invoice_items(self, invoice_id: str) -> list[StripeObject]:
        with self._lock:
            self.calls.append(("list_invoice_items", None))
            return [copy.deepcopy(i) for i in self.items.values() if i["invoice"] == invoice_id]

    async def list_draft_invoices(self, customer_id: str) -> list[StripeObject]:
        with self._lock:
            self.calls.append(("list_invoices", None))
            return [
                copy.deepcopy(i)
                for i in self.invoices.values()
                if i["customer"] == customer_id and i["status"] == "draft"
            ]

    # --- writes -------------------------------------------------------------------------

    async def create_invoice(self, params: Mapping[str, Any], key: str) -> StripeObject:
        return self._idempotent("create_invoice", key, params, lambda: self._create_invoice(params))

    async def create_invoice_item(self, params: Mapping[str, Any], key: str) -> StripeObject:
        return self._idempotent(
            "create_invoice_item", key, params, lambda: self._create_item(params)
        )

    async def update_invoice_item(
        self, item_id: str, params: Mapping[str, Any], key: str
    ) -> StripeObject:
        return self._idempotent(
            "update_invoice_item",
            key,
            {"item": item_id, **params},
            lambda: self._update_item(item_id, params),
        )

    async def delete_invoice_item(self, item_id: str) -> None:
        with self._lock:
            self.calls.append(("delete_invoice_item", None))
            item = self.items.get(item_id)
            if item is None:
                return  # already gone: deleted
            invoice = self.invoices[item["invoice"]]
            self._require(invoice, "draft", "delete_invoice_item")
            del self.items[item_id]
            self._total(invoice)

    async def finalize_invoice(self, invoice_id: str, key: str) -> StripeObject:
        return self._idempotent(
            "finalize_invoice", key, {"invoice": invoice_id}, lambda: self._finalize(invoice_id)
        )

    async def send_invoice(self, invoice_id: str, key: str) -> StripeObject:
        return self._idempotent(
            "send_invoice", key, {"invoice": invoice_id}, lambda: self._send(invoice_id)
        )

    async def close(self) -> None:
        """Nothing to release: the store outlives the adapter's users."""

    # --- the rules ----------------------------------------------------------------------

    def _idempotent(
        self,
        name: str,
        key: str,
        params: Mapping[str, Any],
        perform: Callable[[], StripeObject],
    ) -> StripeObject:
        fingerprint = name + json.dumps(params, sort_keys=True, default=str)
        with self._lock:
            self.calls.append((name, key))
            known = self._replays.get(key)
            if known is not None:
                if known[0] != fingerprint:
                    raise StripeRejected(
                        f"Stripe refused {name}: keys for idempotent requests can only be "
                        "used with the same parameters they were first used with",
                        400,
                        "idempotency_key_in_use",
                    )
                return copy.deepcopy(known[1])
            result = perform()
            self._replays[key] = (fingerprint, copy.deepcopy(result))
            return copy.deepcopy(result)

    def _id(self, prefix: str) -> str:
        return f"{prefix}_mem{next(self._ids):06d}"

    def _invoice(self, invoice_id: str) -> StripeObject:
        invoice = self.invoices.get(invoice_id)
        if invoice is None:
            raise _missing("invoice", invoice_id)
        return invoice

    @staticmethod
    def _require(invoice: StripeObject, status: str, name: str) -> None:
        if invoice["status"] != status:
            raise StripeRejected(
                f"Stripe refused {name}: invoice {invoice['id']} is {invoice['status']}, "
                f"not {status}",
                400,
                "invoice_not_editable" if status == "draft" else "invoice_unexpected_state",
            )

    def _create_invoice(self, params: Mapping[str, Any]) -> StripeObject:
        customer = self.customers.get(str(params.get("customer")))
        if customer is None:
            raise _missing("customer", str(params.get("customer")))
        invoice: StripeObject = {
            "id": self._id("in"),
            "object": "invoice",
            "customer": customer["id"],
            "currency": str(params.get("currency") or customer["currency"]).lower(),
            "status": "draft",
            "number": None,
            "hosted_invoice_url": None,
            "total": 0,
            "amount_due": 0,
            "amount_paid": 0,
            "amount_remaining": 0,
            "metadata": dict(params.get("metadata") or {}),
            "created": self._now(),
            "status_transitions": {"finalized_at": None, "paid_at": None},
        }
        invoice.update({f: params[f] for f in _DRAFT_FIELDS if f in params})
        self.invoices[invoice["id"]] = invoice
        return invoice

    def _create_item(self, params: Mapping[str, Any]) -> StripeObject:
        invoice = self._invoice(str(params.get("invoice")))
        self._require(invoice, "draft", "create_invoice_item")
        amount = params.get("amount")
        if not isinstance(amount, int) or isinstance(amount, bool):
            raise StripeRejected(
                "Stripe refused create_invoice_item: amount must be an integer in minor units",
                400,
                "parameter_invalid_integer",
            )
        currency = str(params.get("currency") or invoice["currency"]).lower()
        if currency != invoice["currency"]:
            raise StripeRejected(
                f"Stripe refused create_invoice_item: currency {currency} is not the "
                f"invoice's {invoice['currency']}",
                400,
                "invoice_currency_mismatch",
            )
        item: StripeObject = {
            "id": self._id("ii"),
            "object": "invoiceitem",
            "invoice": invoice["id"],
            "customer": invoice["customer"],
            "currency": currency,
            "metadata": dict(params.get("metadata") or {}),
        }
        item.update({f: copy.deepcopy(params[f]) for f in _ITEM_FIELDS if f in params})
        self.items[item["id"]] = item
        self._total(invoice)
        return item

    def _update_item(self, item_id: str, params: Mapping[str, Any]) -> StripeObject:
        item = self.items.get(item_id)
        if item is None:
            raise _missing("invoiceitem", item_id)
        invoice = self.invoices[item["invoice"]]
        self._require(invoice, "draft", "update_invoice_item")
        item.update({f: copy.deepcopy(params[f]) for f in _ITEM_FIELDS if f in params})
        for name, value in (params.get("metadata") or {}).items():
            if value in ("", None):
                item["metadata"].pop(name, None)  # Stripe: an empty value unsets the key
            else:
                item["metadata"][name] = value
        self._total(invoice)
        return item

    def _total(self, invoice: StripeObject) -> None:
        total = sum(int(i["amount"]) for i in self.items.values() if i["invoice"] == invoice["id"])
        invoice.update(total=total, amount_due=total, amount_remaining=total)

    def _finalize(self, invoice_id: str) -> StripeObject:
        invoice = self._invoice(invoice_id)
        self._require(invoice, "draft", "finalize_invoice")
        sequence = sum(1 for i in self.invoices.values() if i["number"]) + 1
        invoice.update(
            status="open",
            number=f"MEM-{sequence:04d}",
            hosted_invoice_url=f"https://invoice.stripe.invalid/{invoice_id}",
            auto_advance=False,
        )
        days = invoice.get("days_until_due")
        if invoice.get("collection_method") == "send_invoice" and days is not None:
            # Stripe counts days_until_due from the invoice's creation
            invoice["due_date"] = int(invoice.get("created") or self._now()) + int(days) * 86400
        invoice["status_transitions"]["finalized_at"] = self._now()
        self._emit("invoice.finalized", invoice)
        if invoice["total"] == 0:  # Stripe marks a zero-total invoice paid at once
            invoice["status"] = "paid"
            invoice["status_transitions"]["paid_at"] = self._now()
            self._emit("invoice.paid", invoice)
        return invoice

    def _send(self, invoice_id: str) -> StripeObject:
        invoice = self._invoice(invoice_id)
        if invoice["status"] == "draft":  # as Stripe does (kanvoice finalizes first)
            self._finalize(invoice_id)
        self._require(invoice, "open", "send_invoice")
        self._emit("invoice.sent", invoice)
        return invoice

    def _emit(self, kind: str, obj: StripeObject) -> None:
        event: StripeObject = {
            "id": self._id("evt"),
            "object": "event",
            "type": kind,
            "created": self._now(),
            "data": {"object": copy.deepcopy(obj)},
        }
        self.events.append(event)
        self._pending_events.append(event)


def _missing(kind: str, object_id: str) -> StripeRejected:
    return StripeRejected(
        f"Stripe refused the request: no such {kind}: '{object_id}'", 404, "resource_missing"
    )


if TYPE_CHECKING:  # mypy: the in-memory adapter satisfies the port
    _port: type[StripePort] = InMemoryStripe
