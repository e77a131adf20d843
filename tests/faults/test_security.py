"""Probed as an attacker would, over real HTTP (uvicorn on loopback) with genuinely signed
requests, against two instances of the app: one as `kanvoice run` starts it by default
(bound to 127.0.0.1, no dashboard credentials) and one bound to a public address with a
dashboard token and basic auth. Every refusal leaves the ledger as it was.

Issue 13: Slack's timestamp window both ways; loopback trust stops at a reverse proxy;
no public API description; odd ids and misshapen signed bodies are a 4xx, never a 5xx;
one line says when nobody (or only this host) can use the dashboard.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import select
from structlog.testing import capture_logs
from typer.testing import CliRunner

from sync.cli import app as cli
from sync.composition import Services
from sync.intake import drain_inbox
from sync.ledger import schema as t
from sync.web.app import create_app
from tests.conftest import DATA_DIR, FixedClock
from tests.fakes.azure_server import FakeAzureDevOps
from tests.fakes.github_server import FakeGitHubProject
from tests.fakes.stripe_server import sign_stripe_payload
from tests.faults.world import (
    SLACK_SECRET,
    Instance,
    Start,
    azure_headers,
    board_settings,
    github_headers,
)
from tests.ledger_support import dump
from tests.slack_support import post_interaction
from tests.stripe_support import APPROVER, WEBHOOK_SECRET, StripeWorld, open_services

TOKEN = "dashboard-token-for-the-probe"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
USER, PASSWORD = "finance", "basic-auth-password"
CSRF = {"X-Kanvoice-Dashboard": "1"}
FORWARDING = (
    {"X-Forwarded-For": "203.0.113.7"},
    {"Forwarded": "for=203.0.113.7;proto=https;host=kanvoice.example.com"},
    {"X-Real-IP": "203.0.113.7"},
)
ODD_IDS = ("-1", "1e3", "1%20", "%201", "a" * 30, "9" * 30, "0", "01", "2.0", "0x2", "+2")




@pytest.fixture
def local(start: Start, sqlite_url: str) -> Instance:
    """The instance on 127.0.0.1 without credentials."""
    return start(sqlite_url, {"host": "127.0.0.1"})


@pytest.fixture
def public(start: Start, sqlite_url: str) -> Instance:
    """The instance bound to a public address, with a dashboard token and basic auth."""
    server = {
        "host": "0.0.0.0",  # what the app is told; uvicorn serves it on loopback
        "dashboard_token": TOKEN,
        "dashboard_user": USER,
        "dashboard_password": PASSWORD,
    }
    return start(sqlite_url, server)


def draft(services: Services) -> tuple[int, int]:
    """(id, version) of the draft awaiting approval."""
    with services.ledger.engine.connect() as conn:
        row = conn.execute(
            select(t.invoices.c.id, t.invoices.c.version).where(t.invoices.c.state == "draft")
        ).one()
    return int(row.id), int(row.version)


def approvals(services: Services) -> list[int]:
    with services.ledger.engine.connect() as conn:
        return list(conn.execute(select(t.approvals.c.invoice_id)).scalars())


def approve_click(invoice: int, version: int, user: str = APPROVER) -> dict[str, Any]:
    """Slack's captured block_actions payload, pressing Approve on this draft."""
    payload: dict[str, Any] = json.loads(
        (DATA_DIR / "slack" / "block_actions_approve.json").read_text(encoding="utf-8")
    )
    payload["user"]["id"] = user
    payload["actions"][0]["value"] = json.dumps({"invoice_id": invoice, "version": version})
    return payload


def basic() -> str:
    return "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


def post_click(base: str, payload: dict[str, Any], stamp: int | None = None) -> httpx.Response:
    """POST a Slack interaction to the instance at `base`, signed with its signing secret
    at the Unix time `stamp` (now by default)."""
    with httpx.Client(base_url=base) as http:
        return post_interaction(http, payload, secret=SLACK_SECRET, at=stamp)


# --- 1. Slack's timestamp window, both ways ----------------------------------------------


@pytest.mark.parametrize("offset", [301, -301, 3600, -86400])
def test_a_signed_click_stamped_outside_300_s_either_way_is_refused(
    offset: int, local: Instance, sqlite_url: str
) -> None:
    services, base = local
    invoice, version = draft(services)
    before = dump(sqlite_url)
    # Whole seconds, rounded away from now: `offset` s off by the server's clock too.
    stamp = math.ceil(time.time()) + offset if offset > 0 else math.floor(time.time()) + offset
    response = post_click(base, approve_click(invoice, version), stamp)
    assert response.status_code == 401
    assert "300 s window" in response.json()["error"]
    assert dump(sqlite_url) == before


