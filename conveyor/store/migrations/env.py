"""Alembic environment: batch mode, so ALTERs work on SQLite too."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from conveyor.store.tables import in_dialect, metadata

config = context.config
url = config.get_main_option("sqlalchemy.url")
connection = config.attributes.get("connection")


def _run(conn: object) -> None:
    context.configure(
        connection=conn,  # type: ignore[arg-type]
        target_metadata=metadata,
        render_as_batch=True,
        compare_type=True,
        include_object=in_dialect(conn.dialect.name),  # type: ignore[attr-defined]
    )
    with context.begin_transaction():
        context.run_migrations()


if connection is not None:
    _run(connection)
else:
    engine = create_engine(url or "")
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()
