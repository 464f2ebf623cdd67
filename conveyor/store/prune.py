"""Retention: the SQL that finds and deletes what is past its time, a page at a time.

Every function here works on one page (at most ``limit`` rows or lineages) and
returns the keyset cursor of the next page, so the caller (``conveyor.services.
retention``) can commit after each page and no lock is held for long. With
``apply=False`` nothing is deleted and the same rows are counted instead, so a
dry run reports exactly what a prune would remove.

The walks use ``ix_runs_completed``, ``ix_runs_root``, ``ix_events_received``
and the primary keys (migration 0009): none scans a table.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Table,
    and_,
    delete,
    false,
    func,
    or_,
    select,
    true,
    update,
)

from conveyor.domain.status import RunStatus
from conveyor.store.dialect import insert
from conveyor.store.dryrun_tables import dry_run_results, dry_runs
from conveyor.store.messaging_tables import events, messages, waits
from conveyor.store.tables import (
    api_keys,
    bulk_operations,
    idempotency_records,
    maintenance,
    run_events,
    run_tags,
    runs,
    step_attempts,
    step_runs,
    tasks,
)

Counts = dict[str, int]
# Runs ended this way go after CONVEYOR_RETENTION_RUNS_DAYS ...
DONE_STATUSES = (RunStatus.COMPLETED, RunStatus.CANCELLED)
# ... and these after CONVEYOR_RETENTION_FAILED_RUNS_DAYS.
FAILED_STATUSES = (
    RunStatus.FAILED,
    RunStatus.EXHAUSTED,
    RunStatus.TIMED_OUT,
    RunStatus.COMPLETED_WITH_ERRORS,
)
DRY_RUN_FINISHED = ("completed", "failed", "cancelled")
BULK_FINISHED = ("completed", "failed")
# The rows that hang off a run, with the name they are counted under.
_RUN_CHILDREN: tuple[tuple[str, Table], ...] = (
    ("attempts", step_attempts),
    ("steps", step_runs),
    ("history", run_events),
    ("waits", waits),
    ("messages", messages),
    ("tags", run_tags),
    ("tasks", tasks),
)
# The one `prune` task of the workers (a fixed id: it can only be queued once).
PRUNE = "prune"
PRUNE_TASK_ID = "00000000-0000-7000-8000-000000000017"


def _after(columns: Sequence[Any], values: Sequence[Any]) -> ColumnElement[bool]:
    """``columns > values`` in keyset order, each value bound with its column's type.

    Written out rather than as a row-value comparison, whose bound values would
    skip the columns' own types (SQLite then compares a time with other text).
    """
    head, *rest = columns
    first, *more = values
    if not rest:
        return head > first  # type: ignore[no-any-return]
    # The leading `>=` gives the planner an index range to start from.
    return and_(head >= first, or_(head > first, _after(rest, more)))


def _remove(conn: Connection, table: Table, where: ColumnElement[bool], apply: bool) -> int:
    """Delete the rows ``where`` selects (or, not applying, count them)."""
    if apply:
        return int(conn.execute(delete(table).where(where)).rowcount)
    return int(conn.execute(select(func.count()).select_from(table).where(where)).scalar_one())


# -- runs, by lineage -----------------------------------------------------
def run_due(done_cutoff: datetime | None, failed_cutoff: datetime | None) -> ColumnElement[bool]:
    """True for a real run finished long enough ago (None: that kind is kept forever)."""
    clauses = []
    if done_cutoff is not None:
        clauses.append(and_(runs.c.status.in_(DONE_STATUSES), runs.c.completed_at < done_cutoff))
    if failed_cutoff is not None:
        clauses.append(
            and_(runs.c.status.in_(FAILED_STATUSES), runs.c.completed_at < failed_cutoff)
        )
    return or_(*clauses) if clauses else false()


def lineage_page(
    conn: Connection,
    *,
    done_cutoff: datetime | None,
    failed_cutoff: datetime | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> tuple[list[str], tuple[datetime, str] | None]:
    """The runs of one page's lineages whose every run is due, and the next cursor.

    Candidates are first runs of lineages (``root_run_id`` null), real runs
    only, walked by ``(completed_at, id)``. A lineage stays if any of its runs
    is not due yet (a retry still running, or finished recently), or if a run
    outside it points at one of its runs (a child run's ``parent_run_id``, or
    an old-style ``retry_of`` link without ``root_run_id``): that one goes
    first, and the lineage at a later prune.
    """
    cutoffs = [c for c in (done_cutoff, failed_cutoff) if c is not None]
    if not cutoffs:
        return [], None
    stmt = (
        select(runs.c.id, runs.c.completed_at)
        .where(
            runs.c.completed_at < max(cutoffs),
            runs.c.root_run_id.is_(None),
            runs.c.dry_run == false(),
            run_due(done_cutoff, failed_cutoff),
        )
        .order_by(runs.c.completed_at, runs.c.id)
        .limit(limit)
    )
    if after is not None:
        stmt = stmt.where(_after((runs.c.completed_at, runs.c.id), after))
    rows = conn.execute(stmt).all()
    if not rows:
        return [], None
    cursor = (rows[-1].completed_at, str(rows[-1].id))
    roots = [str(r.id) for r in rows]
    members = lineage_members(conn, roots)
    blocked = {
        str(r.root_run_id)
        for r in conn.execute(
            select(runs.c.root_run_id).where(
                runs.c.root_run_id.in_(roots), ~run_due(done_cutoff, failed_cutoff)
            )
        )
    }
    blocked |= _referenced_from_outside(conn, members)
    return [run for run, root in members.items() if root not in blocked], cursor


def lineage_members(conn: Connection, roots: Collection[str]) -> dict[str, str]:
    """Every run of the lineages ``roots``, mapped to its lineage's root."""
    stmt = select(runs.c.id, runs.c.root_run_id).where(
        or_(runs.c.id.in_(list(roots)), runs.c.root_run_id.in_(list(roots)))
    )
    return {str(r.id): str(r.root_run_id or r.id) for r in conn.execute(stmt)}


