"""Sovrium's Automation Runs API (seed 003), over the services of `/api/v1/runs`.

- `GET /api/automations/runs`: runs, newest first, filtered by `status`
  (repeatable), `automationName`, `automationId`; paged with `limit` (1-1000,
  default 100) and `offset`, or `cursor` (`pagination.nextCursor`).
- `GET /api/automations/runs/{id}`: one run with its per-step results.
- `POST /api/automations/runs/{id}/replay`: a new run resuming from the first
  failed step (completed steps are reused, never re-executed); 202.
- `POST /api/automations/runs/{id}/cancel`: cancel a pending or running run.

Both POSTs take no body (an optional JSON `{"reason": ...}` is written into
the run's history). Authenticate with `Authorization: Bearer <API key>`,
`X-API-Key`, or the console's session cookie; reading needs `runs:read`, replay and cancel
`runs:write`. Names are camelCase; each run and step has Sovrium's `status`
and Conveyor's exact one as `conveyorStatus` (a `waiting` run shows as
`running`). Every error, unknown query parameters included, is
`{"error": {"code", "message", "status", "details"?}}`.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Query, status
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Match, Route
from starlette.types import Scope as AsgiScope

from conveyor.api.auth import require
from conveyor.api.compat.seed003_schemas import (
    ErrorResponse,
    SeedRun,
    SeedRunDetail,
    SeedRunPage,
)
from conveyor.api.compat.seed003_shape import (
    RUNS_OF_STATUS,
    SeedRunStatus,
    answer_error,
    detail_view,
    page_view,
    run_view,
)
from conveyor.api.compat.seed003_shape import from_problem as from_problem
from conveyor.api.deps import get_db, get_now, get_settings
from conveyor.api.pagination import PageParams, invalid_cursor, page_params
from conveyor.api.routing import HygienicRoute
from conveyor.api.run_filters import Id, Name
from conveyor.api.schemas.control import CancelRequest, ReplayRequest
from conveyor.domain.errors import InvalidCursor, RunNotFound
from conveyor.domain.ids import looks_like_id
from conveyor.domain.run_filters import RunFilters
from conveyor.domain.scopes import Scope
from conveyor.services import control, run_lists
from conveyor.services.keys import Principal
from conveyor.services.runs import get_run_detail
from conveyor.settings import Settings
from conveyor.store.db import Database

TITLE = "seed 003 (Sovrium automation runs)"


class SeedRoute(HygienicRoute):
    """Conveyor's route, answering every error in Sovrium's error object."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """The hygienic handler; what it raises goes through the app's handlers, then reshaped."""
        handler = super().get_route_handler()

        async def seed_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                answer = await answer_error(request, exc)
                if answer is None:
                    raise
                return answer

        return seed_handler


def _methods_at(scope: AsgiScope) -> set[str]:
    """Every method some route of this API takes at the scope's path."""
    return {
        m
        for r in router.routes
        if isinstance(r, SeedRoute) and r.matches(scope)[0] is not Match.NONE
        for m in r.methods or ()
    }


async def _refusal(request: Request) -> Response:
    """A path or method no route of this API takes, answered as the app answers it.

    A trailing slash is redirected (307) as Starlette redirects it elsewhere; a
    wrong method is 405 with ``Allow``, anything else 404, in the seed's shape.
    """
    path = request.url.path
    if path.endswith("/") and _methods_at({**request.scope, "path": path.rstrip("/")}):
        return RedirectResponse(request.url.replace(path=path.rstrip("/")))
    allowed = _methods_at(request.scope)
    if allowed:
        exc = HTTPException(405, headers={"Allow": ", ".join(sorted(allowed))})
    else:
        exc = HTTPException(404)
    answer = await answer_error(request, exc)
    assert answer is not None  # the app handles every HTTPException
    return answer


router = APIRouter(prefix="/api/automations/runs", tags=["seed 003"], route_class=SeedRoute)

_READ = require(Scope.RUNS_READ)
_WRITE = require(Scope.RUNS_WRITE)
RunId = Path(description="the run's id (a UUID)")


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"model": ErrorResponse} for s in statuses}


