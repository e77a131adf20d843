"""Board webhooks (GitHub, Azure DevOps): placeholder until wired."""

from __future__ import annotations

from fastapi import APIRouter

from sync.composition import Services


def board_webhooks_router(services: Services) -> APIRouter:
    return APIRouter()
