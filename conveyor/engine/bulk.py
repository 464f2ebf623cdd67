"""Bulk operations: cancel or replay every run a filter matches, a page at a time.

A bulk operation is a row plus a queue task. A worker processes one page per
transaction and stores a keyset cursor on the row, so a crash resumes where
the last committed page ended and no run is handled twice.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Connection, RowMapping

from conveyor.domain.errors import ConveyorError
from conveyor.domain.ids import new_id
from conveyor.domain.run_filters import RunFilters
from conveyor.domain.status import CANCELLABLE_RUN_STATUSES
from conveyor.domain.times import iso
from conveyor.engine.control import REPLAYABLE_RUN_STATUSES, Actor, cancel_run, retry_runs
from conveyor.store import bulk as bulk_store
from conveyor.store import run_queries
from conveyor.store import tasks as task_store

BulkKind = Literal["cancel", "replay"]
PAGE = 100
MAX_ERRORS = 50
_STATUSES = {"cancel": CANCELLABLE_RUN_STATUSES, "replay": REPLAYABLE_RUN_STATUSES}


class InvalidBulkFilters(ConveyorError):
    """The filters name only statuses this operation cannot act on."""

    code = "invalid_bulk_filters"


def scope_filters(kind: BulkKind, filters: RunFilters, now: datetime) -> RunFilters:
    """Narrow the filters to runs the operation can act on, created before it was asked for.

    The time bound keeps the operation from chasing runs created while it
    works (a replay's own new runs among them). Statuses it cannot act on are
    dropped; if that leaves none of the statuses asked for, the request is
    refused, since an empty status filter would mean every status it can act on.
    """
    allowed = _STATUSES[kind]
    statuses = tuple(s for s in (filters.status or tuple(allowed)) if s in allowed)
    if not statuses:
        can = ", ".join(sorted(allowed))
        asked = ", ".join(filters.status)
        raise InvalidBulkFilters(f"bulk {kind} acts on runs that are {can}; not on {asked}")
    before = min(filters.created_before, now) if filters.created_before else now
    return filters.model_copy(update={"status": statuses, "created_before": before})


def request(
    conn: Connection,
    tenant_id: str,
    kind: BulkKind,
    filters: RunFilters,
    *,
    arguments: dict[str, Any],
    actor: Actor,
    now: datetime,
) -> str:
    """Record a bulk operation and queue it; return its id."""
    operation_id = new_id()
    scoped = scope_filters(kind, filters, now)
    bulk_store.insert_operation(
        conn,
        {
            "id": operation_id,
            "tenant_id": tenant_id,
            "kind": kind,
            "filters": scoped.model_dump(mode="json"),
            "arguments": arguments,
            "status": "queued",
            "matched": 0,
            "done": 0,
            "failed": 0,
            "errors": [],
            "cursor": None,
            "created_by": actor.label or actor.id,
            "created_at": now,
            "updated_at": now,
            "completed_at": None,
        },
    )
    task_store.enqueue_operation(conn, tenant_id=tenant_id, operation_id=operation_id, now=now)
    return operation_id


def _decode(cursor: str | None) -> tuple[datetime, str] | None:
    if not cursor:
        return None
    stamp, _, run_id = cursor.partition("|")
    return datetime.fromisoformat(stamp), run_id


def _cancel(
    conn: Connection, op: RowMapping, run_ids: list[str], actor: Actor, now: datetime
) -> list[ConveyorError | None]:
    """Cancel each run, one SAVEPOINT each: one run's failure must not undo the page."""
    results: list[ConveyorError | None] = []
    for run_id in run_ids:
        try:
            with conn.begin_nested():
                cancel_run(
                    conn,
                    op["tenant_id"],
                    run_id,
                    actor=actor,
                    reason=op["arguments"].get("reason"),
                    now=now,
                )
            results.append(None)
        except ConveyorError as exc:
            results.append(exc)
    return results


def _replay(
    conn: Connection, op: RowMapping, run_ids: list[str], actor: Actor, now: datetime
) -> list[ConveyorError | None]:
    """Replay the page's runs together: a fixed number of statements, whatever the page.

    ``retry_runs`` refuses a run before writing anything, so a refused run
    needs no SAVEPOINT to keep it from undoing the others.
    """
    args = op["arguments"]
    results = retry_runs(
        conn,
        op["tenant_id"],
        run_ids,
        mode="from_failed",
        step_key=None,
        payload=None,
        version="original",
        resend=bool(args.get("resend")),
        reason=args.get("reason"),
        actor=actor,
        now=now,
    )
    return [r if isinstance(r, ConveyorError) else None for r in results]


def process_page(
    conn: Connection,
    task: RowMapping,
    token: str,
    clock: Callable[[], datetime],
    lease: timedelta,
) -> bool:
    """Handle the next page of the operation; True when it is finished."""
    now = clock()
    task_store.fence(conn, task["id"], token, now + lease)
    op = bulk_store.get_operation(conn, task["operation_id"], lock=True)
    if op is None or op["status"] in ("completed", "failed"):
        task_store.delete_task(conn, task["id"])
        return True
    filters = RunFilters.model_validate(op["filters"])
    page = run_queries.iter_run_ids(
        conn, op["tenant_id"], filters, after=_decode(op["cursor"]), limit=PAGE
    )
    actor = Actor(kind="bulk_operation", id=op["id"], label=op["created_by"])
    done = failed = 0
    errors = list(op["errors"])
    act = _cancel if op["kind"] == "cancel" else _replay
    run_ids = [run_id for run_id, _created in page]
    for run_id, exc in zip(run_ids, act(conn, op, run_ids, actor, now), strict=True):
        if exc is None:
            done += 1
            continue
        failed += 1
        if len(errors) < MAX_ERRORS:
            errors.append({"run_id": run_id, "code": exc.code, "detail": exc.detail})
    finished = len(page) < PAGE
    values: dict[str, Any] = {
        "matched": op["matched"] + len(page),
        "done": op["done"] + done,
        "failed": op["failed"] + failed,
        "errors": errors,
        "updated_at": now,
        "status": "completed" if finished else "running",
    }
    if page:
        last_id, last_created = page[-1]
        values["cursor"] = f"{last_created.isoformat()}|{last_id}"
    if finished:
        values["completed_at"] = now
        task_store.delete_task(conn, task["id"])
    bulk_store.update_operation(conn, op["id"], values)
    return finished


def operation_view(op: RowMapping) -> dict[str, Any]:
    """The wire form of a bulk operation."""

    return {
        "id": op["id"],
        "kind": op["kind"],
        "status": op["status"],
        "filters": op["filters"],
        "arguments": op["arguments"],
        "matched": op["matched"],
        "done": op["done"],
        "failed": op["failed"],
        "errors": op["errors"],
        "created_by": op["created_by"],
        "created_at": iso(op["created_at"]),
        "updated_at": iso(op["updated_at"]),
        "completed_at": iso(op["completed_at"]),
    }
