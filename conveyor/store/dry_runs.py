"""Dry runs: the request rows, their day tasks, and the writes of simulated results.

Reading, filtering and deleting results belongs to ``conveyor.store.dry_run_results``.
A dry run is split into one task per simulated day. The task id is derived from
the dry run id and the day (``day_task_id``), so the task names its day without
a column of its own and queueing the same day twice is impossible.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping, Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, Select, delete, insert, select, update

from conveyor.store.batch import copy_rows, restrict_to
from conveyor.store.dryrun_tables import dry_run_results, dry_runs
from conveyor.store.messaging_tables import events
from conveyor.store.tables import runs, step_runs, tasks
from conveyor.store.tasks import notify

DRY_RUN = "dry_run"  # the task kind


def day_task_id(dry_run_id: str, day: date) -> str:
    """The id of the task that simulates ``day`` of a dry run (stable, so unique per day)."""
    return str(uuid.uuid5(uuid.UUID(dry_run_id), day.isoformat()))


def insert_dry_run(conn: Connection, row: Mapping[str, Any]) -> None:
    """Record a new dry run."""
    conn.execute(insert(dry_runs).values(**row))


def enqueue_days(
    conn: Connection, *, tenant_id: str, dry_run_id: str, days: Sequence[date], now: datetime
) -> None:
    """Queue one ``dry_run`` task per day."""
    if not days:
        return
    conn.execute(
        insert(tasks),
        [
            {
                "id": day_task_id(dry_run_id, d),
                "tenant_id": tenant_id,
                "kind": DRY_RUN,
                "dry_run_id": dry_run_id,
                "due_at": now,
                "created_at": now,
            }
            for d in days
        ],
    )
    notify(conn)


def task_dry_run_id(conn: Connection, task_id: str) -> str | None:
    """The dry run a task works on (the claim does not return it)."""
    value = conn.execute(select(tasks.c.dry_run_id).where(tasks.c.id == task_id)).scalar()
    return str(value) if value is not None else None


def get_dry_run(
    conn: Connection, dry_run_id: str, tenant_id: str | None = None, *, lock: bool = False
) -> RowMapping | None:
    """One dry run (of ``tenant_id`` when given)."""
    try:
        canonical = str(uuid.UUID(dry_run_id))
    except ValueError:
        return None
    stmt = select(dry_runs).where(dry_runs.c.id == canonical)
    if tenant_id is not None:
        stmt = stmt.where(dry_runs.c.tenant_id == tenant_id)
    if lock and conn.dialect.name == "postgresql":
        # FOR NO KEY UPDATE: the day's result rows already hold a key-share lock on
        # this row (their foreign key); a plain FOR UPDATE would deadlock two days.
        stmt = stmt.with_for_update(key_share=True)
    return conn.execute(stmt).mappings().first()


def update_dry_run(conn: Connection, dry_run_id: str, values: Mapping[str, Any]) -> None:
    """Change a dry run's status or progress."""
    conn.execute(update(dry_runs).where(dry_runs.c.id == dry_run_id).values(**values))


def delete_day_tasks(conn: Connection, dry_run_id: str) -> int:
    """Remove a dry run's remaining day tasks (cancel); a worker holding one is fenced out."""
    result = conn.execute(
        delete(tasks).where(tasks.c.dry_run_id == dry_run_id, tasks.c.kind == DRY_RUN)
    )
    return int(result.rowcount or 0)


def _events_named(tenant_id: str, name: str, since: datetime, until: datetime) -> Select[Any]:
    return select(events).where(
        events.c.tenant_id == tenant_id,
        events.c.name == name,
        events.c.occurred_at >= since,
        events.c.occurred_at < until,
    )


_OLDEST_FIRST = (events.c.occurred_at, events.c.id)


def events_between(
    conn: Connection,
    tenant_id: str,
    name: str,
    since: datetime,
    until: datetime,
    *,
    contact_id: str | None = None,
) -> Sequence[RowMapping]:
    """Stored events named ``name`` with ``since <= occurred_at < until``, oldest first."""
    stmt = _events_named(tenant_id, name, since, until)
    if contact_id is not None:
        stmt = stmt.where(events.c.contact_id == contact_id)
    return conn.execute(stmt.order_by(*_OLDEST_FIRST)).mappings().all()


def events_of_contacts(
    conn: Connection,
    tenant_id: str,
    name: str,
    since: datetime,
    until: datetime,
    contact_ids: Collection[str] | None,
) -> Sequence[RowMapping]:
    """``name`` events in ``[since, until)`` of ``contact_ids`` (None: anyone's), oldest first."""
    stmt = _events_named(tenant_id, name, since, until)
    if contact_ids is not None:
        if not contact_ids:
            return []
        stmt = restrict_to(conn, stmt, events.c.contact_id, contact_ids)
    else:
        stmt = stmt.where(events.c.contact_id.is_not(None))
    return conn.execute(stmt.order_by(*_OLDEST_FIRST)).mappings().all()


def insert_simulated_runs(
    conn: Connection, run_rows: Sequence[Mapping[str, Any]], steps: Sequence[Mapping[str, Any]]
) -> None:
    """Store a day's simulated run records and their steps, a statement each."""
    copy_rows(conn, runs, run_rows)
    copy_rows(conn, step_runs, steps)


def insert_results(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Store a day's results (the caller writes them with the day's task deletion)."""
    copy_rows(conn, dry_run_results, rows)


def delete_day_results(conn: Connection, tenant_id: str, dry_run_id: str, run_at: str) -> int:
    """Delete a dry run's results of one day and their simulated runs; return how many."""
    of_day = (
        dry_run_results.c.dry_run_id == dry_run_id,
        dry_run_results.c.run_at == run_at,
    )
    simulated = select(dry_run_results.c.result_id).where(*of_day)
    conn.execute(
        delete(runs).where(
            runs.c.tenant_id == tenant_id, runs.c.dry_run.is_(True), runs.c.id.in_(simulated)
        )
    )  # their steps go with them (ON DELETE CASCADE)
    return int(conn.execute(delete(dry_run_results).where(*of_day)).rowcount or 0)


def real_runs_of_day(
    conn: Connection,
    tenant_id: str,
    automation_id: str,
    contact_ids: Sequence[str],
    since: datetime,
    until: datetime,
) -> dict[str, tuple[RowMapping, list[RowMapping]]]:
    """The first real run per contact created in ``[since, until)``, with its step rows."""
    if not contact_ids:
        return {}
    found: dict[str, RowMapping] = {}
    query = (
        select(runs)
        .where(
            runs.c.tenant_id == tenant_id,
            runs.c.automation_id == automation_id,
            runs.c.dry_run.is_(False),
            runs.c.created_at >= since,
            runs.c.created_at < until,
        )
        .order_by(runs.c.created_at, runs.c.id)
    )
    query = restrict_to(conn, query, runs.c.contact_id, contact_ids)
    for row in conn.execute(query).mappings():
        found.setdefault(str(row["contact_id"]), row)
    if not found:
        return {}
    steps: dict[str, list[RowMapping]] = {str(r["id"]): [] for r in found.values()}
    step_query = select(step_runs).where(step_runs.c.run_id.in_(list(steps)))
    for step in conn.execute(step_query).mappings():
        steps[str(step["run_id"])].append(step)
    return {c: (r, steps[str(r["id"])]) for c, r in found.items()}