def test_the_same_click_inside_the_window_approves(local: Instance) -> None:
    services, base = local
    invoice, version = draft(services)
    response = post_click(base, approve_click(invoice, version), int(time.time()) + 250)
    assert response.status_code == 200
    asyncio.run(drain_inbox(services, everything=True))  # the leader's worker applies it
    assert invoice in approvals(services)


# --- 2. loopback trust stops at a reverse proxy -----------------------------------------


@pytest.mark.parametrize("forwarded", FORWARDING, ids=lambda h: next(iter(h)))
def test_without_credentials_a_request_relayed_by_a_proxy_is_401(
    forwarded: dict[str, str], local: Instance, sqlite_url: str
) -> None:
    services, base = local
    invoice, _ = draft(services)
    before = dump(sqlite_url)
    with httpx.Client(base_url=base, headers=forwarded) as http:
        answers = [
            http.get("/"),
            http.get("/api/pipeline"),
            http.get("/openapi.json"),
            http.post(f"/api/invoices/{invoice}/approve", headers=CSRF),
            http.post(f"/api/invoices/{invoice}/reject", headers=CSRF, json={"reason": "x"}),
            http.post("/api/clients/acme/draft", headers=CSRF),
        ]
    for response in answers:
        assert response.status_code == 401, (response.request.url, response.text)
        assert "set a dashboard token" in response.json()["detail"]
        assert "KANVOICE_SERVER__DASHBOARD_TOKEN" in response.json()["detail"]
    assert dump(sqlite_url) == before


def test_without_credentials_a_direct_loopback_request_is_served(
    local: Instance,
) -> None:
    services, base = local
    invoice, _ = draft(services)
    assert httpx.get(f"{base}/api/pipeline").status_code == 200
    response = httpx.post(f"{base}/api/invoices/{invoice}/approve", headers=CSRF)
    assert response.status_code == 200, response.text
    assert invoice in approvals(services)


