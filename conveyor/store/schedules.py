"""Schedules: one row per scheduled automation, and its ``schedule`` task in the queue.

The row stores the next firing time (a deadline, not a rule to re-derive), so
a restart neither skips nor repeats a firing; the task is due at that time
and is claimed, leased and fenced like every other task.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, delete, select, update

from conveyor.domain.ids import new_id
from conveyor.store.dialect import insert as dialect_insert
from conveyor.store.messaging_tables import schedules
from conveyor.store.tables import tasks
from conveyor.store.tasks import notify

SCHEDULE = "schedule"  # the task kind


def get(conn: Connection, automation_id: str) -> RowMapping | None:
    """The automation's schedule row, if it has one."""
    return (
        conn.execute(select(schedules).where(schedules.c.automation_id == automation_id))
        .mappings()
        .first()
    )


def upsert(
    conn: Connection,
    *,
    automation_id: str,
    tenant_id: str,
    cron: str,
    timezone: str,
    next_fire_at: datetime,
    enabled: bool,
    now: datetime,
) -> None:
    """Create or replace the automation's schedule (its last firing is kept)."""
    values: dict[str, Any] = {
        "cron": cron,
        "timezone": timezone,
        "next_fire_at": next_fire_at,
        "enabled": enabled,
        "updated_at": now,
    }
    stmt = dialect_insert(conn, schedules).values(
        automation_id=automation_id, tenant_id=tenant_id, **values
    )
    conn.execute(stmt.on_conflict_do_update(index_elements=["automation_id"], set_=values))


def disable(conn: Connection, automation_id: str, now: datetime) -> None:
    """Stop the schedule (the automation was disabled); its row stays."""
    conn.execute(
        update(schedules)
        .where(schedules.c.automation_id == automation_id)
        .values(enabled=False, updated_at=now)
    )


def remove(conn: Connection, automation_id: str) -> None:
    """Forget the schedule (the automation was deleted or is no longer scheduled)."""
    conn.execute(delete(schedules).where(schedules.c.automation_id == automation_id))


def record_firing(
    conn: Connection,
    automation_id: str,
    *,
    expected_next: datetime,
    fired_at: datetime | None,
    next_fire_at: datetime,
    now: datetime,
) -> bool:
    """Move the schedule on past a firing; False if someone changed it meanwhile."""
    values: dict[str, Any] = {"next_fire_at": next_fire_at, "updated_at": now}
    if fired_at is not None:
        values["last_fired_at"] = fired_at
    result = conn.execute(
        update(schedules)
        .where(
            schedules.c.automation_id == automation_id,
            schedules.c.next_fire_at == expected_next,
        )
        .values(**values)
    )
    return result.rowcount == 1


def has_task(conn: Connection, automation_id: str) -> bool:
    """Whether the automation's schedule task is queued."""
    stmt = select(tasks.c.id).where(
        tasks.c.automation_id == automation_id, tasks.c.kind == SCHEDULE
    )
    return conn.execute(stmt.limit(1)).first() is not None


def replace_task(
    conn: Connection, *, tenant_id: str, automation_id: str, due_at: datetime, now: datetime
) -> None:
    """Queue the schedule's task due at ``due_at``, dropping any older one.

    A worker holding the old task's lease is fenced out by the deletion, so at
    most one firing of the schedule can be in progress.
    """
    delete_tasks(conn, automation_id)
    conn.execute(
        tasks.insert().values(
            id=new_id(),
            tenant_id=tenant_id,
            kind=SCHEDULE,
            automation_id=automation_id,
            due_at=due_at,
            created_at=now,
        )
    )
    if due_at <= now:
        notify(conn)


def delete_tasks(conn: Connection, automation_id: str) -> None:
    """Remove the automation's schedule tasks."""
    conn.execute(
        delete(tasks).where(tasks.c.automation_id == automation_id, tasks.c.kind == SCHEDULE)
    )


def task_automation(conn: Connection, task_id: str) -> str | None:
    """The automation a schedule task fires (the claim does not return it)."""
    value = conn.execute(select(tasks.c.automation_id).where(tasks.c.id == task_id)).scalar()
    return str(value) if value is not None else None
