"""Run control: cancel, retry, replay, and bulk operations over the list filters."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Depends, Path, status

from conveyor.api.auth import require
from conveyor.api.deps import get_db, get_now
from conveyor.api.errors import problem_responses
from conveyor.api.routing import HygienicRoute
from conveyor.api.schemas.control import (
    BulkOperation,
    BulkRequest,
    CancelRequest,
    ReplayRequest,
    RetryRequest,
)
from conveyor.api.schemas.run_lists import RunSummary
from conveyor.domain.errors import RunNotFound
from conveyor.domain.ids import looks_like_id
from conveyor.domain.scopes import Scope
from conveyor.services import control
from conveyor.services.keys import Principal
from conveyor.store.db import Database

# Bulk routes first: `/runs/bulk/cancel` must not be taken for `/runs/{id}/cancel`.
bulk_router = APIRouter(prefix="/api/v1", tags=["bulk operations"], route_class=HygienicRoute)
router = APIRouter(prefix="/api/v1", tags=["run control"], route_class=HygienicRoute)

_WRITE = require(Scope.RUNS_WRITE)
_READ = require(Scope.RUNS_READ)
RunId = Path(description="the run's id")


def _run_id(run_id: str) -> str:
    if not looks_like_id(run_id):
        raise RunNotFound(f"run {run_id} not found")
    return str(UUID(run_id))


@router.post(
    "/runs/{run_id}/cancel",
    response_model=RunSummary,
    responses=problem_responses(400, 401, 403, 404, 409, 413, 422),
)
def cancel_run(
    body: CancelRequest | None = None,
    run_id: str = RunId,
    principal: Principal = Depends(_WRITE),
    db: Database = Depends(get_db),
    now: datetime = Depends(get_now),
) -> dict[str, Any]:
    """Cancel a pending, running or waiting run (409 `run_not_cancellable` otherwise).

    In-flight HTTP calls are aborted, timers cancelled, and unfinished steps
    become `cancelled`. The acting key and the reason go into the run's history.
    """
    reason = body.reason if body else None
    with db.transaction() as conn:
        return control.cancel(conn, principal, _run_id(run_id), reason=reason, now=now)


@router.post(
    "/runs/{run_id}/retry",
    response_model=RunSummary,
    status_code=status.HTTP_202_ACCEPTED,
    responses=problem_responses(400, 401, 403, 404, 409, 413, 422),
)
def retry_run(
    body: RetryRequest | None = None,
    run_id: str = RunId,
    principal: Principal = Depends(_WRITE),
    db: Database = Depends(get_db),
    now: datetime = Depends(get_now),
) -> dict[str, Any]:
    """Retry a finished run as a **new run** linked by `retry_of`; the original is not changed.

    `from_failed` reuses every completed step and resumes at the failed ones;
    `from_step` re-executes `step_key` and everything downstream of it;
    `full` runs everything again, optionally with a new `payload`. Reused steps
    show `reused_from` and are not executed. Both runs' histories record who
    retried, when and why.
    """
    b = body or RetryRequest()
    with db.transaction() as conn:
        return control.retry(
            conn,
            principal,
            _run_id(run_id),
            mode=b.mode,
            step_key=b.step_key,
            payload=b.payload,
            version=b.version,
            resend=b.resend,
            reason=b.reason,
            now=now,
        )


@router.post(
    "/runs/{run_id}/replay",
    response_model=RunSummary,
    status_code=status.HTTP_202_ACCEPTED,
    responses=problem_responses(400, 401, 403, 404, 409, 413, 422),
)
def replay_run(
    body: ReplayRequest | None = None,
    run_id: str = RunId,
    principal: Principal = Depends(_WRITE),
    db: Database = Depends(get_db),
    now: datetime = Depends(get_now),
) -> dict[str, Any]:
    """Replay a run: a retry `from_failed`, as a new run that never re-executes a completed step."""
    b = body or ReplayRequest()
    with db.transaction() as conn:
        return control.retry(
            conn,
            principal,
            _run_id(run_id),
            mode="from_failed",
            step_key=None,
            payload=None,
            version="original",
            resend=b.resend,
            reason=b.reason,
            now=now,
        )


def _bulk(
    kind: str, body: BulkRequest | None, principal: Principal, db: Database, now: datetime
) -> dict[str, Any]:
    b = body or BulkRequest()
    arguments = {"reason": b.reason, "resend": b.resend}
    with db.transaction() as conn:
        return control.start_bulk(
            conn,
            principal,
            kind,  # type: ignore[arg-type]
            b.filters.to_filters(),
            arguments=arguments,
            now=now,
        )


@bulk_router.post(
    "/runs/bulk/cancel",
    response_model=BulkOperation,
    status_code=status.HTTP_202_ACCEPTED,
    responses=problem_responses(400, 401, 403, 413, 422),
)
def bulk_cancel(
    body: BulkRequest | None = None,
    principal: Principal = Depends(_WRITE),
    db: Database = Depends(get_db),
    now: datetime = Depends(get_now),
) -> dict[str, Any]:
    """Cancel every pending, running or waiting run the filters match, in the background.

    Returns the operation at once; follow it at `GET /api/v1/bulk-operations/{id}`.
    Only runs created before the request are considered.
    """
    return _bulk("cancel", body, principal, db, now)


@bulk_router.post(
    "/runs/bulk/replay",
    response_model=BulkOperation,
    status_code=status.HTTP_202_ACCEPTED,
    responses=problem_responses(400, 401, 403, 413, 422),
)
def bulk_replay(
    body: BulkRequest | None = None,
    principal: Principal = Depends(_WRITE),
    db: Database = Depends(get_db),
    now: datetime = Depends(get_now),
) -> dict[str, Any]:
    """Replay (`from_failed`) every failed, exhausted, timed-out, cancelled or
    completed-with-errors run the filters match, in the background.

    Returns the operation at once; follow it at `GET /api/v1/bulk-operations/{id}`.
    Only runs created before the request are considered.
    """
    return _bulk("replay", body, principal, db, now)


@bulk_router.get(
    "/bulk-operations/{operation_id}",
    response_model=BulkOperation,
    responses=problem_responses(401, 403, 404),
)
def get_bulk_operation(
    operation_id: str = Path(description="the operation's id"),
    principal: Principal = Depends(_READ),
    db: Database = Depends(get_db),
) -> dict[str, Any]:
    """A bulk operation's progress: matched, done, failed, status, and the first errors."""
    if not looks_like_id(operation_id):
        raise control.BulkOperationNotFound(f"bulk operation {operation_id} not found")
    with db.read() as conn:
        return control.get_bulk(conn, principal.tenant_id, str(UUID(operation_id)))