def _referenced_from_outside(conn: Connection, members: Mapping[str, str]) -> set[str]:
    """Roots of lineages one of whose runs another lineage's run points at."""
    ids = list(members)
    stmt = select(runs.c.id, runs.c.root_run_id, runs.c.parent_run_id, runs.c.retry_of).where(
        or_(runs.c.parent_run_id.in_(ids), runs.c.retry_of.in_(ids))
    )
    found: set[str] = set()
    for r in conn.execute(stmt):
        own = members.get(str(r.id))
        for target in (r.parent_run_id, r.retry_of):
            lineage = members.get(str(target)) if target is not None else None
            if lineage is not None and lineage != own:
                found.add(lineage)
    return found


def remove_runs(conn: Connection, run_ids: Sequence[str], apply: bool, name: str) -> Counts:
    """Delete runs with everything that hangs off them; counts per kind (``name``: the runs').

    Runs of one lineage go in one statement, so their ``retry_of`` links
    never point at a row already gone.
    """
    counts: Counts = {}
    if not run_ids:
        return counts
    ids = list(run_ids)
    for kind, table in _RUN_CHILDREN:
        counts[kind] = _remove(conn, table, table.c.run_id.in_(ids), apply)
    counts[name] = _remove(conn, runs, runs.c.id.in_(ids), apply)
    return counts


# -- dry runs ---------------------------------------------------------------
def next_dry_run(conn: Connection, cutoff: datetime, after: str | None) -> str | None:
    """The next finished dry run (by id) that ended before ``cutoff``."""
    stmt = (
        select(dry_runs.c.id)
        .where(
            dry_runs.c.status.in_(DRY_RUN_FINISHED),
            func.coalesce(dry_runs.c.completed_at, dry_runs.c.updated_at) < cutoff,
        )
        .order_by(dry_runs.c.id)
        .limit(1)
    )
    if after is not None:
        stmt = stmt.where(dry_runs.c.id > after)
    value = conn.execute(stmt).scalar()
    return None if value is None else str(value)


def dry_run_results_page(
    conn: Connection, dry_run_id: str, after: str | None, limit: int, apply: bool
) -> tuple[Counts, str | None]:
    """Remove one page of a dry run's results with their simulated runs; the next cursor."""
    stmt = (
        select(dry_run_results.c.id, dry_run_results.c.result_id)
        .where(dry_run_results.c.dry_run_id == dry_run_id)
        .order_by(dry_run_results.c.id)
        .limit(limit)
    )
    if after is not None:
        stmt = stmt.where(dry_run_results.c.id > after)
    rows = conn.execute(stmt).all()
    if not rows:
        return {}, None
    result_ids = [str(r.id) for r in rows]
    named = [str(r.result_id) for r in rows if r.result_id is not None]
    # Only runs flagged dry_run: a result must never take a production record with it.
    simulated = (
        [
            str(i)
            for i in conn.execute(
                select(runs.c.id).where(runs.c.id.in_(named), runs.c.dry_run == true())
            ).scalars()
        ]
        if named
        else []
    )
    counts = remove_runs(conn, simulated, apply, "simulated_runs")
    counts["dry_run_results"] = _remove(
        conn, dry_run_results, dry_run_results.c.id.in_(result_ids), apply
    )
    return counts, result_ids[-1] if len(rows) == limit else None


def remove_dry_run(conn: Connection, dry_run_id: str, apply: bool) -> Counts:
    """Remove a dry run whose results are gone, with its leftover day tasks."""
    return {
        "tasks": _remove(conn, tasks, tasks.c.dry_run_id == dry_run_id, apply),
        "dry_runs": _remove(conn, dry_runs, dry_runs.c.id == dry_run_id, apply),
    }


