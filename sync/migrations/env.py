"""Alembic environment: runs on the connection `Ledger.upgrade()` hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from sync.ledger.schema import metadata

config = context.config
connection = config.attributes.get("connection")


def _run(conn: object) -> None:
    context.configure(
        connection=conn,  # type: ignore[arg-type]
        target_metadata=metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if connection is not None:
    _run(connection)
else:
    url = config.get_main_option("sqlalchemy.url")
    assert url, "sqlalchemy.url is not set"
    with create_engine(url).begin() as conn:
        _run(conn)
