"""A thin, retrying, rate-limited door to Stripe (stripe-python's StripeClient on httpx).

Every POST here takes the caller's idempotency key: the SDK's random key is never
used, so a retry after a crash repeats the same request and Stripe replays its first
answer instead of doing the work twice. Errors leave as one taxonomy:

- `RetriableError`: 429, 5xx, timeouts and network errors that survived the retries
  (or that Stripe marked `Stripe-Should-Retry: true`);
- `StripeRejected`: Stripe refused the request itself (validation, card, state):
  retrying the same request can never succeed, a person must look;
- `FatalError`: authentication or permission problems with the API key.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

import stripe

from connectors.base import CallObserver, ConnectorError, FatalError, RetriableError, call_outcome
from connectors.retry import RetrySchedule, with_retries
from connectors.stripe.port import StripePort, StripeRejected

__all__ = ["RateLimiter", "StripeGateway", "StripeRejected"]

Sleep = Callable[[float], Awaitable[None]]
_T = TypeVar("_T")

TEST_MODE_RATE = 20.0
LIVE_MODE_RATE = 80.0


class RateLimiter:
    """At most `rate` requests in any second: calls are spaced 1/rate apart (a bucket of
    one token, so no burst can put a second's worth on top of the steady rate)."""

    def __init__(
        self, rate: float, clock: Callable[[], float] = time.monotonic, sleep: Sleep = asyncio.sleep
    ) -> None:
        self.rate = rate
        self.capacity = 1.0
        self.tokens = self.capacity
        self.clock = clock
        self.sleep = sleep
        self.updated = clock()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = self.clock()
                self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
                self.updated = now
                # A hair of tolerance: float sums of tiny refills may never reach 1.0.
                if self.tokens >= 1 - 1e-9:
                    self.tokens = max(0.0, self.tokens - 1)
                    return
                await self.sleep(max((1 - self.tokens) / self.rate, 1e-4))


def _should_retry(exc: BaseException) -> bool:
    if not isinstance(exc, stripe.StripeError):
        return False
    header = (exc.headers or {}).get("stripe-should-retry") or (exc.headers or {}).get(
        "Stripe-Should-Retry"
    )
    if header == "false":
        return False
    if header == "true":
        return True
    if isinstance(exc, stripe.RateLimitError | stripe.APIConnectionError):
        return True
    if isinstance(exc, stripe.IdempotencyError):
        return False
    status = exc.http_status or 0
    return status == 409 or status >= 500


def _retry_after(exc: BaseException | None) -> float | None:
    if not isinstance(exc, stripe.StripeError) or not exc.headers:
        return None
    for name in ("retry-after", "Retry-After"):
        value = exc.headers.get(name)
        if value:
            try:
                return max(0.0, float(value))
            except ValueError:
                return None
    return None


def _to_dict(obj: Any) -> dict[str, Any]:
    if isinstance(obj, stripe.StripeObject):
        return obj.to_dict(recursive=True)
    return dict(obj)


class _HTTPXClient(stripe.HTTPXClient):
    """stripe-python's httpx client, sending the form-encoded body as ``content=``:
    it passes ``data=<str>``, which httpx 0.28 deprecates for raw content."""

    def _get_request_args_kwargs(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any
    ) -> Any:
        args, kwargs = super()._get_request_args_kwargs(method, url, headers, post_data)
        data = kwargs.pop("data", None)
        if data:
            kwargs["content"] = data
        return args, kwargs


class StripeGateway:
    """`StripePort` over Stripe's API. All async; each call rate-limited and retried."""

    def __init__(
        self,
        api_key: str,
        *,
        api_base: str = "https://api.stripe.com",
        requests_per_second: float | None = None,
        max_attempts: int = 4,
        backoff_initial: float = 0.5,
        backoff_max: float = 20.0,
        timeout: float = 30.0,
        sleep: Sleep = asyncio.sleep,
        observer: CallObserver | None = None,
    ) -> None:
        self.observer = observer
        self.http_client = _HTTPXClient(timeout=timeout, allow_sync_methods=True)
        self.client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base},
            http_client=self.http_client,
            max_network_retries=0,
        )
        live = api_key.startswith(("sk_live_", "rk_live_"))
        self.limiter = RateLimiter(
            requests_per_second or (LIVE_MODE_RATE if live else TEST_MODE_RATE), sleep=sleep
        )
        self.max_attempts = max_attempts
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        # A Retry-After is waited for, at most a minute per attempt.
        self.schedule = RetrySchedule(max_attempts, backoff_initial, backoff_max, max_hint=60.0)
        self.sleep = sleep
        self.calls: list[tuple[str, str | None]] = []

    async def _call(self, name: str, key: str | None, fn: Callable[[], Awaitable[_T]]) -> _T:
        async def attempt() -> _T:
            await self.limiter.acquire()
            self.calls.append((name, key))
            try:
                result = await fn()
            except stripe.StripeError as exc:
                self._observe(call_outcome(_translate(name, exc)))
                raise
            self._observe("ok")
            return result

        try:
            return await with_retries(
                attempt,
                schedule=self.schedule,
                retry_on=_should_retry,
                hint=_retry_after,
                sleep=self.sleep,
            )
        except stripe.StripeError as exc:
            raise _translate(name, exc) from exc

    def _observe(self, outcome: str) -> None:
        """Every attempt is one call to Stripe (`connectors.base.call_outcome`)."""
        if self.observer is not None:
            self.observer("stripe", outcome)

    # --- reads --------------------------------------------------------------------

    async def retrieve_customer(self, customer_id: str) -> dict[str, Any]:
        obj = await self._call(
            "retrieve_customer", None, lambda: self.client.v1.customers.retrieve_async(customer_id)
        )
        return _to_dict(obj)

    async def retrieve_invoice(self, invoice_id: str) -> dict[str, Any]:
        obj = await self._call(
            "retrieve_invoice", None, lambda: self.client.v1.invoices.retrieve_async(invoice_id)
        )
        return _to_dict(obj)

    async def list_invoice_items(self, invoice_id: str) -> list[dict[str, Any]]:
        """Every invoice item on one invoice (all pages)."""
        items: list[dict[str, Any]] = []
        starting_after: str | None = None
        while True:
            params: dict[str, Any] = {"invoice": invoice_id, "limit": 100}
            if starting_after:
                params["starting_after"] = starting_after
            page = await self._call(
                "list_invoice_items",
                None,
                lambda p=params: self.client.v1.invoice_items.list_async(params=p),  # type: ignore[misc]
            )
            data = [_to_dict(i) for i in page.data]
            items.extend(data)
            if not page.has_more or not data:
                return items
            starting_after = data[-1]["id"]

    async def list_draft_invoices(self, customer_id: str) -> list[dict[str, Any]]:
        page = await self._call(
            "list_invoices",
            None,
            lambda: self.client.v1.invoices.list_async(
                params={"customer": customer_id, "status": "draft", "limit": 100}
            ),
        )
        return [_to_dict(i) for i in page.data]

    # --- writes (each with the caller's idempotency key) ----------------------------

    async def create_invoice(self, params: Mapping[str, Any], key: str) -> dict[str, Any]:
        obj = await self._call(
            "create_invoice",
            key,
            lambda: self.client.v1.invoices.create_async(
                params=cast(Any, dict(params)),
                options={"idempotency_key": key},
            ),
        )
        return _to_dict(obj)

    async def create_invoice_item(self, params: Mapping[str, Any], key: str) -> dict[str, Any]:
        obj = await self._call(
            "create_invoice_item",
            key,
            lambda: self.client.v1.invoice_items.create_async(
                params=cast(Any, dict(params)),
                options={"idempotency_key": key},
            ),
        )
        return _to_dict(obj)

    async def update_invoice_item(
        self, item_id: str, params: Mapping[str, Any], key: str
    ) -> dict[str, Any]:
        obj = await self._call(
            "update_invoice_item",
            key,
            lambda: self.client.v1.invoice_items.update_async(
                item_id,
                params=cast(Any, dict(params)),
                options={"idempotency_key": key},
            ),
        )
        return _to_dict(obj)

    async def delete_invoice_item(self, item_id: str) -> None:
        """DELETE is idempotent by nature: an item already gone counts as deleted."""
        try:
            await self._call(
                "delete_invoice_item",
                None,
                lambda: self.client.v1.invoice_items.delete_async(item_id),
            )
        except StripeRejected as exc:
            if exc.status != 404:
                raise

    async def finalize_invoice(self, invoice_id: str, key: str) -> dict[str, Any]:
        obj = await self._call(
            "finalize_invoice",
            key,
            lambda: self.client.v1.invoices.finalize_invoice_async(
                invoice_id, params={"auto_advance": False}, options={"idempotency_key": key}
            ),
        )
        return _to_dict(obj)

    async def send_invoice(self, invoice_id: str, key: str) -> dict[str, Any]:
        obj = await self._call(
            "send_invoice",
            key,
            lambda: self.client.v1.invoices.send_invoice_async(
                invoice_id, options={"idempotency_key": key}
            ),
        )
        return _to_dict(obj)

    async def close(self) -> None:
        await self.http_client.close_async()  # type: ignore[no-untyped-call]


def _translate(name: str, exc: stripe.StripeError) -> ConnectorError:
    message = exc.user_message or str(exc) or exc.__class__.__name__
    if isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
        return FatalError(f"Stripe refused the API key for {name}: {message}")
    if _should_retry(exc):
        return RetriableError(f"Stripe {name} failed: {message}", retry_after=_retry_after(exc))
    return StripeRejected(f"Stripe refused {name}: {message}", exc.http_status, exc.code)


if TYPE_CHECKING:  # mypy: the real adapter satisfies the port
    _port: type[StripePort] = StripeGateway
