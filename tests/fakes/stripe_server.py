"""A stateful, in-memory fake of the Stripe API, for kanvoice's tests and offline demo.

It serves the part of Stripe's v1 API that kanvoice uses (customers, tax rates, invoices,
invoice items, events) over real HTTP, in Stripe's wire format: form-encoded requests with
Stripe's bracket syntax (``metadata[entry_id]=…``, ``period[start]=…``, ``tax_rates[0]=…``),
JSON objects shaped like Stripe's (API version :data:`API_VERSION`), Stripe's error shape,
Bearer authentication, list objects with ``has_more`` and cursor pagination, and the invoice
state machine (draft → open → paid / uncollectible / void, drafts deletable).

Idempotency follows https://docs.stripe.com/api/idempotent_requests:

* Every ``POST`` may carry an ``Idempotency-Key`` header (at most 255 characters; the header
  is ignored on ``GET`` and ``DELETE``). Keys are scoped to the API key.
* Once the endpoint has started executing, the status and body of the first request with a
  key are saved, whether it succeeded or failed (a 400 for an invoice that is no longer
  editable is saved just like a 200). A later request with the same key and the same
  endpoint and parameters gets the saved response back, byte for byte, with the header
  ``Idempotent-Replayed: true``, and nothing is executed again (no object, no event).
* The same key with another endpoint or other parameters is answered ``400`` with
  ``{"error": {"type": "idempotency_error", …}}`` and changes nothing.
* Nothing is saved when the request never reached the endpoint: authentication failures,
  unknown URLs, parameter validation errors (``parameter_missing``, ``parameter_unknown``,
  ``parameter_invalid_*``), and injected ``error`` / ``rate_limit`` faults. Such a request
  can be retried with the same key.
* Stripe prunes keys once they are at least 24 hours old; after that a retry with the same
  key creates a new object. The fake prunes such keys too (by its ``clock``), and
  :meth:`FakeStripe.forget_idempotency_keys` prunes on demand. This is why a writer must also
  look for earlier work by ``metadata`` rather than trust keys alone.

Every state change creates an Event (``GET /v1/events``); when ``webhook_url`` is set each
event is POSTed there, signed like Stripe (``Stripe-Signature: t=…,v1=…``), from a background
thread after the HTTP response has been sent, with a few retries.

Faults can be injected from Python (:meth:`FakeStripe.inject_fault`) or over HTTP
(``POST /_fake/faults``) so a test can drive a fake that serves another process.

Run it with :func:`run_fake_stripe_in_thread`, or standalone::

    python -m tests.fakes.stripe_server --port 12111
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import copy
import hashlib
import hmac
import html
import json
import logging
import re
import secrets
import string
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Literal, cast
from urllib.parse import parse_qsl

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from mapping.stripe_rules import minimum_charge

__all__ = [
    "API_VERSION",
    "FakeStripe",
    "Fault",
    "FaultKind",
    "RecordedRequest",
    "SignedEvent",
    "StripeApiError",
    "WebhookDelivery",
    "parse_stripe_form",
    "run_fake_stripe_in_thread",
    "serve_asgi_in_thread",
    "sign_stripe_payload",
]

log = logging.getLogger(__name__)

JSON = dict[str, Any]

#: The API version the fake's objects follow (the one pinned by stripe-python 16.1.0).
API_VERSION = "2026-10-28.endive"

#: Currencies whose minor unit is the unit itself (amounts are whole yen, won, …).
ZERO_DECIMAL_CURRENCIES = frozenset(
    "bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split()
)
THREE_DECIMAL_CURRENCIES = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})

_ID_ALPHABET = string.ascii_letters + string.digits
_MAX_IDEMPOTENCY_KEY = 255
_AUTO_ADVANCE_DELAY = 3600  # Stripe finalizes auto_advance drafts about an hour after creation
_IDEMPOTENCY_KEY_TTL = 24 * 3600  # Stripe prunes keys once they are at least 24 hours old
_INVOICE_STATUSES = ("draft", "open", "paid", "uncollectible", "void")

FaultKind = Literal["error", "rate_limit", "delay", "drop"]
_FAULT_KINDS: tuple[str, ...] = ("error", "rate_limit", "delay", "drop")


def _new_id(prefix: str, length: int = 24) -> str:
    return prefix + "_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


# --------------------------------------------------------------------------------------
# Webhook signatures
# --------------------------------------------------------------------------------------


def sign_stripe_payload(payload: bytes, secret: str, timestamp: int) -> str:
    """Return the ``Stripe-Signature`` header value for ``payload``, as Stripe computes it.

    The signature is the hex HMAC-SHA256, keyed with the endpoint's signing secret (the
    whole ``whsec_…`` string), of ``"<timestamp>.<raw body>"``; the header is
    ``t=<timestamp>,v1=<signature>``. ``stripe.Webhook.construct_event`` verifies it.
    """
    signed = str(int(timestamp)).encode("ascii") + b"." + payload
    digest = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()
    return f"t={int(timestamp)},v1={digest}"


@dataclass(frozen=True)
class SignedEvent:
    """An event serialized and signed the way Stripe delivers it to a webhook endpoint."""

    event: JSON
    payload: bytes
    timestamp: int
    signature_header: str

    @property
    def headers(self) -> dict[str, str]:
        """The headers Stripe sends with the payload."""
        return {
            "Content-Type": "application/json; charset=utf-8",
            "Stripe-Signature": self.signature_header,
        }


def _event_payload(event: Mapping[str, Any]) -> bytes:
    return json.dumps(_public(event), indent=2).encode("utf-8")


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


class StripeApiError(Exception):
    """An error answered in Stripe's shape: ``{"error": {"type", "message", "code", "param"}}``.

    ``stored`` tells whether the idempotency layer saves this answer: errors raised before
    the endpoint starts executing (authentication, validation) are not saved, so a retry
    with the same ``Idempotency-Key`` runs again.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        stored: bool = True,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.code = code
        self.param = param
        self.stored = stored
        self.headers = dict(headers or {})

    def body(self) -> JSON:
        """The JSON body Stripe would answer."""
        error: JSON = {}
        if self.code is not None:
            error["code"] = self.code
            error["doc_url"] = f"https://stripe.com/docs/error-codes/{self.code.replace('_', '-')}"
        error["message"] = self.message
        if self.param is not None:
            error["param"] = self.param
        error["type"] = self.error_type
        return {"error": error}


def _missing(param: str) -> StripeApiError:
    return StripeApiError(
        400,
        f"Missing required param: {param}.",
        code="parameter_missing",
        param=param,
        stored=False,
    )


def _invalid(param: str, message: str, code: str = "parameter_invalid") -> StripeApiError:
    return StripeApiError(400, message, code=code, param=param, stored=False)


def _no_such(label: str, object_id: str, *, param: str | None = None) -> StripeApiError:
    # The object named in the URL is a 404; an object named by a parameter is a 400.
    return StripeApiError(
        400 if param else 404,
        f"No such {label}: '{object_id}'",
        code="resource_missing",
        param=param or "id",
    )


def _not_editable(message: str) -> StripeApiError:
    return StripeApiError(400, message, code="invoice_not_editable")


# --------------------------------------------------------------------------------------
# Form parsing and parameter coercion
# --------------------------------------------------------------------------------------

_KEY_RE = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_SUBKEY_RE = re.compile(r"\[([^\[\]]*)\]")


def parse_stripe_form(pairs: Iterable[tuple[str, str]]) -> JSON:
    """Decode Stripe's bracket syntax into nested dicts and lists.

    ``a[b]=1`` → ``{"a": {"b": "1"}}``; ``a[0]=x&a[1]=y`` and ``a[]=x&a[]=y`` → ``{"a": ["x",
    "y"]}``. Values stay strings (Stripe's types are applied per parameter); ``metadata`` keys
    are never turned into list indices.
    """
    root: JSON = {}
    for raw_key, value in pairs:
        match = _KEY_RE.match(raw_key)
        if match is None:
            raise StripeApiError(
                400,
                f"Invalid parameter name: {raw_key!r}",
                code="parameter_unknown",
                param=raw_key,
                stored=False,
            )
        parts = [match.group(1), *_SUBKEY_RE.findall(match.group(2))]
        node = root
        for index, part in enumerate(parts):
            key = part if part != "" else str(len(node))
            if index == len(parts) - 1:
                node[key] = value
            else:
                child = node.get(key)
                if not isinstance(child, dict):
                    child = {}
                    node[key] = child
                node = child
    normalized = _normalize_form(root, "")
    assert isinstance(normalized, dict)
    return normalized


def _normalize_form(value: Any, key: str) -> Any:
    if not isinstance(value, dict):
        return value
    items = {k: _normalize_form(v, k) for k, v in value.items()}
    if key != "metadata" and items and all(k.isdigit() for k in items):
        return [items[k] for k in sorted(items, key=int)]
    return items