# -- events -----------------------------------------------------------------
def events_page(
    conn: Connection, cutoff: datetime, after: tuple[Any, ...] | None, limit: int, apply: bool
) -> tuple[Counts, tuple[Any, ...] | None]:
    """Remove one page of events received and occurred before ``cutoff``; the next cursor.

    Both times count: an event received recently is still inside the
    de-duplication window whatever its ``occurred_at`` says.
    """
    stmt = (
        select(events.c.received_at, events.c.tenant_id, events.c.id)
        .where(events.c.received_at < cutoff, events.c.occurred_at < cutoff)
        .order_by(events.c.received_at, events.c.tenant_id, events.c.id)
        .limit(limit)
    )
    if after is not None:
        stmt = stmt.where(_after((events.c.received_at, events.c.tenant_id, events.c.id), after))
    rows = conn.execute(stmt).all()
    if not rows:
        return {}, None
    by_tenant: dict[str, list[str]] = {}
    for r in rows:
        by_tenant.setdefault(str(r.tenant_id), []).append(str(r.id))
    removed = sum(
        _remove(conn, events, and_(events.c.tenant_id == t, events.c.id.in_(ids)), apply)
        for t, ids in by_tenant.items()
    )
    last = rows[-1]
    cursor = (last.received_at, str(last.tenant_id), str(last.id))
    return {"events": removed}, cursor if len(rows) == limit else None


# -- rows with an id and a time ----------------------------------------------
def _id_page(
    conn: Connection,
    table: Table,
    where: ColumnElement[bool],
    after: str | None,
    limit: int,
) -> tuple[list[str], str | None]:
    stmt = select(table.c.id).where(where).order_by(table.c.id).limit(limit)
    if after is not None:
        stmt = stmt.where(table.c.id > after)
    ids = [str(i) for i in conn.execute(stmt).scalars()]
    return ids, ids[-1] if len(ids) == limit else None


def bulk_page(
    conn: Connection, cutoff: datetime, after: str | None, limit: int, apply: bool
) -> tuple[Counts, str | None]:
    """Remove one page of bulk operations finished before ``cutoff``."""
    where = and_(
        bulk_operations.c.status.in_(BULK_FINISHED),
        func.coalesce(bulk_operations.c.completed_at, bulk_operations.c.updated_at) < cutoff,
    )
    ids, cursor = _id_page(conn, bulk_operations, where, after, limit)
    if not ids:
        return {}, None
    counts = {
        "tasks": _remove(conn, tasks, tasks.c.operation_id.in_(ids), apply),
        "bulk_operations": _remove(conn, bulk_operations, bulk_operations.c.id.in_(ids), apply),
    }
    return counts, cursor


def revoked_keys_page(
    conn: Connection, cutoff: datetime, after: str | None, limit: int, apply: bool
) -> tuple[Counts, str | None]:
    """Remove one page of API keys revoked before ``cutoff`` (audit lines keep their id)."""
    ids, cursor = _id_page(conn, api_keys, api_keys.c.revoked_at < cutoff, after, limit)
    if not ids:
        return {}, None
    return {"api_keys": _remove(conn, api_keys, api_keys.c.id.in_(ids), apply)}, cursor


def idempotency_page(
    conn: Connection, now: datetime, after: str | None, limit: int, apply: bool
) -> tuple[Counts, str | None]:
    """Remove one page of idempotency records past their ``expires_at``."""
    where = idempotency_records.c.expires_at <= now
    ids, cursor = _id_page(conn, idempotency_records, where, after, limit)
    if not ids:
        return {}, None
    removed = _remove(conn, idempotency_records, idempotency_records.c.id.in_(ids), apply)
    return {"idempotency_records": removed}, cursor


# -- the prune task and its record --------------------------------------------
def queue_prune(conn: Connection, due_at: datetime, now: datetime) -> bool:
    """Queue the workers' ``prune`` task unless it is queued already; True if this queued it."""
    stmt = (
        insert(conn, tasks)
        .values(id=PRUNE_TASK_ID, tenant_id=None, kind=PRUNE, due_at=due_at, created_at=now)
        .on_conflict_do_nothing(index_elements=["id"])
        .returning(tasks.c.id)
    )
    return conn.execute(stmt).scalar() is not None


def reschedule_prune(conn: Connection, due_at: datetime) -> None:
    """Make the ``prune`` task due again at ``due_at``, with its lease released."""
    conn.execute(
        update(tasks)
        .where(tasks.c.id == PRUNE_TASK_ID)
        .values(due_at=due_at, lease_owner=None, lease_token=None, lease_expires_at=None, tries=0)
    )


def drop_prune_task(conn: Connection) -> None:
    """Remove the ``prune`` task (automatic pruning turned off)."""
    conn.execute(delete(tasks).where(tasks.c.id == PRUNE_TASK_ID))


def save_state(conn: Connection, name: str, state: Mapping[str, Any], now: datetime) -> None:
    """Record the state of an operator job (``prune``: the last prune)."""
    stmt = insert(conn, maintenance).values(name=name, state=dict(state), updated_at=now)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["name"], set_={"state": stmt.excluded.state, "updated_at": now}
        )
    )


def load_state(conn: Connection, name: str) -> dict[str, Any] | None:
    """The recorded state of an operator job, or None if it never ran."""
    value = conn.execute(select(maintenance.c.state).where(maintenance.c.name == name)).scalar()
    return dict(value) if value is not None else None
