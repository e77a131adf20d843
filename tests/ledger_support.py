"""Reading a ledger in tests."""

from __future__ import annotations

from typing import Any

from sqlalchemy import create_engine, inspect, text


def dump(url: str) -> dict[str, list[Any]]:
    """Every row of every table, to show that a refused request changed nothing."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            names = inspect(conn).get_table_names()
            return {
                name: sorted(map(repr, conn.execute(text(f'SELECT * FROM "{name}"')).all()))
                for name in names
            }
    finally:
        engine.dispose()
