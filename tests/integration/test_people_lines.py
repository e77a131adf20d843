"""Issue 18 end to end: a GitHub board and an Azure DevOps board, two people at
different rates, to Stripe lines per person (fake GitHub, fake Azure, fake Stripe,
real HTTP; the ledger on SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from sync.boards import sync_board
from sync.ledger import schema as t
from tests.conftest import FixedClock
from tests.fakes.azure_server import FakeAzureDevOps, serve_fake_azure
from tests.fakes.github_server import FakeGitHubProject, serve_fake_github
from tests.stripe_support import StripeWorld, drain, fake_stripe, services_for, world_settings

TOKEN = "ghp_fake_people_token"
PAT = "fake-pat-people"
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
HOURS_BY_PERSON = "Custom.HoursByPerson"

PEOPLE: list[dict[str, Any]] = [
    {
        "key": "alice",
        "name": "Alice Senior",
        "identities": ["alice-gh", "alice@fabrikam.example"],
        "role": "senior",
        "rate": "160",
        "cost_rate": "80",
    },
    {
        "key": "bob",
        "name": "Bob Junior",
        "identities": ["bob-gh", "bob@fabrikam.example"],
        "role": "junior",
    },
]
ROLES: list[dict[str, Any]] = [
    {"key": "senior", "name": "Senior developer", "rate": "150", "cost_rate": "70"},
    {"key": "junior", "name": "Junior developer", "rate": "90", "cost_rate": "40"},
]


@pytest.fixture
def world() -> Iterator[StripeWorld]:
    with fake_stripe({"acme": "eur"}) as w:
        yield w


@pytest.fixture
def github() -> Iterator[tuple[FakeGitHubProject, str]]:
    project = FakeGitHubProject(owner="acme", number=3, require_token=TOKEN)
    with serve_fake_github(project) as url:
        yield project, url


@pytest.fixture
def azure() -> Iterator[tuple[FakeAzureDevOps, str]]:
    org = FakeAzureDevOps(pat=PAT, organization="fabrikam")
    with serve_fake_azure(org) as url:
        yield org, url


def settings(world: StripeWorld, ledger_url: str, gh_url: str, az_url: str) -> dict[str, Any]:
    data = world_settings(world, ledger_url, acme={"line_grouping": "item_person"})
    data["boards"] = [
        {
            "key": "acme-web",
            "source": "github",
            "client": "acme",
            "done_columns": ["Done"],
            "hours_field": "Hours",
            "github": {"owner": "acme", "project_number": 3, "api_url": gh_url},
        },
        {
            "key": "acme-platform",
            "source": "azure_devops",
            "client": "acme",
            "hours_by_person_field": HOURS_BY_PERSON,
            "azure_devops": {"organization_url": az_url, "project": "Platform"},
        },
    ]
    data["github"] = {"token": TOKEN}
    data["azure_devops"] = {"pat": PAT}
    data["people"] = PEOPLE
    data["roles"] = ROLES
    return data


def test_github_and_azure_items_become_one_stripe_line_per_person(
    world: StripeWorld,
    github: tuple[FakeGitHubProject, str],
    azure: tuple[FakeAzureDevOps, str],
    ledger_url: str,
) -> None:
    import asyncio

    project, gh_url = github
    org, az_url = azure
    # GitHub: two assignees, 4 h, 15-minute rounding: 2 h each at their own rate.
    project.add_issue("Checkout", status="Done", hours=4, assignees=["alice-gh", "bob-gh"])
    # Azure DevOps: one AssignedTo, the split comes from the "Hours by person" field.
    org.add_field(HOURS_BY_PERSON)
    platform = org.add_project("Platform", "Agile")
    story = platform.add_item(
        "Billing API",
        hours=3.5,
        assigned_to="alice@fabrikam.example",
        fields={HOURS_BY_PERSON: "alice@fabrikam.example: 1, bob@fabrikam.example: 2.5"},
        at=T0,
    )
    platform.set_state(story, "Closed", at=T0 + timedelta(hours=3))

    services = services_for(settings(world, ledger_url, gh_url, az_url), FixedClock())
    try:

        async def sync() -> None:
            await sync_board(services, "acme-web")
            await sync_board(services, "acme-platform")

        asyncio.run(sync())
        with services.ledger.engine.connect() as conn:
            rows = conn.execute(
                select(
                    t.entries.c.entry_key,
                    t.entries.c.person,
                    t.entries.c.role,
                    t.entries.c.hours,
                    t.entries.c.rate,
                    t.entries.c.amount,
                    t.entries.c.cost,
                ).order_by(t.entries.c.id)
            ).all()
        got = [
            (r.person, r.role, str(r.hours), str(r.rate), str(r.amount), str(r.cost)) for r in rows
        ]
        assert got == [
            ("alice", "senior", "2", "160", "320", "160"),
            ("bob", "junior", "2", "90", "180", "80"),
            ("alice", "senior", "1", "160", "160", "80"),
            ("bob", "junior", "2.5", "90", "225", "100"),
        ]
        assert all(r.entry_key.endswith(f"@{r.person}") for r in rows)

        services.invoicing.create_or_refresh_draft("acme")
        report = drain(services)
        assert report.errors == []
        lines = sorted(
            world.fake.list_objects("invoiceitem"), key=lambda i: i["metadata"]["kanvoice_entry"]
        )
        described = [(i["amount"], i["metadata"]["person"], i["description"]) for i in lines]
        assert len(described) == 4
        by_person = {(amount, who) for amount, who, _ in described}
        assert by_person == {(32000, "alice"), (18000, "bob"), (16000, "alice"), (22500, "bob")}
        texts = " | ".join(d for _, _, d in described)
        assert "Alice Senior (Senior developer): 2 h × 160.00" in texts
        assert "Bob Junior (Junior developer): 2.5 h × 90.00" in texts
        # The Slack approval lines name who did the work, with the role.
        with services.ledger.engine.connect() as conn:
            invoice_id = conn.execute(select(t.invoices.c.id)).scalar_one()
        slack_lines = services.desk.summary(invoice_id).lines
        assert sorted((ln.person, ln.role, str(ln.hours)) for ln in slack_lines) == [
            ("Alice Senior", "Senior developer", "1"),
            ("Alice Senior", "Senior developer", "2"),
            ("Bob Junior", "Junior developer", "2"),
            ("Bob Junior", "Junior developer", "2.5"),
        ]
        # A second sync bills nothing again.
        asyncio.run(sync())
        with services.ledger.engine.connect() as conn:
            assert len(conn.execute(select(t.entries.c.id)).all()) == 4
    finally:
        services.close()
