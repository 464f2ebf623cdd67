"""Concurrency slots: how many runs of an (automation, key) may run at once.

The slot row is locked for every change (``FOR UPDATE`` on PostgreSQL; SQLite
serialises writers), so two workers can never both take the last slot.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, RowMapping, select, update

from conveyor.store.dialect import insert
from conveyor.store.tables import concurrency_slots, runs


def _lock(conn: Connection, tenant_id: str, automation_id: str, key: str, now: datetime) -> int:
    conn.execute(
        insert(conn, concurrency_slots)
        .values(tenant_id=tenant_id, automation_id=automation_id, key=key, active=0, updated_at=now)
        .on_conflict_do_nothing(index_elements=["automation_id", "key"])
    )
    stmt = select(concurrency_slots.c.active).where(
        concurrency_slots.c.automation_id == automation_id, concurrency_slots.c.key == key
    )
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    return int(conn.execute(stmt).scalar_one())


def _set_active(conn: Connection, automation_id: str, key: str, active: int, now: datetime) -> None:
    conn.execute(
        update(concurrency_slots)
        .where(concurrency_slots.c.automation_id == automation_id, concurrency_slots.c.key == key)
        .values(active=active, updated_at=now)
    )


def acquire(
    conn: Connection, run: RowMapping | dict[str, object], limit: int, now: datetime
) -> bool:
    """Take a slot for ``run`` if one is free (and mark the run as holding it)."""
    key = str(run["concurrency_key"])
    active = _lock(conn, str(run["tenant_id"]), str(run["automation_id"]), key, now)
    if active >= limit:
        return False
    _set_active(conn, str(run["automation_id"]), key, active + 1, now)
    conn.execute(
        update(runs)
        .where(runs.c.id == run["id"])
        .values(slot_held=True, version=runs.c.version + 1)
    )
    return True


def release(conn: Connection, run: RowMapping | dict[str, object], now: datetime) -> str | None:
    """Give up ``run``'s slot: hand it to the oldest run queued for it, else free it.

    Returns the id of the run that received the slot (the caller queues it),
    so runs start in the order they were created however workers race.
    """
    key = str(run["concurrency_key"])
    automation_id = str(run["automation_id"])
    active = _lock(conn, str(run["tenant_id"]), automation_id, key, now)
    conn.execute(
        update(runs)
        .where(runs.c.id == run["id"])
        .values(slot_held=False, version=runs.c.version + 1)
    )
    heir = conn.execute(
        select(runs.c.id)
        .where(
            runs.c.automation_id == automation_id,
            runs.c.concurrency_key == key,
            runs.c.status == "pending",
            runs.c.slot_held.is_(False),
            runs.c.id != run["id"],
        )
        .order_by(runs.c.created_at, runs.c.id)
        .limit(1)
    ).scalar()
    if heir is None:
        _set_active(conn, automation_id, key, max(active - 1, 0), now)
        return None
    conn.execute(
        update(runs).where(runs.c.id == heir).values(slot_held=True, version=runs.c.version + 1)
    )
    return str(heir)


def holds_slot(conn: Connection, run_id: str) -> bool:
    """Whether the run holds a slot now (fresh from the database, not a batch snapshot)."""
    return bool(conn.execute(select(runs.c.slot_held).where(runs.c.id == run_id)).scalar())
