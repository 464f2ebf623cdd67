"""Run lists and step views: ``GET /runs``, ``/automations/{id}/runs``, ``/runs/{id}/steps``.

Services take a connection and never commit; the caller owns the transaction.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping

from conveyor.domain.errors import (
    AutomationNotFound,
    InvalidCursor,
    NotFound,
    RunNotFound,
    StepNotFound,
)
from conveyor.domain.ids import looks_like_id
from conveyor.domain.run_filters import RunFilters, check_payload_window
from conveyor.domain.status import StepStatus
from conveyor.services.runs import run_summaries, step_views
from conveyor.store import automations as automation_store
from conveyor.store import run_queries
from conveyor.store import runs as run_store
from conveyor.store.run_queries import TOTAL_CAP, Position

__all__ = [
    "TOTAL_CAP",
    "InvalidCursor",
    "OutputNotAvailable",
    "by_automation_id",
    "decode_cursor",
    "encode_cursor",
    "list_automation_runs",
    "list_runs",
    "step_output",
    "steps_overview",
]


class OutputNotAvailable(NotFound):
    """The step has no output (it has not completed)."""

    code = "output_not_available"


def encode_cursor(position: Position) -> str:
    """An opaque, URL-safe cursor for a keyset position (a run's created_at and id)."""
    created_at, run_id = position
    raw = json.dumps({"t": created_at.isoformat(), "i": run_id}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> Position:
    """The keyset position in a cursor; ``InvalidCursor`` if it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        created_at = datetime.fromisoformat(data["t"])
        run_id = data["i"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise InvalidCursor() from None
    if created_at.tzinfo is None or not isinstance(run_id, str) or not looks_like_id(run_id):
        raise InvalidCursor()
    return created_at, run_id


def _total(
    counted: int, offset: int, rows: Sequence[object], more: bool, cursor: bool, cap: int
) -> tuple[int, bool]:
    """The total to report, and whether it is exact.

    Past the cap the count is cut short; the total is then a lower bound, except
    on the last page of offset paging, which knows the exact figure.
    """
    if counted <= cap:
        return counted, True
    if rows and not more and not cursor:
        return offset + len(rows), True
    if rows and not cursor:
        return max(cap, offset + len(rows) + 1), False
    return cap, False


def list_runs(
    conn: Connection,
    tenant_id: str,
    filters: RunFilters,
    *,
    limit: int,
    offset: int = 0,
    cursor: str | None = None,
    count_cap: int | None = None,
) -> dict[str, Any]:
    """A page of the tenant's runs, newest first: ``{items, total, total_exact, limit, ...}``.

    Items are run summaries (no trigger event, no step data). ``total`` counts
    every matching run exactly up to ``count_cap`` (``TOTAL_CAP``); past it ``total_exact`` is
    false and ``total`` is a lower bound. Raises ``InvalidCursor`` for a cursor
    this server did not give out, and ``PayloadFilterNeedsWindow`` for a payload
    filter without a start time on SQLite.
    """
    check_payload_window(filters, conn.dialect.name)
    position = decode_cursor(cursor) if cursor is not None else None
    cap = TOTAL_CAP if count_cap is None else count_cap
    rows, counted, after = run_queries.list_runs(
        conn,
        tenant_id,
        filters,
        limit=limit,
        offset=None if position is not None else offset,
        cursor=position,
        count_cap=cap,
    )
    total, exact = _total(counted, offset, rows, after is not None, position is not None, cap)
    return {
        "items": run_summaries(rows),
        "total": total,
        "total_exact": exact,
        "limit": limit,
        "offset": 0 if position is not None else offset,
        "next_cursor": encode_cursor(after) if after is not None else None,
    }


def by_automation_id(conn: Connection, tenant_id: str, filters: RunFilters) -> RunFilters:
    """``filters`` with an automation name replaced by the id of the automation of that name.

    The same runs (a run records its automation's name when it is created),
    but the id's index serves a status beside it far better: one automation's
    failed runs are found in ``ix_runs_slot_queue`` instead of among all of
    that automation's runs. A name no live automation has is left as it is.
    """
    name = filters.automation_name
    if name is None or filters.automation_id is not None:
        return filters
    automation = automation_store.get_automation(conn, tenant_id, name)
    if automation is None or automation["name"] != name:
        return filters
    return filters.model_copy(
        update={"automation_id": str(automation["id"]), "automation_name": None}
    )


def list_automation_runs(
    conn: Connection,
    tenant_id: str,
    automation_ref: str,
    filters: RunFilters,
    *,
    limit: int,
    offset: int = 0,
    cursor: str | None = None,
) -> dict[str, Any]:
    """A page of one automation's runs (by id or name); ``AutomationNotFound`` if unknown."""
    automation = automation_store.get_automation(conn, tenant_id, automation_ref)
    if automation is None:
        raise AutomationNotFound(f"automation {automation_ref} not found")
    scoped = filters.model_copy(update={"automation_id": str(automation["id"])})
    return list_runs(conn, tenant_id, scoped, limit=limit, offset=offset, cursor=cursor)


def _run(conn: Connection, tenant_id: str, run_id: str) -> RowMapping:
    run = run_store.get_run(conn, run_id, tenant_id)
    if run is None:
        raise RunNotFound(f"run {run_id} not found")
    return run


def steps_overview(
    conn: Connection, tenant_id: str, run_id: str, inline_limit: int
) -> dict[str, Any]:
    """A run's steps (as in the run detail) with a count per step status.

    Counts come twice: as ``counts: {pending, running, ...}`` and as
    ``pending_count``, ``running_count``... (the shape other run APIs use).
    """
    run = _run(conn, tenant_id, run_id)
    steps = step_views(conn, run, inline_limit)
    counts = {str(s): 0 for s in StepStatus}
    for step in steps:
        counts[str(step["status"])] += 1
    return {
        "run_id": run["id"],
        "run_status": run["status"],
        "steps": steps,
        "counts": counts,
        **{f"{status}_count": n for status, n in counts.items()},
    }


def step_output(conn: Connection, tenant_id: str, run_id: str, step_key: str) -> dict[str, Any]:
    """A step's whole output, however large (the run views cut it at the inline limit).

    Raises ``RunNotFound``, ``StepNotFound``, or ``OutputNotAvailable`` while the
    step has no output (it has not completed).
    """
    _run(conn, tenant_id, run_id)
    step = run_queries.get_step(conn, run_id, step_key)
    if step is None:
        raise StepNotFound(f"run {run_id} has no step {step_key!r}")
    output = step["output"]
    if output is None and step["status"] != StepStatus.COMPLETED:
        raise OutputNotAvailable(f"step {step_key!r} has no output (it is {step['status']})")
    size = step["output_size"]
    if size is None:
        size = len(json.dumps(output, default=str)) if output is not None else 0
    return {
        "run_id": run_id,
        "step_key": step_key,
        "status": step["status"],
        "result": output,
        "result_size": size,
    }
