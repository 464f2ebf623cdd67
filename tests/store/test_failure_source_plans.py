"""Plans of the look-ups of a run's failure-triggered runs, on both databases.

The lineage view and erasure find the runs an ``automation_failure`` trigger
started for a run by their ``trigger_source_id``. Without an index they read
the tenant's runs; the partial index ``ix_runs_failure_source`` (migration
0013) holds only failure-triggered runs, and the queries say its condition
with the same literal so both planners can use it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, event, text

from conveyor.store import child_runs, erasure
from conveyor.store.db import Database
from conveyor.store.tables import runs
from conveyor.testing.factories import make_automation, make_tenant, trigger

COPIES = 30_000  # enough that a scan costs far more than an index look-up
EVERY = 1_000  # one copy in this many is a failure-triggered run


def _many_runs(db: Database) -> tuple[str, str]:
    """A tenant with COPIES runs like a real one, a few failure-triggered; (tenant, a source)."""
    tenant = make_tenant(db)
    make_automation(db, tenant, {"name": "a", "steps": [{"key": "s", "type": "set", "vars": {}}]})
    run_id = trigger(db, tenant, "a", {})
    pg = db.engine.dialect.name == "postgresql"
    # Failure-triggered copies name sources "source-<i>"; the others an API key.
    chosen = {
        "id": "md5(i::text)::uuid" if pg else "printf('%032x', i)",
        "trigger_type": (
            f"CASE WHEN i % {EVERY} = 0 THEN 'automation_failure' ELSE trigger_type END"
        ),
        "trigger_source_id": f"CASE WHEN i % {EVERY} = 0 THEN 'source-' || i ELSE 'key-1' END",
    }
    columns = [c.name for c in runs.columns]
    select_list = ", ".join(chosen.get(c, c) for c in columns)
    numbers = (
        f"generate_series(1, {COPIES}) AS n(i)"
        if pg
        else f"(WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {COPIES}) "
        "SELECT i FROM n) AS n"
    )
    with db.transaction() as conn:
        conn.execute(
            text(
                f"INSERT INTO runs ({', '.join(columns)}) SELECT {select_list} "
                f"FROM runs, {numbers} WHERE runs.id = :id"
            ).bindparams(bindparam("id", type_=runs.c.id.type)),
            {"id": run_id},
        )
    with db.engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
        conn.commit()
    return tenant, f"source-{EVERY * 3}"


def _captured(db: Database, fn: Any) -> list[tuple[str, Any]]:
    seen: list[tuple[str, Any]] = []

    def capture(_c: Any, _cur: Any, sql: str, params: Any, _ctx: Any, _many: bool) -> None:
        if sql.lstrip().upper().startswith("SELECT"):
            seen.append((sql, params))

    event.listen(db.engine, "before_cursor_execute", capture)
    try:
        with db.read() as conn:
            fn(conn)
    finally:
        event.remove(db.engine, "before_cursor_execute", capture)
    return seen


def _plan(db: Database, sql: str, params: Any) -> str:
    explain = "EXPLAIN QUERY PLAN " if db.engine.dialect.name == "sqlite" else "EXPLAIN "
    with db.read() as conn:
        rows = conn.exec_driver_sql(explain + sql, params).all()
    return "\n".join(str(r[-1]) for r in rows)


def test_failure_runs_are_found_through_their_index(db: Database) -> None:
    tenant, source = _many_runs(db)
    found: dict[str, Any] = {}

    def look_up(conn: Any) -> None:
        found["lineage"] = child_runs.failure_runs_for(conn, tenant, source, 100)
        found["erasure"] = erasure.failure_runs_of(conn, tenant, [source, "source-5000"])

    statements = _captured(db, look_up)
    assert len(found["lineage"]) == 1
    assert len(found["erasure"]) == 2
    assert len(statements) == 2
    for sql, params in statements:
        plan = _plan(db, sql, params)
        assert "ix_runs_failure_source" in plan, plan
        assert "SCAN runs" not in plan, plan
        assert "Seq Scan" not in plan, plan
