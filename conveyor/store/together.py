"""Several writes of a batch in one PostgreSQL statement, each a ``WITH`` clause.

A worker's batch writes four tables (its steps, attempts, runs, history lines)
and deletes the tasks of runs that ended. Sent one statement each, every one
costs a round trip, which costs this host ~75 us of client CPU whatever the
rows: at moderate load, batches of a few runs paid more for round trips than
for their rows. PostgreSQL runs data-modifying ``WITH`` clauses exactly once,
to completion, whether or not the main query reads them, all in the one
statement; so the writes go as ``WITH w0 AS (UPDATE ...), w1 AS (INSERT ...)
SELECT 1``, their rows as binary arrays (``unnest``).

The clauses share one snapshot and none sees another's changes, so each must
write a different table (two writes of one row in one statement would leave
one of them undone): ``Together`` refuses a second write of a table.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import JSON, Connection, Dialect, String, Table

from conveyor.store.types import dumps

# A table's rows in one statement at most; a batch's larger sets go by COPY first,
# cheaper for the server from about a hundred rows (bench/batch_paths.py).
ROWS = 64


class Together:
    """Writes to be sent as one statement (PostgreSQL only)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._clauses: list[str] = []
        self._params: list[Any] = []
        self._tables: set[str] = set()

    def _add(self, table: Table, clause: str, params: Sequence[Any]) -> None:
        if table.name in self._tables:
            raise ValueError(f"{table.name} is written twice in one statement")
        self._tables.add(table.name)
        self._clauses.append(clause)
        self._params.extend(params)

    def insert(self, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert ``rows`` (all with the same keys; none may conflict)."""
        if not rows:
            return
        names = tuple(rows[0])
        arrays, is_json = arrays_of(table, names, self.conn.dialect)
        columns = ", ".join(f'"{n}"' for n in names)
        clause = f'INSERT INTO "{table.name}" ({columns}) SELECT * FROM unnest({", ".join(arrays)})'
        self._add(table, clause, columns_of(rows, names, is_json))

    def update(
        self,
        table: Table,
        keys: Sequence[str],
        rows: Sequence[Mapping[str, Any]],
        *,
        also: str = "",
    ) -> None:
        """Set the other columns of ``rows`` on the rows they name by ``keys``.

        ``also`` is more of the SET clause, over the target ``t``.
        """
        if not rows:
            return
        names = tuple(rows[0])
        arrays, is_json = arrays_of(table, names, self.conn.dialect)
        assignments = [f'"{n}" = m."{n}"' for n in names if n not in keys]
        if also:
            assignments.append(also)
        matches = " AND ".join(f't."{k}" = m."{k}"' for k in keys)
        columns = ", ".join(f'"{n}"' for n in names)
        clause = (
            f'UPDATE "{table.name}" AS t SET {", ".join(assignments)} '
            f"FROM unnest({', '.join(arrays)}) AS m({columns}) WHERE {matches}"
        )
        self._add(table, clause, columns_of(rows, names, is_json))

    def delete(self, table: Table, matches: Mapping[str, Sequence[Any]]) -> None:
        """Delete the rows whose column (a key of ``matches``) holds one of its values."""
        wanted = {c: list(v) for c, v in matches.items() if v}
        if not wanted:
            return
        names = tuple(wanted)
        arrays, _ = arrays_of(table, names, self.conn.dialect)
        tests = " OR ".join(f'"{n}" = ANY({a})' for n, a in zip(names, arrays, strict=True))
        self._add(table, f'DELETE FROM "{table.name}" WHERE {tests}', list(wanted.values()))

    def send(self) -> None:
        """Send what was added, in one statement (nothing if nothing was)."""
        if not self._clauses:
            return
        if len(self._clauses) == 1:
            statement = self._clauses[0]
        else:
            withs = ", ".join(f"w{i} AS ({c})" for i, c in enumerate(self._clauses))
            statement = f"WITH {withs} SELECT 1"
        self.conn.exec_driver_sql(statement, tuple(self._params))
        self._clauses, self._params, self._tables = [], [], set()


@functools.cache
def arrays_of(
    table: Table, names: tuple[str, ...], dialect: Dialect
) -> tuple[tuple[str, ...], tuple[bool, ...]]:
    """The array parameter of each column (``%b::type[]``), and which columns are JSON."""
    # Text goes as text, not as varchar(n): an explicit cast to varchar(n)
    # would cut a long value short where the statement must refuse it.
    types = [
        "TEXT" if isinstance(table.c[n].type, String) else table.c[n].type.compile(dialect=dialect)
        for n in names
    ]
    # %b: psycopg sends the arrays in binary. A text array literal costs it a
    # regular-expression escape per element, which made one unnest statement
    # of 32 rows dearer than a COPY of them (bench/RESULTS.md, "Binary arrays").
    arrays = tuple(f"%b::{t}[]" for t in types)
    return arrays, tuple(isinstance(table.c[n].type, JSON) for n in names)


def columns_of(
    rows: Sequence[Mapping[str, Any]], names: Sequence[str], is_json: Sequence[bool]
) -> list[list[Any]]:
    """The rows' values as one list per column; JSON as its text (None as SQL NULL)."""
    return [
        [None if r[n] is None else dumps(r[n]) for r in rows] if j else [r[n] for r in rows]
        for n, j in zip(names, is_json, strict=True)
    ]
