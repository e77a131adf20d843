"""Issue 18 end to end: a GitHub board and an Azure DevOps board, two people at
different rates, to Stripe lines per person (fake GitHub, fake Azure, fake Stripe,
real HTTP; the ledger on SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from sync.boards import sync_board
from sync.ledger import schema as t
from tests.conftest import FixedClock
from tests.fakes.azure_server import FakeAzureDevOps, serve_fake_azure
from tests.fakes.github_server import FakeGitHubProject, serve_fake_github
from tests.stripe_support import (
    APPROVER,
    StripeWorld,
    drain,
    fake_stripe,
    services_for,
    world_settings,
)

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


# -- merged lines: line_grouping = "role" / "item_person" ----------------------------------

SENIORS: list[dict[str, Any]] = [
    {"key": "alice", "name": "Alice Senior", "identities": ["alice-gh"], "role": "senior"},
    {"key": "carol", "name": "Carol Senior", "identities": ["carol-gh"], "role": "senior"},
    {"key": "bob", "name": "Bob Junior", "identities": ["bob-gh"], "role": "junior"},
]


def github_only(world: StripeWorld, ledger_url: str, gh_url: str, grouping: str) -> dict[str, Any]:
    data = world_settings(world, ledger_url, acme={"line_grouping": grouping})
    data["boards"] = [
        {
            "key": "acme-web",
            "source": "github",
            "client": "acme",
            "done_columns": ["Done"],
            "hours_field": "Hours",
            "github": {"owner": "acme", "project_number": 3, "api_url": gh_url},
        }
    ]
    data["github"] = {"token": TOKEN}
    data["people"] = SENIORS
    data["roles"] = ROLES
    return data


def stripe_lines(world: StripeWorld) -> list[tuple[int, str, str]]:
    """(amount, hours, entries) of the draft's invoice items, by amount."""
    return sorted(
        (
            int(i["amount"]),
            i["metadata"]["hours"],
            i["metadata"].get("entries", i["metadata"]["kanvoice_entry_id"]),
        )
        for i in world.fake.list_objects("invoiceitem")
    )


def entry_rows(services: Any) -> list[Any]:
    with services.ledger.engine.connect() as conn:
        return conn.execute(
            select(
                t.entries.c.id,
                t.entries.c.person,
                t.entries.c.state,
                t.entries.c.hours,
                t.entries.c.amount,
                t.entries.c.invoice_id,
            ).order_by(t.entries.c.id)
        ).all()


def assert_billed_once(world: StripeWorld, services: Any) -> None:
    """Every drafted entry is on exactly one Stripe line, whose amount is the sum of
    its entries' amounts; no line bills an entry off the draft."""
    drafted = {int(r.id): r for r in entry_rows(services) if r.state == "drafted"}
    seen: list[int] = []
    for item in world.fake.list_objects("invoiceitem"):
        meta = item["metadata"]
        ids = [int(i) for i in meta.get("entries", meta["kanvoice_entry_id"]).split(",")]
        seen.extend(ids)
        assert int(item["amount"]) == sum(int(drafted[i].amount * 100) for i in ids)
        assert Decimal(meta["hours"]) == sum(drafted[i].hours for i in ids)
    assert sorted(seen) == sorted(drafted)


def test_role_grouping_merges_same_rate_entries_into_one_stripe_line(
    world: StripeWorld, github: tuple[FakeGitHubProject, str], ledger_url: str
) -> None:
    import asyncio

    project, gh_url = github
    # 6 h shared by two seniors (150/h) and a junior (90/h): 2 h each.
    checkout = project.add_issue(
        "Checkout", status="Done", hours=6, assignees=["alice-gh", "carol-gh", "bob-gh"]
    )
    services = services_for(github_only(world, ledger_url, gh_url, "role"), FixedClock())
    try:
        asyncio.run(sync_board(services, "acme-web"))
        alice, carol, bob = (r.id for r in entry_rows(services))
        draft = services.invoicing.create_or_refresh_draft("acme")
        assert drain(services).errors == []
        # One line per item × role: the seniors' 4 h × 150 merged, the junior apart.
        assert stripe_lines(world) == [(18000, "2", str(bob)), (60000, "4", f"{alice},{carol}")]
        senior = next(i for i in world.fake.list_objects("invoiceitem") if i["amount"] == 60000)
        assert "Senior developer: 4 h × 150.00" in senior["description"]
        # Reconcile sees no drift: the lead's line bills the merged entries.
        assert asyncio.run(services.invoicing.reconcile("acme", repair=False)) == []
        # The review shows every entry of the merged line as on Stripe.
        from sync.review import Review

        assert draft.invoice_id is not None
        detail = Review(services.desk).detail(draft.invoice_id)
        assert all(line["on_stripe"] for line in detail["lines"])
        # Stripe's total is the ledger's: every entry billed once.
        rows = entry_rows(services)
        assert {r.state for r in rows} == {"drafted"}
        assert sum(r.amount for r in rows) * 100 == 78000

        # Hours raised on the board while drafted: the new hours (1 h each) join the
        # lines already on the draft, which Stripe updates in place.
        project.set_hours(checkout.node_id, 9)
        asyncio.run(sync_board(services, "acme-web"))
        services.invoicing.create_or_refresh_draft("acme")
        assert drain(services).errors == []
        later = [r.id for r in entry_rows(services)][3:]
        assert stripe_lines(world) == [
            (27000, "3", f"{bob},{later[2]}"),
            (90000, "6", f"{alice},{carol},{later[0]},{later[1]}"),
        ]
        assert_billed_once(world, services)

        # Lowered again before approval: the entries on the draft change, and so do
        # the merged lines.
        project.set_hours(checkout.node_id, 7.5)
        asyncio.run(sync_board(services, "acme-web"))
        assert drain(services).errors == []
        assert_billed_once(world, services)
        assert len(world.fake.list_objects("invoiceitem")) == 2

        # Rejected: every entry of the merged line goes back to ready, its line is deleted.
        assert draft.invoice_id is not None
        services.invoicing.reject(draft.invoice_id, APPROVER, "slack", "wrong month")
        assert drain(services).errors == []
        assert world.fake.list_objects("invoiceitem") == []
        # (Bob's written-off hour stays voided.)
        assert {r.state for r in entry_rows(services) if r.hours} == {"ready"}
        with services.ledger.engine.connect() as conn:
            assert conn.execute(select(t.line_entries)).all() == []

        # The next draft merges them again, each entry once.
        services.invoicing.create_or_refresh_draft("acme")
        assert drain(services).errors == []
        assert len(stripe_lines(world)) == 2
        assert_billed_once(world, services)
    finally:
        services.close()


