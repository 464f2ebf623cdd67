"""A dry run survives a worker killed mid-day: two real workers, one SIGKILLed.

The killed worker's day may have committed a slice of its results; its task
is claimed again when the lease runs out and the redo replaces that slice. In
the end every (day, contact) has exactly one result and one simulated run, and
the progress adds up.
"""

from __future__ import annotations

import signal
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select

from conveyor.domain.ids import new_id
from conveyor.store.db import Database
from conveyor.store.dryrun_tables import dry_run_results, dry_runs
from conveyor.store.messaging_tables import contacts
from conveyor.store.tables import runs, tasks
from conveyor.testing.factories import make_automation, make_tenant, request_dry_run
from tests.e2e.test_crash_recovery import _start_worker, _wait_for, stop_workers

DAYS = 5
CONTACTS = 2500  # over WRITE_SLICE: a day is written in two slices, so the kill can
# land after a day's first slice is committed (the redo must replace it)


def _held_by(db: Database, owner: str) -> list[str]:
    with db.read() as conn:
        return [
            str(r)
            for r in conn.execute(
                select(tasks.c.id).where(tasks.c.kind == "dry_run", tasks.c.lease_owner == owner)
            ).scalars()
        ]


def _progress(db: Database, dry_run_id: str) -> tuple[str, int]:
    with db.read() as conn:
        row = conn.execute(
            select(dry_runs.c.status, dry_runs.c.days_done).where(dry_runs.c.id == dry_run_id)
        ).one()
    return str(row.status), int(row.days_done)


@pytest.mark.slow
def test_kill_9_mid_day_redoes_that_day_once(pg_db: Database, tmp_path: Path) -> None:
    tenant = make_tenant(pg_db, "dry-crash")
    now = datetime.now(UTC)
    people = [
        {
            "id": new_id(),
            "tenant_id": tenant,
            "email": f"p{i}@example.com",
            "external_id": None,
            "push_targets": [],
            "attributes": {"plan": "pro" if i % 2 else "free"},
            "created_at": now,
            "updated_at": now,
        }
        for i in range(CONTACTS)
    ]
    with pg_db.transaction() as conn:
        conn.execute(insert(contacts), people)
    make_automation(
        pg_db,
        tenant,
        {
            "name": "daily",
            "trigger": {"type": "schedule", "cron": "0 9 * * *", "audience": "true"},
            "steps": [
                {"key": "greet", "type": "set", "vars": {"hi": "hello {{ contact.email }}"}},
                {
                    "key": "pro",
                    "type": "condition",
                    "expression": "contact.attributes.plan == 'pro'",
                },
                {"key": "wait", "type": "delay", "duration": "PT1H", "depends_on": ["pro.true"]},
            ],
        },
    )
    workers = [_start_worker(pg_db, f"dw{i}", tmp_path) for i in (1, 2)]
    try:
        dry_run_id = request_dry_run(pg_db, tenant, "daily", date(2026, 6, 1), date(2026, 6, DAYS))
        # Kill the first worker while it holds a day, after at least one day is done.
        _wait_for(
            lambda: _progress(pg_db, dry_run_id)[1] >= 1 and _held_by(pg_db, "dw1"),
            60,
            "the first worker to hold a day after one day is done",
        )
        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait(10)
        # Its day was not committed: the task is still there, still leased to it.
        interrupted = _held_by(pg_db, "dw1")
        _wait_for(lambda: _progress(pg_db, dry_run_id)[0] == "completed", 120, "the dry run")
    finally:
        stop_workers(workers)
    assert workers[1].returncode == 0, (tmp_path / "dw2.log").read_text()
    assert interrupted, "the kill landed between days: nothing was interrupted, nothing tested"

    with pg_db.read() as conn:
        pairs = conn.execute(
            select(dry_run_results.c.run_at, dry_run_results.c.profile_id).where(
                dry_run_results.c.dry_run_id == dry_run_id
            )
        ).all()
        simulated = conn.execute(
            select(func.count()).select_from(runs).where(runs.c.trigger_source_id == dry_run_id)
        ).scalar_one()
        progress = (
            conn.execute(select(dry_runs).where(dry_runs.c.id == dry_run_id)).mappings().one()
        )
        left = conn.execute(select(func.count()).select_from(tasks)).scalar_one()
    assert len(pairs) == DAYS * CONTACTS
    assert len(set(pairs)) == DAYS * CONTACTS  # no (day, contact) twice
    assert {d for d, _ in pairs} == {
        (date(2026, 6, 1) + timedelta(days=i)).isoformat() for i in range(DAYS)
    }
    assert simulated == DAYS * CONTACTS  # the killed day's simulated runs were rolled back too
    assert progress["days_done"] == DAYS
    assert progress["contacts_done"] == DAYS * CONTACTS
    assert sum(progress["counts"].values()) == DAYS * CONTACTS
    assert left == 0
