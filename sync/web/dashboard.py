"""The live dashboard: `GET /`, `GET /api/pipeline`, `GET /api/events` and the finance
actions (create a draft now, approve, reject), as one FastAPI router.

The router is given everything it needs: a `get_payload()` returning the figures
(see `sync.web.breakdown.pipeline_payload`), a `ChangeBroker` that wakes the event
streams, the `DashboardActions` that talk to the invoicing code, and a `DashboardAuth`.

No `from __future__ import annotations` here: FastAPI must see the route functions'
annotations (which use a dependency defined inside `dashboard_router`) as objects.
"""

import asyncio
import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path as FilePath
from typing import Annotated, Any, Protocol
from urllib.parse import urlencode

import structlog
from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, StreamingResponse
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from mapping.aging import parse_sort
from mapping.review import human_time
from sync.finance import sort_payload_clients
from sync.review import InvalidChange
from sync.settings import ServerSettings
from sync.web.events import ChangeBroker, Tick

log = structlog.get_logger(__name__)

HERE = FilePath(__file__).resolve().parent
TEMPLATES = Jinja2Templates(directory=str(HERE / "templates"))
STATIC_DIR = HERE / "static"
STATIC_FILES: dict[str, str] = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}

COOKIE_NAME = "kanvoice_dashboard"
COOKIE_MAX_AGE = 30 * 24 * 3600
# Browsers only send custom headers cross-site after a CORS preflight this app never
# grants, so requiring one on every POST stops cross-site request forgery.
CSRF_HEADER = "X-Kanvoice-Dashboard"
LOOPBACK_HOSTS: tuple[str, ...] = ("127.0.0.1", "localhost", "::1")
# Headers a reverse proxy adds when it relays a request. Without credentials the
# dashboard trusts only requests made on this host directly: a request carrying any of
# these came through a proxy (nginx, Caddy, ...) and so, possibly, from the internet.
FORWARDING_HEADERS: tuple[str, ...] = (
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-server",
    "x-real-ip",
    "x-client-ip",
    "x-original-forwarded-for",
    "true-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-cluster-client-ip",
    "via",
)
SSE_RETRY_MS = 2000
HISTORY_ROWS = 200  # newest invoices on the page; /api/history has them all
TERMINAL_DRAFT_STATES = frozenset(
    {"approved", "finalized", "open", "sent", "paid", "void", "voided", "deleted", "uncollectible"}
)

_SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_PAGE_HEADERS = {
    **_SECURITY_HEADERS,
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
}


class DashboardActions(Protocol):
    """What the dashboard's buttons do; implemented by the invoicing code.

    Methods are called from a worker thread. Return JSON-safe dicts (money as strings).
    `approve` / `reject` raise `PermissionError` when `approver` may not decide (HTTP
    403), `LookupError` for an unknown invoice or client (404) and `ValueError` when the
    invoice cannot be decided in its current state (409; the message is shown).
    """

    def create_draft(self, client: str) -> dict[str, Any]:
        """Create or refresh the client's draft invoice now and ask for approval."""
        ...

    def draft_all(self) -> dict[str, Any]:
        """"Draft all due": draft every client with ready work and ask approval for each
        draft, once however often it is asked (`sync.draft_all`). A dict with the lists
        of client keys `drafted`, `unchanged`, `skipped`, `failed`, the per-client
        `clients` and a `message` for people."""
        ...

    def approve(self, invoice_id: str, approver: str, force: bool = False) -> dict[str, Any]:
        """Approve the draft (the only path to finalize); `force` finalizes a total under
        Stripe's minimum charge (otherwise refused with a ValueError saying so)."""
        ...

    def reject(self, invoice_id: str, approver: str, reason: str) -> dict[str, Any]:
        """Reject the draft with a reason."""
        ...

    def list_drafts(self, client: str) -> list[dict[str, Any]]:
        """Open drafts of a client: dicts with id, client, period, total, currency, state,
        version."""
        ...