def test_item_person_grouping_merges_a_persons_later_hours_and_void_returns_them(
    world: StripeWorld, github: tuple[FakeGitHubProject, str], ledger_url: str
) -> None:
    """Re-opened and Done again: the new hours of the same person at the same rate join
    the person's line on the draft; a void of the finalized invoice returns them all."""
    import asyncio

    project, gh_url = github
    story = project.add_issue("Search", status="Done", hours=2, assignees=["alice-gh"])
    services = services_for(github_only(world, ledger_url, gh_url, "item_person"), FixedClock())
    try:
        asyncio.run(sync_board(services, "acme-web"))
        draft = services.invoicing.create_or_refresh_draft("acme")
        assert drain(services).errors == []
        assert [a for a, _, _ in stripe_lines(world)] == [30000]
        project.move(story.node_id, "In Progress")
        asyncio.run(sync_board(services, "acme-web"))
        project.set_hours(story.node_id, 3)
        project.move(story.node_id, "Done")
        asyncio.run(sync_board(services, "acme-web"))
        first, second = (r.id for r in entry_rows(services))
        services.invoicing.create_or_refresh_draft("acme")
        assert drain(services).errors == []
        # One line: Alice's 2 h + 1 h at 150, updated in place on Stripe.
        assert stripe_lines(world) == [(45000, "3", f"{first},{second}")]

        assert draft.invoice_id is not None
        services.invoicing.approve(draft.invoice_id, APPROVER, "slack")
        assert drain(services).errors == []
        with services.ledger.engine.connect() as conn:
            stripe_id = conn.execute(
                select(t.invoices.c.stripe_invoice_id).where(t.invoices.c.id == draft.invoice_id)
            ).scalar_one()
        assert (world.fake.get_object(stripe_id) or {})["total"] == 45000
        assert {r.state for r in entry_rows(services)} == {"invoiced"}
        voided = services.invoicing.apply_event(
            {
                "id": "evt_void_merged",
                "type": "invoice.voided",
                "data": {"object": {"id": stripe_id, "status": "void"}},
            }
        )
        assert voided == "applied"
        assert {r.state for r in entry_rows(services)} == {"ready"}
        with services.ledger.engine.connect() as conn:
            assert conn.execute(select(t.line_entries)).all() == []
    finally:
        services.close()


def test_deferring_a_merged_lines_lead_keeps_the_others_on_the_draft(
    world: StripeWorld, github: tuple[FakeGitHubProject, str], ledger_url: str
) -> None:
    """The lead's Stripe line goes; the next entry leads the rest on a new line, and
    the deferred entry waits for the next draft: still each entry billed once."""
    import asyncio

    from sync.review import Review

    project, gh_url = github
    project.add_issue("Checkout", status="Done", hours=6, assignees=["alice-gh", "carol-gh"])
    project.add_issue("Search", status="Done", hours=2, assignees=["bob-gh"])
    services = services_for(github_only(world, ledger_url, gh_url, "role"), FixedClock())
    try:
        asyncio.run(sync_board(services, "acme-web"))
        alice, carol, bob = (r.id for r in entry_rows(services))
        draft = services.invoicing.create_or_refresh_draft("acme")
        assert drain(services).errors == []
        assert [ln[2] for ln in stripe_lines(world)] == [str(bob), f"{alice},{carol}"]
        assert draft.invoice_id is not None
        with services.ledger.engine.connect() as conn:
            version = conn.execute(
                select(t.invoices.c.version).where(t.invoices.c.id == draft.invoice_id)
            ).scalar_one()
        Review(services.desk).defer(draft.invoice_id, APPROVER, int(version), alice, "dashboard")
        assert drain(services).errors == []
        # Carol's 3 h × 150 now a line of its own; Alice's entry is ready for next time.
        assert stripe_lines(world) == [(18000, "2", str(bob)), (45000, "3", str(carol))]
        states = {r.id: r.state for r in entry_rows(services)}
        assert states[alice] == "ready" and states[carol] == "drafted"
        assert_billed_once(world, services)
    finally:
        services.close()