def _fingerprint(params: Mapping[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, separators=(",", ":"))


def _get_str(params: Mapping[str, Any], name: str, *, required: bool = False) -> str | None:
    if name not in params:
        if required:
            raise _missing(name)
        return None
    value = params[name]
    if not isinstance(value, str):
        raise _invalid(name, f"Invalid string: {value!r}", "parameter_invalid_string")
    if required and value == "":
        raise _missing(name)
    return value


def _get_int(params: Mapping[str, Any], name: str, *, required: bool = False) -> int | None:
    value = _get_str(params, name, required=required)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise _invalid(name, f"Invalid integer: {value}", "parameter_invalid_integer") from None


def _get_bool(params: Mapping[str, Any], name: str, *, required: bool = False) -> bool | None:
    value = _get_str(params, name, required=required)
    if value is None:
        return None
    if value in ("true", "false"):
        return value == "true"
    raise _invalid(name, f"Invalid boolean: {value}", "parameter_invalid_boolean")


def _get_decimal(params: Mapping[str, Any], name: str, *, required: bool = False) -> Decimal | None:
    value = _get_str(params, name, required=required)
    if value is None:
        return None
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise _invalid(name, f"Invalid decimal: {value}", "parameter_invalid_decimal") from None
    if not number.is_finite():
        raise _invalid(name, f"Invalid decimal: {value}", "parameter_invalid_decimal")
    return number


def _get_list(params: Mapping[str, Any], name: str) -> list[str] | None:
    if name not in params:
        return None
    value = params[name]
    if value == "":
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _invalid(name, f"Invalid array for {name}", "parameter_invalid_array")
    return cast(list[str], value)


def _get_dict(params: Mapping[str, Any], name: str) -> JSON | None:
    if name not in params:
        return None
    value = params[name]
    if not isinstance(value, dict):
        raise _invalid(name, f"Invalid object for {name}", "parameter_invalid_object")
    return cast(JSON, value)


def _get_currency(params: Mapping[str, Any], name: str = "currency") -> str | None:
    value = _get_str(params, name)
    if value is None:
        return None
    currency = value.lower()
    if not re.fullmatch(r"[a-z]{3}", currency):
        raise _invalid(name, f"Invalid currency: {value}")
    return currency


def _get_enum(params: Mapping[str, Any], name: str, allowed: tuple[str, ...]) -> str | None:
    value = _get_str(params, name)
    if value is not None and value not in allowed:
        raise _invalid(
            name, f"Invalid {name}: must be one of {', '.join(allowed)}", "parameter_invalid_enum"
        )
    return value


def _updated_metadata(
    current: Mapping[str, str], params: Mapping[str, Any]
) -> dict[str, str] | None:
    """Stripe's metadata semantics: keys merge, ``metadata[k]=`` removes k, ``metadata=`` clears."""
    if "metadata" not in params:
        return None
    raw = params["metadata"]
    if raw == "":
        return {}
    if not isinstance(raw, dict):
        raise _invalid("metadata", "Invalid hash", "parameter_invalid_object")
    result = dict(current)
    for key, value in raw.items():
        if not isinstance(value, str):
            raise _invalid(f"metadata[{key}]", "Metadata values must be strings")
        if len(key) > 40:
            raise _invalid(f"metadata[{key}]", "Metadata keys can have up to 40 characters")
        if len(value) > 500:
            raise _invalid(f"metadata[{key}]", "Metadata values can have up to 500 characters")
        if value == "":
            result.pop(key, None)
        else:
            result[key] = value
    if len(result) > 50:
        raise _invalid("metadata", "Metadata can have up to 50 keys")
    return result


_MAX_DESCRIPTION = 500
_MAX_INVOICE_ITEMS = 250


def _get_description(params: Mapping[str, Any]) -> str | None:
    """Stripe refuses an invoice item description over 500 characters."""
    value = _get_str(params, "description")
    if value is not None and len(value) > _MAX_DESCRIPTION:
        raise _invalid(
            "description",
            f"Invalid string: {value[:20]}...; must be at most {_MAX_DESCRIPTION} characters",
            "parameter_invalid_string",
        )
    return value


def _check_amount(amount: int, currency: str, param: str = "amount") -> None:
    """Three-decimal currencies: Stripe requires the last digit of the amount to be 0."""
    if currency.lower() in THREE_DECIMAL_CURRENCIES and amount % 10 != 0:
        raise _invalid(
            param,
            f"Invalid amount {amount} for currency {currency.upper()}: amounts in "
            f"{currency.upper()} must be rounded to the nearest ten (the last digit must be 0).",
            "parameter_invalid_integer",
        )


def _round_minor(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _decimal_str(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return text


def _public(obj: Mapping[str, Any]) -> JSON:
    """A deep copy without the fake's private ``_…`` bookkeeping, ``id``/``object`` first."""
    out: JSON = {}
    for key in ("id", "object"):
        if key in obj:
            out[key] = copy.deepcopy(obj[key])
    for key in sorted(obj):
        if key not in out and not key.startswith("_"):
            out[key] = copy.deepcopy(obj[key])
    return out


def _diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> JSON:
    return {k: copy.deepcopy(v) for k, v in old.items() if k != "lines" and new.get(k) != v}


# --------------------------------------------------------------------------------------
# Public records
# --------------------------------------------------------------------------------------


@dataclass
class Fault:
    """A fault applied to the next ``remaining`` requests matching ``method`` and ``path``.

    ``path`` is a prefix of the request path; ``method`` is an HTTP method or ``"*"``.
    Kinds: ``error`` answers ``status`` (default 500, Stripe's ``api_error`` shape, with
    ``Stripe-Should-Retry`` when ``should_retry`` is set) without doing the work; ``rate_limit``
    answers 429 with ``Retry-After``; ``delay`` sleeps ``seconds`` before doing the work (or
    after it, before answering, when ``after_work``), so a client time-out fires; ``drop``
    does the work, then loses the response: a 500 (``drop_mode="error"``) or a connection
    closed mid-response (``drop_mode="close"``). The real response of a dropped request is
    kept by the idempotency layer, so a retry with the same key replays it.
    """

    kind: FaultKind
    method: str = "*"
    path: str = "/v1/"
    remaining: int = 1
    status: int | None = None
    should_retry: bool | None = None
    retry_after: float = 1.0
    seconds: float = 0.0
    after_work: bool = False
    drop_mode: Literal["error", "close"] = "error"
    id: str = field(default_factory=lambda: _new_id("fault", 12))

    def matches(self, method: str, path: str) -> bool:
        """True when this fault applies to a request."""
        return (
            self.remaining > 0
            and (self.method == "*" or self.method.upper() == method.upper())
            and path.startswith(self.path)
        )


@dataclass
class RecordedRequest:
    """One request to ``/v1``, as the fake saw it.

    ``status`` is what the client received (``None`` when the connection was dropped);
    ``outcome_status`` is the status of the work the fake did (``None`` when it did none,
    e.g. an injected ``error``); ``replayed`` is True for idempotent replays.
    """

    method: str
    path: str
    params: JSON
    idempotency_key: str | None
    at: float
    status: int | None = None
    outcome_status: int | None = None
    replayed: bool = False
    fault: str | None = None


@dataclass
class WebhookDelivery:
    """One attempt to deliver an event to ``webhook_url``."""

    event_id: str
    event_type: str
    url: str
    attempt: int
    status: int | None
    error: str | None
    at: float

    @property
    def ok(self) -> bool:
        """True when the endpoint answered 2xx."""
        return self.status is not None and 200 <= self.status < 300


@dataclass
class _StoredResponse:
    api_key: str
    method: str
    path: str
    fingerprint: str
    status: int
    body: bytes
    request_id: str
    stored_at: float


@dataclass
class _Outcome:
    status: int
    body: bytes
    headers: dict[str, str]
    events: list[JSON]
    replayed: bool = False


@dataclass
class _Ctx:
    request_id: str | None
    idempotency_key: str | None
    base_url: str | None
    events: list[JSON]


@dataclass
class _Route:
    method: str
    pattern: re.Pattern[str]
    handler: Callable[..., JSON]
    params_class: str | None
    extra_params: frozenset[str] = frozenset()


class _DroppedResponse(Exception):
    """Raised inside the ASGI app to make uvicorn close a connection mid-response."""


class _DropFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, _DroppedResponse)


_uvicorn_filter_installed = False


def _install_uvicorn_filter() -> None:
    global _uvicorn_filter_installed
    if not _uvicorn_filter_installed:
        logging.getLogger("uvicorn.error").addFilter(_DropFilter())
        _uvicorn_filter_installed = True


# --------------------------------------------------------------------------------------
# Search
# --------------------------------------------------------------------------------------

_SEARCH_CLAUSE = re.compile(
    r"""\s*(?P<neg>-)?(?P<field>metadata\[(?P<q>['"])(?P<mkey>.*?)(?P=q)\]|[a-z_]+)\s*"""
    r"""(?P<op>:|>=|<=|>|<)\s*(?P<value>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^\s'"]+)\s*"""
)
_SEARCH_JOIN = re.compile(r"(AND|OR)\s+")


@dataclass
class _Clause:
    negate: bool
    field: str
    metadata_key: str | None
    op: str
    value: str


def _parse_search(query: str) -> tuple[str, list[_Clause]]:
    clauses: list[_Clause] = []
    joiner: str | None = None
    pos = 0
    while True:
        match = _SEARCH_CLAUSE.match(query, pos)
        if match is None:
            raise _invalid("query", f"Invalid search query at position {pos}: {query!r}")
        raw_value = match.group("value")
        if raw_value[:1] in ("'", '"'):
            raw_value = re.sub(r"\\(.)", r"\1", raw_value[1:-1])
        clauses.append(
            _Clause(
                negate=bool(match.group("neg")),
                field="metadata" if match.group("mkey") is not None else match.group("field"),
                metadata_key=match.group("mkey"),
                op=match.group("op"),
                value=raw_value,
            )
        )
        pos = match.end()
        if pos >= len(query):
            break
        join = _SEARCH_JOIN.match(query, pos)
        if join is None:
            raise _invalid("query", f"Invalid search query at position {pos}: {query!r}")
        if joiner is not None and joiner != join.group(1):
            raise _invalid("query", "A search query cannot combine AND and OR")
        joiner = join.group(1)
        pos = join.end()
    return joiner or "AND", clauses


def _clause_matches(clause: _Clause, obj: Mapping[str, Any], numeric: frozenset[str]) -> bool:
    if clause.field == "metadata":
        actual: Any = (obj.get("metadata") or {}).get(clause.metadata_key or "")
    else:
        actual = obj.get(clause.field)
    if clause.field in numeric:
        try:
            want = int(clause.value)
        except ValueError:
            raise _invalid("query", f"{clause.field} needs an integer") from None
        have = int(actual) if actual is not None else None
        result = (
            have is not None
            and {
                ":": have == want,
                ">": have > want,
                "<": have < want,
                ">=": have >= want,
                "<=": have <= want,
            }[clause.op]
        )
    else:
        if clause.op != ":":
            raise _invalid("query", f"{clause.field} only supports ':'")
        result = (actual is None and clause.value == "null") or (
            actual is not None and str(actual) == clause.value
        )
    return result != clause.negate


# --------------------------------------------------------------------------------------
# Webhook delivery
# --------------------------------------------------------------------------------------


class _WebhookDispatcher:
    """Delivers events from a background thread, in order, retrying a few times."""

    def __init__(self, fake: FakeStripe) -> None:
        self._fake = fake
        self._cond = threading.Condition()
        self._queue: deque[JSON] = deque()
        self._pending = 0
        self._closed = False
        self._thread: threading.Thread | None = None

    def enqueue(self, events: list[JSON]) -> None:
        if not events:
            return
        with self._cond:
            if self._closed:
                return
            self._queue.extend(events)
            self._pending += len(events)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="fake-stripe-webhooks", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def flush(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def discard(self) -> None:
        with self._cond:
            self._pending -= len(self._queue)
            self._queue.clear()
            self._cond.notify_all()

    def close(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _sleep(self, seconds: float) -> bool:
        """Sleep unless closed meanwhile; True if still open."""
        with self._cond:
            self._cond.wait_for(lambda: self._closed, seconds)
            return not self._closed

    def _run(self) -> None:
        with httpx.Client(timeout=self._fake.webhook_timeout) as client:
            while True:
                with self._cond:
                    while not self._queue and not self._closed:
                        self._cond.wait()
                    if not self._queue:
                        return
                    event = self._queue.popleft()
                try:
                    self._deliver(client, event)
                except Exception:
                    log.exception("fake stripe: webhook delivery of %s crashed", event.get("id"))
                finally:
                    with self._cond:
                        self._pending -= 1
                        self._cond.notify_all()

    def _deliver(self, client: httpx.Client, event: JSON) -> None:
        fake = self._fake
        url = fake.webhook_url
        if not url:
            return
        payload = _event_payload(event)
        attempts = fake.webhook_retries + 1
        for attempt in range(1, attempts + 1):
            timestamp = int(time.time())
            headers = {
                "Content-Type": "application/json; charset=utf-8",
                "Stripe-Signature": sign_stripe_payload(payload, fake.webhook_secret, timestamp),
                "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            }
            status: int | None = None
            error: str | None = None
            try:
                response = client.post(url, content=payload, headers=headers)
                status = response.status_code
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            fake._record_delivery(
                WebhookDelivery(
                    event_id=str(event["id"]),
                    event_type=str(event["type"]),
                    url=url,
                    attempt=attempt,
                    status=status,
                    error=error,
                    at=time.time(),
                )
            )
            if status is not None and 200 <= status < 300:
                return
            if attempt < attempts and not self._sleep(
                fake.webhook_retry_delay * 2 ** (attempt - 1)
            ):
                break
        log.warning(
            "fake stripe: dropping webhook %s (%s) for %s after %d attempt(s)",
            event["id"],
            event["type"],
            url,
            attempts,
        )


# --------------------------------------------------------------------------------------
# The fake
# --------------------------------------------------------------------------------------


class FakeStripe:
    """A stateful fake of the Stripe API; ``.app`` is the ASGI (Starlette) application.

    All state lives in memory behind one lock, so the app can be served from a background
    thread while a test inspects or configures it from another.

    Inspection: :attr:`requests` (every ``/v1`` request, in order), :attr:`created` (a
    ``Counter`` of objects created, keyed by Stripe object name: ``customer``, ``tax_rate``,
    ``invoice``, ``invoiceitem``, ``event``), :attr:`events`, :attr:`webhook_deliveries`,
    :meth:`get_object`, :meth:`list_objects`, :meth:`state`.

    Faults: :meth:`inject_fault` (or ``POST /_fake/faults``), :meth:`clear_faults`.
    Idempotency: see the module docstring and :meth:`forget_idempotency_keys`.

    Beyond Stripe, ``POST /v1/customers`` also accepts ``currency`` (Stripe sets a customer's
    currency from its first invoice or invoice item; the fake does too when it is not given).
    ``clock`` supplies object timestamps (seconds); webhook signatures always use real time.
    With ``strict_params`` (the default) a parameter that stripe-python 16 does not declare
    for the endpoint is refused with ``parameter_unknown``, as Stripe refuses it.
    """

    def __init__(
        self,
        api_key: str = "sk_test_fake",
        webhook_secret: str = "whsec_fake",  # noqa: S107 - a fake's test secret
        webhook_url: str | None = None,
        *,
        default_currency: str = "usd",
        account_name: str = "kanvoice (fake Stripe)",
        clock: Callable[[], float] = time.time,
        strict_params: bool = True,
        search_visibility_delay: float = 0.0,
        webhook_retries: int = 3,
        webhook_retry_delay: float = 0.2,
        webhook_timeout: float = 5.0,
    ) -> None:
        self.api_key = api_key
        self.webhook_secret = webhook_secret
        self.webhook_url = webhook_url
        self.default_currency = default_currency.lower()
        self.account_name = account_name
        self.clock = clock
        self.strict_params = strict_params
        self.search_visibility_delay = search_visibility_delay
        self.webhook_retries = webhook_retries
        self.webhook_retry_delay = webhook_retry_delay
        self.webhook_timeout = webhook_timeout

        self._lock = threading.RLock()
        self.requests: list[RecordedRequest] = []
        self.created: Counter[str] = Counter()
        self.webhook_deliveries: list[WebhookDelivery] = []
        self._faults: list[Fault] = []
        self._idempotency: dict[tuple[str, str], _StoredResponse] = {}
        self._customers: dict[str, JSON] = {}
        self._tax_rates: dict[str, JSON] = {}
        self._invoices: dict[str, JSON] = {}
        self._items: dict[str, JSON] = {}
        self._events: dict[str, JSON] = {}
        self._seq = 0
        self._last_base_url: str | None = None
        self._last_prune = self.clock()
        self._dispatcher = _WebhookDispatcher(self)
        self._routes = self._build_routes()
        self._known_params: dict[str, frozenset[str] | None] = {}
        self.app: ASGIApp = self._build_app()

    # ---------------------------------------------------------------- public Python API

    def inject_fault(
        self,
        kind: FaultKind,
        *,
        method: str = "*",
        path: str = "/v1/",
        count: int = 1,
        status: int | None = None,
        should_retry: bool | None = None,
        retry_after: float = 1.0,
        seconds: float = 0.0,
        after_work: bool = False,
        drop_mode: Literal["error", "close"] = "error",
    ) -> Fault:
        """Make the next ``count`` requests matching ``method`` and path prefix ``path`` fail.

        See :class:`Fault` for the kinds. Faults never apply to ``/_fake`` routes.
        """
        if kind not in _FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {_FAULT_KINDS}")
        if drop_mode not in ("error", "close"):
            raise ValueError("drop_mode must be 'error' or 'close'")
        if count < 1:
            raise ValueError("count must be at least 1")
        fault = Fault(
            kind=kind,
            method=method.upper() if method != "*" else "*",
            path=path,
            remaining=count,
            status=status,
            should_retry=should_retry,
            retry_after=retry_after,
            seconds=seconds,
            after_work=after_work,
            drop_mode=drop_mode,
        )
        with self._lock:
            self._faults.append(fault)
        return fault

    def fail_next(
        self,
        method: str = "*",
        path: str = "/v1/",
        *,
        count: int = 1,
        status: int = 500,
        should_retry: bool | None = None,
    ) -> Fault:
        """Shorthand for ``inject_fault("error", …)``."""
        return self.inject_fault(
            "error",
            method=method,
            path=path,
            count=count,
            status=status,
            should_retry=should_retry,
        )

    def rate_limit_next(
        self, method: str = "*", path: str = "/v1/", *, count: int = 1, retry_after: float = 1.0
    ) -> Fault:
        """Shorthand for ``inject_fault("rate_limit", …)``."""
        return self.inject_fault(
            "rate_limit", method=method, path=path, count=count, retry_after=retry_after
        )

    def delay_next(
        self,
        method: str = "*",
        path: str = "/v1/",
        *,
        seconds: float,
        count: int = 1,
        after_work: bool = False,
    ) -> Fault:
        """Shorthand for ``inject_fault("delay", …)``."""
        return self.inject_fault(
            "delay",
            method=method,
            path=path,
            count=count,
            seconds=seconds,
            after_work=after_work,
        )

    def drop_next(
        self,
        method: str = "*",
        path: str = "/v1/",
        *,
        count: int = 1,
        mode: Literal["error", "close"] = "error",
    ) -> Fault:
        """Shorthand for ``inject_fault("drop", …)``: do the work, then lose the response."""
        return self.inject_fault("drop", method=method, path=path, count=count, drop_mode=mode)

    def clear_faults(self) -> None:
        """Remove every pending fault."""
        with self._lock:
            self._faults.clear()

    @property
    def faults(self) -> list[Fault]:
        """Faults with requests left to affect."""
        with self._lock:
            return [copy.copy(f) for f in self._faults if f.remaining > 0]

    def forget_idempotency_keys(self, older_than: float = 0.0) -> int:
        """Drop saved idempotent responses at least ``older_than`` seconds old (default: all).

        Stripe prunes keys once they are 24 hours old; a request that reuses a pruned key is
        executed as a new request. Returns how many keys were dropped.
        """
        now = self.clock()
        with self._lock:
            stale = [k for k, v in self._idempotency.items() if now - v.stored_at >= older_than]
            for key in stale:
                del self._idempotency[key]
            return len(stale)

    def reset(self) -> None:
        """Forget every object, event, key, fault, recorded request and pending webhook.

        Configuration (keys, ``webhook_url``, clock) is kept; the ``requests`` list and the
        ``created`` counter are cleared in place.
        """
        with self._lock:
            self.requests.clear()
            self.created.clear()
            self.webhook_deliveries.clear()
            self._faults.clear()
            self._idempotency.clear()
            self._customers.clear()
            self._tax_rates.clear()
            self._invoices.clear()
            self._items.clear()
            self._events.clear()
        self._dispatcher.discard()

    def close(self) -> None:
        """Stop the webhook thread (pending deliveries get a short chance to finish)."""
        self._dispatcher.close()

    def flush_webhooks(self, timeout: float = 5.0) -> bool:
        """Wait until every queued webhook was delivered or dropped; False on time-out."""
        return self._dispatcher.flush(timeout)

    @property
    def events(self) -> list[JSON]:
        """Every event so far, oldest first (copies)."""
        with self._lock:
            return [_public(e) for e in self._events.values()]

    def get_object(self, object_id: str) -> JSON | None:
        """The current Stripe JSON of an object by id (``cus_``, ``txr_``, ``in_``, ``ii_``,
        ``evt_``), or None."""
        with self._lock:
            return self._render_any(object_id)

    def list_objects(self, object_name: str) -> list[JSON]:
        """All live objects of a kind (``customer``, ``tax_rate``, ``invoice``,
        ``invoiceitem``, ``event``), oldest first."""
        with self._lock:
            store = self._store_for(object_name)
            records = sorted(store.values(), key=lambda r: int(r["_seq"]))
            return [cast(JSON, self._render_any(str(r["id"]))) for r in records]

    def state(self) -> JSON:
        """A JSON snapshot of everything (what ``GET /_fake/state`` answers)."""
        with self._lock:
            return {
                "created": dict(self.created),
                "objects": {
                    name: self.list_objects(name)
                    for name in ("customer", "tax_rate", "invoice", "invoiceitem")
                },
                "events": [{"id": e["id"], "type": e["type"]} for e in self._events.values()],
                "requests": [asdict(r) for r in self.requests],
                "faults": [asdict(f) for f in self._faults if f.remaining > 0],
                "idempotency_keys": len(self._idempotency),
                "webhook_url": self.webhook_url,
                "webhook_deliveries": [asdict(d) for d in self.webhook_deliveries],
            }

    def sign_event(
        self,
        event: Mapping[str, Any] | str,
        *,
        timestamp: int | None = None,
        secret: str | None = None,
    ) -> SignedEvent:
        """Serialize and sign an event (a stored event's id, or an event dict) like Stripe."""
        if isinstance(event, str):
            with self._lock:
                stored = self._events.get(event)
                if stored is None:
                    raise KeyError(event)
                event_dict = _public(stored)
        else:
            event_dict = _public(event)
        ts = int(time.time()) if timestamp is None else int(timestamp)
        payload = _event_payload(event_dict)
        header = sign_stripe_payload(payload, secret or self.webhook_secret, ts)
        return SignedEvent(event=event_dict, payload=payload, timestamp=ts, signature_header=header)

    def build_signed_event(
        self,
        event_type: str,
        data_object: Mapping[str, Any],
        *,
        previous_attributes: Mapping[str, Any] | None = None,
        timestamp: int | None = None,
        secret: str | None = None,
    ) -> SignedEvent:
        """Build a Stripe-shaped event around ``data_object`` and sign it; nothing is stored
        or delivered. For tests of a webhook receiver."""
        data: JSON = {"object": copy.deepcopy(dict(data_object))}
        if previous_attributes is not None:
            data["previous_attributes"] = copy.deepcopy(dict(previous_attributes))
        event: JSON = {
            "id": _new_id("evt"),
            "object": "event",
            "api_version": API_VERSION,
            "created": int(self.clock()),
            "data": data,
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": event_type,
        }
        return self.sign_event(event, timestamp=timestamp, secret=secret)

    def run_automatic_advancement(self) -> list[str]:
        """Finalize ``auto_advance`` drafts whose ``automatically_finalizes_at`` has passed
        (Stripe does this about an hour after creation). Also runs before every request."""
        events: list[JSON] = []
        with self._lock:
            finalized = self._auto_advance(_Ctx(None, None, self._last_base_url, events))
        self._dispatcher.enqueue(events if self.webhook_url else [])
        return finalized

    def run_overdue_check(self, days_after_due: int = 0) -> list[str]:
        """Emit ``invoice.overdue`` for every open invoice whose ``due_date`` passed at
        least `days_after_due` days ago, once per invoice (Stripe's "overdue invoice"
        automation: the event fires X days after the invoice became due, X set in the
        Dashboard). Paid, void and draft invoices never get it. Returns their ids."""
        events: list[JSON] = []
        flagged: list[str] = []
        with self._lock:
            ctx = _Ctx(None, None, self._last_base_url, events)
            now = self._now()
            for record in self._invoices.values():
                due = record.get("due_date")
                if record.get("status") != "open" or due is None or record.get("_overdue_sent"):
                    continue
                if now < int(due) + days_after_due * 86400:
                    continue
                record["_overdue_sent"] = True
                self._emit(ctx, "invoice.overdue", self._render_invoice(record))
                flagged.append(str(record["id"]))
        self._dispatcher.enqueue(events if self.webhook_url else [])
        return flagged

    # ---------------------------------------------------------------- internals: misc

    def _now(self) -> int:
        return int(self.clock())

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _record_delivery(self, delivery: WebhookDelivery) -> None:
        with self._lock:
            self.webhook_deliveries.append(delivery)

    def _store_for(self, object_name: str) -> dict[str, JSON]:
        stores = {
            "customer": self._customers,
            "tax_rate": self._tax_rates,
            "invoice": self._invoices,
            "invoiceitem": self._items,
            "event": self._events,
        }
        if object_name not in stores:
            raise KeyError(object_name)
        return stores[object_name]

    def _render_any(self, object_id: str) -> JSON | None:
        if object_id in self._customers:
            return _public(self._customers[object_id])
        if object_id in self._tax_rates:
            return _public(self._tax_rates[object_id])
        if object_id in self._invoices:
            return self._render_invoice(self._invoices[object_id])
        if object_id in self._items:
            return self._render_item(self._items[object_id])
        if object_id in self._events:
            return _public(self._events[object_id])
        return None

    def _emit(self, ctx: _Ctx, event_type: str, obj: JSON, previous: JSON | None = None) -> None:
        data: JSON = {"object": obj}
        if previous:
            data["previous_attributes"] = previous
        event: JSON = {
            "id": _new_id("evt"),
            "object": "event",
            "api_version": API_VERSION,
            "created": self._now(),
            "data": data,
            "livemode": False,
            "pending_webhooks": 1 if self.webhook_url else 0,
            "request": {"id": ctx.request_id, "idempotency_key": ctx.idempotency_key},
            "type": event_type,
            "_seq": self._next_seq(),
        }
        self._events[event["id"]] = event
        self.created["event"] += 1
        ctx.events.append(event)

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    fault.remaining -= 1
                    taken = copy.copy(fault)
                    break
            else:
                return None
            self._faults = [f for f in self._faults if f.remaining > 0]
            return taken

    def _params_allowed(self, route: _Route) -> frozenset[str] | None:
        if route.params_class is None:
            return None
        if route.params_class not in self._known_params:
            allowed: frozenset[str] | None = None
            try:
                import stripe.params as stripe_params
                from stripe._request_options import RequestOptions

                params_cls = getattr(stripe_params, route.params_class)
                names = set(params_cls.__annotations__) - set(RequestOptions.__annotations__)
                allowed = frozenset(names | route.extra_params)
            except (ImportError, AttributeError):  # pragma: no cover - SDK layout changed
                allowed = None
            self._known_params[route.params_class] = allowed
        return self._known_params[route.params_class]

    def _check_params(self, route: _Route, params: Mapping[str, Any]) -> None:
        if not self.strict_params:
            return
        allowed = self._params_allowed(route)
        if allowed is None:
            return
        for name in params:
            if name not in allowed:
                hint = ""
                if name == "unit_amount" and "unit_amount_decimal" in allowed:
                    hint = " (since 2025-03-31.basil use unit_amount_decimal or amount)"
                raise StripeApiError(
                    400,
                    f"Received unknown parameter: {name}{hint}",
                    code="parameter_unknown",
                    param=name,
                    stored=False,
                )

    def _expand(self, obj: JSON, params: Mapping[str, Any]) -> JSON:
        paths = _get_list(params, "expand") or []
        for path in paths:
            self._expand_path(obj, path.split("."), path)
        return obj

    def _expand_path(self, node: Any, parts: list[str], full: str) -> None:
        if not parts:
            return
        head, rest = parts[0], parts[1:]
        if (
            isinstance(node, dict)
            and head == "data"
            and node.get("object") in ("list", "search_result")
        ):
            for item in node["data"]:
                self._expand_path(item, rest, full)
            return
        if not isinstance(node, dict) or head not in node:
            raise _invalid("expand", f"This property cannot be expanded ({full}).")
        value = node[head]
        if isinstance(value, str):
            target = self._render_any(value)
            if target is None:
                raise _invalid("expand", f"This property cannot be expanded ({full}).")
            node[head] = target
            value = target
        if rest:
            self._expand_path(value, rest, full)

    def _paginate(
        self,
        records: Iterable[JSON],
        params: Mapping[str, Any],
        url: str,
        render: Callable[[JSON], JSON],
        label: str,
    ) -> JSON:
        ordered = sorted(records, key=lambda r: int(r["_seq"]), reverse=True)
        limit = _get_int(params, "limit")
        if limit is None:
            limit = 10
        if not 1 <= limit <= 100:
            raise _invalid(
                "limit", "Invalid limit: must be between 1 and 100", "parameter_invalid_integer"
            )
        starting_after = _get_str(params, "starting_after")
        ending_before = _get_str(params, "ending_before")
        ids = [str(r["id"]) for r in ordered]
        if starting_after:
            if starting_after not in ids:
                raise _no_such(label, starting_after, param="starting_after")
            start = ids.index(starting_after) + 1
            window = ordered[start : start + limit]
            has_more = start + limit < len(ordered)
        elif ending_before:
            if ending_before not in ids:
                raise _no_such(label, ending_before, param="ending_before")
            end = ids.index(ending_before)
            window = ordered[max(0, end - limit) : end]
            has_more = end - limit > 0
        else:
            window = ordered[:limit]
            has_more = len(ordered) > limit
        return {
            "object": "list",
            "data": [render(r) for r in window],
            "has_more": has_more,
            "url": url,
        }

    def _search(
        self,
        records: Iterable[JSON],
        params: Mapping[str, Any],
        url: str,
        render: Callable[[JSON], JSON],
        fields: frozenset[str],
        numeric: frozenset[str],
    ) -> JSON:
        query = _get_str(params, "query", required=True)
        assert query is not None
        joiner, clauses = _parse_search(query)
        for clause in clauses:
            if clause.field != "metadata" and clause.field not in fields:
                raise _invalid("query", f"Field '{clause.field}' is not supported in this search.")
        limit = _get_int(params, "limit") or 10
        if not 1 <= limit <= 100:
            raise _invalid(
                "limit", "Invalid limit: must be between 1 and 100", "parameter_invalid_integer"
            )
        page = _get_str(params, "page")
        try:
            offset = int(base64.urlsafe_b64decode(page.encode()).decode()) if page else 0
        except (ValueError, binascii.Error):
            raise _invalid("page", f"Invalid page: {page}") from None
        visible_before = self.clock() - self.search_visibility_delay
        matches = []
        for record in sorted(records, key=lambda r: int(r["_seq"]), reverse=True):
            if self.search_visibility_delay and float(record["_indexed_at"]) > visible_before:
                continue
            rendered = render(record)
            results = [_clause_matches(c, rendered, numeric) for c in clauses]
            if all(results) if joiner == "AND" else any(results):
                matches.append(rendered)
        window = matches[offset : offset + limit]
        has_more = offset + limit < len(matches)
        next_page = (
            base64.urlsafe_b64encode(str(offset + limit).encode()).decode() if has_more else None
        )
        return {
            "object": "search_result",
            "data": window,
            "has_more": has_more,
            "next_page": next_page,
            "url": url,
        }

    # ---------------------------------------------------------------- request execution

    def _authenticate(self, headers: Mapping[str, str]) -> str:
        auth = headers.get("authorization", "")
        if not auth:
            raise StripeApiError(
                401,
                "You did not provide an API key. You need to provide your API key in the "
                "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
                "YOUR_SECRET_KEY').",
                stored=False,
            )
        scheme, _, credentials = auth.partition(" ")
        key = ""
        if scheme.lower() == "bearer":
            key = credentials.strip()
        elif scheme.lower() == "basic":
            with contextlib.suppress(ValueError, binascii.Error):
                key = base64.b64decode(credentials.strip()).decode().partition(":")[0]
        if key != self.api_key:
            shown = key[:8] + "*" * max(0, len(key) - 12) + key[-4:] if len(key) > 12 else key
            raise StripeApiError(401, f"Invalid API Key provided: {shown}", stored=False)
        return key

    def _match(self, method: str, path: str) -> tuple[_Route, tuple[str, ...]]:
        for route in self._routes:
            if route.method != method:
                continue
            match = route.pattern.fullmatch(path)
            if match is not None:
                return route, match.groups()
        raise StripeApiError(
            404,
            f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs "
            "or we can help at https://support.stripe.com/.",
            stored=False,
        )

    def _execute(
        self, method: str, path: str, headers: Mapping[str, str], params: JSON, base_url: str
    ) -> _Outcome:
        request_id = _new_id("req", 14)
        key = headers.get("idempotency-key") if method == "POST" else None
        response_headers = {
            "Request-Id": request_id,
            "Stripe-Version": headers.get("stripe-version") or API_VERSION,
        }
        if key is not None:
            response_headers["Idempotency-Key"] = key
        events: list[JSON] = []
        with self._lock:
            self._last_base_url = base_url
            if self.clock() - self._last_prune >= 3600:  # keeps a long demo run's memory flat
                self._last_prune = self.clock()
                self.forget_idempotency_keys(older_than=_IDEMPOTENCY_KEY_TTL)
            self._auto_advance(_Ctx(None, None, base_url, events))
            api_key: str | None = None
            store = False
            try:
                api_key = self._authenticate(headers)
                route, groups = self._match(method, path)
                if key is not None:
                    if len(key) > _MAX_IDEMPOTENCY_KEY:
                        raise _invalid(
                            "Idempotency-Key",
                            f"Idempotency-Key must be at most {_MAX_IDEMPOTENCY_KEY} characters",
                        )
                    saved = self._idempotency.get((api_key, key))
                    if saved is not None:
                        return self._replay(
                            saved, method, path, params, key, response_headers, events
                        )
                self._check_params(route, params)
                store = True
                ctx = _Ctx(request_id, key, base_url, events)
                obj = self._expand(route.handler(ctx, params, *groups), params)
                status, body = 200, obj
            except StripeApiError as exc:
                status, body = exc.status, exc.body()
                store = store and exc.stored
                response_headers.update(exc.headers)
            except Exception:
                log.exception("fake stripe: %s %s crashed", method, path)
                status = 500
                body = StripeApiError(
                    500,
                    "An unknown error occurred in the fake Stripe server.",
                    error_type="api_error",
                ).body()
            payload = json.dumps(body, indent=2).encode("utf-8")
            if key is not None and store and api_key is not None:
                self._idempotency[(api_key, key)] = _StoredResponse(
                    api_key=api_key,
                    method=method,
                    path=path,
                    fingerprint=_fingerprint(params),
                    status=status,
                    body=payload,
                    request_id=request_id,
                    stored_at=self.clock(),
                )
        return _Outcome(status, payload, response_headers, events)

    def _replay(
        self,
        saved: _StoredResponse,
        method: str,
        path: str,
        params: JSON,
        key: str,
        headers: dict[str, str],
        events: list[JSON],
    ) -> _Outcome:
        if (saved.method, saved.path) != (method, path):
            raise StripeApiError(
                400,
                "Keys for idempotent requests can only be used for the same endpoint they were "
                f"first used for ('{saved.method} {saved.path}' vs '{method} {path}'). Try "
                f"using a key other than '{key}' if you meant to execute a different request.",
                error_type="idempotency_error",
                stored=False,
            )
        if saved.fingerprint != _fingerprint(params):
            raise StripeApiError(
                400,
                "Keys for idempotent requests can only be used with the same parameters they "
                f"were first used with. Try using a key other than '{key}' if you meant to "
                "execute a different request.",
                error_type="idempotency_error",
                stored=False,
            )
        headers["Idempotent-Replayed"] = "true"
        headers["Original-Request"] = saved.request_id
        return _Outcome(saved.status, saved.body, headers, events, replayed=True)

    # ---------------------------------------------------------------- ASGI plumbing

    def _build_app(self) -> ASGIApp:
        _install_uvicorn_filter()
        routes = [
            Route("/_fake/faults", self._http_add_faults, methods=["POST"]),
            Route("/_fake/faults", self._http_list_faults, methods=["GET"]),
            Route("/_fake/faults", self._http_clear_faults, methods=["DELETE"]),
            Route("/_fake/reset", self._http_reset, methods=["POST"]),
            Route("/_fake/state", self._http_state, methods=["GET"]),
            Route("/_fake/forget_idempotency_keys", self._http_forget_keys, methods=["POST"]),
            Route("/_fake/config", self._http_config, methods=["POST"]),
            Route("/_fake/invoices/{invoice_id}", self._http_hosted_invoice, methods=["GET"]),
            Mount("/v1", app=self._serve_v1),
        ]
        return Starlette(routes=routes)

    @staticmethod
    async def _json_body(request: Request) -> Any:
        raw = await request.body()
        if not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"invalid JSON: {exc}") from exc

    async def _http_add_faults(self, request: Request) -> Response:
        try:
            body = await self._json_body(request)
            specs = body if isinstance(body, list) else [body]
            faults = []
            for spec in specs:
                if not isinstance(spec, dict):
                    raise ValueError("each fault must be a JSON object")
                spec = _coerce_fault_spec(spec)
                kind = spec.pop("kind", None)
                allowed = {
                    "method",
                    "path",
                    "count",
                    "status",
                    "should_retry",
                    "retry_after",
                    "seconds",
                    "after_work",
                    "drop_mode",
                }
                unknown = set(spec) - allowed
                if unknown:
                    raise ValueError(f"unknown fault field(s): {sorted(unknown)}")
                faults.append(self.inject_fault(kind, **spec))
        except (ValueError, TypeError) as exc:
            return JSONResponse(
                {"error": {"type": "invalid_request_error", "message": str(exc)}}, 400
            )
        return JSONResponse({"faults": [asdict(f) for f in faults]})

    async def _http_list_faults(self, request: Request) -> Response:
        return JSONResponse({"faults": [asdict(f) for f in self.faults]})

    async def _http_clear_faults(self, request: Request) -> Response:
        self.clear_faults()
        return JSONResponse({"faults": []})

    async def _http_reset(self, request: Request) -> Response:
        self.reset()
        return JSONResponse({"reset": True})

    async def _http_state(self, request: Request) -> Response:
        return JSONResponse(self.state())

    async def _http_forget_keys(self, request: Request) -> Response:
        try:
            body = await self._json_body(request)
            older_than = float(body.get("older_than", 0.0)) if isinstance(body, dict) else 0.0
        except (ValueError, TypeError) as exc:
            return JSONResponse(
                {"error": {"type": "invalid_request_error", "message": str(exc)}}, 400
            )
        return JSONResponse({"forgotten": self.forget_idempotency_keys(older_than)})

    async def _http_config(self, request: Request) -> Response:
        try:
            body = await self._json_body(request)
            if not isinstance(body, dict) or set(body) - {"webhook_url", "strict_params"}:
                raise ValueError("accepted fields: webhook_url, strict_params")
        except ValueError as exc:
            return JSONResponse(
                {"error": {"type": "invalid_request_error", "message": str(exc)}}, 400
            )
        if "webhook_url" in body:
            self.webhook_url = body["webhook_url"] or None
        if "strict_params" in body:
            self.strict_params = bool(body["strict_params"])
        return JSONResponse({"webhook_url": self.webhook_url, "strict_params": self.strict_params})

    async def _http_hosted_invoice(self, request: Request) -> Response:
        invoice_id = request.path_params["invoice_id"]
        with self._lock:
            record = self._invoices.get(invoice_id)
            invoice = self._render_invoice(record) if record else None
        if invoice is None or invoice["status"] == "draft":
            return HTMLResponse("<h1>Invoice not found</h1>", 404)
        currency = str(invoice["currency"])
        rows = "".join(
            f"<tr><td>{html.escape(str(line['description'] or ''))}</td>"
            f"<td>{line['quantity']}</td>"
            f"<td>{_format_money(int(line['amount']), currency)}</td></tr>"
            for line in invoice["lines"]["data"]
        )
        page = (
            "<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>Invoice {html.escape(str(invoice['number']))}</title></head><body>"
            f"<h1>Invoice {html.escape(str(invoice['number']))}</h1>"
            f"<p>Status: {html.escape(str(invoice['status']))}</p>"
            f"<table><tr><th>Description</th><th>Qty</th><th>Amount</th></tr>{rows}</table>"
            f"<p>Total: {_format_money(int(invoice['total']), currency)}</p>"
            f"<p>Amount due: {_format_money(int(invoice['amount_remaining']), currency)}</p>"
            "<p><small>Served by kanvoice's fake Stripe.</small></p></body></html>"
        )
        return HTMLResponse(page)

    async def _serve_v1(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # pragma: no cover - only HTTP is mounted
            return
        request = Request(scope, receive)
        method = request.method.upper()
        path = request.url.path
        host = request.headers.get("host", "127.0.0.1")
        base_url = f"{request.url.scheme}://{host}"
        raw_body = await request.body()
        key = request.headers.get("idempotency-key")
        record = RecordedRequest(
            method=method, path=path, params={}, idempotency_key=key, at=time.time()
        )
        with self._lock:
            self.requests.append(record)
        try:
            record.params = self._parse_params(method, request, raw_body)
        except StripeApiError as exc:
            record.status = exc.status
            await self._send_error(scope, receive, send, exc)
            return

        fault = self._take_fault(method, path)
        if fault is not None:
            record.fault = fault.kind
            if fault.kind == "error":
                error = StripeApiError(
                    fault.status or 500,
                    "An unknown error occurred (fault injected by the fake Stripe server).",
                    error_type="api_error",
                    headers=_should_retry_header(fault.should_retry),
                )
                record.status = error.status
                await self._send_error(scope, receive, send, error)
                return
            if fault.kind == "rate_limit":
                error = StripeApiError(
                    429,
                    "Too many requests hit the API too quickly. We recommend an exponential "
                    "backoff of your requests (fault injected by the fake Stripe server).",
                    code="rate_limit",
                    headers={"Retry-After": _format_seconds(fault.retry_after)},
                )
                record.status = 429
                await self._send_error(scope, receive, send, error)
                return
            if fault.kind == "delay" and not fault.after_work:
                await asyncio.sleep(fault.seconds)

        outcome = self._execute(method, path, request.headers, record.params, base_url)
        record.outcome_status = outcome.status
        record.replayed = outcome.replayed

        if fault is not None and fault.kind == "drop":
            self._enqueue_webhooks(outcome.events)
            if fault.drop_mode == "close":
                record.status = None
                await send(
                    {
                        "type": "http.response.start",
                        "status": outcome.status,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(outcome.body) + 64).encode()),
                        ],
                    }
                )
                raise _DroppedResponse("response dropped by an injected fault")
            error = StripeApiError(
                fault.status or 500,
                "An unknown error occurred (response lost by a fault injected after the work "
                "was done).",
                error_type="api_error",
                headers=_should_retry_header(fault.should_retry),
            )
            record.status = error.status
            await self._send_error(scope, receive, send, error)
            return
        if fault is not None and fault.kind == "delay" and fault.after_work:
            await asyncio.sleep(fault.seconds)

        record.status = outcome.status
        response = Response(
            outcome.body,
            status_code=outcome.status,
            headers=outcome.headers,
            media_type="application/json",
        )
        await response(scope, receive, send)
        self._enqueue_webhooks(outcome.events)

    def _enqueue_webhooks(self, events: list[JSON]) -> None:
        if self.webhook_url:
            self._dispatcher.enqueue(events)

    @staticmethod
    async def _send_error(
        scope: Scope, receive: Receive, send: Send, error: StripeApiError
    ) -> None:
        headers = {"Request-Id": _new_id("req", 14), **error.headers}
        response = JSONResponse(error.body(), status_code=error.status, headers=headers)
        await response(scope, receive, send)

    @staticmethod
    def _parse_params(method: str, request: Request, raw_body: bytes) -> JSON:
        pairs = parse_qsl(request.url.query, keep_blank_values=True)
        if method == "POST" and raw_body:
            content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if content_type not in ("", "application/x-www-form-urlencoded"):
                raise StripeApiError(
                    400,
                    f"Invalid request: the v1 API takes application/x-www-form-urlencoded "
                    f"bodies, not {content_type}.",
                    stored=False,
                )
            try:
                pairs += parse_qsl(
                    raw_body.decode("utf-8"), keep_blank_values=True, strict_parsing=True
                )
            except (UnicodeDecodeError, ValueError):
                raise StripeApiError(400, "Invalid request body.", stored=False) from None
        return parse_stripe_form(pairs)

    # ---------------------------------------------------------------- routes

    def _build_routes(self) -> list[_Route]:
        oid = r"([A-Za-z0-9_\-]+)"

        def route(
            method: str,
            pattern: str,
            handler: Callable[..., JSON],
            params_class: str | None,
            extra: Iterable[str] = (),
        ) -> _Route:
            return _Route(method, re.compile(pattern), handler, params_class, frozenset(extra))

        return [
            route(
                "POST",
                r"/v1/customers",
                self._customer_create,
                "CustomerCreateParams",
                ["currency"],
            ),
            route("GET", r"/v1/customers", self._customer_list, "CustomerListParams"),
            route("GET", r"/v1/customers/search", self._customer_search, "CustomerSearchParams"),
            route(
                "GET", rf"/v1/customers/{oid}", self._customer_retrieve, "CustomerRetrieveParams"
            ),
            route(
                "POST",
                rf"/v1/customers/{oid}",
                self._customer_update,
                "CustomerUpdateParams",
                ["currency"],
            ),
            route("DELETE", rf"/v1/customers/{oid}", self._customer_delete, "CustomerDeleteParams"),
            route("POST", r"/v1/tax_rates", self._tax_rate_create, "TaxRateCreateParams"),
            route("GET", r"/v1/tax_rates", self._tax_rate_list, "TaxRateListParams"),
            route("GET", rf"/v1/tax_rates/{oid}", self._tax_rate_retrieve, "TaxRateRetrieveParams"),
            route("POST", rf"/v1/tax_rates/{oid}", self._tax_rate_update, "TaxRateUpdateParams"),
            route("POST", r"/v1/invoices", self._invoice_create, "InvoiceCreateParams"),
            route("GET", r"/v1/invoices", self._invoice_list, "InvoiceListParams"),
            route("GET", r"/v1/invoices/search", self._invoice_search, "InvoiceSearchParams"),
            route("GET", rf"/v1/invoices/{oid}", self._invoice_retrieve, "InvoiceRetrieveParams"),
            route("POST", rf"/v1/invoices/{oid}", self._invoice_update, "InvoiceUpdateParams"),
            route("DELETE", rf"/v1/invoices/{oid}", self._invoice_delete, "InvoiceDeleteParams"),
            route(
                "GET", rf"/v1/invoices/{oid}/lines", self._invoice_lines, "InvoiceListLinesParams"
            ),
            route(
                "POST",
                rf"/v1/invoices/{oid}/finalize",
                self._invoice_finalize,
                "InvoiceFinalizeInvoiceParams",
            ),
            route(
                "POST", rf"/v1/invoices/{oid}/send", self._invoice_send, "InvoiceSendInvoiceParams"
            ),
            route("POST", rf"/v1/invoices/{oid}/pay", self._invoice_pay, "InvoicePayParams"),
            route(
                "POST", rf"/v1/invoices/{oid}/void", self._invoice_void, "InvoiceVoidInvoiceParams"
            ),
            route(
                "POST",
                rf"/v1/invoices/{oid}/mark_uncollectible",
                self._invoice_mark_uncollectible,
                "InvoiceMarkUncollectibleParams",
            ),
            route("POST", r"/v1/invoiceitems", self._item_create, "InvoiceItemCreateParams"),
            route("GET", r"/v1/invoiceitems", self._item_list, "InvoiceItemListParams"),
            route(
                "GET", rf"/v1/invoiceitems/{oid}", self._item_retrieve, "InvoiceItemRetrieveParams"
            ),
            route("POST", rf"/v1/invoiceitems/{oid}", self._item_update, "InvoiceItemUpdateParams"),
            route(
                "DELETE", rf"/v1/invoiceitems/{oid}", self._item_delete, "InvoiceItemDeleteParams"
            ),
            route("GET", r"/v1/events", self._event_list, "EventListParams"),
            route("GET", rf"/v1/events/{oid}", self._event_retrieve, "EventRetrieveParams"),
        ]

    # ---------------------------------------------------------------- customers

    def _get_customer(self, customer_id: str, param: str | None = None) -> JSON:
        record = self._customers.get(customer_id)
        if record is None:
            raise _no_such("customer", customer_id, param=param)
        return record

    def _customer_create(self, ctx: _Ctx, params: JSON) -> JSON:
        metadata = _updated_metadata({}, params) or {}
        currency = _get_currency(params)
        prefix = _get_str(params, "invoice_prefix")
        if prefix is not None and not re.fullmatch(r"[A-Z0-9]{3,12}", prefix):
            raise _invalid(
                "invoice_prefix", "invoice_prefix must be 3-12 uppercase letters or digits"
            )
        now = self._now()
        record: JSON = {
            "id": _new_id("cus", 14),
            "object": "customer",
            "address": None,
            "balance": 0,
            "created": now,
            "currency": currency,
            "default_source": None,
            "delinquent": False,
            "description": _get_str(params, "description"),
            "email": _get_str(params, "email"),
            "invoice_prefix": prefix or secrets.token_hex(4).upper(),
            "invoice_settings": {
                "custom_fields": None,
                "default_payment_method": None,
                "footer": None,
                "rendering_options": None,
            },
            "livemode": False,
            "metadata": metadata,
            "name": _get_str(params, "name"),
            "next_invoice_sequence": _get_int(params, "next_invoice_sequence") or 1,
            "phone": _get_str(params, "phone"),
            "preferred_locales": _get_list(params, "preferred_locales") or [],
            "shipping": None,
            "tax_exempt": _get_enum(params, "tax_exempt", ("none", "exempt", "reverse")) or "none",
            "test_clock": None,
            "_seq": self._next_seq(),
            "_indexed_at": self.clock(),
        }
        self._customers[record["id"]] = record
        self.created["customer"] += 1
        self._emit(ctx, "customer.created", _public(record))
        return _public(record)

    def _customer_retrieve(self, ctx: _Ctx, params: JSON, customer_id: str) -> JSON:
        return _public(self._get_customer(customer_id))

    def _customer_update(self, ctx: _Ctx, params: JSON, customer_id: str) -> JSON:
        record = self._get_customer(customer_id)
        before = _public(record)
        metadata = _updated_metadata(record["metadata"], params)
        currency = _get_currency(params)
        if currency is not None and record["currency"] not in (None, currency):
            raise _invalid("currency", "The customer's currency is already set and cannot change.")
        updates: JSON = {}
        for name in ("name", "email", "description", "phone"):
            if name in params:
                updates[name] = _get_str(params, name) or None
        if "invoice_prefix" in params:
            prefix = _get_str(params, "invoice_prefix")
            if not prefix or not re.fullmatch(r"[A-Z0-9]{3,12}", prefix):
                raise _invalid(
                    "invoice_prefix", "invoice_prefix must be 3-12 uppercase letters or digits"
                )
            updates["invoice_prefix"] = prefix
        if metadata is not None:
            updates["metadata"] = metadata
        if currency is not None:
            updates["currency"] = currency
        record.update(updates)
        after = _public(record)
        previous = _diff(before, after)
        if previous:
            self._emit(ctx, "customer.updated", after, previous)
        return after

    def _customer_delete(self, ctx: _Ctx, params: JSON, customer_id: str) -> JSON:
        record = self._get_customer(customer_id)
        snapshot = _public(record)
        del self._customers[customer_id]
        self._emit(ctx, "customer.deleted", snapshot)
        return {"id": customer_id, "object": "customer", "deleted": True}

    def _customer_list(self, ctx: _Ctx, params: JSON) -> JSON:
        email = _get_str(params, "email")
        records = [c for c in self._customers.values() if email is None or c["email"] == email]
        return self._paginate(records, params, "/v1/customers", _public, "customer")

    def _customer_search(self, ctx: _Ctx, params: JSON) -> JSON:
        return self._search(
            self._customers.values(),
            params,
            "/v1/customers/search",
            _public,
            frozenset({"created", "email", "name", "phone"}),
            frozenset({"created"}),
        )

    # ---------------------------------------------------------------- tax rates

    def _get_tax_rate(self, tax_rate_id: str, param: str | None = None) -> JSON:
        record = self._tax_rates.get(tax_rate_id)
        if record is None:
            raise _no_such("tax rate", tax_rate_id, param=param)
        return record

    def _tax_rate_create(self, ctx: _Ctx, params: JSON) -> JSON:
        display_name = _get_str(params, "display_name", required=True)
        percentage = _get_decimal(params, "percentage", required=True)
        inclusive = _get_bool(params, "inclusive", required=True)
        assert percentage is not None
        if not Decimal(0) <= percentage <= Decimal(100):
            raise _invalid("percentage", "percentage must be between 0 and 100")
        active = _get_bool(params, "active")
        metadata = _updated_metadata({}, params) or {}
        record: JSON = {
            "id": _new_id("txr"),
            "object": "tax_rate",
            "active": True if active is None else active,
            "country": _get_str(params, "country"),
            "created": self._now(),
            "description": _get_str(params, "description"),
            "display_name": display_name,
            "effective_percentage": float(percentage),
            "flat_amount": None,
            "inclusive": inclusive,
            "jurisdiction": _get_str(params, "jurisdiction"),
            "jurisdiction_level": None,
            "livemode": False,
            "metadata": metadata,
            "percentage": float(percentage),
            "rate_type": "percentage",
            "state": _get_str(params, "state"),
            "tax_type": _get_str(params, "tax_type"),
            "_percentage": _decimal_str(percentage),
            "_seq": self._next_seq(),
        }
        self._tax_rates[record["id"]] = record
        self.created["tax_rate"] += 1
        self._emit(ctx, "tax_rate.created", _public(record))
        return _public(record)

    def _tax_rate_retrieve(self, ctx: _Ctx, params: JSON, tax_rate_id: str) -> JSON:
        return _public(self._get_tax_rate(tax_rate_id))

    def _tax_rate_update(self, ctx: _Ctx, params: JSON, tax_rate_id: str) -> JSON:
        record = self._get_tax_rate(tax_rate_id)
        before = _public(record)
        updates: JSON = {}
        active = _get_bool(params, "active")
        if active is not None:
            updates["active"] = active
        for name in ("country", "description", "display_name", "jurisdiction", "state", "tax_type"):
            if name in params:
                updates[name] = _get_str(params, name) or None
        metadata = _updated_metadata(record["metadata"], params)
        if metadata is not None:
            updates["metadata"] = metadata
        record.update(updates)
        after = _public(record)
        previous = _diff(before, after)
        if previous:
            self._emit(ctx, "tax_rate.updated", after, previous)
        return after

    def _tax_rate_list(self, ctx: _Ctx, params: JSON) -> JSON:
        active = _get_bool(params, "active")
        inclusive = _get_bool(params, "inclusive")
        records = [
            r
            for r in self._tax_rates.values()
            if (active is None or r["active"] == active)
            and (inclusive is None or r["inclusive"] == inclusive)
        ]
        return self._paginate(records, params, "/v1/tax_rates", _public, "tax rate")

    # ---------------------------------------------------------------- invoice rendering

    def _line_taxes(self, item: JSON) -> list[JSON]:
        amount = int(item["amount"])
        rates = [self._tax_rates[t] for t in item["_tax_rate_ids"] if t in self._tax_rates]
        inclusive_pct = sum(
            (Decimal(str(r["_percentage"])) for r in rates if r["inclusive"]), Decimal(0)
        )
        taxable_inclusive = Decimal(amount) / (1 + inclusive_pct / 100)
        taxes = []
        for rate in rates:
            pct = Decimal(str(rate["_percentage"]))
            if rate["inclusive"]:
                tax = _round_minor(taxable_inclusive * pct / 100)
                taxable = _round_minor(taxable_inclusive)
            else:
                tax = _round_minor(Decimal(amount) * pct / 100)
                taxable = amount
            taxes.append(
                {
                    "amount": tax,
                    "tax_behavior": "inclusive" if rate["inclusive"] else "exclusive",
                    "tax_rate_details": {"tax_rate": rate["id"]},
                    "taxability_reason": "standard_rated",
                    "taxable_amount": taxable,
                    "type": "tax_rate_details",
                }
            )
        return taxes

    def _render_item(self, item: JSON) -> JSON:
        out = _public(item)
        out["tax_rates"] = [
            _public(self._tax_rates[t]) for t in item["_tax_rate_ids"] if t in self._tax_rates
        ]
        return out

    def _render_line(self, item: JSON, invoice_id: str) -> JSON:
        return {
            "id": item["_line_id"],
            "object": "line_item",
            "amount": item["amount"],
            "currency": item["currency"],
            "description": item["description"],
            "discount_amounts": [],
            "discountable": item["discountable"],
            "discounts": [],
            "invoice": invoice_id,
            "livemode": False,
            "metadata": dict(item["metadata"]),
            "parent": {
                "invoice_item_details": {
                    "invoice_item": item["id"],
                    "proration": False,
                    "proration_details": {"credited_items": None},
                    "subscription": None,
                },
                "subscription_item_details": None,
                "type": "invoice_item_details",
            },
            "period": dict(item["period"]),
            "pretax_credit_amounts": [],
            "pricing": copy.deepcopy(item["pricing"]),
            "quantity": item["quantity"],
            "quantity_decimal": item["quantity_decimal"],
            "subscription": None,
            "subtotal": item["amount"],
            "taxes": self._line_taxes(item),
        }

    def _invoice_totals(self, invoice: JSON) -> JSON:
        lines = [self._render_line(self._items[i], invoice["id"]) for i in invoice["_item_ids"]]
        subtotal = sum(int(line["amount"]) for line in lines)
        exclusive = inclusive = 0
        by_rate: dict[tuple[str, str], JSON] = {}
        for line in lines:
            for tax in line["taxes"]:
                if tax["tax_behavior"] == "exclusive":
                    exclusive += int(tax["amount"])
                else:
                    inclusive += int(tax["amount"])
                key = (str(tax["tax_rate_details"]["tax_rate"]), str(tax["tax_behavior"]))
                total_tax = by_rate.setdefault(
                    key, {**copy.deepcopy(tax), "amount": 0, "taxable_amount": 0}
                )
                total_tax["amount"] += tax["amount"]
                total_tax["taxable_amount"] += tax["taxable_amount"]
        total = subtotal + exclusive
        amount_due = max(total, 0)
        amount_paid = int(invoice["amount_paid"])
        return {
            "lines": {
                "object": "list",
                "data": lines,
                "has_more": False,
                "total_count": len(lines),
                "url": f"/v1/invoices/{invoice['id']}/lines",
            },
            "subtotal": subtotal,
            "subtotal_excluding_tax": subtotal - inclusive,
            "total": total,
            "total_excluding_tax": total - exclusive - inclusive,
            "total_taxes": list(by_rate.values()),
            "amount_due": amount_due,
            "amount_remaining": 0
            if invoice["status"] == "void"
            else max(amount_due - amount_paid, 0),
        }

    def _render_invoice(self, invoice: JSON) -> JSON:
        merged = {**invoice, **self._invoice_totals(invoice)}
        return _public(merged)

    def _get_invoice(self, invoice_id: str, param: str | None = None) -> JSON:
        record = self._invoices.get(invoice_id)
        if record is None:
            raise _no_such("invoice", invoice_id, param=param)
        return record

    # ---------------------------------------------------------------- invoices

    def _invoice_create(self, ctx: _Ctx, params: JSON) -> JSON:
        customer_id = _get_str(params, "customer", required=True)
        assert customer_id is not None
        auto_advance = _get_bool(params, "auto_advance")
        collection_method = (
            _get_enum(params, "collection_method", ("charge_automatically", "send_invoice"))
            or "charge_automatically"
        )
        days_until_due = _get_int(params, "days_until_due")
        due_date = _get_int(params, "due_date")
        currency = _get_currency(params)
        description = _get_str(params, "description")
        behavior = (
            _get_enum(params, "pending_invoice_items_behavior", ("exclude", "include")) or "exclude"
        )
        metadata = _updated_metadata({}, params) or {}
        default_tax_rates = _get_list(params, "default_tax_rates") or []
        for name in ("discounts", "from_invoice", "subscription", "transfer_data", "shipping_cost"):
            if params.get(name):
                raise _invalid(name, f"The fake Stripe server does not support '{name}'.")
        if collection_method != "send_invoice" and (
            days_until_due is not None or due_date is not None
        ):
            param = "days_until_due" if days_until_due is not None else "due_date"
            raise _invalid(
                param, f"You can only set '{param}' when collection_method is 'send_invoice'."
            )
        if collection_method == "send_invoice" and days_until_due is None and due_date is None:
            raise _invalid(
                "days_until_due",
                "Invoices with collection_method 'send_invoice' need days_until_due or due_date.",
            )
        if days_until_due is not None and days_until_due < 0:
            raise _invalid("days_until_due", "days_until_due must be a non-negative integer")
        customer = self._get_customer(customer_id, param="customer")
        for tax_rate_id in default_tax_rates:
            self._get_tax_rate(tax_rate_id, param="default_tax_rates")
        if default_tax_rates:
            raise _invalid(
                "default_tax_rates",
                "The fake Stripe server supports tax_rates on invoice items only.",
            )
        currency = currency or customer["currency"] or self.default_currency
        now = self._now()
        if days_until_due is not None:
            due_date = now + days_until_due * 86400
        if customer["currency"] is None:
            customer["currency"] = currency
        invoice_id = _new_id("in")
        record: JSON = {
            "id": invoice_id,
            "object": "invoice",
            "account_country": "US",
            "account_name": self.account_name,
            "account_tax_ids": None,
            "amount_overpaid": 0,
            "amount_paid": 0,
            "amount_shipping": 0,
            "application": None,
            "attempt_count": 0,
            "attempted": False,
            "auto_advance": bool(auto_advance),
            "automatic_tax": {
                "disabled_reason": None,
                "enabled": False,
                "liability": None,
                "provider": None,
                "status": None,
            },
            "automatically_finalizes_at": now + _AUTO_ADVANCE_DELAY if auto_advance else None,
            "billing_reason": "manual",
            "collection_method": collection_method,
            "created": now,
            "currency": currency,
            "custom_fields": None,
            "customer": customer_id,
            "customer_address": None,
            "customer_email": customer["email"],
            "customer_name": customer["name"],
            "customer_phone": customer["phone"],
            "customer_shipping": None,
            "customer_tax_exempt": customer["tax_exempt"],
            "customer_tax_ids": [],
            "default_payment_method": None,
            "default_source": None,
            "default_tax_rates": [],
            "description": description,
            "discounts": [],
            "due_date": due_date,
            "effective_at": None,
            "ending_balance": None,
            "footer": _get_str(params, "footer"),
            "from_invoice": None,
            "hosted_invoice_url": None,
            "invoice_pdf": None,
            "issuer": {"type": "self"},
            "last_finalization_error": None,
            "latest_revision": None,
            "livemode": False,
            "metadata": metadata,
            "next_payment_attempt": None,
            "number": None,
            "on_behalf_of": None,
            "parent": None,
            "payment_settings": {
                "default_mandate": None,
                "payment_method_options": None,
                "payment_method_types": None,
            },
            "payments": {
                "object": "list",
                "data": [],
                "has_more": False,
                "url": "/v1/invoice_payments",
            },
            "period_end": now,
            "period_start": now,
            "post_payment_credit_notes_amount": 0,
            "pre_payment_credit_notes_amount": 0,
            "receipt_number": None,
            "rendering": None,
            "shipping_cost": None,
            "shipping_details": None,
            "starting_balance": 0,
            "statement_descriptor": _get_str(params, "statement_descriptor"),
            "status": "draft",
            "status_transitions": {
                "finalized_at": None,
                "marked_uncollectible_at": None,
                "paid_at": None,
                "voided_at": None,
            },
            "test_clock": None,
            "threshold_reason": None,
            "webhooks_delivered_at": now,
            "_seq": self._next_seq(),
            "_indexed_at": self.clock(),
            "_item_ids": [],
        }
        if behavior == "include":
            pending = sorted(
                (
                    i
                    for i in self._items.values()
                    if i["invoice"] is None
                    and i["customer"] == customer_id
                    and i["currency"] == currency
                ),
                key=lambda i: int(i["_seq"]),
            )
            for item in pending:
                item["invoice"] = invoice_id
                item["_line_id"] = _new_id("il")
                record["_item_ids"].append(item["id"])
        self._invoices[invoice_id] = record
        self.created["invoice"] += 1
        rendered = self._render_invoice(record)
        self._emit(ctx, "invoice.created", rendered)
        return rendered

    def _invoice_retrieve(self, ctx: _Ctx, params: JSON, invoice_id: str) -> JSON:
        return self._render_invoice(self._get_invoice(invoice_id))

    def _invoice_lines(self, ctx: _Ctx, params: JSON, invoice_id: str) -> JSON:
        invoice = self._get_invoice(invoice_id)
        lines: list[JSON] = self._invoice_totals(invoice)["lines"]["data"]
        # Lines keep invoice order; paginate over that order.
        records = [{**line, "_seq": -index} for index, line in enumerate(lines)]
        return self._paginate(
            records, params, f"/v1/invoices/{invoice_id}/lines", _public, "line item"
        )

    def _invoice_update(self, ctx: _Ctx, params: JSON, invoice_id: str) -> JSON:
        record = self._get_invoice(invoice_id)
        status = record["status"]
        draft_only = (
            "collection_method",
            "days_until_due",
            "due_date",
            "currency",
            "default_tax_rates",
            "discounts",
            "custom_fields",
            "account_tax_ids",
            "number",
        )
        for name in draft_only:
            if name in params and status != "draft":
                raise _not_editable(
                    f"You can only update '{name}' on a draft invoice; invoice {invoice_id} "
                    f"is {status}."
                )
        for name in ("description", "auto_advance", "footer"):
            if name in params and status not in ("draft", "open"):
                raise _not_editable(f"You can no longer update '{name}' on a {status} invoice.")
        for name in (
            "discounts",
            "default_tax_rates",
            "custom_fields",
            "shipping_cost",
            "transfer_data",
        ):
            if params.get(name):
                raise _invalid(name, f"The fake Stripe server does not support '{name}'.")
        updates: JSON = {}
        metadata = _updated_metadata(record["metadata"], params)
        if metadata is not None:
            updates["metadata"] = metadata
        if "description" in params:
            updates["description"] = _get_str(params, "description") or None
        if "footer" in params:
            updates["footer"] = _get_str(params, "footer") or None
        auto_advance = _get_bool(params, "auto_advance")
        if auto_advance is not None:
            updates["auto_advance"] = auto_advance
            if status == "draft":
                updates["automatically_finalizes_at"] = (
                    self._now() + _AUTO_ADVANCE_DELAY if auto_advance else None
                )
        collection_method = _get_enum(
            params, "collection_method", ("charge_automatically", "send_invoice")
        )
        days_until_due = _get_int(params, "days_until_due")
        due_date = _get_int(params, "due_date")
        method = collection_method or record["collection_method"]
        if collection_method is not None:
            updates["collection_method"] = collection_method
            if collection_method == "charge_automatically":
                updates["due_date"] = None
        if days_until_due is not None or due_date is not None:
            if method != "send_invoice":
                raise _invalid(
                    "days_until_due",
                    "You can only set a due date when collection_method is 'send_invoice'.",
                )
            updates["due_date"] = (
                int(record["created"]) + days_until_due * 86400
                if days_until_due is not None
                else due_date
            )
        if method == "send_invoice" and updates.get("due_date", record["due_date"]) is None:
            raise _invalid(
                "days_until_due",
                "Invoices with collection_method 'send_invoice' need days_until_due or due_date.",
            )
        before = self._render_invoice(record)
        record.update(updates)
        after = self._render_invoice(record)
        previous = _diff(before, after)
        if previous:
            self._emit(ctx, "invoice.updated", after, previous)
        return after

    def _invoice_delete(self, ctx: _Ctx, params: JSON, invoice_id: str) -> JSON:
        record = self._get_invoice(invoice_id)
        if record["status"] != "draft":
            raise StripeApiError(
                400,
                f"You can only delete draft invoices. Invoice {invoice_id} is {record['status']}; "
                "void it instead.",
                code="invoice_not_editable",
            )
        snapshot = self._render_invoice(record)
        for item_id in list(record["_item_ids"]):
            item = self._items.pop(item_id)
            self._emit(ctx, "invoiceitem.deleted", self._render_item(item))
        del self._invoices[invoice_id]
        self._emit(ctx, "invoice.deleted", snapshot)
        return {"id": invoice_id, "object": "invoice", "deleted": True}

    def _finalize(self, ctx: _Ctx, record: JSON, auto_advance: bool | None = None) -> None:
        now = self._now()
        customer = self._customers.get(record["customer"])
        if customer is not None:
            sequence = int(customer["next_invoice_sequence"])
            customer["next_invoice_sequence"] = sequence + 1
            prefix = customer["invoice_prefix"]
        else:  # customer deleted meanwhile
            sequence, prefix = 1, "DELETED0"
        base = ctx.base_url or self._last_base_url or "https://invoice.stripe.com"
        record["number"] = f"{prefix}-{sequence:04d}"
        record["status"] = "open"
        record["status_transitions"]["finalized_at"] = now
        record["effective_at"] = now
        record["ending_balance"] = 0
        record["automatically_finalizes_at"] = None
        record["hosted_invoice_url"] = f"{base}/_fake/invoices/{record['id']}"
        record["invoice_pdf"] = f"{base}/_fake/invoices/{record['id']}?format=pdf"
        if auto_advance is not None:
            record["auto_advance"] = auto_advance
        self._emit(ctx, "invoice.finalized", self._render_invoice(record))
        due = int(self._invoice_totals(record)["amount_due"])
        if 0 < due < self._minimum_charge(str(record["currency"])):
            # Below the currency's minimum charge Stripe collects nothing: the invoice
            # is marked paid and the amount moves to the customer's balance, owed on
            # the next invoice.
            if customer is not None:
                customer["balance"] = int(customer["balance"]) + due
                record["ending_balance"] = customer["balance"]
            record["status"] = "paid"
            record["status_transitions"]["paid_at"] = now
            record["auto_advance"] = False
            record["_below_minimum"] = True
            self._emit(ctx, "invoice.paid", self._render_invoice(record))
        elif due == 0:
            # Stripe marks an invoice with nothing to pay as paid when it is finalized.
            self._mark_paid(ctx, record, out_of_band=False)

    @staticmethod
    def _minimum_charge(currency: str) -> int:
        """Stripe's published minimum charge in minor units (mapping.stripe_rules)."""
        return minimum_charge(currency).to_minor_units()

    def _mark_paid(self, ctx: _Ctx, record: JSON, *, out_of_band: bool) -> None:
        totals = self._invoice_totals(record)
        record["amount_paid"] = int(record["amount_paid"]) + int(totals["amount_remaining"])
        record["status"] = "paid"
        record["status_transitions"]["paid_at"] = self._now()
        record["auto_advance"] = False
        if totals["amount_due"] > 0 and not out_of_band:
            record["attempted"] = True
            record["attempt_count"] = int(record["attempt_count"]) + 1
        rendered = self._render_invoice(record)
        self._emit(ctx, "invoice.paid", rendered)
        if not out_of_band:
            self._emit(ctx, "invoice.payment_succeeded", rendered)

    def _auto_advance(self, ctx: _Ctx) -> list[str]:
        now = self._now()
        due = [
            r
            for r in self._invoices.values()
            if r["status"] == "draft"
            and r["auto_advance"]
            and r["automatically_finalizes_at"] is not None
            and int(r["automatically_finalizes_at"]) <= now
        ]
        for record in due:
            self._finalize(ctx, record)
        return [str(r["id"]) for r in due]

    def _invoice_finalize(self, ctx: _Ctx, params: JSON, invoice_id: str) -> JSON:
        auto_advance = _get_bool(params, "auto_advance")
        record = self._get_invoice(invoice_id)
        if record["status"] != "draft":
            raise StripeApiError(
                400,
                f"This invoice is already finalized, you can't re-finalize a non-draft invoice "
                f"({invoice_id} is {record['status']}).",
                code="invoice_not_editable",
            )
        self._finalize(ctx, record, auto_advance)
        return self._render_invoice(record)

    def _invoice_send(self, ctx: _Ctx, params: JSON, invoice_id: str) -> JSON:
        record = self._get_invoice(invoice_id)
        if record["collection_method"] != "send_invoice":
            raise StripeApiError(
                400,
                "You can only manually send an invoice if its collection method is 'send_invoice'.",
                code="invoice_not_editable",
            )
        if record["status"] not in ("draft", "open"):
            raise StripeApiError(
                400, f"You can't send a {record['status']} invoice.", code="invoice_not_editable"
            )
        if record["status"] == "draft":
            self._finalize(ctx, record)
        self._emit(ctx, "invoice.sent", self._render_invoice(record))
        return self._render_invoice(record)

    def _invoice_pay(self, ctx: _Ctx, params: JSON, invoice_id: str) -> JSON:
        out_of_band = bool(_get_bool(params, "paid_out_of_band"))
        _get_bool(params, "forgive")
        record = self._get_invoice(invoice_id)
        if record["status"] == "paid":
            raise StripeApiError(400, f"Invoice {invoice_id} is already paid.")
        if record["status"] == "void":
            raise StripeApiError(400, "This invoice has been voided and can no longer be paid.")
        if record["status"] == "draft":
            self._finalize(ctx, record)
        if record["status"] in ("open", "uncollectible"):
            self._mark_paid(ctx, record, out_of_band=out_of_band)
        return self._render_invoice(record)

    def _invoice_void(self, ctx: _Ctx, params: JSON, invoice_id: str) -> JSON:
        record = self._get_invoice(invoice_id)
        if record["status"] not in ("open", "uncollectible"):
            raise StripeApiError(
                400,
                f"You can only void open or uncollectible invoices; {invoice_id} is "
                f"{record['status']}.",
                code="invoice_not_editable",
            )
        record["status"] = "void"
        record["status_transitions"]["voided_at"] = self._now()
        record["auto_advance"] = False
        rendered = self._render_invoice(record)
        self._emit(ctx, "invoice.voided", rendered)
        return rendered

    def _invoice_mark_uncollectible(self, ctx: _Ctx, params: JSON, invoice_id: str) -> JSON:
        record = self._get_invoice(invoice_id)
        if record["status"] != "open":
            raise StripeApiError(
                400,
                f"You can only mark open invoices as uncollectible; {invoice_id} is "
                f"{record['status']}.",
                code="invoice_not_editable",
            )
        record["status"] = "uncollectible"
        record["status_transitions"]["marked_uncollectible_at"] = self._now()
        record["auto_advance"] = False
        rendered = self._render_invoice(record)
        self._emit(ctx, "invoice.marked_uncollectible", rendered)
        return rendered

    def _invoice_list(self, ctx: _Ctx, params: JSON) -> JSON:
        customer = _get_str(params, "customer")
        status = _get_enum(params, "status", _INVOICE_STATUSES)
        collection_method = _get_enum(
            params, "collection_method", ("charge_automatically", "send_invoice")
        )
        records = [
            r
            for r in self._invoices.values()
            if (customer is None or r["customer"] == customer)
            and (status is None or r["status"] == status)
            and (collection_method is None or r["collection_method"] == collection_method)
        ]
        return self._paginate(records, params, "/v1/invoices", self._render_invoice, "invoice")

    def _invoice_search(self, ctx: _Ctx, params: JSON) -> JSON:
        return self._search(
            self._invoices.values(),
            params,
            "/v1/invoices/search",
            self._render_invoice,
            frozenset({"created", "currency", "customer", "number", "status", "total"}),
            frozenset({"created", "total"}),
        )

    # ---------------------------------------------------------------- invoice items

    def _get_item(self, item_id: str) -> JSON:
        record = self._items.get(item_id)
        if record is None:
            raise _no_such("invoiceitem", item_id)
        return record

    def _item_pricing(self, params: JSON, current: JSON | None) -> tuple[int, Decimal, Decimal]:
        """Return (amount in minor units, unit amount, quantity) from the parameters."""
        for name in ("price_data", "pricing", "discounts"):
            if params.get(name):
                raise _invalid(name, f"The fake Stripe server does not support '{name}'.")
        amount = _get_int(params, "amount")
        unit = _get_decimal(params, "unit_amount_decimal")
        quantity_int = _get_int(params, "quantity")
        quantity_dec = _get_decimal(params, "quantity_decimal")
        if amount is not None and unit is not None:
            raise _invalid(
                "amount",
                "You may only specify one of these parameters: amount, unit_amount_decimal.",
            )
        if quantity_int is not None and quantity_dec is not None:
            raise _invalid(
                "quantity",
                "You may only specify one of these parameters: quantity, quantity_decimal.",
            )
        quantity = (
            Decimal(quantity_int)
            if quantity_int is not None
            else quantity_dec
            if quantity_dec is not None
            else Decimal(str(current["quantity_decimal"]))
            if current is not None
            else Decimal(1)
        )
        if quantity < 0:
            raise _invalid("quantity", "quantity must be a non-negative number")
        if unit is not None:
            exponent = unit.as_tuple().exponent
            if isinstance(exponent, int) and exponent < -12:
                raise _invalid(
                    "unit_amount_decimal", "unit_amount_decimal has at most 12 decimal places"
                )
        if amount is not None:
            if quantity != 1 and (quantity_int is not None or quantity_dec is not None):
                raise _invalid(
                    "amount",
                    "When passing 'amount' the quantity must be 1; use unit_amount_decimal.",
                )
            return amount, Decimal(amount), Decimal(1)
        if unit is None:
            if current is None:
                raise _invalid(
                    "amount",
                    "You must pass 'amount', 'unit_amount_decimal', 'price_data' or 'pricing'.",
                    "parameter_missing",
                )
            unit = Decimal(str(current["pricing"]["unit_amount_decimal"]))
        return _round_minor(unit * quantity), unit, quantity

    def _item_create(self, ctx: _Ctx, params: JSON) -> JSON:
        customer_id = _get_str(params, "customer")
        invoice_id = _get_str(params, "invoice")
        currency = _get_currency(params)
        description = _get_description(params)
        discountable = _get_bool(params, "discountable")
        tax_rate_ids = _get_list(params, "tax_rates") or []
        period = _get_dict(params, "period")
        metadata = _updated_metadata({}, params) or {}
        if params.get("subscription"):
            raise _invalid("subscription", "The fake Stripe server does not support subscriptions.")
        amount, unit, quantity = self._item_pricing(params, None)
        now = self._now()
        if period is not None:
            start = _get_int(period, "start", required=True)
            end = _get_int(period, "end", required=True)
            assert start is not None and end is not None
            if end < start:
                raise _invalid(
                    "period[end]", "The period end must be greater than or equal to the start."
                )
        else:
            start = end = now
        if customer_id is None and invoice_id is None:
            raise _missing("customer")
        invoice = self._get_invoice(invoice_id, param="invoice") if invoice_id else None
        if customer_id is None:
            assert invoice is not None
            customer_id = str(invoice["customer"])
        customer = self._get_customer(customer_id, param="customer")
        for tax_rate_id in tax_rate_ids:
            self._get_tax_rate(tax_rate_id, param="tax_rates")
        if invoice is not None:
            if invoice["customer"] != customer_id:
                raise _invalid(
                    "invoice",
                    f"Invoice {invoice_id} belongs to another customer ({invoice['customer']}).",
                )
            if invoice["status"] != "draft":
                raise _not_editable(
                    f"You can only add invoice items to draft invoices; invoice {invoice_id} is "
                    f"{invoice['status']}."
                )
            if currency is not None and currency != invoice["currency"]:
                raise StripeApiError(
                    400,
                    f"The currency of the invoice item ({currency}) must match the currency of "
                    f"the invoice ({invoice['currency']}).",
                    param="currency",
                )
            currency = str(invoice["currency"])
            if len(invoice["_item_ids"]) >= _MAX_INVOICE_ITEMS:
                raise _invalid(
                    "invoice",
                    f"Invoice {invoice_id} already has {_MAX_INVOICE_ITEMS} invoice items, the "
                    "most an invoice can have. Add the item to another invoice.",
                )
        else:
            if currency is not None and customer["currency"] not in (None, currency):
                raise StripeApiError(
                    400,
                    f"You cannot combine currencies on a single customer. This customer has had "
                    f"an invoice or invoice item with currency {customer['currency']}.",
                    param="currency",
                )
            currency = currency or customer["currency"] or self.default_currency
            if customer["currency"] is None:
                customer["currency"] = currency
        _check_amount(amount, currency)
        item_id = _new_id("ii")
        record: JSON = {
            "id": item_id,
            "object": "invoiceitem",
            "amount": amount,
            "currency": currency,
            "customer": customer_id,
            "customer_account": None,
            "date": now,
            "description": description,
            "discountable": discountable if discountable is not None else amount >= 0,
            "discounts": [],
            "invoice": invoice_id,
            "livemode": False,
            "metadata": metadata,
            "net_amount": amount,
            "parent": None,
            "period": {"end": end, "start": start},
            "pricing": {
                "price_details": None,
                "type": "price_details",
                "unit_amount_decimal": _decimal_str(unit),
            },
            "proration": False,
            "proration_details": {"credited_items": None, "discount_amounts": []},
            "quantity": int(quantity),
            "quantity_decimal": _decimal_str(quantity),
            "test_clock": None,
            "_line_id": _new_id("il") if invoice_id else None,
            "_tax_rate_ids": list(tax_rate_ids),
            "_seq": self._next_seq(),
        }
        before = self._render_invoice(invoice) if invoice is not None else None
        self._items[item_id] = record
        self.created["invoiceitem"] += 1
        rendered = self._render_item(record)
        self._emit(ctx, "invoiceitem.created", rendered)
        if invoice is not None and before is not None:
            invoice["_item_ids"].append(item_id)
            self._emit_invoice_updated(ctx, invoice, before)
        return rendered

    def _emit_invoice_updated(self, ctx: _Ctx, invoice: JSON, before: JSON) -> None:
        after = self._render_invoice(invoice)
        previous = _diff(before, after)
        if previous:
            self._emit(ctx, "invoice.updated", after, previous)

    def _editable_invoice_of(self, item: JSON, action: str) -> JSON | None:
        if item["invoice"] is None:
            return None
        invoice = self._invoices.get(item["invoice"])
        if invoice is not None and invoice["status"] != "draft":
            raise _not_editable(
                f"You can't {action} invoice item {item['id']}: it is on invoice {invoice['id']}, "
                f"which is {invoice['status']} and can no longer be edited."
            )
        return invoice

    def _item_retrieve(self, ctx: _Ctx, params: JSON, item_id: str) -> JSON:
        return self._render_item(self._get_item(item_id))

    def _item_update(self, ctx: _Ctx, params: JSON, item_id: str) -> JSON:
        record = self._get_item(item_id)
        invoice = self._editable_invoice_of(record, "update")
        touches_price = any(
            n in params for n in ("amount", "unit_amount_decimal", "quantity", "quantity_decimal")
        )
        if touches_price:
            amount, unit, quantity = self._item_pricing(params, record)
        tax_rate_ids = _get_list(params, "tax_rates")
        for tax_rate_id in tax_rate_ids or []:
            self._get_tax_rate(tax_rate_id, param="tax_rates")
        period = _get_dict(params, "period")
        if period is not None:
            start = _get_int(period, "start", required=True)
            end = _get_int(period, "end", required=True)
            assert start is not None and end is not None
            if end < start:
                raise _invalid(
                    "period[end]", "The period end must be greater than or equal to the start."
                )
        metadata = _updated_metadata(record["metadata"], params)
        discountable = _get_bool(params, "discountable")
        description = _get_description(params)
        if touches_price:
            _check_amount(amount, str(record["currency"]))
        before_invoice = self._render_invoice(invoice) if invoice is not None else None
        if touches_price:
            record["amount"] = amount
            record["net_amount"] = amount
            record["pricing"]["unit_amount_decimal"] = _decimal_str(unit)
            record["quantity"] = int(quantity)
            record["quantity_decimal"] = _decimal_str(quantity)
        if tax_rate_ids is not None:
            record["_tax_rate_ids"] = list(tax_rate_ids)
        if period is not None:
            record["period"] = {"end": end, "start": start}
        if metadata is not None:
            record["metadata"] = metadata
        if discountable is not None:
            record["discountable"] = discountable
        if "description" in params:
            record["description"] = description or None
        if invoice is not None and before_invoice is not None:
            self._emit_invoice_updated(ctx, invoice, before_invoice)
        return self._render_item(record)

    def _item_delete(self, ctx: _Ctx, params: JSON, item_id: str) -> JSON:
        record = self._get_item(item_id)
        invoice = self._editable_invoice_of(record, "delete")
        before_invoice = self._render_invoice(invoice) if invoice is not None else None
        snapshot = self._render_item(record)
        del self._items[item_id]
        self._emit(ctx, "invoiceitem.deleted", snapshot)
        if invoice is not None and before_invoice is not None:
            invoice["_item_ids"].remove(item_id)
            self._emit_invoice_updated(ctx, invoice, before_invoice)
        return {"id": item_id, "object": "invoiceitem", "deleted": True}

    def _item_list(self, ctx: _Ctx, params: JSON) -> JSON:
        invoice = _get_str(params, "invoice")
        customer = _get_str(params, "customer")
        pending = _get_bool(params, "pending")
        records = [
            r
            for r in self._items.values()
            if (invoice is None or r["invoice"] == invoice)
            and (customer is None or r["customer"] == customer)
            and (pending is None or (r["invoice"] is None) == pending)
        ]
        return self._paginate(records, params, "/v1/invoiceitems", self._render_item, "invoiceitem")

    # ---------------------------------------------------------------- events

    def _event_retrieve(self, ctx: _Ctx, params: JSON, event_id: str) -> JSON:
        record = self._events.get(event_id)
        if record is None:
            raise _no_such("event", event_id)
        return _public(record)

    def _event_list(self, ctx: _Ctx, params: JSON) -> JSON:
        event_type = _get_str(params, "type")
        types = _get_list(params, "types")
        if event_type is not None and types is not None:
            raise _invalid("types", "You may only specify one of these parameters: type, types.")

        def wanted(name: str) -> bool:
            if types is not None:
                return name in types
            if event_type is None:
                return True
            if event_type.endswith("*"):
                return name.startswith(event_type[:-1])
            return name == event_type

        records = [e for e in self._events.values() if wanted(str(e["type"]))]
        return self._paginate(records, params, "/v1/events", _public, "event")


def _coerce_fault_spec(spec: Mapping[str, Any]) -> JSON:
    """Type-check a fault given as JSON (``POST /_fake/faults``); raises ValueError."""
    out = dict(spec)
    for name, kind in (("count", int), ("status", int), ("retry_after", float), ("seconds", float)):
        if out.get(name) is not None:
            if isinstance(out[name], bool) or not isinstance(out[name], int | float):
                raise ValueError(f"{name} must be a number")
            out[name] = kind(out[name])
    for name in ("method", "path", "kind", "drop_mode"):
        if name in out and not isinstance(out[name], str):
            raise ValueError(f"{name} must be a string")
    if "should_retry" in out and out["should_retry"] not in (True, False, None):
        raise ValueError("should_retry must be true, false or null")
    if "after_work" in out and not isinstance(out["after_work"], bool):
        raise ValueError("after_work must be a boolean")
    return out


def _should_retry_header(should_retry: bool | None) -> dict[str, str]:
    if should_retry is None:
        return {}
    return {"Stripe-Should-Retry": "true" if should_retry else "false"}


def _format_seconds(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)


def _format_money(amount: int, currency: str) -> str:
    exponent = (
        0
        if currency in ZERO_DECIMAL_CURRENCIES
        else 3
        if currency in THREE_DECIMAL_CURRENCIES
        else 2
    )
    value = Decimal(amount).scaleb(-exponent)
    return f"{value:,.{exponent}f} {currency.upper()}"


# --------------------------------------------------------------------------------------
# Runners
# --------------------------------------------------------------------------------------


@contextlib.contextmanager
def serve_asgi_in_thread(app: ASGIApp, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve any ASGI app with uvicorn from a background thread; yield its base URL.

    ``port=0`` picks a free port. The server stops (and the thread is joined) on exit.
    """
    # uvicorn binds the socket itself: sockets it creates get TCP_NODELAY, pre-bound ones
    # passed in with ``sockets=`` do not (and then every response waits ~40 ms for an ACK).
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        lifespan="off",
        access_log=False,
        timeout_graceful_shutdown=2,
        timeout_keep_alive=5,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{host}:{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"uvicorn failed to start on {host}:{port}")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"uvicorn did not start on {host}:{port} within 10 s")
        time.sleep(0.01)
    actual_port = int(server.servers[0].sockets[0].getsockname()[1])
    shown_host = f"[{host}]" if ":" in host else host
    try:
        yield f"http://{shown_host}:{actual_port}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextlib.contextmanager
def run_fake_stripe_in_thread(
    fake: FakeStripe, host: str = "127.0.0.1", port: int = 0
) -> Iterator[str]:
    """Serve ``fake.app`` on loopback from a background thread; yield the base URL.

    Point stripe-python at it with ``base_addresses={"api": base_url}``. The fake's state
    survives the server (it lives in ``fake``); its webhook thread is not stopped here, call
    ``fake.close()`` for that.
    """
    with serve_asgi_in_thread(fake.app, host, port) as base_url:
        yield base_url


def main(argv: list[str] | None = None) -> None:
    """``python -m tests.fakes.stripe_server``: serve a fake Stripe until interrupted."""
    parser = argparse.ArgumentParser(description="Serve kanvoice's fake Stripe API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=12111)
    parser.add_argument("--api-key", default="sk_test_fake")
    parser.add_argument("--webhook-secret", default="whsec_fake")
    parser.add_argument("--webhook-url", default=None)
    parser.add_argument("--default-currency", default="usd")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper())
    fake = FakeStripe(
        api_key=args.api_key,
        webhook_secret=args.webhook_secret,
        webhook_url=args.webhook_url,
        default_currency=args.default_currency,
    )
    print(f"fake Stripe on http://{args.host}:{args.port} (api key {args.api_key})", flush=True)
    try:
        uvicorn.run(
            fake.app, host=args.host, port=args.port, log_level=args.log_level, lifespan="off"
        )
    finally:
        fake.close()


if __name__ == "__main__":
    main()
