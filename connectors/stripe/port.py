"""`StripePort`: the Stripe calls invoicing, approvals and reconcile make.

Two adapters satisfy it: `connectors.stripe.gateway.StripeGateway` (the real API over
HTTP, rate-limited and retried) and `connectors.stripe.memory.InMemoryStripe` (the
demo's and unit tests' Stripe, in process). The HTTP wire fake in ``tests/fakes``
is the contract test of the first one.

Objects come back as Stripe shapes them (``dict`` of the JSON object: ``id``,
``status``, ``total``, ``metadata``…), because the shell stores and compares exactly
those fields. The semantics every adapter keeps:

- **Money** is an integer in the currency's minor units (``amount``, ``total``; cents
  for EUR, yen for JPY). An invoice's ``total`` is the sum of its items' ``amount``
  (tax excluded in the in-memory adapter). Currencies are lower-case ISO codes.
- **Idempotency.** Every write but DELETE takes the caller's key. The same key with
  the same request replays the first answer (same object, same id) and does nothing
  more; the same key with other parameters is refused (`StripeRejected`,
  ``idempotency_key_in_use``). Keys live at least 24 h; after that the caller must
  look for the object by its ``metadata`` (``list_draft_invoices``,
  ``list_invoice_items``) before creating it again.
- **Drafts only are edited.** Items are added, updated or deleted only while their
  invoice is a ``draft``; ``finalize_invoice`` moves a draft to ``open`` (with a
  ``number``; a zero total goes straight to ``paid``) and nothing is edited
  afterwards; ``send_invoice`` e-mails an ``open`` invoice (Stripe finalizes a draft
  first: kanvoice never sends one). ``metadata`` updates merge key by key.
- **Errors** are the connector taxonomy: `RetriableError` (try the same call later,
  with the same key), `StripeRejected` (Stripe refused the request itself: a person
  must look; never retried), `FatalError` (the API key is refused).
- **Events.** Stripe reports what happens outside these calls (paid, voided…) as
  webhook events, applied by ``Invoicing.apply_event``; the calls never wait for them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from connectors.base import ConnectorError

StripeObject = dict[str, Any]


class StripeRejected(ConnectorError):
    """Stripe refused the request (4xx other than 401/403/409/429): never retried."""

    def __init__(self, message: str, status: int | None, code: str | None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class StripePort(Protocol):
    """The Stripe calls kanvoice makes. Each write takes an idempotency key."""

    async def retrieve_customer(self, customer_id: str) -> StripeObject:
        """The customer (``currency``, ``name``…); `StripeRejected` 404 if unknown."""
        ...

    async def retrieve_invoice(self, invoice_id: str) -> StripeObject:
        """The invoice as Stripe holds it now (``status``, ``total``, ``number``…)."""
        ...

    async def list_invoice_items(self, invoice_id: str) -> list[StripeObject]:
        """Every item on the invoice (all pages), each with its ``metadata``."""
        ...

    async def list_draft_invoices(self, customer_id: str) -> list[StripeObject]:
        """The customer's invoices still in ``draft`` (the metadata search for drafts)."""
        ...

    async def create_invoice(self, params: Mapping[str, Any], key: str) -> StripeObject:
        """A new invoice (kanvoice always asks for a ``draft`` with ``auto_advance``
        false); the same `key` replays the first answer."""
        ...

    async def create_invoice_item(self, params: Mapping[str, Any], key: str) -> StripeObject:
        """An item of ``amount`` minor units on the draft ``params["invoice"]``."""
        ...

    async def update_invoice_item(
        self, item_id: str, params: Mapping[str, Any], key: str
    ) -> StripeObject:
        """Change a draft's item (amount, description, period, metadata merged)."""
        ...

    async def delete_invoice_item(self, item_id: str) -> None:
        """Remove a draft's item; an item already gone counts as deleted (no key)."""
        ...

    async def finalize_invoice(self, invoice_id: str, key: str) -> StripeObject:
        """Draft → ``open``: numbered, totals frozen. Only the approval path calls it."""
        ...

    async def send_invoice(self, invoice_id: str, key: str) -> StripeObject:
        """E-mail an ``open`` invoice to the customer (a paid or void one is refused)."""
        ...

    async def close(self) -> None:
        """Release connections; a later call may need a new adapter from the factory."""
        ...
