"""Seed 002's automation runs API at `/api/v1/automation-runs` (see docs/seeds.md).

List (`status`, `limit` up to 1000, `offset`; `{items, total}`), get, cancel,
retry (`mode`, `stepKey`), steps and events (a server-sent event stream),
with camelCase names. Authenticate with `Authorization: Bearer <key>`,
`X-API-Key`, or the `vai_token` cookie (Conveyor's `conveyor_token` too); a
POST authenticated by a cookie alone must pass Conveyor's CSRF check. Errors
are `{"detail": ...}`, a 422 `{"detail": [{loc, msg, type}]}`.

Every route calls what `/api/v1/runs` calls; they come after Conveyor's own
routers, and no Conveyor path starts with `/api/v1/automation-runs`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request

from conveyor.api.compat.seed002_wire import (
    RetryRequest,
    Run,
    RunList,
    RunSteps,
    VaiRoute,
    VaiScope,
    camel,
    error_responses,
    run_out,
    steps_out,
)
from conveyor.api.deps import get_db, get_now, get_settings
from conveyor.api.pagination import MAX_INT, MAX_LIMIT
from conveyor.api.routers import run_events
from conveyor.api.schemas.run_lists import RunSummary
from conveyor.api.streams import EVENT_STREAM
from conveyor.domain.run_filters import RunFilters
from conveyor.domain.scopes import Scope
from conveyor.domain.status import RunStatus
from conveyor.services import control, run_lists
from conveyor.services.keys import Principal
from conveyor.services.runs import get_run_detail
from conveyor.settings import Settings
from conveyor.store.db import Database

TITLE = "seed 002 (automation runs, camelCase)"

router = APIRouter(prefix="/api/v1/automation-runs", tags=["automation runs"], route_class=VaiRoute)

_READ = VaiScope(Scope.RUNS_READ)
_WRITE = VaiScope(Scope.RUNS_WRITE)
RunId = Path(description="the run's id")


@router.get("", response_model=RunList, responses=error_responses(401, 403, 429))
def list_runs(
    status: RunStatus | None = Query(None, description="only runs in this status"),
    limit: int = Query(100, ge=1, le=MAX_LIMIT, description="page size"),
    offset: int = Query(0, ge=0, le=MAX_INT, description="runs to skip"),
    principal: Principal = Depends(_READ),
    db: Database = Depends(get_db),
) -> dict[str, Any]:
    """The tenant's runs, newest first; `total` counts the matching runs over all pages
    (exact up to 10,000, a lower bound past that)."""
    filters = RunFilters(status=(status,) if status else ())
    with db.read() as conn:
        page = run_lists.list_runs(
            conn, principal.tenant_id, filters, limit=limit, offset=offset, cursor=None
        )
    return {"items": [run_out(r) for r in page["items"]], "total": page["total"]}


@router.get("/{run_id}", response_model=Run, responses=error_responses(401, 403, 404, 429))
def get_run(
    run_id: UUID = RunId,
    principal: Principal = Depends(_READ),
    db: Database = Depends(get_db),
) -> dict[str, Any]:
    """One run (404 if the tenant has no such run)."""
    with db.read() as conn:
        detail = get_run_detail(conn, principal.tenant_id, str(run_id), inline_limit=0)
    return run_out({k: detail[k] for k in RunSummary.model_fields if k in detail})


@router.post(
    "/{run_id}/cancel", response_model=Run, responses=error_responses(401, 403, 404, 409, 429)
)
def cancel_run(
    run_id: UUID = RunId,
    principal: Principal = Depends(_WRITE),
    db: Database = Depends(get_db),
    now: datetime = Depends(get_now),
) -> dict[str, Any]:
    """Cancel a pending, running or waiting run (409 `run_not_cancellable` otherwise)."""
    with db.transaction() as conn:
        return run_out(control.cancel(conn, principal, str(run_id), reason=None, now=now))


@router.post(
    "/{run_id}/retry", response_model=Run, responses=error_responses(401, 403, 404, 409, 429)
)
def retry_run(
    body: RetryRequest | None = Body(None),
    run_id: UUID = RunId,
    principal: Principal = Depends(_WRITE),
    db: Database = Depends(get_db),
    now: datetime = Depends(get_now),
) -> dict[str, Any]:
    """Retry a finished run as a new run (returned), linked by `retryOf`.

    `from_failed` reuses the completed steps; `from_step` re-runs `stepKey` and
    everything downstream of it; `full` runs everything again.
    """
    b = body or RetryRequest()
    with db.transaction() as conn:
        new_run = control.retry(
            conn,
            principal,
            str(run_id),
            mode=b.mode,
            step_key=b.step_key,
            payload=b.payload,
            version=b.version,
            resend=b.resend,
            reason=b.reason,
            now=now,
        )
    return run_out(new_run)


@router.get(
    "/{run_id}/steps", response_model=RunSteps, responses=error_responses(401, 403, 404, 429)
)
def get_run_steps(
    run_id: UUID = RunId,
    principal: Principal = Depends(_READ),
    db: Database = Depends(get_db),
    settings: Settings = Depends(get_settings),
) -> dict[str, Any]:
    """The run's steps in definition order with a count per status; an output over the
    inline limit is left out (`result: null`, `resultTruncated: true`)."""
    with db.read() as conn:
        overview = run_lists.steps_overview(
            conn, principal.tenant_id, str(run_id), settings.inline_output_bytes
        )
    return steps_out(overview)


@router.get(
    "/{run_id}/events",
    response_model=None,
    responses={
        200: {
            "description": "the run's history as server-sent events (JSON with "
            "`Accept: application/json`)",
            "content": {EVENT_STREAM: {"schema": {"type": "string"}}},
        },
        **error_responses(401, 403, 404, 429),
    },
)
def stream_run_events(
    request: Request,
    run_id: UUID = RunId,
    after: int = Query(0, ge=0, le=MAX_INT, description="only lines after this `seq`"),
    limit: int = Query(100, ge=1, le=MAX_LIMIT, description="page size (JSON only)"),
    accept: str | None = Header(None, include_in_schema=False),
    last_event_id: str | None = Header(
        None, alias="Last-Event-ID", description="resume the stream after this `seq`"
    ),
    principal: Principal = Depends(_READ),
    db: Database = Depends(get_db),
) -> Any:
    """The run's history as a stream, whatever the `Accept` (unless it asks for JSON only).

    Each event's `id` is the line's `seq`, its `event` the line's `type`, its
    `data` the line as JSON. A finished run's stream sends the whole history
    and ends; a live one follows the run until it ends.
    """
    wants_json = accept is not None and "json" in accept.lower() and EVENT_STREAM not in accept
    answer = run_events.run_events(
        request,
        run_id=str(run_id),
        after=after,
        limit=limit,
        accept="application/json" if wants_json else EVENT_STREAM,
        last_event_id=last_event_id,
        principal=principal,
        db=db,
    )
    if wants_json:
        return {
            "items": [camel(line) for line in answer["items"]],
            "nextAfter": answer["next_after"],
        }
    return answer


# Where this adapter answers: an error raised before its routes (a body over the
# size limit, an idempotency conflict) is turned into its shape by compat.SeedErrors.
PREFIXES = ("/api/v1/automation-runs",)


def from_problem(status: int, problem: dict[str, Any]) -> dict[str, Any]:
    """A problem+json body, as this seed's error."""
    if status == 422:
        items = problem.get("errors") or []
        return {"detail": [{k: e.get(k) for k in ("loc", "msg", "type")} for e in items]}
    return {"detail": problem.get("detail", ""), "code": problem.get("code")}