class ReviewActions(Protocol):
    """Reviewing invoices (implemented by `sync.web.dashboard_actions.InvoicingActions`
    over `sync.review.Review`). Same errors as `DashboardActions`, plus
    `sync.review.InvalidChange` (422) for a change that cannot be applied as asked."""

    def invoice(self, invoice_id: str) -> dict[str, Any]:
        """The invoice with its lines, totals, tax and Stripe link."""
        ...

    def adjust(
        self, invoice_id: str, who: str, version: int, changes: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """The Slack Adjust rules: hours lowered, descriptions, lines written off."""
        ...

    def defer(self, invoice_id: str, who: str, version: int, entry_id: int) -> dict[str, Any]:
        """One line off this draft, on to the client's next draft."""
        ...

    def history(self, client: str | None, query: str) -> list[dict[str, Any]]:
        """Every invoice with who / when / why and Stripe's number."""
        ...

    def audit(self, client: str | None, since: str | None) -> list[dict[str, Any]]:
        """The audit log's rows."""
        ...

    def audit_csv(self, client: str | None, since: str | None) -> str:
        """The same rows as CSV."""
        ...

    def time_zone(self) -> str:
        """The finance time zone (times on the page)."""
        ...


def is_loopback(host: str) -> bool:
    """True when `host` (an address or name the server binds to) is loopback only."""
    name = host.strip().strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class DashboardAuth:
    """Who may see the dashboard and press its buttons.

    - `required=False`: no credentials (only for a server bound to loopback); requests
      must then name a loopback host (`allowed_hosts`), which defeats DNS rebinding,
      come from a loopback peer and carry no forwarding header (`FORWARDING_HEADERS`):
      a request a same-host reverse proxy relays is refused (401), since the proxy
      may be relaying the internet. The approver identity is `anonymous_user`.
    - `token`: `Authorization: Bearer TOKEN`, or `?token=TOKEN` once in the browser,
      which sets an HttpOnly cookie derived from the token and redirects to the clean
      URL. The identity is `token_user`.
    - `username` + `password`: HTTP basic auth; the identity is the user name.
    Both may be set. Required but neither set: every request is refused (401).
    """

    required: bool = True
    token: str | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    token_user: str = "dashboard"  # noqa: S105 (an identity, not a secret)
    anonymous_user: str = "dashboard"
    realm: str = "kanvoice"
    allowed_hosts: tuple[str, ...] | None = LOOPBACK_HOSTS

    @classmethod
    def for_bind(
        cls,
        host: str,
        *,
        token: str | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> "DashboardAuth":
        """Credentials required unless the server binds to a loopback address."""
        if is_loopback(host) and not (token or (username and password)):
            return cls(required=False)
        return cls(required=True, token=token, username=username, password=password)

    @property
    def configured(self) -> bool:
        return bool(self.token) or bool(self.username and self.password)

    def problem(self) -> str | None:
        """Why nobody could log in, if so (for `kanvoice check-config`)."""
        if self.required and not self.configured:
            return (
                "server: the dashboard needs server.dashboard_token or "
                "server.dashboard_user and server.dashboard_password when not bound to loopback"
            )
        return None

    def cookie_value(self) -> str:
        """The browser cookie for token auth: derived from the token, so it changes (and
        old cookies stop working) when the token is rotated."""
        assert self.token
        return hmac.new(
            self.token.encode(), b"kanvoice-dashboard-cookie", hashlib.sha256
        ).hexdigest()

    def _challenge(self) -> str:
        challenges = []
        if self.username and self.password:
            challenges.append(f'Basic realm="{self.realm}", charset="UTF-8"')
        if self.token or not challenges:
            challenges.append(f'Bearer realm="{self.realm}"')
        return ", ".join(challenges)

    def _token_ok(self, candidate: str) -> bool:
        return bool(self.token) and hmac.compare_digest(
            candidate.encode(), (self.token or "").encode()
        )

    def _basic_ok(self, encoded: str) -> str | None:
        if not (self.username and self.password):
            return None
        try:
            decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, sep, password = decoded.partition(":")
        if not sep:
            return None
        user_ok = hmac.compare_digest(user.encode(), self.username.encode())
        password_ok = hmac.compare_digest(password.encode(), self.password.encode())
        return user if user_ok and password_ok else None

    def identify(self, request: Request) -> str | None:
        """The authenticated user of a request, or None."""
        if not self.required:
            return self.anonymous_user if is_direct(request) else None
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer" and value and self._token_ok(value):
            return self.token_user
        if scheme.lower() == "basic" and value:
            user = self._basic_ok(value)
            if user is not None:
                return user
        query_token = request.query_params.get("token")
        if query_token and self._token_ok(query_token):
            return self.token_user
        cookie = request.cookies.get(COOKIE_NAME)
        if cookie and self.token and hmac.compare_digest(cookie, self.cookie_value()):
            return self.token_user
        return None

    def host_allowed(self, request: Request) -> bool:
        if self.required or self.allowed_hosts is None:
            return True
        host = request.url.hostname or ""
        return host.strip("[]") in self.allowed_hosts

    def unauthorized(self) -> HTTPException:
        if not self.required:
            detail = (
                "without credentials the dashboard only answers requests made directly on "
                "this host (a loopback peer, no forwarding header such as X-Forwarded-For); "
                "this one was relayed: set a dashboard token "
                "(KANVOICE_SERVER__DASHBOARD_TOKEN) to use it through a proxy"
            )
        else:
            detail = (
                "authentication required: a dashboard token (Authorization: Bearer, or "
                "?token= once in the browser) or the dashboard user and password"
            )
        return HTTPException(
            status_code=401,
            detail=detail,
            headers={"WWW-Authenticate": self._challenge(), **_SECURITY_HEADERS},
        )

    def require_user(self) -> Callable[[Request], str]:
        """A FastAPI dependency: the request's user, or 403 (a non-loopback host name
        without credentials) / 401 (no or wrong credentials, or relayed by a proxy)."""

        def user(request: Request) -> str:
            if not self.host_allowed(request):
                raise HTTPException(
                    status_code=403,
                    detail="the dashboard without credentials only answers on a loopback "
                    "host name (127.0.0.1 or localhost)",
                )
            identity = self.identify(request)
            if identity is None:
                raise self.unauthorized()
            return identity

        return user


def is_direct(request: Request) -> bool:
    """True for a request made on this host directly: from a loopback peer (when the
    peer's address is known) and without any header a reverse proxy adds."""
    if any(name in request.headers for name in FORWARDING_HEADERS):
        return False
    peer = request.client.host if request.client else None
    if peer is None:
        return True
    try:
        return ipaddress.ip_address(peer.strip("[]")).is_loopback
    except ValueError:
        return True  # not an address (a Unix socket, an in-process test client)


def access_note(server: ServerSettings) -> tuple[str, str]:
    """(level, one line) saying who can use the dashboard with these settings, for the
    log at start and `kanvoice check-config`. Level "warning" when nobody can."""
    host, token = server.host, bool(server.dashboard_token)
    basic = bool(server.dashboard_user and server.dashboard_password)
    if token or basic:
        kinds = [kind for kind, on in (("token", token), ("basic auth", basic)) if on]
        return "info", f"dashboard: bound to {host}, requires credentials ({' or '.join(kinds)})"
    if is_loopback(host):
        return "info", (
            f"dashboard: bound to {host} without credentials: only direct requests from "
            "this host are served, requests relayed by a proxy get 401 (set "
            "KANVOICE_SERVER__DASHBOARD_TOKEN to serve it through one)"
        )
    return "warning", (
        f"dashboard: bound to {host} (not loopback) without server.dashboard_token or "
        "server.dashboard_user/dashboard_password: every dashboard request is refused (401); "
        "set KANVOICE_SERVER__DASHBOARD_TOKEN to use it"
    )


def format_money(amount: object, currency: str) -> str:
    """'4000.00', 'EUR' -> '4,000.00 EUR' (the amount already has the currency's
    decimals; the same rule as the page's script)."""
    try:
        value = Decimal(str(amount))
    except InvalidOperation:
        return f"{amount} {currency}"
    return f"{value:,} {currency}"


def format_hours(hours: object) -> str:
    """'1234.5' -> '1,234.5 h'."""
    try:
        value = Decimal(str(hours))
    except InvalidOperation:
        return f"{hours} h"
    return f"{value:,} h"


TEMPLATES.env.filters["money"] = format_money
TEMPLATES.env.filters["hours"] = format_hours


def _json_response(data: Any, status_code: int = 200) -> Response:
    return Response(
        json.dumps(data, default=str),
        status_code=status_code,
        media_type="application/json",
        headers=_SECURITY_HEADERS,
    )


def _sse(event: str, data: Any) -> str:
    body = json.dumps(data, default=str, separators=(",", ":"))
    return f"event: {event}\ndata: {body}\n\n"


class _SharedView:
    """The last view sent on the event streams, and the broker version it reflects."""

    def __init__(self) -> None:
        self.version = -1
        self.data: dict[str, Any] | None = None
        self._lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def lock(self) -> asyncio.Lock:
        """A lock for the running event loop (test clients may run one loop each)."""
        loop = asyncio.get_running_loop()
        if self._lock is None or self._loop is not loop:
            self._lock, self._loop = asyncio.Lock(), loop
        return self._lock


def dashboard_router(
    get_payload: Callable[[], dict[str, Any]],
    broker: ChangeBroker,
    actions: DashboardActions,
    auth: DashboardAuth,
    review: ReviewActions | None = None,
    quota_source: Callable[[], list[dict[str, Any]]] | None = None,
) -> APIRouter:
    """The dashboard's routes: `GET /`, `GET /api/pipeline`, `GET /api/events`,
    `POST /api/clients/{client}/draft`, `POST /api/draft-all`,
    `POST /api/invoices/{id}/approve|reject` and the
    page's static files under `/static/dashboard/`.

    `quota_source`: the board APIs' quota rows (`sync.metrics.board_quota_rows`), shown
    as "Board API quota" and sent again as a ``quota`` event whenever they changed by
    the next heartbeat (they change with every poll, not only with the ledger)."""
    router = APIRouter()
    User = Annotated[str, Depends(auth.require_user())]

    def csrf(request: Request) -> None:
        if request.headers.get(CSRF_HEADER) is None:
            raise HTTPException(
                status_code=403, detail=f"missing the {CSRF_HEADER} header (use the dashboard)"
            )

    def view() -> dict[str, Any]:
        """The payload plus each client's open drafts, as plain JSON data."""
        payload: dict[str, Any] = json.loads(json.dumps(get_payload(), default=str))
        for client in payload.get("clients", []):
            drafts = actions.list_drafts(client["client"])
            client["drafts"] = json.loads(json.dumps(drafts, default=str))
        zone = review.time_zone() if review is not None else "UTC"
        payload["time_zone"] = zone
        generated = payload.get("generated_at")
        if isinstance(generated, str):
            payload["generated_at_local"] = human_time(datetime.fromisoformat(generated), zone)
        if review is not None:
            history = review.history(None, "")
            payload["history"] = json.loads(json.dumps(history[:HISTORY_ROWS], default=str))
        if quota_source is not None:
            payload["board_quota"] = quota_rows(zone)
        return payload

    def quota_rows(zone: str) -> list[dict[str, Any]]:
        """The quota rows with their reset time in the dashboard's time zone."""
        rows: list[dict[str, Any]] = []
        for row in quota_source() if quota_source is not None else []:
            reset = row.get("reset_at")
            rows.append(
                {
                    **row,
                    "reset_local": (
                        human_time(datetime.fromisoformat(reset), zone)
                        if isinstance(reset, str)
                        else None
                    ),
                }
            )
        return rows

    shared = _SharedView()

    async def shared_view() -> dict[str, Any]:
        """One ledger read per notification, however many streams are open: a stream
        woken by notification N reads the broker's version (>= N) and reuses a view
        computed after that version was published."""
        version = broker.version
        async with shared.lock():
            if shared.data is None or shared.version != version:
                shared.data = await run_in_threadpool(view)
                shared.version = version
            return shared.data

    async def decide(
        event: str, where: dict[str, str], function: Callable[..., dict[str, Any]], *args: str
    ) -> Response:
        """Run a button's action; one log line: `event` when done, else the refusal
        (logged by the app's error handler with its status and message)."""
        try:
            result = await run_in_threadpool(function, *args)
        except PermissionError as exc:
            raise HTTPException(status_code=403, detail=str(exc) or "not allowed") from None
        except LookupError as exc:
            message = exc.args[0] if exc.args else "not found"
            raise HTTPException(status_code=404, detail=str(message)) from None
        except InvalidChange as exc:
            raise HTTPException(status_code=422, detail=str(exc) or "invalid") from None
        except ValueError as exc:
            raise HTTPException(status_code=409, detail=str(exc) or "conflict") from None
        log.info(event, **where)
        broker.notify()
        return _json_response(result)

    def sorted_view(data: dict[str, Any], sort: str | None) -> dict[str, Any]:
        """``?sort=client|gap|age``: the clients in that order; anything else is a 400."""
        try:
            order = parse_sort(sort)
        except ValueError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None
        return sort_payload_clients(data, order)

    @router.get("/", response_class=HTMLResponse, name="dashboard_page")
    async def page(request: Request, identity: User) -> Response:
        if "token" in request.query_params and auth.token:
            # Swap the token in the address bar for a cookie, then show the clean URL.
            query = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            target = request.url.path + (f"?{urlencode(query)}" if query else "")
            response = RedirectResponse(target, status_code=303, headers=_SECURITY_HEADERS)
            response.set_cookie(
                COOKIE_NAME,
                auth.cookie_value(),
                max_age=COOKIE_MAX_AGE,
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
                path="/",
            )
            return response
        data = sorted_view(await run_in_threadpool(view), request.query_params.get("sort"))
        paths = {
            "pipeline_url": request.url_for("dashboard_pipeline").path,
            "events_url": request.url_for("dashboard_events").path,
            "api_base": request.url_for("dashboard_pipeline").path.removesuffix("/pipeline"),
            "css_url": request.url_for("dashboard_static", name="dashboard.css").path,
            "js_url": request.url_for("dashboard_static", name="dashboard.js").path,
        }
        return TEMPLATES.TemplateResponse(
            request,
            "dashboard.html",
            {
                "payload": data,
                "user": identity,
                "csrf_header": CSRF_HEADER,
                "terminal_states": sorted(TERMINAL_DRAFT_STATES),
                **paths,
            },
            headers=_PAGE_HEADERS,
        )

    @router.get("/api/pipeline", name="dashboard_pipeline")
    async def pipeline(identity: User, sort: str | None = None) -> Response:
        return _json_response(sorted_view(await run_in_threadpool(view), sort))

    @router.get("/api/events", name="dashboard_events")
    async def events(identity: User) -> StreamingResponse:
        async def stream() -> AsyncIterator[str]:
            async with broker.subscribe() as subscription:
                yield f"retry: {SSE_RETRY_MS}\n\n"
                event, quota_sent = await current()
                yield event
                async for tick in subscription:
                    if tick is Tick.HEARTBEAT:
                        # Quota moves with every poll, not only with the ledger: sent
                        # on its own when it changed since the last event.
                        quota = await quota_now()
                        if quota is not None and quota != quota_sent:
                            quota_sent = quota
                            yield _sse("quota", quota)
                        else:
                            yield ": heartbeat\n\n"
                    else:
                        event, quota = await current()
                        quota_sent = quota if quota is not None else quota_sent
                        yield event

        async def quota_now() -> list[dict[str, Any]] | None:
            if quota_source is None:
                return None
            zone = review.time_zone() if review is not None else "UTC"
            try:
                rows: list[dict[str, Any]] = json.loads(
                    json.dumps(await run_in_threadpool(quota_rows, zone), default=str)
                )
            except Exception:
                log.exception("dashboard.quota_failed")
                return None
            return rows

        async def current() -> tuple[str, Any]:
            """The pipeline event, and the quota rows it carries (None: none)."""
            try:
                data = await shared_view()
                return _sse("pipeline", data), data.get("board_quota")
            except Exception as exc:
                log.exception("dashboard.payload_failed")
                return _sse("problem", {"message": f"{exc.__class__.__name__}: {exc}"}), None

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={**_SECURITY_HEADERS, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @router.post(
        "/api/clients/{client}/draft",
        name="dashboard_create_draft",
        dependencies=[Depends(csrf)],
    )
    async def create_draft(client: str, identity: User) -> Response:
        where = {"client": client, "user": identity}
        return await decide("dashboard.create_draft", where, actions.create_draft, client)

    @router.post(
        "/api/draft-all",
        name="dashboard_draft_all",
        dependencies=[Depends(csrf)],
    )
    async def draft_all(identity: User) -> Response:
        where = {"user": identity}
        return await decide("dashboard.draft_all", where, actions.draft_all)

    @router.post(
        "/api/invoices/{invoice_id}/approve",
        name="dashboard_approve",
        dependencies=[Depends(csrf)],
    )
    async def approve(
        invoice_id: str,
        identity: User,
        force: Annotated[bool, Body(embed=True)] = False,
    ) -> Response:
        where = {"invoice": invoice_id, "user": identity, "force": str(force).lower()}
        if not force:
            return await decide("dashboard.approve", where, actions.approve, invoice_id, identity)

        def forced(invoice: str, approver: str) -> dict[str, Any]:
            return actions.approve(invoice, approver, force=True)

        return await decide("dashboard.approve", where, forced, invoice_id, identity)

    @router.post(
        "/api/invoices/{invoice_id}/reject",
        name="dashboard_reject",
        dependencies=[Depends(csrf)],
    )
    async def reject(
        invoice_id: str,
        identity: User,
        reason: Annotated[str, Body(embed=True, max_length=1000)] = "",
    ) -> Response:
        if "\x00" in reason:  # PostgreSQL's text columns refuse it
            raise HTTPException(status_code=422, detail="reason: must not contain NUL characters")
        # A reason is required everywhere a draft is rejected (CLI, Slack modal, here).
        if not reason.strip():
            raise HTTPException(status_code=422, detail="a reason is required to reject a draft")
        where = {"invoice": invoice_id, "user": identity}
        return await decide(
            "dashboard.reject", where, actions.reject, invoice_id, identity, reason.strip()
        )

    if review is not None:
        _review_routes(router, review, User, csrf, decide)

    @router.get("/static/dashboard/{name}", name="dashboard_static", include_in_schema=False)
    async def static(name: str) -> FileResponse:
        media_type = STATIC_FILES.get(name)
        if media_type is None:
            raise HTTPException(status_code=404, detail="not found")
        return FileResponse(
            STATIC_DIR / name,
            media_type=media_type,
            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
        )

    return router


def _review_routes(
    router: APIRouter,
    review: ReviewActions,
    User: Any,
    csrf: Callable[[Request], None],
    decide: Callable[..., Any],
) -> None:
    """`GET /api/invoices/{id}`, `POST .../adjust`, `POST .../lines/{entry}/defer`,
    `GET /api/history` and `GET /api/audit` (JSON, or CSV with `format=csv`)."""

    async def read(function: Callable[..., Any], *args: Any) -> Any:
        if any(isinstance(arg, str) and "\x00" in arg for arg in args):
            # PostgreSQL's text columns refuse it: a 422, never a server error.
            raise HTTPException(status_code=422, detail="must not contain NUL characters")
        try:
            return await run_in_threadpool(function, *args)
        except LookupError as exc:
            message = exc.args[0] if exc.args else "not found"
            raise HTTPException(status_code=404, detail=str(message)) from None
        except InvalidChange as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None

    @router.get("/api/invoices/{invoice_id}", name="dashboard_invoice")
    async def invoice(invoice_id: str, identity: User) -> Response:
        return _json_response(await read(review.invoice, invoice_id))

    @router.post(
        "/api/invoices/{invoice_id}/adjust",
        name="dashboard_adjust",
        dependencies=[Depends(csrf)],
    )
    async def adjust(
        invoice_id: str,
        identity: User,
        version: Annotated[int, Body(ge=0, le=2**31 - 1)],
        changes: Annotated[list[dict[str, Any]], Body(min_length=1, max_length=250)],
    ) -> Response:
        where = {"invoice": invoice_id, "user": identity, "lines": str(len(changes))}

        def run(invoice: str, who: str) -> dict[str, Any]:
            return review.adjust(invoice, who, version, changes)

        result: Response = await decide("dashboard.adjust", where, run, invoice_id, identity)
        return result

    @router.post(
        "/api/invoices/{invoice_id}/lines/{entry_id}/defer",
        name="dashboard_defer",
        dependencies=[Depends(csrf)],
    )
    async def defer(
        invoice_id: str,
        entry_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
        identity: User,
        version: Annotated[int, Body(embed=True, ge=0, le=2**31 - 1)],
    ) -> Response:
        where = {"invoice": invoice_id, "entry": str(entry_id), "user": identity}

        def run(invoice: str, who: str) -> dict[str, Any]:
            return review.defer(invoice, who, version, entry_id)

        result: Response = await decide("dashboard.defer", where, run, invoice_id, identity)
        return result

    @router.get("/api/history", name="dashboard_history")
    async def history(
        identity: User,
        client: Annotated[str | None, Query(max_length=100)] = None,
        q: Annotated[str, Query(max_length=200)] = "",
    ) -> Response:
        return _json_response({"invoices": await read(review.history, client, q)})

    @router.get("/api/audit", name="dashboard_audit")
    async def audit_log(
        identity: User,
        client: Annotated[str | None, Query(max_length=100)] = None,
        since: Annotated[str | None, Query(max_length=40)] = None,
        format: Annotated[str, Query(pattern="^(json|csv)$")] = "json",
    ) -> Response:
        if format == "csv":
            text = await read(review.audit_csv, client, since)
            return Response(
                text,
                media_type="text/csv; charset=utf-8",
                headers={
                    **_SECURITY_HEADERS,
                    "Content-Disposition": 'attachment; filename="kanvoice-audit.csv"',
                },
            )
        return _json_response({"rows": await read(review.audit, client, since)})