def _run_id(run_id: str) -> str:
    if not looks_like_id(run_id):
        raise RunNotFound(f"run {run_id} not found")
    return str(UUID(run_id))


async def _filters(
    run_status: list[SeedRunStatus] | None = Query(
        None,
        alias="status",
        description="only runs in one of these statuses (repeat the parameter); "
        "`running` includes Conveyor's `waiting`",
    ),
    automation_name: Name | None = Query(
        None, alias="automationName", description="only runs of the automation with this name"
    ),
    automation_id: Id | None = Query(
        None, alias="automationId", description="only runs of this automation (its id)"
    ),
) -> RunFilters:
    statuses = tuple(dict.fromkeys(c for s in run_status or () for c in RUNS_OF_STATUS[s]))
    return RunFilters(status=statuses, automation_name=automation_name, automation_id=automation_id)


@router.get("", response_model=SeedRunPage, responses=_errors(401, 403, 422))
def list_runs(
    paging: PageParams = Depends(page_params),
    filters: RunFilters = Depends(_filters),
    principal: Principal = Depends(_READ),
    db: Database = Depends(get_db),
) -> dict[str, Any]:
    """List runs, newest first: `{runs, pagination: {total, limit, offset, hasMore, ...}}`."""
    try:
        with db.read() as conn:
            page = run_lists.list_runs(
                conn,
                principal.tenant_id,
                filters,
                limit=paging.limit,
                offset=paging.offset,
                cursor=paging.cursor,
            )
    except InvalidCursor as exc:
        raise invalid_cursor(exc.detail) from None
    return page_view(page)


@router.get("/{run_id}", response_model=SeedRunDetail, responses=_errors(401, 403, 404))
def get_run(
    run_id: str = RunId,
    principal: Principal = Depends(_READ),
    db: Database = Depends(get_db),
    settings: Settings = Depends(get_settings),
) -> dict[str, Any]:
    """One run: trigger payload, outcome, and each started step's status and output."""
    with db.read() as conn:
        detail = get_run_detail(
            conn, principal.tenant_id, _run_id(run_id), inline_limit=settings.inline_output_bytes
        )
    return detail_view(detail)


@router.post(
    "/{run_id}/replay",
    response_model=SeedRun,
    status_code=status.HTTP_202_ACCEPTED,
    responses=_errors(400, 401, 403, 404, 409, 413, 415, 422),
)
def replay_run(
    body: ReplayRequest | None = None,
    run_id: str = RunId,
    principal: Principal = Depends(_WRITE),
    db: Database = Depends(get_db),
    now: datetime = Depends(get_now),
) -> dict[str, Any]:
    """Replay a run as a new run (`replayOf`), resuming from the first failed step."""
    b = body or ReplayRequest()
    with db.transaction() as conn:
        run = control.retry(
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
    return run_view(run)


@router.post(
    "/{run_id}/cancel",
    response_model=SeedRun,
    responses=_errors(400, 401, 403, 404, 409, 413, 415, 422),
)
def cancel_run(
    body: CancelRequest | None = None,
    run_id: str = RunId,
    principal: Principal = Depends(_WRITE),
    db: Database = Depends(get_db),
    now: datetime = Depends(get_now),
) -> dict[str, Any]:
    """Cancel a pending or running run (409 `run_not_cancellable` once it has finished)."""
    reason = body.reason if body else None
    with db.transaction() as conn:
        run = control.cancel(conn, principal, _run_id(run_id), reason=reason, now=now)
    return run_view(run)


# Last: what no route above takes, for every method (Starlette would answer a
# wrong method or path itself, in problem+json). `{rest:path}` also matches
# nothing, for the list's own path. A plain Starlette route, so no strict query
# check: an unknown path is a 404 whatever its query.
router.routes.append(
    Route(
        "/api/automations/runs{rest:path}",
        _refusal,
        methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        include_in_schema=False,
    )
)


# Where this adapter answers: an error raised before its routes (a body over the
# size limit, an idempotency conflict) is turned into its shape by compat.SeedErrors,
# with the same converter its route class uses (seed003_shape.from_problem).
PREFIXES = ("/api/automations/runs",)
