"""The SQL that live streams poll: a run's progress, and runs changed since a time.

Each query is small and indexed, because a stream repeats it a few times a
second: the progress is a primary-key lookup; changed runs are a range on
``(tenant_id, updated_at)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import (
    ColumnElement,
    Connection,
    RowMapping,
    and_,
    bindparam,
    false,
    func,
    or_,
    select,
)

from conveyor.domain.run_filters import RunFilters
from conveyor.store.payload_match import payload_condition
from conveyor.store.tables import run_tags, runs


def _canonical_id(value: str) -> str | None:
    try:
        return str(UUID(value))
    except ValueError:
        return None


_PROGRESS = select(runs.c.status, runs.c.event_seq).where(runs.c.id == bindparam("run_id"))


def get_progress(conn: Connection, run_id: str) -> RowMapping | None:
    """The run's status and the sequence number of its last history line."""
    return conn.execute(_PROGRESS, {"run_id": run_id}).mappings().first()


def filter_clauses(tenant_id: str, filters: RunFilters, dialect: str) -> list[ColumnElement[bool]]:
    """WHERE clauses selecting the tenant's runs that match ``filters``."""
    clauses: list[ColumnElement[bool]] = [
        runs.c.tenant_id == tenant_id,
        runs.c.dry_run == filters.dry_run,
    ]
    if filters.status:
        clauses.append(runs.c.status.in_([s.value for s in filters.status]))
    for name in ("automation_id", "contact_id", "retry_of"):
        value = getattr(filters, name)
        if value is not None:
            # An id that is not a UUID matches nothing (PostgreSQL would refuse it).
            canonical = _canonical_id(value)
            clauses.append(runs.c[name] == canonical if canonical is not None else false())
    equal: dict[str, Any] = {
        "automation_name": filters.automation_name,
        "trigger_type": filters.trigger_type,
        "trigger_source_type": filters.trigger_source_type,
        "identity_value": filters.identity,
        "concurrency_key": filters.concurrency_key,
    }
    clauses.extend(runs.c[name] == value for name, value in equal.items() if value is not None)
    if filters.tag is not None:
        tagged = select(run_tags.c.run_id).where(
            run_tags.c.tenant_id == tenant_id, run_tags.c.tag == filters.tag
        )
        clauses.append(runs.c.id.in_(tagged))
    if filters.created_after is not None:
        clauses.append(runs.c.created_at >= filters.created_after)
    if filters.created_before is not None:
        clauses.append(runs.c.created_at < filters.created_before)
    if filters.payload is not None:
        clauses.append(payload_condition(dialect, filters.payload))
    return clauses


def latest_change(conn: Connection, tenant_id: str, filters: RunFilters) -> datetime | None:
    """The newest ``updated_at`` among the matching runs (None if there are none)."""
    stmt = select(func.max(runs.c.updated_at)).where(
        *filter_clauses(tenant_id, filters, conn.dialect.name)
    )
    value: datetime | None = conn.execute(stmt).scalar_one_or_none()
    return value


def changed_since(
    conn: Connection,
    tenant_id: str,
    filters: RunFilters,
    *,
    since: datetime | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> Sequence[RowMapping]:
    """``(id, updated_at)`` of matching runs changed after ``since``, oldest change first.

    ``after`` continues a previous page: only rows past that ``(updated_at, id)``.
    Only the two columns are read, so the poll stays light; the caller loads
    the rows it has not seen yet with ``get_runs``.
    """
    clauses = filter_clauses(tenant_id, filters, conn.dialect.name)
    if since is not None:
        clauses.append(runs.c.updated_at > since)
    if after is not None:
        at, run_id = after
        clauses.append(
            or_(runs.c.updated_at > at, and_(runs.c.updated_at == at, runs.c.id > run_id))
        )
    stmt = (
        select(runs.c.id, runs.c.updated_at)
        .where(*clauses)
        .order_by(runs.c.updated_at, runs.c.id)
        .limit(limit)
    )
    return conn.execute(stmt).mappings().all()


# What a run summary shows: the trigger event (a payload of any size) is left out.
_SUMMARY_COLUMNS = [c for c in runs.c if c.name != "trigger_event"]


def get_runs(conn: Connection, run_ids: Sequence[str]) -> Sequence[RowMapping]:
    """Run rows by id, without the trigger event (the ids are already the tenant's)."""
    if not run_ids:
        return []
    stmt = select(*_SUMMARY_COLUMNS).where(runs.c.id.in_(list(run_ids)))
    return conn.execute(stmt).mappings().all()
