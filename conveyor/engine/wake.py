"""Waking a parked step from outside its run (an event for a wait, a finished child run)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection

from conveyor.store import runs as run_store
from conveyor.store import tasks as task_store


def wake_step(conn: Connection, tenant_id: str, run_id: str, step_key: str, now: datetime) -> bool:
    """Make a parked step due now and queue its run; False if the step is not parked.

    The run's next round resumes the step, whose action then reads what woke
    it (the wait row, the child run). Safe to call twice.
    """
    if not run_store.make_parked_step_due(conn, run_id, step_key, now):
        return False
    task_store.enqueue(
        conn, tenant_id=tenant_id, kind=task_store.RUN, run_id=run_id, due_at=now, now=now
    )
    return True
