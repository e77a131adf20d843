"""Parsing real-shaped GraphQL item payloads into BoardItem snapshots."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from connectors.github.config import GitHubBoardConfig
from connectors.github.parsing import (
    ItemShapeError,
    number_to_decimal,
    parse_item,
    to_board_item,
)
from mapping.domain import BillingType, Source, StateCategory

DATA = Path(__file__).resolve().parents[1] / "data" / "github"
PROJECT_URL = "https://github.com/orgs/acme-agency/projects/7"


def _load(name: str) -> Any:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


def _config(**overrides: Any) -> GitHubBoardConfig:
    values: dict[str, Any] = {
        "board_key": "acme",
        "owner": "acme-agency",
        "project_number": 7,
        "token": "ghp_test",
        "billing_type_field": "Billing",
        "rate_field": "Rate",
        "milestone_field": "Milestone price",
    }
    values.update(overrides)
    return GitHubBoardConfig(**values)


def _page_nodes() -> list[Any]:
    page = _load("graphql_org_items_page.json")
    nodes: list[Any] = page["data"]["organization"]["projectV2"]["items"]["nodes"]
    return nodes


def _snapshots(config: GitHubBoardConfig | None = None) -> dict[str, Any]:
    cfg = config or _config()
    out = {}
    for node in _page_nodes():
        item = parse_item(node)
        if item is not None:
            out[item.node_id] = to_board_item(item, cfg, PROJECT_URL)
    return out


def test_issue_snapshot_has_every_field() -> None:
    issue = _snapshots()["PVTI_lADOBXAqR84AkX3Mzgaq1bE"]
    assert issue.source is Source.GITHUB
    assert issue.board == "acme"
    assert issue.key == "github:acme:PVTI_lADOBXAqR84AkX3Mzgaq1bE"
    assert issue.title == "Checkout crashes on empty cart"
    assert issue.url == "https://github.com/acme-agency/shop-web/issues/412"
    assert issue.column == "Done"
    assert issue.state_category is StateCategory.DONE
    assert issue.hours == Decimal("2.5")
    assert issue.billing_type is BillingType.TIME_AND_MATERIALS
    assert issue.labels == ("bug", "client:acme")
    assert issue.assignees == ("mara-dev", "tomasz-k")
    assert issue.iteration == "Sprint 12"
    # the content changed after the item: the later time wins
    assert issue.updated_at == datetime(2025, 3, 10, 16, 5, 40, tzinfo=UTC)
    assert issue.revision == 1741622740000
    assert issue.rate is None and issue.milestone_amount is None


def test_pull_request_state_and_fixed_price() -> None:
    pr_node = _page_nodes()[1]
    item = parse_item(pr_node)
    assert item is not None
    assert item.content_type == "PullRequest"
    assert item.content_state == "MERGED"
    assert item.number == 418
    assert item.repository == "acme-agency/shop-web"
    snap = to_board_item(item, _config(), PROJECT_URL)
    assert snap.column == "In review"
    assert snap.state_category is StateCategory.IN_PROGRESS  # names match case-insensitively
    assert snap.hours == Decimal("0.1")
    assert snap.milestone_amount == Decimal("1499.99")
    assert snap.billing_type is BillingType.FIXED_PRICE
    assert snap.updated_at == datetime(2025, 3, 9, 11, 20, tzinfo=UTC)  # item is later


def test_draft_issue_gets_a_project_url() -> None:
    draft = _snapshots()["PVTI_lADOBXAqR84AkX3Mzgaq1dA"]
    assert draft.url == f"{PROJECT_URL}?pane=issue&itemId=112591360"
    assert draft.title == "Kick-off workshop notes"
    assert draft.hours == Decimal("3")
    assert str(draft.hours) == "3"
    assert draft.rate == Decimal("1.75")
    assert draft.billing_type is BillingType.NON_BILLABLE
    assert draft.state_category is StateCategory.PROPOSED
    assert draft.labels == ()
    assert draft.assignees == ("mara-dev",)


def test_redacted_item_is_skipped_with_a_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="connectors.github.parsing")
    redacted = _page_nodes()[3]
    assert redacted["type"] == "REDACTED"
    assert parse_item(redacted) is None
    assert "REDACTED" in caplog.text
    assert "PVTI_lADOBXAqR84AkX3Mzgaq1eZ" not in _snapshots()
    assert len(_snapshots()) == 5


def test_content_null_without_redacted_type_is_skipped() -> None:
    node = dict(_page_nodes()[0], content=None)
    assert parse_item(node) is None


def test_archived_item_keeps_its_status_by_default() -> None:
    archived = _snapshots()["PVTI_lADOBXAqR84AkX3Mzgaq1fK"]
    assert archived.state_category is StateCategory.DONE
    assert archived.hours == Decimal("7.333333333333333")
    removed = _snapshots(_config(archived_as_removed=True))["PVTI_lADOBXAqR84AkX3Mzgaq1fK"]
    assert removed.state_category is StateCategory.REMOVED


def test_item_without_status_or_hours() -> None:
    bare = _snapshots()["PVTI_lADOBXAqR84AkX3Mzgaq1gW"]
    assert bare.column == ""
    assert bare.state_category is StateCategory.PROPOSED
    assert bare.hours is None
    assert bare.billing_type is None
    assert bare.iteration is None


def test_user_project_done_options() -> None:
    page = _load("graphql_user_items_last_page.json")
    node = page["data"]["user"]["projectV2"]["items"]["nodes"][0]
    item = parse_item(node)
    assert item is not None
    cfg = _config(owner="mara-dev", owner_type="user", done_options=("Done", "Shipped"))
    snap = to_board_item(item, cfg, cfg.default_project_url)
    assert snap.state_category is StateCategory.DONE
    assert snap.hours == Decimal("1")
    assert snap.labels == ("fixed-price",)
    only_done = to_board_item(item, _config(), PROJECT_URL)
    assert only_done.state_category is StateCategory.PROPOSED


def test_node_fixture_parses_with_project() -> None:
    node = _load("graphql_node_item.json")["data"]["node"]
    item = parse_item(node)
    assert item is not None
    assert item.project_id == "PVT_kwDOBXAqR84AkX3M"
    assert item.project_number == 7
    assert item.project_owner == "acme-agency"
    assert to_board_item(item, _config(), PROJECT_URL).hours == Decimal("4.25")


def test_non_item_node_is_skipped() -> None:
    assert parse_item({"__typename": "Issue", "id": "I_x"}) is None
    assert parse_item(None) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (2.5, "2.5"),
        (0.1, "0.1"),
        (3.0, "3"),
        (1, "1"),
        (0.25, "0.25"),
        (1.1, "1.1"),
        (1e-05, "0.00001"),
        (1234.5, "1234.5"),
        (7.333333333333333, "7.333333333333333"),
    ],
)
def test_number_to_decimal_is_exact(value: float, expected: str) -> None:
    result = number_to_decimal(value)
    assert result == Decimal(expected)
    if "e" not in str(value):
        assert str(result) == expected


@pytest.mark.parametrize("value", [True, "2.5", None, float("nan"), float("inf")])
def test_number_to_decimal_refuses_non_numbers(value: Any) -> None:
    with pytest.raises(ItemShapeError):
        number_to_decimal(value)


def test_negative_hours_are_refused_by_the_domain() -> None:
    node = json.loads(json.dumps(_page_nodes()[0]))
    for value in node["fieldValues"]["nodes"]:
        if value.get("__typename") == "ProjectV2ItemFieldNumberValue":
            value["number"] = -2.0
    item = parse_item(node)
    assert item is not None
    with pytest.raises(ValueError, match="negative"):
        to_board_item(item, _config(), PROJECT_URL)


@pytest.mark.parametrize(
    ("mutation", "message"),
    [
        (lambda n: n.pop("id"), "no id"),
        (lambda n: n.update(updatedAt="yesterday"), "ISO"),
        (lambda n: n.update(content="text"), "content"),
        (lambda n: n["content"].pop("title"), "title"),
        (lambda n: n.update(fieldValues={"nodes": "x"}), "nodes"),
    ],
)
def test_malformed_items_raise(mutation: Any, message: str) -> None:
    node = json.loads(json.dumps(_page_nodes()[0]))
    mutation(node)
    with pytest.raises(ItemShapeError, match=message):
        parse_item(node)


def test_custom_billing_values_and_unmapped_option(caplog: pytest.LogCaptureFixture) -> None:
    cfg = _config(billing_type_values={"T&M": BillingType.FIXED_PRICE})
    issue = _snapshots(cfg)["PVTI_lADOBXAqR84AkX3Mzgaq1bE"]
    assert issue.billing_type is BillingType.FIXED_PRICE
    with caplog.at_level(logging.WARNING):
        pr = _snapshots(cfg)["PVTI_lADOBXAqR84AkX3Mzgaq1cQ"]
    assert pr.billing_type is None  # "Fixed price" is not in the custom mapping
    assert "not mapped" in caplog.text


def test_billing_values_accept_strings() -> None:
    cfg = _config(billing_type_values={"Retainer": "fixed_price"})
    assert cfg.billing_type_for("retainer") is BillingType.FIXED_PRICE


def test_no_billing_field_leaves_billing_to_labels() -> None:
    issue = _snapshots(_config(billing_type_field=None))["PVTI_lADOBXAqR84AkX3Mzgaq1bE"]
    assert issue.billing_type is None


def test_named_iteration_field() -> None:
    cfg = _config(iteration_field="Sprint")
    assert _snapshots(cfg)["PVTI_lADOBXAqR84AkX3Mzgaq1bE"].iteration == "Sprint 12"
    cfg = _config(iteration_field="Cycle")
    assert _snapshots(cfg)["PVTI_lADOBXAqR84AkX3Mzgaq1bE"].iteration is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"token": None}, "no credentials"),
        ({"app_id": "1", "app_private_key": "k", "app_installation_id": "2"}, "not both"),
        ({"token": None, "app_id": "1"}, "needs app_id"),
        ({"owner_type": "team"}, "owner_type"),
        ({"project_number": 0}, "project_number"),
        ({"owner": " "}, "owner"),
        ({"done_options": ()}, "done_options"),
        ({"done_options": ("Done",), "in_progress_options": ("done",)}, "both"),
        ({"page_size": 101}, "page_size"),
        ({"billing_type_values": {"x": "hourly"}}, "billing_type_values"),
    ],
)
def test_config_errors_name_the_setting(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _config(**overrides)


def test_config_repr_hides_secrets() -> None:
    cfg = _config(token="ghp_supersecret", webhook_secret="whsec")
    assert "ghp_supersecret" not in repr(cfg)
    assert "whsec" not in repr(cfg)
    assert cfg.default_project_url == PROJECT_URL
    user = _config(owner="mara-dev", owner_type="user", project_number=2)
    assert user.default_project_url == "https://github.com/users/mara-dev/projects/2"
