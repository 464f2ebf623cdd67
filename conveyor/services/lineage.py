"""The runs a run started: its child runs and the runs its failure triggered.

A run's own links (retry of, retried by, parent, root) are in its detail
(``services.runs.get_run_detail``); these are the links the other way, found
by looking for the runs that name this one: ``parent_run_id`` for the runs a
``trigger_automation`` step started, and the ``trigger_source_id`` of the
runs an ``automation_failure`` trigger started when this run failed.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, RowMapping

from conveyor.domain.errors import RunNotFound
from conveyor.domain.times import iso
from conveyor.store import child_runs
from conveyor.store import runs as run_store

LIMIT = 100  # links of each kind shown; a run rarely starts more


def _link(row: RowMapping) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "automation_name": row["automation_name"],
        "status": row["status"],
        "trigger_type": row["trigger_type"],
        "created_at": iso(row["created_at"]),
    }


def started_runs(
    conn: Connection, tenant_id: str, run_id: str, limit: int = LIMIT
) -> dict[str, list[dict[str, Any]]]:
    """``{"children": [...], "failure_runs": [...]}``, oldest first, at most ``limit`` each.

    ``RunNotFound`` when the tenant has no run ``run_id``.
    """
    if run_store.get_run(conn, run_id, tenant_id) is None:
        raise RunNotFound(f"run {run_id} not found")
    return {
        "children": [_link(r) for r in child_runs.children_of(conn, tenant_id, run_id, limit)],
        "failure_runs": [
            _link(r) for r in child_runs.failure_runs_for(conn, tenant_id, run_id, limit)
        ],
    }
