"""Workers' heartbeat rows, and the queue as an operator sees it (``conveyor status``).

The ``workers`` table is the operator's, not a tenant's: it has no
``tenant_id`` and no API route reads it. It shares
``conveyor.store.tables.metadata`` (imported from ``tables``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Index,
    Integer,
    RowMapping,
    String,
    Table,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)

from conveyor.store.tables import metadata, tasks, uuid_column
from conveyor.store.types import UTCDateTime

workers = Table(
    "workers",
    metadata,
    uuid_column(primary_key=True),  # one per process start
    Column("name", String(200), nullable=False),  # CONVEYOR_WORKER_ID, written on its leases
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("last_seen_at", UTCDateTime, nullable=False),
    Column("slots_busy", Integer, nullable=False),
    Column("slots_total", Integer, nullable=False),
    Index("ix_workers_last_seen_at", "last_seen_at"),
)


def register(conn: Connection, row: Mapping[str, Any]) -> None:
    """Write a worker's row as it starts."""
    conn.execute(insert(workers), dict(row))


def beat(conn: Connection, worker_id: str, now: datetime, slots_busy: int) -> bool:
    """Mark a worker seen now; False if its row is gone (pruned during a long outage)."""
    result = conn.execute(
        update(workers)
        .where(workers.c.id == worker_id)
        .values(last_seen_at=now, slots_busy=slots_busy)
    )
    return bool(result.rowcount)


def remove(conn: Connection, worker_id: str) -> None:
    """Delete a worker's row (it stopped cleanly)."""
    conn.execute(delete(workers).where(workers.c.id == worker_id))


def prune(conn: Connection, seen_before: datetime) -> int:
    """Delete the rows of workers not seen since ``seen_before``; return how many."""
    return int(conn.execute(delete(workers).where(workers.c.last_seen_at < seen_before)).rowcount)


def list_workers(conn: Connection) -> list[RowMapping]:
    """Every worker row, most recently seen first."""
    query = select(workers).order_by(workers.c.last_seen_at.desc(), workers.c.id)
    return list(conn.execute(query).mappings())


def queue_by_kind(conn: Connection, now: datetime) -> list[RowMapping]:
    """Per task kind: tasks due and unclaimed, held under a live lease, due later; oldest due.

    ``due`` counts what a worker could claim now (an expired lease is
    claimable again); ``oldest_due_at`` is the earliest due time among them.
    """
    held = tasks.c.lease_expires_at >= now
    claimable = or_(tasks.c.lease_expires_at.is_(None), tasks.c.lease_expires_at < now)
    due = claimable & (tasks.c.due_at <= now)
    query = (
        select(
            tasks.c.kind,
            func.count().label("total"),
            func.sum(case((due, 1), else_=0)).label("due"),
            func.sum(case((held, 1), else_=0)).label("leased"),
            func.sum(case((claimable & (tasks.c.due_at > now), 1), else_=0)).label("later"),
            func.min(case((due, tasks.c.due_at), else_=None)).label("oldest_due_at"),
        )
        .group_by(tasks.c.kind)
        .order_by(tasks.c.kind)
    )
    return list(conn.execute(query).mappings())
