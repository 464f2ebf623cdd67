"""Dry-run result repository: the SQL behind ``/api/v1/dry-run-results``.

The simulator writes the rows (one per simulated day and contact); this module
lists, reads and deletes them. Lists are newest first, ``ORDER BY created_at
DESC, id DESC``, which ``ix_dry_run_results_tenant_created`` serves, and a
keyset position is the ``(created_at, id)`` of the last row of a page.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import (
    ColumnElement,
    Connection,
    RowMapping,
    and_,
    delete,
    false,
    func,
    or_,
    select,
    true,
)

from conveyor.store.dryrun_tables import dry_run_results
from conveyor.store.tables import runs

Position = tuple[datetime, str]
"""A keyset position: the ``(created_at, id)`` of the last result of a page."""

RUN_RESULT_TYPE = "run"
"""The ``result_type`` of a result whose ``result_id`` names a simulated run."""


@dataclass(frozen=True)
class ResultFilters:
    """The result list filters; every one given must hold.

    Day bounds are ``YYYY-MM-DD`` strings, both inclusive (``run_at`` is stored
    as such a string, so they compare as text). Time bounds are aware datetimes,
    the lower one inclusive and the upper one exclusive.
    """

    dry_run_id: str | None = None
    automation_id: str | None = None
    run_at_from: str | None = None
    run_at_to: str | None = None
    profile_id: str | None = None
    status: str | None = None
    result_type: str | None = None
    result_id: str | None = None
    requested_by: str | None = None
    created_from: datetime | None = None
    created_before: datetime | None = None
    updated_from: datetime | None = None
    updated_before: datetime | None = None


def _canonical_id(value: str) -> str | None:
    """The canonical form of an id, or None when it is not one."""
    try:
        return str(UUID(value))
    except ValueError:
        return None


def _id_condition(column: Any, value: str) -> ColumnElement[bool]:
    canonical = _canonical_id(value)
    # A value that is not a UUID matches nothing, and must not reach PostgreSQL,
    # which refuses to compare it with a uuid column.
    return column == canonical if canonical is not None else false()


def _conditions(tenant_id: str, filters: ResultFilters) -> list[ColumnElement[bool]]:
    t = dry_run_results.c
    conds: list[ColumnElement[bool]] = [t.tenant_id == tenant_id]
    for column, value in (
        (t.dry_run_id, filters.dry_run_id),
        (t.automation_id, filters.automation_id),
        (t.profile_id, filters.profile_id),
        (t.result_id, filters.result_id),
    ):
        if value is not None:
            conds.append(_id_condition(column, value))
    for column, value in (
        (t.status, filters.status),
        (t.result_type, filters.result_type),
        (t.requested_by, filters.requested_by),
    ):
        if value is not None:
            conds.append(column == value)
    bounds: tuple[tuple[Any, Any, bool], ...] = (
        (t.run_at, filters.run_at_from, True),
        (t.run_at, filters.run_at_to, False),
        (t.created_at, filters.created_from, True),
        (t.created_at, filters.created_before, False),
        (t.updated_at, filters.updated_from, True),
        (t.updated_at, filters.updated_before, False),
    )
    for column, bound, lower in bounds:
        if bound is None:
            continue
        if lower:
            conds.append(column >= bound)
        elif isinstance(bound, str):
            conds.append(column <= bound)  # a day: inclusive
        else:
            conds.append(column < bound)  # a time: exclusive
    return conds


def list_results(
    conn: Connection,
    tenant_id: str,
    filters: ResultFilters,
    *,
    limit: int,
    offset: int = 0,
    after: Position | None = None,
) -> tuple[list[RowMapping], int]:
    """A page of the tenant's results, newest first, and how many match in all.

    Args:
        limit: rows to return (ask for one more than the page to learn whether more follow).
        offset: rows to skip (ignored with ``after``, which replaces it).
        after: the keyset position of the last row of the previous page.
    """
    t = dry_run_results.c
    where = _conditions(tenant_id, filters)
    total = conn.execute(
        select(func.count()).select_from(dry_run_results).where(*where)
    ).scalar_one()
    query = select(dry_run_results).where(*where)
    if after is not None:
        at, last_id = after
        canonical = _canonical_id(last_id)
        if canonical is None:
            return [], int(total)
        # Written out rather than as a row-value comparison, which older SQLite lacks.
        query = query.where(or_(t.created_at < at, and_(t.created_at == at, t.id < canonical)))
        offset = 0
    query = query.order_by(t.created_at.desc(), t.id.desc()).limit(limit).offset(offset or None)
    return list(conn.execute(query).mappings()), int(total)


def get_result(conn: Connection, tenant_id: str, result_id: str) -> RowMapping | None:
    """One result of the tenant, or None (also for an id that is not a UUID)."""
    canonical = _canonical_id(result_id)
    if canonical is None:
        return None
    query = select(dry_run_results).where(
        dry_run_results.c.tenant_id == tenant_id, dry_run_results.c.id == canonical
    )
    return conn.execute(query).mappings().first()


def delete_result(conn: Connection, tenant_id: str, row: RowMapping) -> str | None:
    """Delete a result (a row ``get_result`` returned) and the simulated run it names.

    The run goes only if it is this tenant's and has ``dry_run`` set: a result
    that wrongly names a real run must never take a production record with it.
    Its steps, attempts, events and tasks go with it (``ON DELETE CASCADE``).

    Returns:
        The id of the simulated run deleted, or None when none was.
    """
    conn.execute(
        delete(dry_run_results).where(
            dry_run_results.c.tenant_id == tenant_id, dry_run_results.c.id == row["id"]
        )
    )
    if row["result_type"] != RUN_RESULT_TYPE or row["result_id"] is None:
        return None
    run_id = str(row["result_id"])
    deleted = conn.execute(
        delete(runs)
        .where(runs.c.id == run_id, runs.c.tenant_id == tenant_id, runs.c.dry_run == true())
        .returning(runs.c.id)
    ).first()
    return run_id if deleted is not None else None
