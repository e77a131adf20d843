"""Every GraphQL document the GitHub connector sends validates against GitHub's schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from graphql import GraphQLSchema, build_client_schema, parse, validate, validate_schema

from connectors.github.queries import (
    ALL_DOCUMENTS,
    ORGANIZATION_PROJECT_FIELDS,
    ORGANIZATION_PROJECT_ITEMS,
    PROJECT_ITEM_BY_ID,
    PROJECT_ITEMS_BY_IDS,
    USER_PROJECT_FIELDS,
    USER_PROJECT_ITEMS,
    operation_name,
)
from tests.fakes.github_server import FakeGitHubProject

SCHEMA_PATH = Path(__file__).resolve().parents[3] / "shared" / "github" / "graphql-schema.json"
DATA = Path(__file__).resolve().parents[1] / "data" / "github"


def _undeprecate_interface_implementations(introspection: dict[str, Any]) -> int:
    """GitHub's schema deprecates a few fields on implementations but not on their
    interfaces, which graphql-core's schema validation refuses. That concerns the
    schema, not our documents, so those deprecation marks are dropped before building."""
    types = {t["name"]: t for t in introspection["__schema"]["types"]}
    changed = 0
    for gql_type in introspection["__schema"]["types"]:
        if gql_type["kind"] not in ("OBJECT", "INTERFACE"):
            continue
        for ref in gql_type.get("interfaces") or []:
            interface_fields = {f["name"]: f for f in types[ref["name"]]["fields"]}
            for fld in gql_type["fields"]:
                parent = interface_fields.get(fld["name"])
                if fld["isDeprecated"] and parent is not None and not parent["isDeprecated"]:
                    fld["isDeprecated"] = False
                    fld["deprecationReason"] = None
                    changed += 1
    return changed


@pytest.fixture(scope="module")
def schema() -> GraphQLSchema:
    # Must fail, not skip, when the schema is missing: the documents are unverified then.
    assert SCHEMA_PATH.is_file(), f"GitHub GraphQL schema not found at {SCHEMA_PATH}"
    introspection = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    _undeprecate_interface_implementations(introspection)
    built = build_client_schema(introspection)
    assert validate_schema(built) == []
    return built


@pytest.mark.parametrize("name", sorted(ALL_DOCUMENTS))
def test_document_validates_against_github_schema(schema: GraphQLSchema, name: str) -> None:
    document = ALL_DOCUMENTS[name]
    errors = validate(schema, parse(document))
    assert errors == [], [e.message for e in errors]
    assert operation_name(document) == name


def test_all_documents_are_listed() -> None:
    assert set(ALL_DOCUMENTS.values()) == {
        ORGANIZATION_PROJECT_ITEMS,
        USER_PROJECT_ITEMS,
        PROJECT_ITEM_BY_ID,
        PROJECT_ITEMS_BY_IDS,
        ORGANIZATION_PROJECT_FIELDS,
        USER_PROJECT_FIELDS,
    }


@pytest.mark.parametrize("name", sorted(ALL_DOCUMENTS))
def test_every_document_selects_rate_limit(name: str) -> None:
    assert "rateLimit { cost remaining resetAt }" in ALL_DOCUMENTS[name]


def test_page_documents_page_by_cursor() -> None:
    for document in (ORGANIZATION_PROJECT_ITEMS, USER_PROJECT_ITEMS):
        assert "items(first: $first, after: $after, query: $query)" in document
        assert "$query: String)" in document  # nullable: null lists every item
        assert "pageInfo { hasNextPage endCursor }" in document
    assert "organization(login: $login)" in ORGANIZATION_PROJECT_ITEMS
    assert "user(login: $login)" in USER_PROJECT_ITEMS
    assert "node(id: $id)" in PROJECT_ITEM_BY_ID
    assert "nodes(ids: $ids)" in PROJECT_ITEMS_BY_IDS


def test_validator_catches_issue_and_pull_request_state_under_one_name(
    schema: GraphQLSchema,
) -> None:
    """Why the fragment aliases `state`: IssueState and PullRequestState do not merge."""
    bad = """
    query Bad($id: ID!) {
      node(id: $id) {
        ... on ProjectV2Item {
          content { ... on Issue { state } ... on PullRequest { state } }
        }
      }
    }
    """
    errors = validate(schema, parse(bad))
    assert errors and "state" in errors[0].message


def test_validator_catches_unknown_fields(schema: GraphQLSchema) -> None:
    bad = "query Bad { viewer { projectV2(number: 1) { itemz(first: 1) { totalCount } } } }"
    assert validate(schema, parse(bad))


def _shape(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v) for v in value[:1]]
    return type(value).__name__ if value is not None else None


def test_fake_server_items_have_the_captured_shape() -> None:
    captured = json.loads((DATA / "graphql_org_items_page.json").read_text())
    issue = captured["data"]["organization"]["projectV2"]["items"]["nodes"][0]
    project = FakeGitHubProject()
    item = project.add_issue(
        "Checkout crashes",
        status="Done",
        hours=2.5,
        billing="T&M",
        labels=["bug"],
        assignees=["mara-dev"],
        iteration="Sprint 12",
    )
    rendered = project.render_item(item)
    assert set(rendered) == set(issue)
    assert set(rendered["content"]) == set(issue["content"])
    assert _shape(rendered["content"]) == _shape(issue["content"])
    typenames = {v["__typename"] for v in rendered["fieldValues"]["nodes"]}
    assert {
        "ProjectV2ItemFieldSingleSelectValue",
        "ProjectV2ItemFieldNumberValue",
        "ProjectV2ItemFieldIterationValue",
        "ProjectV2ItemFieldTextValue",
    } <= typenames
    for kind in ("ProjectV2ItemFieldSingleSelectValue", "ProjectV2ItemFieldNumberValue"):
        mine = next(v for v in rendered["fieldValues"]["nodes"] if v["__typename"] == kind)
        theirs = next(v for v in issue["fieldValues"]["nodes"] if v["__typename"] == kind)
        assert set(mine) == set(theirs)


def test_fake_server_node_has_the_captured_shape() -> None:
    captured = json.loads((DATA / "graphql_node_item.json").read_text())["data"]["node"]
    project = FakeGitHubProject()
    rendered = project.render_item(project.add_issue("x", status="Done"), with_project=True)
    assert set(rendered) == set(captured)
    assert set(rendered["project"]) == set(captured["project"])
