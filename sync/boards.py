"""Board connectors built from settings: placeholder until wired."""

from __future__ import annotations

from connectors.base import BoardConnector
from sync.settings import Settings


def build_connectors(settings: Settings) -> dict[str, BoardConnector]:
    return {}
