"""Statements over whole batches (a thousand events, their contacts), per database.

Event ingestion looks up and inserts up to a thousand rows at once. Written
the plain way (``IN (:v1, ..., :v1000)``, a multi-row ``VALUES`` list), each
statement carries thousands of parameters, and on PostgreSQL that costs twice:

- psycopg re-parses a 100 kB statement text on every call (its cache keeps
  short statements only), and SQLAlchemy renders and binds each parameter;
- psycopg prepares a statement it has run a few times, and PostgreSQL may then
  choose a generic plan that tests each row against the thousand parameters
  one by one. Without column statistics (a fresh or fast-growing table) that
  made a 1 ms lookup of a thousand contacts take 100-200 ms.

So on PostgreSQL the values travel as a few array parameters instead: a
lookup joins ``unnest(:values)`` (a nested loop of index probes, whatever the
statistics say) and an insert selects from ``unnest(:col1, :col2, ...)``.
SQLite has neither problem and keeps the plain forms.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import psycopg
from sqlalchemy import (
    JSON,
    Column,
    Connection,
    Select,
    String,
    Table,
    Text,
    bindparam,
    cast,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from conveyor.store.dialect import is_postgresql
from conveyor.store.together import Together
from conveyor.store.types import dumps

# From this many rows on, inserts go through COPY (into a temporary table for
# an insert that may conflict); below it, one statement of array parameters
# (unnest) costs less.
MANY = 16


def restrict_to(
    conn: Connection,
    query: Select[Any],
    column: Column[Any],
    values: Iterable[Any],
    key: str = "values",
) -> Select[Any]:
    """``query`` limited to rows whose ``column`` is one of ``values`` (no row repeated)."""
    listed = sorted(set(values))
    if is_postgresql(conn):
        wanted = (
            func.unnest(bindparam(key, listed, type_=ARRAY(column.type)))
            .table_valued("value")
            .render_derived()
        )
        return query.join(wanted, column == wanted.c.value)
    return query.where(column.in_(bindparam(key, listed, type_=column.type, expanding=True)))


def insert_new(
    conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]], returning: Column[Any]
) -> list[Any]:
    """Insert ``rows`` (all with the same keys), skipping any that hit a unique key.

    Returns ``returning`` of the rows inserted now, so the caller learns which
    rows already existed (perhaps inserted a moment ago by a concurrent
    transaction). Rows are inserted in the order given.
    """
    if not rows:
        return []
    names = list(rows[0])
    if is_postgresql(conn):
        arrays, picked = [], []
        for n in names:
            values = [r[n] for r in rows]
            if isinstance(table.c[n].type, JSON):
                # JSON travels as text and is cast back: psycopg's array dumper
                # takes a document such as `{}` for a nested array literal.
                texts = [None if v is None else dumps(v) for v in values]
                arrays.append(bindparam(f"col_{n}", texts, type_=ARRAY(Text)))
            else:
                arrays.append(bindparam(f"col_{n}", values, type_=ARRAY(table.c[n].type)))
        source = func.unnest(*arrays).table_valued(*names).render_derived()
        for n in names:
            is_json = isinstance(table.c[n].type, JSON)
            picked.append(cast(source.c[n], JSONB) if is_json else source.c[n])
        stmt = (
            pg_insert(table)
            .from_select(names, select(*picked))
            .on_conflict_do_nothing()
            .returning(returning)
        )
        return list(conn.execute(stmt).scalars())
    # RETURNING also makes SQLAlchemy send multi-row INSERTs rather than one per row.
    plain = sqlite_insert(table).on_conflict_do_nothing().returning(returning)
    return list(conn.execute(plain, list(rows)).scalars())


def copy_rows(
    conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]], *, into: str | None = None
) -> None:
    """Insert many ``rows`` (all with the same keys) as fast as the database allows.

    ``into`` names another table of the same columns to copy them into
    (PostgreSQL only).

    PostgreSQL gets them through ``COPY ... FROM STDIN`` on the connection's own
    transaction: for thousands of rows it is several times cheaper than an
    INSERT per row, which psycopg's ``executemany`` sends even when pipelined.
    JSON values are sent as their text (None as SQL NULL). SQLite keeps
    ``executemany``, which is already a loop inside the driver.
    """
    if not rows:
        return
    if not is_postgresql(conn):
        conn.execute(table.insert(), list(rows))
        return
    names = list(rows[0])
    is_json = [isinstance(table.c[n].type, JSON) for n in names]
    driver = conn.connection.driver_connection
    assert driver is not None
    columns = ", ".join(f'"{n}"' for n in names)
    statement = f'COPY "{into or table.name}" ({columns}) FROM STDIN'
    try:
        with driver.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(
                    [
                        dumps(row[n]) if j and row[n] is not None else row[n]
                        for n, j in zip(names, is_json, strict=True)
                    ]
                )
    except psycopg.Error as exc:
        # Raised as SQLAlchemy raises its own statements' errors (a DBAPIError,
        # the connection invalidated if it broke), so that callers classify a
        # failed COPY as they classify a failed INSERT: a conflict to retry, an
        # outage to wait out, a refused value.
        conn._handle_dbapi_exception(exc, statement, None, None, None)


def insert_many(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert rows that cannot conflict (all with the same keys), as cheaply as their number allows.

    On PostgreSQL many go through ``COPY`` (``copy_rows``) and a few through one
    ``INSERT ... SELECT FROM unnest`` (``insert_unnested``): psycopg's
    executemany sends one INSERT per row even when pipelined. One row, and
    SQLite's executemany (a loop inside the driver), stay plain INSERTs.
    """
    if len(rows) >= MANY:
        copy_rows(conn, table, rows)
    elif len(rows) > 1 and is_postgresql(conn):
        insert_unnested(conn, table, rows)
    elif rows:
        conn.execute(plain_insert(table), list(rows))


