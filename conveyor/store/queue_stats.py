"""The queue as a scrape sees it: due tasks by kind, read with a bounded cost."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, or_, select

from conveyor.store.tables import tasks

# Every task kind (conveyor.store.tasks, schedules, dry_runs, prune): reported even when
# none is due, so a kind's series does not vanish when its queue is empty.
KINDS = ("run", "run_timeout", "bulk", "schedule", "dry_run", "prune")


@dataclass(frozen=True)
class DueKind:
    """The due tasks of one kind that no worker holds."""

    depth: int
    oldest_due_at: datetime | None


def due_by_kind(conn: Connection, now: datetime, cap: int) -> tuple[dict[str, DueKind], bool]:
    """Due, unheld tasks by kind, reading at most ``cap`` rows; True if the cap was reached.

    The rows are read oldest first along ``ix_tasks_due``, so a scrape costs
    at most ``cap`` index entries however deep the backlog is, and each
    kind's oldest due time is exact while the cap is not reached (past it,
    the depths are lower bounds).
    """
    stmt = (
        select(tasks.c.kind, tasks.c.due_at)
        .where(tasks.c.due_at <= now)
        .where(or_(tasks.c.lease_expires_at.is_(None), tasks.c.lease_expires_at < now))
        .order_by(tasks.c.due_at)
        .limit(cap)
    )
    depth: dict[str, int] = dict.fromkeys(KINDS, 0)
    oldest: dict[str, datetime | None] = dict.fromkeys(KINDS)
    rows = 0
    for kind, due_at in conn.execute(stmt):
        rows += 1
        depth[kind] = depth.get(kind, 0) + 1
        if oldest.get(kind) is None:
            oldest[kind] = due_at
    return {k: DueKind(depth[k], oldest.get(k)) for k in depth}, rows >= cap
