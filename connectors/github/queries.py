"""Every GraphQL document the GitHub connector sends, as constants.

Each document is complete (fragments included) and is validated against GitHub's
published schema in `tests/unit/test_github_queries.py`. Every query also selects
`rateLimit { cost remaining resetAt }` so the client can pace itself.

Shape notes:

* `Issue.state` is an `IssueState` and `PullRequest.state` a `PullRequestState`;
  two different enums under one response name do not merge in GraphQL, so they are
  aliased to `issueState` / `pullRequestState`.
* Number field values are `Float`; the parser turns them into `Decimal` via `str()`.
* `REDACTED` items (content the viewer may not see) come back with `content: null`.
"""

from __future__ import annotations

import re
from typing import Final

ITEM_FRAGMENT_NAME: Final = "ProjectItemFields"

#: The selection shared by the page listing and the re-fetch by node id.
PROJECT_ITEM_FRAGMENT: Final = """
fragment ProjectItemFields on ProjectV2Item {
  id
  databaseId
  type
  isArchived
  updatedAt
  fieldValues(first: 50) {
    nodes {
      __typename
      ... on ProjectV2ItemFieldSingleSelectValue {
        name
        optionId
        field { ... on ProjectV2FieldCommon { name } }
      }
      ... on ProjectV2ItemFieldNumberValue {
        number
        field { ... on ProjectV2FieldCommon { name } }
      }
      ... on ProjectV2ItemFieldIterationValue {
        title
        startDate
        duration
        field { ... on ProjectV2FieldCommon { name } }
      }
      ... on ProjectV2ItemFieldTextValue {
        text
        field { ... on ProjectV2FieldCommon { name } }
      }
    }
  }
  content {
    __typename
    ... on Issue {
      id
      title
      number
      url
      issueState: state
      updatedAt
      repository { nameWithOwner }
      assignees(first: 20) { nodes { login } }
      labels(first: 50) { nodes { name } }
    }
    ... on PullRequest {
      id
      title
      number
      url
      pullRequestState: state
      updatedAt
      repository { nameWithOwner }
      assignees(first: 20) { nodes { login } }
      labels(first: 50) { nodes { name } }
    }
    ... on DraftIssue {
      id
      title
      updatedAt
      assignees(first: 20) { nodes { login } }
    }
  }
}
"""

#: `$query` is the project filter-bar syntax (GitHub changelog 2025-10-22), e.g.
#: ``-last-updated:2days``; null lists every item (archived ones included).
_ITEMS_PAGE_BODY: Final = """
    projectV2(number: $number) {
      id
      title
      url
      items(first: $first, after: $after, query: $query) {
        pageInfo { hasNextPage endCursor }
        nodes { ...ProjectItemFields }
      }
    }
"""

#: One page (up to 100) of an organization-owned project's items.
ORGANIZATION_PROJECT_ITEMS: Final = (
    """
query OrganizationProjectItems(
  $login: String!, $number: Int!, $first: Int!, $after: String, $query: String) {
  rateLimit { cost remaining resetAt }
  organization(login: $login) {"""
    + _ITEMS_PAGE_BODY
    + """  }
}
"""
    + PROJECT_ITEM_FRAGMENT
)

#: One page (up to 100) of a user-owned project's items.
USER_PROJECT_ITEMS: Final = (
    """
query UserProjectItems(
  $login: String!, $number: Int!, $first: Int!, $after: String, $query: String) {
  rateLimit { cost remaining resetAt }
  user(login: $login) {"""
    + _ITEMS_PAGE_BODY
    + """  }
}
"""
    + PROJECT_ITEM_FRAGMENT
)

_ITEM_PROJECT_SELECTION: Final = """
      project {
        id
        number
        url
        owner {
          __typename
          ... on Organization { login }
          ... on User { login }
        }
      }
"""

#: Re-fetch one item by its ProjectV2Item node id (the webhook path).
PROJECT_ITEM_BY_ID: Final = (
    """
query ProjectItemById($id: ID!) {
  rateLimit { cost remaining resetAt }
  node(id: $id) {
    __typename
    ... on ProjectV2Item {
      ...ProjectItemFields"""
    + _ITEM_PROJECT_SELECTION
    + """    }
  }
}
"""
    + PROJECT_ITEM_FRAGMENT
)

#: Re-fetch several items (at most 100 ids) by ProjectV2Item node id.
PROJECT_ITEMS_BY_IDS: Final = (
    """
query ProjectItemsByIds($ids: [ID!]!) {
  rateLimit { cost remaining resetAt }
  nodes(ids: $ids) {
    __typename
    ... on ProjectV2Item {
      ...ProjectItemFields"""
    + _ITEM_PROJECT_SELECTION
    + """    }
  }
}
"""
    + PROJECT_ITEM_FRAGMENT
)

#: Every document the connector may send; the schema test validates each one.
_FIELDS_BODY: Final = """
    projectV2(number: $number) {
      id
      title
      fields(first: 100) {
        nodes {
          __typename
          ... on ProjectV2FieldCommon { name dataType }
          ... on ProjectV2SingleSelectField { options { name } }
        }
      }
    }
"""

#: The fields of an organization-owned project (check-config: do the configured exist?).
ORGANIZATION_PROJECT_FIELDS: Final = (
    """
query OrganizationProjectFields($login: String!, $number: Int!) {
  rateLimit { cost remaining resetAt }
  organization(login: $login) {"""
    + _FIELDS_BODY
    + """  }
}
"""
)

#: The fields of a user-owned project.
USER_PROJECT_FIELDS: Final = (
    """
query UserProjectFields($login: String!, $number: Int!) {
  rateLimit { cost remaining resetAt }
  user(login: $login) {"""
    + _FIELDS_BODY
    + """  }
}
"""
)

ALL_DOCUMENTS: Final[dict[str, str]] = {
    "OrganizationProjectFields": ORGANIZATION_PROJECT_FIELDS,
    "UserProjectFields": USER_PROJECT_FIELDS,
    "OrganizationProjectItems": ORGANIZATION_PROJECT_ITEMS,
    "UserProjectItems": USER_PROJECT_ITEMS,
    "ProjectItemById": PROJECT_ITEM_BY_ID,
    "ProjectItemsByIds": PROJECT_ITEMS_BY_IDS,
}

#: Largest page GitHub allows on a connection, and the most ids `nodes(ids:)` takes.
MAX_PAGE_SIZE: Final = 100

_OPERATION_RE: Final = re.compile(r"^\s*(?:query|mutation)\s+([_A-Za-z][_0-9A-Za-z]*)")


def operation_name(document: str) -> str | None:
    """The name of the document's (first) operation, or None if it is anonymous."""
    match = _OPERATION_RE.match(document)
    return match.group(1) if match else None
