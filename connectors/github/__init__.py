"""GitHub Projects (v2) connector: GraphQL polling, re-fetch by node id, webhooks.

Public API:

* `GitHubBoardConfig` — one board's settings (owner, project number, fields, auth).
* `GitHubProjectConnector` — the `BoardConnector` (poll / fetch / parse_webhook).
* `GitHubGraphQLClient` — the async client (retries, secondary limits, pacing).
* `StaticToken`, `GitHubAppAuth` — credentials (PAT, or App JWT → installation token).
* `parse_github_webhook`, `verify_signature`, `sign_body` — webhook handling.
* `parse_item`, `to_board_item` — pure payload parsing.
"""

from connectors.github.auth import GitHubAppAuth, StaticToken, TokenProvider
from connectors.github.config import GitHubBoardConfig
from connectors.github.connector import GitHubProjectConnector
from connectors.github.graphql import GitHubGraphQLClient, RateLimitInfo
from connectors.github.parsing import GitHubItem, parse_item, to_board_item
from connectors.github.webhook import (
    FieldValueChange,
    field_value_change,
    parse_github_webhook,
    sign_body,
    verify_signature,
)

__all__ = [
    "FieldValueChange",
    "GitHubAppAuth",
    "GitHubBoardConfig",
    "GitHubGraphQLClient",
    "GitHubItem",
    "GitHubProjectConnector",
    "RateLimitInfo",
    "StaticToken",
    "TokenProvider",
    "field_value_change",
    "parse_github_webhook",
    "parse_item",
    "sign_body",
    "to_board_item",
    "verify_signature",
]
