"""Dialect-specific statement builders, chosen from the connection (one place)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite


def insert(conn: Connection, table: Table) -> Any:
    """An INSERT that supports ``on_conflict_do_nothing`` on both databases."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def is_postgresql(conn: Connection) -> bool:
    """True when ``conn`` talks to PostgreSQL."""
    return conn.dialect.name == "postgresql"
