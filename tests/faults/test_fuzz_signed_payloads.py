"""Fuzz of every endpoint with *correctly signed mutants of real payloads*, over real HTTP
(uvicorn on loopback), on SQLite and PostgreSQL.

The bases are captured deliveries (tests/data): GitHub `projects_v2_item` (every action),
Slack `block_actions` and `view_submission`, Azure DevOps `workitem.updated`; some are
pointed at items that exist on the fake boards (and at the ledger's invoices) so the
mutants get past the parsers into re-fetching, ingesting and deciding. Hypothesis then
changes a few places of each: a value of the wrong type, a null, a huge or negative
number, a long or NUL-carrying string, a missing key, an extra key, a missing nested
object. Every mutant is signed the way its sender signs (HMAC over the raw body, basic
auth, Slack's v0 signature with a fresh timestamp). Dashboard requests get odd ids,
bodies, and forwarding headers.

Assertions: no answer is a 5xx; a request answered 4xx left the ledger exactly as it
was; a dashboard request relayed by a proxy to the credential-less instance is refused;
and at the end, after draining, the four invariants hold (nothing billed twice or lost,
nothing finalized without approval, ledger and Stripe reconciled). Derandomized and
bounded (`EXAMPLES` per database), so the run is the same every time and short.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import time
from collections import Counter
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.github.webhook import sign_body
from sync.composition import Services
from tests.conftest import DATA_DIR, FixedClock
from tests.fakes.azure_server import FakeAzureDevOps
from tests.fakes.github_server import FakeGitHubProject
from tests.faults.invariants import check_invariants
from tests.faults.test_security import CSRF, FORWARDING
from tests.faults.world import (
    AZURE_PROJECT,
    GITHUB_SECRET,
    HOOK_PASSWORD,
    HOOK_USER,
    SLACK_SECRET,
    Start,
    settle_now,
)
from tests.ledger_support import dump
from tests.stripe_support import APPROVER, StripeWorld

EXAMPLES = 160

# -- the bases: captured payloads ----------------------------------------------------------


def load(*parts: str) -> Any:
    return json.loads(DATA_DIR.joinpath(*parts).read_text(encoding="utf-8"))


GITHUB_BASES = [
    load("github", name)
    for name in (
        "webhook_created.json",
        "webhook_edited.json",
        "webhook_edited_legacy.json",
        "webhook_edited_number.json",
        "webhook_archived.json",
        "webhook_restored.json",
        "webhook_converted.json",
        "webhook_deleted.json",
        "webhook_reordered.json",
    )
]
SLACK_APPROVE = load("slack", "block_actions_approve.json")
SLACK_ADJUST = load("slack", "view_submission_adjust.json")
AZURE_UPDATED = load("azure_devops", "hook_workitem_updated.json")

# -- mutations -------------------------------------------------------------------------------

odd_values = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from([0, -1, 2**31, 2**63, -(2**63) - 1, 10**30, 10**400 // 10**360]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["", " ", "\u0000", "x" * 5000, "1e3", "-1", "null", "PVTI_\u0000"]),
    st.text(max_size=30),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON document (keys of objects, indexes of arrays)."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, inner in value.items():
            found.extend(paths(inner, (*prefix, key)))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found.extend(paths(inner, (*prefix, index)))
    return found


def at(document: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        document = document[step]
    return document


@st.composite
def mutant(draw: st.DrawFn, base: Any) -> Any:
    """`base` with up to three places replaced, removed, or given an extra key."""
    document = copy.deepcopy(base)
    for _ in range(draw(st.integers(0, 3))):
        places = paths(document)
        if not places:
            break
        path = draw(st.sampled_from(places))
        parent = at(document, path[:-1])
        operation = draw(st.sampled_from(["replace", "replace", "remove", "extra"]))
        if operation == "replace" or (operation == "remove" and isinstance(parent, list)):
            parent[path[-1]] = draw(odd_values)
        elif operation == "remove":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=12))] = draw(odd_values)
    return document


# -- requests, each signed as its sender signs ----------------------------------------------


def slack_headers(body: bytes) -> dict[str, str]:
    stamp = str(int(time.time()))
    digest = hmac.new(SLACK_SECRET.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256)
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": f"v0={digest.hexdigest()}",
    }


def encode(document: Any) -> bytes:
    return json.dumps(document).encode()


class Targets:
    """What the bases are pointed at: real items on the fake boards, real invoices."""

    def __init__(self, services: Services, project: FakeGitHubProject, org: FakeAzureDevOps):
        done = project.add_issue("Checkout", status="Done", hours=3)
        project.add_issue("Search", status="In progress", hours=1)
        self.github_item, self.github_project = done.node_id, project.project_id
        shop = org.projects[AZURE_PROJECT.lower()]
        self.azure_item = shop.add_item("Login", state="Closed", hours=2)
        self.azure_payload = shop.service_hook_payload(self.azure_item)
        # Real invoices at several versions, one that does not exist, and ids and versions
        # beyond the ledger's 32-bit columns.
        self.invoices = [
            *[(1, 0), (2, 0), (2, 1), (2, 2), (999, 0)],
            *[(2**31, 0), (10**30, 0), (2, 10**30)],
        ]


def github_requests(targets: Targets) -> st.SearchStrategy[dict[str, Any]]:
    def point(document: dict[str, Any]) -> dict[str, Any]:
        document = copy.deepcopy(document)
        document["projects_v2_item"]["node_id"] = targets.github_item
        document["projects_v2_item"]["project_node_id"] = targets.github_project
        return document

    bases = st.sampled_from(GITHUB_BASES).flatmap(
        lambda base: st.one_of(st.just(base), st.just(point(base)))
    )

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        body = encode(draw(bases.flatmap(mutant)))
        headers = {
            "X-GitHub-Event": "projects_v2_item",
            "X-GitHub-Delivery": draw(st.uuids()).hex,
            "X-Hub-Signature-256": sign_body(GITHUB_SECRET.encode(), body),
            "Content-Type": "application/json",
        }
        return {"method": "POST", "path": "/webhooks/github", "body": body, "headers": headers}

    return build()


def azure_requests(targets: Targets) -> st.SearchStrategy[dict[str, Any]]:
    auth = base64.b64encode(f"{HOOK_USER}:{HOOK_PASSWORD}".encode()).decode()
    headers = {"Authorization": f"Basic {auth}", "Content-Type": "application/json"}
    bases = st.sampled_from([AZURE_UPDATED, targets.azure_payload])

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        body = encode(draw(bases.flatmap(mutant)))
        path = "/webhooks/azure-devops"
        return {"method": "POST", "path": path, "body": body, "headers": headers}

    return build()


def slack_requests(targets: Targets) -> st.SearchStrategy[dict[str, Any]]:
    def point(base: dict[str, Any], ref: tuple[int, int], user: str) -> dict[str, Any]:
        document = copy.deepcopy(base)
        document["user"]["id"] = user
        value = json.dumps({"invoice_id": ref[0], "version": ref[1]})
        if document["type"] == "block_actions":
            document["actions"][0]["value"] = value
        else:
            document["view"]["private_metadata"] = value
        return document

    bases = st.builds(
        point,
        st.sampled_from([SLACK_APPROVE, SLACK_ADJUST]),
        st.sampled_from(targets.invoices),
        st.sampled_from([APPROVER, "U0INTRUDER"]),
    )

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        body = urlencode({"payload": json.dumps(draw(bases.flatmap(mutant)))}).encode()
        return {
            "method": "POST",
            "path": "/slack/interactions",
            "body": body,
            "headers": slack_headers(body),
        }

    return build()


odd_ids = st.one_of(
    st.sampled_from(["-1", "1e3", "1%20", "%201", "a" * 30, "0", "01", "2.0", "+2", "999"]),
    st.integers().map(str),
    st.text(max_size=30).map(lambda s: quote(s, safe="")),
)
bodies = st.one_of(
    st.just(b""),
    st.binary(max_size=200),
    odd_values.map(lambda reason: encode({"reason": reason})),
    st.dictionaries(st.text(max_size=8), odd_values, max_size=3).map(encode),
)


@st.composite
def dashboard_requests(draw: st.DrawFn) -> dict[str, Any]:
    action = draw(st.sampled_from(["approve", "reject", "draft", "pipeline", "page", "openapi"]))
    if action in ("approve", "reject"):
        path, method = f"/api/invoices/{draw(odd_ids)}/{action}", "POST"
    elif action == "draft":
        client = draw(st.one_of(st.just("acme"), st.text(max_size=20)))
        path, method = f"/api/clients/{quote(client, safe='') or 'x'}/draft", "POST"
    else:
        path = {"pipeline": "/api/pipeline", "page": "/", "openapi": "/openapi.json"}[action]
        method = "GET"
    headers: dict[str, str] = {"Content-Type": "application/json"}
    if draw(st.booleans()):
        headers.update(CSRF)
    forwarded = draw(st.one_of(st.just({}), st.sampled_from(FORWARDING)))
    headers.update(forwarded)
    body = draw(bodies) if method == "POST" else b""
    return {"method": method, "path": path, "body": body, "headers": headers}


# -- the run ----------------------------------------------------------------------------------


@pytest.fixture
def served(
    start: Start,
    github: tuple[FakeGitHubProject, str],
    azure: tuple[FakeAzureDevOps, str],
    ledger_url: str,
) -> tuple[Services, str, Targets]:
    """The credential-less loopback instance (the most trusting one) over a ledger with a
    finalized invoice (1) and a draft (2), on SQLite and PostgreSQL."""
    services, base = start(ledger_url, {"host": "127.0.0.1"})
    return services, base, Targets(services, github[0], azure[0])


def test_signed_mutants_of_real_payloads_never_5xx_and_refusals_change_nothing(
    served: tuple[Services, str, Targets], stripe_world: StripeWorld, ledger_url: str
) -> None:
    services, base, targets = served
    requests = st.one_of(
        github_requests(targets),
        azure_requests(targets),
        slack_requests(targets),
        dashboard_requests(),
    )
    statuses: Counter[tuple[str, int]] = Counter()
    with httpx.Client(base_url=base, timeout=30) as http:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(request=requests)
        def one(request: dict[str, Any]) -> None:
            before = dump(ledger_url)
            response = http.request(
                request["method"],
                request["path"],
                content=request["body"],
                headers=request["headers"],
            )
            where = request["path"].split("/")[1]
            statuses[(where, response.status_code)] += 1
            assert response.status_code < 500, (request, response.text)
            if response.status_code >= 400:
                assert response.json(), response.text  # one JSON error
                assert dump(ledger_url) == before, (request, response.status_code)
            relayed = any(h in request["headers"] for f in FORWARDING for h in f)
            if where == "api" and relayed:  # never served: 401 (or 403 CSRF, 404 no route)
                assert response.status_code >= 400, (request, response.text)

        one()
    # The mutants reached the handlers behind the signatures, and were refused there too.
    for where in ("webhooks", "slack", "api"):
        codes = {code for place, code in statuses if place == where}
        assert codes & {200, 202}, (where, statuses)
        assert any(400 <= code < 500 for code in codes), (where, statuses)
    clock = services.clock
    assert isinstance(clock, FixedClock)
    settle_now(services, clock)
    check_invariants(services, stripe_world.fake)
