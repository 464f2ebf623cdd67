"""SQLite's plans for retention's look-ups of linked runs, on a table like production's.

Nearly every run has no ``retry_of``, ``parent_run_id`` or ``root_run_id``. An
index holding all those NULLs counts, after ``ANALYZE``, as one value over the
whole table, and SQLite then scanned ``runs`` for every page of a prune (a
million runs: half a second a statement, thousands of pages). The indexes are
partial (migration 0012); this test keeps the plans on them.

SQLite only: it is its planner's statistics that misled it (PostgreSQL's plans
for these statements are chosen from its own statistics and tested by the
retention suite's behaviour on both databases).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from sqlalchemy import bindparam, event, text

from conveyor.clock import SystemClock
from conveyor.store import prune
from conveyor.store.db import Database
from conveyor.store.tables import runs
from conveyor.testing.factories import make_automation, make_tenant, trigger

COPIES = 50_000  # enough that 1,000 index look-ups beat a scan


def _many_runs(db: Database) -> str:
    """One real finished run, then COPIES rows like it without links; returns its id."""
    tenant = make_tenant(db)
    make_automation(db, tenant, {"name": "a", "steps": [{"key": "s", "type": "set", "vars": {}}]})
    run_id = trigger(db, tenant, "a", {})
    now = SystemClock().now()
    columns = [c.name for c in runs.columns]
    chosen = ", ".join(
        "printf('%032x', i)"  # ids are stored as 32 hex digits
        if c == "id"
        else "'completed'"
        if c == "status"
        else ":done"
        if c == "completed_at"
        else c
        for c in columns
    )
    with db.transaction() as conn:
        conn.execute(
            text(
                "WITH RECURSIVE n(i) AS "
                f"(SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {COPIES}) "
                f"INSERT INTO runs ({', '.join(columns)}) SELECT {chosen} FROM runs, n "
                "WHERE runs.id = :id"
            ).bindparams(
                bindparam("id", type_=runs.c.id.type),
                bindparam("done", type_=runs.c.completed_at.type),
            ),
            {"id": run_id, "done": now - timedelta(days=400)},
        )
        conn.exec_driver_sql("ANALYZE")
    return run_id


def _plans(db: Database, statements: list[tuple[str, Any]]) -> Iterator[str]:
    with db.read() as conn:
        for sql, params in statements:
            for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params):
                yield f"{row[3]}   <- {sql[:120]}"


def test_a_prune_page_never_scans_the_runs(sqlite_db: Database) -> None:
    db = sqlite_db
    _many_runs(db)
    seen: list[tuple[str, Any]] = []

    def capture(_c: Any, _cur: Any, sql: str, params: Any, _ctx: Any, _many: bool) -> None:
        if sql.lstrip().upper().startswith("SELECT"):
            seen.append((sql, params))

    cutoff = SystemClock().now() - timedelta(days=30)
    event.listen(db.engine, "before_cursor_execute", capture)
    try:
        with db.read() as conn:
            ids, _cursor = prune.lineage_page(
                conn, done_cutoff=cutoff, failed_cutoff=cutoff, after=None, limit=500
            )
            prune.remove_runs(conn, ids, apply=False, name="runs")
    finally:
        event.remove(db.engine, "before_cursor_execute", capture)
    assert len(ids) == 500
    plans = list(_plans(db, seen))
    scans = [p for p in plans if p.startswith("SCAN runs")]
    assert not scans, "\n".join(plans)
    # The look-ups by link go through the partial indexes.
    used = " ".join(plans)
    for index in ("ix_runs_root", "ix_runs_parent", "ix_runs_retry_of"):
        assert index in used, "\n".join(plans)
