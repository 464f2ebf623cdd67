"""The task queue: claims with leases, fencing, reschedules. All queue SQL lives here.

A task is the engine's unit of work: ``run`` (advance a run) or ``run_timeout``
(fire a run's deadline), and the kinds with a loop of their own (bulk
operations, schedules, dry-run days, and the operator's ``prune``, the one
task of no tenant). Claiming takes due tasks whose lease is free or
expired, atomically (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite's
``BEGIN IMMEDIATE`` serialises writers), and stamps a fresh lease token.
Every later write by the holder first *fences*: it updates the task only
where the token still matches, so a worker that lost its lease writes nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    RowMapping,
    bindparam,
    case,
    delete,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from conveyor.domain.errors import LeaseLost
from conveyor.domain.ids import new_id
from conveyor.store.batch import insert_many
from conveyor.store.db import request_signal, request_wakeup
from conveyor.store.dialect import is_postgresql
from conveyor.store.tables import tasks

NOTIFY_CHANNEL = "conveyor_tasks"
CANCEL_CHANNEL = "conveyor_cancel"
RUN = "run"
RUN_TIMEOUT = "run_timeout"
BULK = "bulk"


_NOTIFY = text(f"NOTIFY {NOTIFY_CHANNEL}")


def notify(conn: Connection) -> None:
    """Wake workers once this transaction commits (NOTIFY on PostgreSQL; in-process hook)."""
    if request_wakeup(conn) and is_postgresql(conn):
        conn.execute(_NOTIFY)


def _enqueue_statement(dialect: str) -> Any:
    stmt = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(tasks)
    earliest = func.least if dialect == "postgresql" else func.min  # SQLite's 2-arg min
    return stmt.on_conflict_do_update(
        index_elements=["run_id", "kind"],
        set_={"due_at": earliest(tasks.c.due_at, stmt.excluded.due_at)},
    )


# Built once per dialect: every trigger enqueues.
_ENQUEUE = {name: _enqueue_statement(name) for name in ("postgresql", "sqlite")}


def enqueue(
    conn: Connection, *, tenant_id: str, kind: str, run_id: str, due_at: datetime, now: datetime
) -> None:
    """Schedule a task; if the run already has one of this kind, make it due no later."""
    conn.execute(
        _ENQUEUE[conn.dialect.name],
        {
            "id": new_id(),
            "tenant_id": tenant_id,
            "kind": kind,
            "run_id": run_id,
            "due_at": due_at,
            "created_at": now,
        },
    )
    if due_at <= now:
        notify(conn)


def enqueue_runs(
    conn: Connection, runs: Sequence[tuple[str, str]], *, due_at: datetime, now: datetime
) -> None:
    """Queue runs created in this transaction (``(tenant_id, run_id)`` pairs), due at ``due_at``.

    One statement: a new run has no task yet, so none can conflict
    (``conveyor.store.batch.insert_many``).
    """
    if not runs:
        return
    rows = [
        {
            "id": new_id(),
            "tenant_id": tenant_id,
            "kind": RUN,
            "run_id": run_id,
            "due_at": due_at,
            "created_at": now,
        }
        for tenant_id, run_id in runs
    ]
    insert_many(conn, tasks, rows)
    if due_at <= now:
        notify(conn)


def enqueue_operation(
    conn: Connection, *, tenant_id: str, operation_id: str, now: datetime
) -> None:
    """Queue a bulk operation for the workers."""
    conn.execute(
        tasks.insert().values(
            id=new_id(),
            tenant_id=tenant_id,
            kind=BULK,
            operation_id=operation_id,
            due_at=now,
            created_at=now,
        )
    )
    notify(conn)


def announce_cancel(conn: Connection, run_id: str) -> None:
    """Tell workers (after commit) that a run was cancelled, so they abort its calls."""
    request_signal(conn, "cancel", run_id)
    if is_postgresql(conn):
        conn.execute(
            text("SELECT pg_notify(:channel, :run_id)"),
            {"channel": CANCEL_CHANNEL, "run_id": run_id},
        )


def lock_run_tasks(conn: Connection, run_id: str) -> None:
    """Row-lock a run's tasks (PostgreSQL), before its run row, as a worker's round does."""
    if is_postgresql(conn):
        conn.execute(select(tasks.c.id).where(tasks.c.run_id == run_id).with_for_update())


def claim(
    conn: Connection,
    *,
    owner: str,
    token: str,
    now: datetime,
    lease_until: datetime,
    limit: int,
    skip_kinds: Sequence[str] = (),
    skip_tenants: Sequence[str] = (),
) -> Sequence[RowMapping]:
    """Lease up to ``limit`` due tasks whose lease is free or expired.

    Tasks of ``skip_kinds`` and of the tenants in ``skip_tenants`` are left.
    A task whose previous lease ran out (its claim ended neither by giving it
    back nor by finishing it: the worker crashed or hung) counts one more
    ``try``; a claim that ends by giving the task back (a reschedule, a
    release) sets the count back to zero.
    """
    params: dict[str, Any] = {
        "now": now,
        "limit": limit,
        "owner": owner,
        "token": token,
        "until": lease_until,
    }
    if skip_kinds:
        params["skip_kinds"] = list(skip_kinds)
    if skip_tenants:
        params["skip_tenants"] = list(skip_tenants)
    stmt = _claim_statement(bool(skip_kinds), bool(skip_tenants))
    return conn.execute(stmt, params).mappings().all()


@functools.cache
def _claim_statement(skip_kinds: bool, skip_tenants: bool) -> Any:
    """The claim's UPDATE, built once per shape: a worker claims many times a second."""
    # Typed as their columns: SQLite stores times and ids in its own formats.
    now = bindparam("now", type_=tasks.c.due_at.type)
    due = (
        select(tasks.c.id)
        .where(tasks.c.due_at <= now)
        .where(or_(tasks.c.lease_expires_at.is_(None), tasks.c.lease_expires_at < now))
    )
    if skip_kinds:
        due = due.where(
            tasks.c.kind.not_in(bindparam("skip_kinds", expanding=True, type_=tasks.c.kind.type))
        )
    if skip_tenants:  # a task of no tenant (`prune`) is nobody's share
        due = due.where(
            or_(
                tasks.c.tenant_id.is_(None),
                tasks.c.tenant_id.not_in(
                    bindparam("skip_tenants", expanding=True, type_=tasks.c.tenant_id.type)
                ),
            )
        )
    due = due.order_by(tasks.c.due_at).limit(bindparam("limit")).with_for_update(skip_locked=True)
    return (
        update(tasks)
        .where(tasks.c.id.in_(due.scalar_subquery()))
        .values(
            lease_owner=bindparam("owner", type_=tasks.c.lease_owner.type),
            lease_token=bindparam("token", type_=tasks.c.lease_token.type),
            lease_expires_at=bindparam("until", type_=tasks.c.lease_expires_at.type),
            claims=tasks.c.claims + 1,
            tries=case((tasks.c.lease_token.is_not(None), tasks.c.tries + 1), else_=tasks.c.tries),
        )
        .returning(
            tasks.c.id,
            tasks.c.tenant_id,
            tasks.c.kind,
            tasks.c.run_id,
            tasks.c.operation_id,
            tasks.c.claims,
            tasks.c.tries,
        )
    )