@functools.cache
def plain_insert(table: Table) -> Any:
    """``table``'s plain INSERT, built once (the engine inserts at every round)."""
    return table.insert()


def insert_unnested(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert a few ``rows`` (all with the same keys) in one statement, on PostgreSQL.

    ``INSERT ... SELECT * FROM unnest(:col1, :col2, ...)``, one array per
    column: the statement's text is the same whatever the number of rows, so
    psycopg prepares it, where a multi-row ``VALUES`` list is compiled again
    for each number of rows. For a server's group of triggers it measured a
    little cheaper than ``COPY``, whose round trips cost more than its rows
    save below ``MANY`` (bench/RESULTS.md, "Fewer wake-ups, one statement per
    batch"). A worker's batch puts its inserts in its one statement instead
    (``conveyor.store.together``).
    """
    together = Together(conn)
    together.insert(table, rows)
    together.send()


def insert_new_copied(
    conn: Connection,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    returning: Column[Any],
    order_by: Sequence[str] = (),
) -> list[Any]:
    """``insert_new`` for many wide rows: on PostgreSQL, copied in, then inserted.

    Rows are inserted in ``order_by`` order (else as given; text in code point
    order, as Python sorts), so that two transactions inserting the same keys
    lock them in the same order.

    Dumping thirty array parameters costs psycopg more than the database's
    work; ``COPY`` into a temporary table of the session (created once per
    connection and table shape, emptied by the statement that reads it) and
    one ``INSERT ... SELECT ... ON CONFLICT DO NOTHING RETURNING`` cost much
    less. SQLite: ``insert_new``.
    """
    if not rows or not is_postgresql(conn):
        return insert_new(conn, table, rows, returning)
    names = list(rows[0])
    shape = hashlib.sha1(
        ",".join(f"{c.name}:{c.type}" for c in table.columns).encode(), usedforsecurity=False
    ).hexdigest()[:12]
    staging = f"conveyor_new_{table.name}_{shape}"
    conn.exec_driver_sql(
        f'CREATE TEMPORARY TABLE IF NOT EXISTS "{staging}" '
        f'(LIKE "{table.name}" INCLUDING DEFAULTS) ON COMMIT DELETE ROWS'
    )
    copy_rows(conn, table, rows, into=staging)
    columns = ", ".join(f'"{n}"' for n in names)
    # Text in code point order ("C"), as Python sorts the callers' small batches.
    order = ", ".join(
        f'"{n}" COLLATE "C"' if isinstance(table.c[n].type, String) else f'"{n}"' for n in order_by
    )
    order = f" ORDER BY {order}" if order else ""
    return list(
        conn.exec_driver_sql(
            f'WITH moved AS (DELETE FROM "{staging}" RETURNING *) '
            f'INSERT INTO "{table.name}" ({columns}) SELECT {columns} FROM moved{order} '
            f'ON CONFLICT DO NOTHING RETURNING "{returning.name}"'
        ).scalars()
    )
