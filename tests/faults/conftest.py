"""Fixtures of the fault matrix: the fakes on loopback and a `World` wired to them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from sync.web.app import create_app
from tests.conftest import FixedClock
from tests.fakes.azure_server import FakeAzureDevOps, serve_fake_azure
from tests.fakes.github_server import FakeGitHubProject, serve_fake_github
from tests.faults.world import (
    AZURE_PROJECT,
    GITHUB_NUMBER,
    GITHUB_OWNER,
    PAT,
    TOKEN,
    Instance,
    MakeWorld,
    Start,
    World,
    app_client,
    billed_world,
    board_settings,
    tune_gateway,
)
from tests.net import serve_app
from tests.stripe_support import StripeWorld, fake_stripe, services_for


@pytest.fixture
def stripe_world() -> Iterator[StripeWorld]:
    with fake_stripe({"acme": "eur"}) as world:
        yield world


@pytest.fixture
def github() -> Iterator[tuple[FakeGitHubProject, str]]:
    project = FakeGitHubProject(owner=GITHUB_OWNER, number=GITHUB_NUMBER, require_token=TOKEN)
    with serve_fake_github(project) as url:
        yield project, url


@pytest.fixture(scope="module")
def azure_served() -> Iterator[tuple[FakeAzureDevOps, str]]:
    org = FakeAzureDevOps(pat=PAT, organization="fabrikam")
    with serve_fake_azure(org) as url:
        yield org, url


@pytest.fixture
def azure(azure_served: tuple[FakeAzureDevOps, str]) -> tuple[FakeAzureDevOps, str]:
    org, url = azure_served
    org.reset()
    org.add_project(AZURE_PROJECT, "Agile")
    return org, url


@pytest.fixture
async def make_world(
    stripe_world: StripeWorld,
    github: tuple[FakeGitHubProject, str],
    azure: tuple[FakeAzureDevOps, str],
) -> AsyncIterator[MakeWorld]:
    """Build a `World` on a ledger URL; everything it opened is closed after the test."""
    made: list[World] = []

    async def make(ledger_url: str) -> World:
        clock = FixedClock()
        services = services_for(
            board_settings(stripe_world, ledger_url, github[1], azure[1]), clock
        )
        waits = tune_gateway(services)
        world = World(
            services, clock, stripe_world, github[0], azure[0], app_client(services), waits
        )
        made.append(world)
        return world

    yield make
    for world in made:
        await world.close()


@pytest.fixture
async def world(make_world: MakeWorld, ledger_url: str) -> World:
    """A `World` on SQLite and on PostgreSQL."""
    return await make_world(ledger_url)


@pytest.fixture
def start(
    stripe_world: StripeWorld,
    github: tuple[FakeGitHubProject, str],
    azure: tuple[FakeAzureDevOps, str],
) -> Iterator[Start]:
    """Starts an instance on a ledger URL with these `server` settings: acme with a
    finalized invoice (1) and a draft awaiting approval (2), `create_app` under uvicorn on
    a free loopback port as `kanvoice run` serves it (uvicorn's defaults, so proxy headers
    from 127.0.0.1 are honoured). Each one is stopped and closed after the test."""
    with ExitStack() as stack:

        def start_one(url: str, server: dict[str, Any]) -> Instance:
            s = billed_world(stripe_world, url, github[1], azure[1], FixedClock(), server)
            stack.callback(s.close)
            return s, stack.enter_context(serve_app(create_app(s)))

        yield start_one