async def test_without_credentials_a_request_from_a_non_loopback_peer_is_401(
    local: Instance, sqlite_url: str
) -> None:
    """However it got there (a port forward, a proxy adding no header), a peer address
    that is not loopback is not "this host"."""
    services, _ = local
    invoice, _ = draft(services)
    before = dump(sqlite_url)
    transport = httpx.ASGITransport(app=create_app(services), client=("203.0.113.7", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        page = await http.get("/api/pipeline")
        approve = await http.post(f"/api/invoices/{invoice}/approve", headers=CSRF)
    assert (page.status_code, approve.status_code) == (401, 401)
    assert dump(sqlite_url) == before


def test_with_a_token_a_request_through_the_proxy_is_served(
    public: Instance,
) -> None:
    _, base = public
    headers = {**BEARER, **FORWARDING[0]}
    assert httpx.get(f"{base}/api/pipeline", headers=headers).status_code == 200
    assert httpx.get(f"{base}/api/pipeline", headers=FORWARDING[0]).status_code == 401


# --- 3. the API description ----------------------------------------------------------------


def test_the_api_description_needs_credentials(public: Instance) -> None:
    _, base = public
    assert httpx.get(f"{base}/openapi.json").status_code == 401
    assert httpx.get(f"{base}/openapi.json?token=wrong").status_code == 401
    for credentials in (BEARER, {"Authorization": basic()}):
        described = httpx.get(f"{base}/openapi.json", headers=credentials)
        assert described.status_code == 200
        assert "/api/pipeline" in described.json()["paths"]
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        assert httpx.get(f"{base}{path}").status_code == 404
        assert httpx.get(f"{base}{path}", headers={"Authorization": basic()}).status_code == 404


# --- 4. odd ids and misshapen signed bodies: 4xx, one JSON error, one log line -------------


@pytest.mark.parametrize("action", ["approve", "reject"])
def test_an_odd_invoice_id_is_404_with_one_json_error_and_one_log_line(
    action: str, public: Instance, sqlite_url: str
) -> None:
    _, base = public
    before = dump(sqlite_url)
    headers = {**BEARER, **CSRF}
    for odd in ODD_IDS:
        with capture_logs() as logs:
            response = httpx.post(
                f"{base}/api/invoices/{odd}/{action}", headers=headers, json={"reason": "x"}
            )
        assert response.status_code == 404, (odd, response.text)
        assert list(response.json()) == ["detail"]
        assert "invoice ids are positive integers" in response.json()["detail"]
        assert [entry["event"] for entry in logs] == ["http.refused"]
    assert dump(sqlite_url) == before


@pytest.mark.parametrize(
    "body",
    [
        b'{"reason": 5}',
        b'{"reason": null}',
        b'{"reason": ["a"]}',
        b'{"reason": "' + b"x" * 1001 + b'"}',
    ],
    ids=["number", "null", "list", "too-long"],
)
def test_a_reject_reason_of_the_wrong_shape_is_422_with_one_message(
    body: bytes, public: Instance, sqlite_url: str
) -> None:
    services, base = public
    invoice, _ = draft(services)
    before = dump(sqlite_url)
    headers = {**BEARER, "Content-Type": "application/json", **CSRF}
    with capture_logs() as logs:
        response = httpx.post(
            f"{base}/api/invoices/{invoice}/reject", headers=headers, content=body
        )
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail.startswith("body.reason: ")
    assert [entry["event"] for entry in logs] == ["http.invalid_request"]
    assert dump(sqlite_url) == before


@pytest.mark.parametrize(
    ("what", "value"),
    [
        ("invoice id beyond the column", {"invoice_id": 10**30, "version": 1}),
        ("version beyond the column", {"invoice_id": 2, "version": 2**31}),
        ("negative invoice id", {"invoice_id": -1, "version": 1}),
        ("invoice id as text", {"invoice_id": "2", "version": 1}),
        ("not an object", [2, 1]),
    ],
)
def test_a_signed_click_with_a_misshapen_reference_is_400(
    what: str, value: Any, local: Instance, sqlite_url: str
) -> None:
    _, base = local
    payload = approve_click(2, 1)
    payload["actions"][0]["value"] = json.dumps(value)
    before = dump(sqlite_url)
    response = post_click(base, payload)
    assert response.status_code == 400, (what, response.text)
    assert "button value" in response.json()["error"]
    assert dump(sqlite_url) == before


def github_example(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA_DIR / "github" / name).read_text(encoding="utf-8"))
    return data


@pytest.mark.parametrize(
    ("what", "mutate", "status"),
    [
        ("node_id a number", lambda p: p["projects_v2_item"].update(node_id=5), 400),
        ("node_id null", lambda p: p["projects_v2_item"].update(node_id=None), 400),
        ("no projects_v2_item", lambda p: p.pop("projects_v2_item"), 400),
        ("projects_v2_item a list", lambda p: p.update(projects_v2_item=[1]), 400),
        ("action a number", lambda p: p.update(action=7), 400),
        ("node_id of 10 kB", lambda p: p["projects_v2_item"].update(node_id="P" * 10_000), 400),
        ("node_id with a NUL", lambda p: p["projects_v2_item"].update(node_id="PVTI_\u0000"), 400),
    ],
)
def test_a_signed_misshapen_github_delivery_is_4xx(
    what: str, mutate: Any, status: int, local: Instance, sqlite_url: str
) -> None:
    _, base = local
    payload = github_example("webhook_edited.json")
    mutate(payload)
    body = json.dumps(payload).encode()
    before = dump(sqlite_url)
    response = httpx.post(
        f"{base}/webhooks/github", content=body, headers=github_headers(body, f"probe-{what}")
    )
    assert response.status_code == status, (what, response.text)
    assert list(response.json()) == ["error"]
    assert dump(sqlite_url) == before


def azure_example() -> dict[str, Any]:
    path = DATA_DIR / "azure_devops" / "hook_workitem_updated.json"
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


@pytest.mark.parametrize(
    ("what", "mutate"),
    [
        ("work item id beyond 32 bits", lambda p: p["resource"].update(workItemId=2**31)),
        ("work item id huge", lambda p: p["resource"].update(workItemId=10**40)),
        ("rev huge", lambda p: p["resource"].update(rev=10**40, revision={"rev": 10**40})),
        ("rev a float", lambda p: p["resource"].update(rev=8.5, revision={"rev": 8.5})),
        ("resource a list", lambda p: p.update(resource=[1])),
        ("no resource", lambda p: p.pop("resource")),
        ("eventType a number", lambda p: p.update(eventType=5)),
    ],
)
def test_a_misshapen_azure_hook_with_the_right_credentials_is_400(
    what: str, mutate: Any, local: Instance, sqlite_url: str
) -> None:
    _, base = local
    payload = azure_example()
    mutate(payload)
    before = dump(sqlite_url)
    response = httpx.post(
        f"{base}/webhooks/azure-devops",
        content=json.dumps(payload).encode(),
        headers=azure_headers(),
    )
    assert response.status_code == 400, (what, response.text)
    assert list(response.json()) == ["error"]
    assert dump(sqlite_url) == before


# --- 7. one line says who can use the dashboard -----------------------------------------


def test_start_says_when_nobody_can_use_the_dashboard(
    stripe_world: StripeWorld,
    github: tuple[FakeGitHubProject, str],
    azure: tuple[FakeAzureDevOps, str],
    sqlite_url: str,
) -> None:
    data = board_settings(stripe_world, sqlite_url, github[1], azure[1])
    data["server"] = {"host": "::"}
    with open_services(data, FixedClock(), fast=False) as s, capture_logs() as logs:
        create_app(s)
    [line] = [entry for entry in logs if entry["event"] == "dashboard.access"]
    assert line["log_level"] == "warning"
    assert "every dashboard request is refused" in line["note"]
    assert "KANVOICE_SERVER__DASHBOARD_TOKEN" in line["note"]


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("0.0.0.0", "warning: dashboard: bound to 0.0.0.0 (not loopback) without"),
        ("127.0.0.1", "ok dashboard: bound to 127.0.0.1 without credentials: only direct"),
    ],
)
def test_check_config_says_who_can_use_the_dashboard(
    host: str, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KANVOICE_SECRETS_DIR", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    config = tmp_path / "kanvoice.toml"
    ledger = quote(str(tmp_path / "ledger.db"))
    config.write_text(f'[server]\nhost = "{host}"\n[ledger]\nurl = "sqlite:///{ledger}"\n')
    result = CliRunner().invoke(cli, ["check-config", "-c", str(config)])
    assert result.exit_code == 0, result.output
    assert [line for line in result.output.splitlines() if "dashboard:" in line] == [
        line for line in result.output.splitlines() if line.startswith(expected)
    ]
    assert any(line.startswith(expected) for line in result.output.splitlines())


# --- a NUL character: PostgreSQL's text columns refuse it, so the parsers do ---------------


@pytest.fixture
def local_on_both(start: Start, ledger_url: str) -> Instance:
    """The credential-less instance, on SQLite and on PostgreSQL."""
    return start(ledger_url, {"host": "127.0.0.1"})


def test_a_nul_character_in_any_signed_payload_is_400_and_changes_nothing(
    local_on_both: Instance, ledger_url: str
) -> None:
    services, base = local_on_both
    invoice, version = draft(services)
    before = dump(ledger_url)
    answers: dict[str, httpx.Response] = {}
    with httpx.Client(base_url=base) as http:
        for what, user, channel in (
            ("slack user id", "U0\u0000X", "C0FINANCE"),  # a refusal would be audited
            ("slack channel", APPROVER, "C0\u0000"),
        ):
            click = approve_click(invoice, version, user)
            click["container"]["channel_id"] = channel
            answers[what] = post_interaction(http, click, secret=SLACK_SECRET)
        answers["dashboard reason"] = http.post(
            f"/api/invoices/{invoice}/reject", headers=CSRF, json={"reason": "no\u0000"}
        )
        gh = github_example("webhook_edited.json")
        gh["changes"]["field_value"]["field_name"] = "Sta\u0000tus"
        body = json.dumps(gh).encode()
        answers["github"] = http.post(
            "/webhooks/github", content=body, headers=github_headers(body, "probe-nul")
        )
        az = azure_example()
        az["resource"]["revision"]["fields"]["System.TeamProject"] = "Web Shop\u0000"
        answers["azure"] = http.post(
            "/webhooks/azure-devops", content=json.dumps(az).encode(), headers=azure_headers()
        )
        event = json.dumps(
            {"id": "evt_\u0000", "type": "invoice.paid", "data": {"object": {"id": "in_1"}}}
        ).encode()
        stamp = int(time.time())
        answers["stripe"] = http.post(
            "/webhooks/stripe",
            content=event,
            headers={"Stripe-Signature": sign_stripe_payload(event, WEBHOOK_SECRET, stamp)},
        )
    statuses = {what: response.status_code for what, response in answers.items()}
    assert statuses == {
        "slack user id": 400,
        "slack channel": 400,
        "dashboard reason": 422,
        "github": 400,
        "azure": 400,
        "stripe": 400,
    }, {what: response.text for what, response in answers.items()}
    assert dump(ledger_url) == before
