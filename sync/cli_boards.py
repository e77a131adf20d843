"""`kanvoice sync`: placeholder until wired."""

from __future__ import annotations
