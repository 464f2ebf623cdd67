"""A round batch of many runs writes exactly what the same rounds write run by run.

On PostgreSQL a batch's step and run updates (one ``UPDATE ... FROM
unnest(...)`` each, whatever their number), its new attempts and history
lines and its ended runs' task deletes are clauses of one statement
(``conveyor.store.together``); a table's rows past 64 are copied in first
(``COPY``). SQLite keeps one statement per table and row. All must leave the
same runs behind.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event, select

from conveyor.clock import FakeClock
from conveyor.engine.worker import Worker
from conveyor.services.runs import get_run_detail
from conveyor.settings import Settings
from conveyor.store.db import Database
from conveyor.store.runs import get_events
from conveyor.store.tables import runs
from conveyor.testing.factories import make_automation, make_tenant, trigger

RUNS = 20  # a batch of 20 runs: 20 run rows, 60 step rows, past the COPY threshold of 16
DEFINITION = {
    "name": "three-steps",
    "steps": [
        {"key": "a", "type": "set", "vars": {"n": "{{ trigger.payload.n }}"}},
        {"key": "b", "type": "condition", "expression": "trigger.payload.n % 2 == 0"},
        {"key": "c", "type": "set", "vars": {"done": True, "error": None}},
    ],
}
VOLATILE = {"id", "run_id", "tenant_id", "automation_id", "automation_version_id", "contact_id"}


def _strip(value: Any) -> Any:
    """The run's detail without ids (each tenant has its own)."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _process(db: Database, settings: Settings, clock: FakeClock, batch_size: int) -> list[Any]:
    tenant = make_tenant(db, f"t{batch_size}", now=clock.now())
    make_automation(db, tenant, DEFINITION, now=clock.now())
    ids = [trigger(db, tenant, "three-steps", {"n": i}, now=clock.now()) for i in range(RUNS)]
    worker = Worker(db, settings.model_copy(update={"worker_batch_size": batch_size}), clock=clock)
    asyncio.run(asyncio.wait_for(worker.run_until_idle(), 60))
    out = []
    with db.read() as conn:
        versions = dict(conn.execute(select(runs.c.id, runs.c.version)).all())
        for run_id in ids:
            detail = get_run_detail(conn, tenant, run_id)
            events = [(e["seq"], e["type"]) for e in get_events(conn, run_id)]
            out.append((_strip(detail), events, versions[run_id]))
    return out


def test_one_batch_of_many_runs_writes_what_one_run_per_batch_writes(
    db: Database, settings: Settings
) -> None:
    clock = FakeClock(datetime(2026, 6, 8, 14, 15, tzinfo=UTC))
    unnested: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        # Each UPDATE from unnested arrays, alone or a clause of the batch's statement.
        unnested.extend(re.findall(r'UPDATE "\w+" AS t SET [^()]*FROM unnest\(', statement))

    event.listen(db.engine, "before_cursor_execute", note)
    try:
        together = _process(db, settings, clock, batch_size=64)
        # On PostgreSQL a batch's steps and runs are each one UPDATE from unnested
        # arrays, whatever the batch's size (60 steps here); SQLite updates row by row.
        big = len(unnested)
        assert big == 0 if db.is_sqlite else big >= 2
        fives = _process(db, settings, clock, batch_size=5)
        fewer = len(unnested) - big
        assert fewer == 0 if db.is_sqlite else fewer >= 2
    finally:
        event.remove(db.engine, "before_cursor_execute", note)
    alone = _process(db, settings, clock, batch_size=1)
    assert together == alone
    assert fives == alone
    assert {d["status"] for d, _, _ in together} == {"completed"}
    assert [s["status"] for s in together[1][0]["steps"]] == ["completed"] * 3
    branches = [d["steps"][1]["branch_taken"] for d, _, _ in together]
    assert branches == ["true", "false"] * (RUNS // 2)
