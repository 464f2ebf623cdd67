"""Runs started by other runs: children (``trigger_automation``) and failure-triggered runs."""

from __future__ import annotations

from sqlalchemy import ColumnElement, Connection, RowMapping, bindparam, literal_column, select

from conveyor.store.tables import runs


def is_failure_run() -> ColumnElement[bool]:
    """The runs ``automation_failure`` triggers started, said as ix_runs_failure_source says it.

    The value is a literal, not a parameter: a partial index serves a query
    only when the database can see the query implies the index's condition
    (SQLite always, PostgreSQL under a generic plan of a prepared statement).
    """
    return runs.c.trigger_type == literal_column("'automation_failure'")


# ix_runs_parent narrows to the parent's children; the key picks the step's one.
_CHILD = select(runs).where(
    runs.c.parent_run_id == bindparam("parent"), runs.c.idempotency_key == bindparam("key")
)


def find_child(conn: Connection, parent_run_id: str, idempotency_key: str) -> RowMapping | None:
    """The child run a parent's step started (found by the key derived from that step)."""
    return (
        conn.execute(_CHILD, {"parent": parent_run_id, "key": idempotency_key}).mappings().first()
    )


_LINK_COLUMNS = (
    runs.c.id,
    runs.c.automation_name,
    runs.c.status,
    runs.c.trigger_type,
    runs.c.created_at,
)


def children_of(conn: Connection, tenant_id: str, run_id: str, limit: int) -> list[RowMapping]:
    """The runs this run's ``trigger_automation`` steps started, oldest first (ix_runs_parent)."""
    stmt = (
        select(*_LINK_COLUMNS)
        .where(runs.c.parent_run_id == run_id, runs.c.tenant_id == tenant_id)
        .order_by(runs.c.created_at, runs.c.id)
        .limit(limit)
    )
    return list(conn.execute(stmt).mappings())


def failure_runs_for(conn: Connection, tenant_id: str, run_id: str, limit: int) -> list[RowMapping]:
    """The runs ``automation_failure`` triggers started because this run failed.

    They name the failed run as their trigger source (ix_runs_failure_source).
    """
    stmt = (
        select(*_LINK_COLUMNS)
        .where(
            runs.c.tenant_id == tenant_id,
            is_failure_run(),
            runs.c.trigger_source_id == run_id,
        )
        .order_by(runs.c.created_at, runs.c.id)
        .limit(limit)
    )
    return list(conn.execute(stmt).mappings())
