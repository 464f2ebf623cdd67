"""``conveyor repair``: find and fix stored JSON that older versions let in.

Lone surrogates become U+FFFD, NaN and Infinity null, and sub-trees nested
deeper than ``jsonsafe.MAX_DEPTH`` the string ``"<removed: too deep>"``.

Two phases, so that memory holds no table: ``scan_page`` reads one page of a
table (by primary key) and notes the places that need a fix; ``repair_cells``
then fixes a group of places in one transaction, reading each value again
(locked where the database can) so that nothing written in between is lost,
and appends one ``run.repaired`` history line to each run it touched, naming
the columns. The caller (the CLI) opens the transactions.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection

from conveyor.domain import jsonsafe
from conveyor.store import repair as store
from conveyor.store.runs import append_events

PAGE_ROWS = 50  # rows read at a time: a step output alone may hold 1 MiB
CELLS_PER_TRANSACTION = 200
RUN_REPAIRED = "run.repaired"

JsonTable = store.JsonTable


@dataclass(frozen=True)
class Cell:
    """One JSON value that needs a fix: table, row key, column, and the row's run."""

    table: str
    key: store.Key
    column: str
    run_id: str | None


@dataclass
class ColumnCount:
    """What was found (or fixed) in one column: rows, and flaws by kind."""

    table: str
    column: str
    rows: int = 0
    lone_surrogates: int = 0
    non_finite: int = 0
    too_deep: int = 0

    def add(self, flaws: list[jsonsafe.Flaw]) -> None:
        """Count one row's flaws."""
        self.rows += 1
        for flaw in flaws:
            if flaw.kind is jsonsafe.Kind.LONE_SURROGATE:
                self.lone_surrogates += 1
            elif flaw.kind is jsonsafe.Kind.NON_FINITE:
                self.non_finite += 1
            else:
                self.too_deep += 1


@dataclass
class Findings:
    """Counts per table and column, the cells to fix, and the runs touched."""

    counts: dict[tuple[str, str], ColumnCount] = field(default_factory=dict)
    cells: list[Cell] = field(default_factory=list)
    runs: set[str] = field(default_factory=set)

    def record(self, cell: Cell, flaws: list[jsonsafe.Flaw]) -> None:
        """Note one value's flaws."""
        place = (cell.table, cell.column)
        if place not in self.counts:
            self.counts[place] = ColumnCount(cell.table, cell.column)
        self.counts[place].add(flaws)
        self.cells.append(cell)
        if cell.run_id is not None:
            self.runs.add(cell.run_id)


def json_tables() -> list[JsonTable]:
    """Every table with a JSON column."""
    return store.json_tables()


def scan_page(
    conn: Connection,
    target: JsonTable,
    after: store.Key | None,
    findings: Findings,
    *,
    limit: int = PAGE_ROWS,
) -> store.Key | None:
    """Scan one page of ``target`` after ``after`` into ``findings``; the key to go on after.

    Returns None when the table has no more rows.
    """
    rows = store.page(conn, target, after, limit)
    for key, run_id, values in rows:
        for column, text in values.items():
            if not jsonsafe.text_may_have_flaws(text):
                continue  # most values: a scan of the text, no parse
            _, flaws = jsonsafe.loads_sanitized(text)
            if flaws:
                findings.record(Cell(target.name, key, column, _str(run_id)), flaws)
    return rows[-1][0] if len(rows) == limit else None


def _str(value: object) -> str | None:
    return None if value is None else str(value)


def groups(cells: list[Cell], size: int = CELLS_PER_TRANSACTION) -> Iterator[list[Cell]]:
    """``cells`` in groups for one transaction each; a run's cells always share one group."""
    by_run: dict[str | None, list[Cell]] = {}
    for cell in cells:
        by_run.setdefault(cell.run_id, []).append(cell)
    group: list[Cell] = []
    for run_id, run_cells in by_run.items():
        if run_id is None:
            for start in range(0, len(run_cells), size):
                yield run_cells[start : start + size]
            continue
        if group and len(group) + len(run_cells) > size:
            yield group
            group = []
        group.extend(run_cells)
    if group:
        yield group


def repair_cells(conn: Connection, cells: list[Cell], now: datetime, findings: Findings) -> None:
    """Fix ``cells`` (read again, sanitized, written); count what was fixed into ``findings``.

    Each run with a fixed value gets one ``run.repaired`` line naming the
    columns (``append_events`` also bumps the run's version). A value that is
    clean by now (fixed in between) is left alone.
    """
    tables = {t.name: t for t in store.json_tables()}
    columns_of_run: dict[str, set[str]] = {}
    for cell in cells:
        target = tables[cell.table]
        text = store.read(conn, target, cell.key, cell.column)
        if text is None:
            continue
        clean, flaws = jsonsafe.loads_sanitized(text)
        if not flaws:
            continue
        store.write(conn, target, cell.key, {cell.column: clean})
        findings.record(cell, flaws)
        if cell.run_id is not None:
            columns_of_run.setdefault(cell.run_id, set()).add(f"{cell.table}.{cell.column}")
    tenants = store.run_tenants(conn, sorted(columns_of_run))
    for run_id, columns in sorted(columns_of_run.items()):
        if run_id not in tenants:
            continue
        line = {
            "type": RUN_REPAIRED,
            "data": {"columns": sorted(columns), "by": "conveyor repair"},
            "created_at": now,
        }
        append_events(conn, run_id=run_id, tenant_id=tenants[run_id], events=[line])