_EXTEND = (
    update(tasks)
    .where(tasks.c.id == bindparam("_id"), tasks.c.lease_token == bindparam("_token"))
    .values(lease_expires_at=bindparam("_until"))
)
_DELETE_RUN_TASKS = delete(tasks).where(tasks.c.run_id == bindparam("_run_id"))


def fence(conn: Connection, task_id: str, token: str, lease_until: datetime) -> None:
    """Prove this worker still holds the lease (and extend it), or raise ``LeaseLost``.

    On PostgreSQL the UPDATE also row-locks the task until commit, so no other
    worker can take it over between the check and the commit.
    """
    result = conn.execute(_EXTEND, {"_id": task_id, "_token": token, "_until": lease_until})
    if result.rowcount != 1:
        raise LeaseLost(f"lease on task {task_id} was lost")


def heartbeat(conn: Connection, leases: Sequence[tuple[str, str]], lease_until: datetime) -> int:
    """Extend the leases ``(task_id, token)`` still held; return how many were."""
    held = 0
    for task_id, token in leases:
        result = conn.execute(_EXTEND, {"_id": task_id, "_token": token, "_until": lease_until})
        held += result.rowcount
    return held


def reschedule(conn: Connection, task_id: str, due_at: datetime) -> None:
    """Release the lease and make the task due again at ``due_at`` (caller has fenced)."""
    conn.execute(
        update(tasks)
        .where(tasks.c.id == task_id)
        .values(due_at=due_at, lease_owner=None, lease_token=None, lease_expires_at=None, tries=0)
    )


