"""SQL of ``conveyor repair``: every JSON column of every table, page by page.

The columns are found from the table metadata (every column of the JSON
type), so a table added later is scanned too. Values are read as text, as the
database holds them, so that a value ``json`` could not parse back (nested
past its recursion limit) can still be read and repaired.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON, Column, Connection, Table, Text, and_, cast, select, tuple_, update

from conveyor.store.tables import metadata, runs

Key = tuple[Any, ...]


@dataclass(frozen=True)
class JsonTable:
    """A table with JSON columns, and how to name its rows and their runs."""

    table: Table
    columns: tuple[Column[Any], ...]
    # The run a row belongs to (``runs.id`` itself, or a ``run_id`` column), if any.
    run_column: Column[Any] | None

    @property
    def name(self) -> str:
        """The table's name."""
        return self.table.name

    @property
    def key_columns(self) -> tuple[Column[Any], ...]:
        """The primary key, in order: rows are paged by it."""
        return tuple(self.table.primary_key.columns)


def json_tables() -> list[JsonTable]:
    """Every table with a JSON column, in dependency order."""
    found = []
    for table in metadata.sorted_tables:
        columns = tuple(c for c in table.columns if isinstance(c.type, JSON))
        if not columns:
            continue
        run_column = table.c.id if table is runs else table.c.get("run_id")
        found.append(JsonTable(table, columns, run_column))
    return found


def _after(target: JsonTable, after: Key) -> Any:
    keys = target.key_columns
    if len(keys) == 1:
        return keys[0] > after[0]
    return tuple_(*keys) > tuple_(*after)


def _is(target: JsonTable, key: Key) -> Any:
    return and_(*(c == v for c, v in zip(target.key_columns, key, strict=True)))


def page(
    conn: Connection, target: JsonTable, after: Key | None, limit: int
) -> list[tuple[Key, str | None, dict[str, str]]]:
    """Up to ``limit`` rows after ``after`` in key order: ``(key, run id, {column: JSON text})``.

    NULL values are left out of the mapping.
    """
    keys = target.key_columns
    texts = [cast(c, Text).label(f"json_{i}") for i, c in enumerate(target.columns)]
    run = [target.run_column.label("run_of_row")] if target.run_column is not None else []
    query = select(*keys, *run, *texts).order_by(*keys).limit(limit)
    if after is not None:
        query = query.where(_after(target, after))
    rows = []
    for row in conn.execute(query):
        mapping = row._mapping
        key = tuple(mapping[c] for c in keys)
        run_id = mapping["run_of_row"] if run else None
        values = {
            column.name: mapping[f"json_{i}"]
            for i, column in enumerate(target.columns)
            if mapping[f"json_{i}"] is not None
        }
        rows.append((key, run_id, values))
    return rows


def read(conn: Connection, target: JsonTable, key: Key, column: str) -> str | None:
    """One JSON value as text, locked for update where the database can."""
    query = select(cast(target.table.c[column], Text)).where(_is(target, key)).with_for_update()
    value = conn.execute(query).scalar_one_or_none()
    return None if value is None else str(value)


def write(conn: Connection, target: JsonTable, key: Key, values: Mapping[str, Any]) -> None:
    """Store new values of a row's JSON columns."""
    conn.execute(update(target.table).where(_is(target, key)).values(**values))


def run_tenants(conn: Connection, run_ids: Sequence[str]) -> dict[str, str]:
    """The tenant of each run (runs that no longer exist are left out)."""
    if not run_ids:
        return {}
    rows = conn.execute(select(runs.c.id, runs.c.tenant_id).where(runs.c.id.in_(run_ids)))
    return {str(r.id): str(r.tenant_id) for r in rows}
