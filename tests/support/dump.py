"""What a stolen database dump shows: every value of every table, as text."""

from __future__ import annotations

from sqlalchemy import inspect, select, table, text

from conveyor.store.db import Database


def dump_text(db: Database) -> str:
    """Every row of every table (found in the database itself, not in our metadata)."""
    lines = []
    with db.read() as conn:
        for name in inspect(conn).get_table_names():
            columns = [c["name"] for c in inspect(conn).get_columns(name)]
            query = select(*(text(f'"{c}"') for c in columns)).select_from(table(name))
            lines.extend(f"{name}: {tuple(row)!r}" for row in conn.execute(query))
    return "\n".join(lines)