def release(conn: Connection, task_id: str, token: str) -> None:
    """Give a lease back unfinished, so another worker may take the task at once."""
    conn.execute(
        update(tasks)
        .where(tasks.c.id == task_id, tasks.c.lease_token == token)
        .values(lease_owner=None, lease_token=None, lease_expires_at=None, tries=0)
    )


def unclaim(conn: Connection, task_ids: Sequence[str], token: str) -> None:
    """Undo a claim of tasks not started (lease and claim count), in the claim's transaction."""
    if task_ids:
        conn.execute(
            update(tasks)
            .where(tasks.c.id.in_(list(task_ids)), tasks.c.lease_token == token)
            .values(
                lease_owner=None,
                lease_token=None,
                lease_expires_at=None,
                claims=tasks.c.claims - 1,
            )
        )


def retry_later(conn: Connection, task_id: str, token: str, due_at: datetime) -> None:
    """Give a lease back after an unexpected error, with the task due again later."""
    conn.execute(
        update(tasks)
        .where(tasks.c.id == task_id, tasks.c.lease_token == token)
        .values(due_at=due_at, lease_owner=None, lease_token=None, lease_expires_at=None, tries=0)
    )


def forgive(conn: Connection, task_ids: Sequence[str]) -> None:
    """Take back the try that a lease lost to an unreachable database counted.

    The worker holding it could not commit, or even heartbeat, so its lease
    ran out and the next claim counted a try: the task did nothing wrong.
    """
    if task_ids:
        conn.execute(
            update(tasks)
            .where(tasks.c.id.in_(list(task_ids)), tasks.c.tries > 0)
            .values(tries=tasks.c.tries - 1)
        )


def delete_task(conn: Connection, task_id: str) -> None:
    """Remove a finished task (caller has fenced)."""
    conn.execute(delete(tasks).where(tasks.c.id == task_id))


def delete_run_tasks(conn: Connection, run_id: str, kinds: Sequence[str] | None = None) -> None:
    """Remove a run's tasks; any worker holding one is fenced out of its next write."""
    if kinds is None:
        conn.execute(_DELETE_RUN_TASKS, {"_run_id": run_id})
        return
    conn.execute(delete(tasks).where(tasks.c.run_id == run_id, tasks.c.kind.in_(kinds)))


def next_due(conn: Connection, now: datetime, skip_kinds: Sequence[str] = ()) -> datetime | None:
    """When the earliest task ``claim`` could take falls due (for sleeping until then).

    Tasks another worker holds do not count: they are due already, and an idle
    worker that woke for them would find nothing to claim and spin. A lease
    that runs out is noticed by the next poll, which claims what has expired.
    """
    stmt = select(func.min(tasks.c.due_at)).where(
        or_(tasks.c.lease_expires_at.is_(None), tasks.c.lease_expires_at < now)
    )
    if skip_kinds:
        stmt = stmt.where(tasks.c.kind.not_in(list(skip_kinds)))
    value: datetime | None = conn.execute(stmt).scalar()
    return value


def count(conn: Connection) -> int:
    """How many tasks exist (for tests and run-until-idle)."""
    return int(conn.execute(select(func.count()).select_from(tasks)).scalar_one())
