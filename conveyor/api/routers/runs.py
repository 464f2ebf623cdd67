"""``/api/v1/runs``: run lists, run detail, steps and step outputs."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response

from conveyor.api.auth import require
from conveyor.api.deps import get_db, get_settings
from conveyor.api.errors import problem_responses
from conveyor.api.pagination import PageParams, invalid_cursor, page_params
from conveyor.api.routing import HygienicRoute
from conveyor.api.run_filters import automation_run_filters, run_list_filters
from conveyor.api.safe_json import to_json
from conveyor.api.schemas.run_detail import RunDetail
from conveyor.api.schemas.run_lists import RunPage, RunSteps, StepOutput
from conveyor.domain.errors import InvalidCursor, RunNotFound
from conveyor.domain.ids import looks_like_id
from conveyor.domain.run_filters import RunFilters
from conveyor.domain.scopes import Scope
from conveyor.services import run_lists
from conveyor.services.keys import Principal
from conveyor.services.runs import get_run_detail
from conveyor.settings import Settings
from conveyor.store.db import Database

router = APIRouter(prefix="/api/v1", tags=["runs"], route_class=HygienicRoute)

_READ = require(Scope.RUNS_READ)

RunId = Path(description="the run's id")
AutomationRef = Path(description="the automation's id, or its name", examples=["order-follow-up"])

_LIST_DOC = """

Newest first. Page with `limit` (1-1000, default 100) and `offset`, or with
`cursor` (the previous page's `next_cursor`: stable while runs are being added).
Every filter also answers to `filter[name]=`; all given filters must hold.
Items carry no step data; `total` is exact up to 10,000 matching runs, beyond
that `total_exact` is false and `total` is a lower bound. A malformed cursor is
a 422 `invalid_cursor`.

Payload search: `payload.<path>=<value>` (the parameter's name carries the path,
object keys joined by dots: `?payload.order.id=123`), one path per request; the
value matches a JSON string equal to it, or the number, `true`, `false` or
`null` it spells. On SQLite it needs `created_after` (or `created_at` with a
start): 422 `payload_filter_needs_window` otherwise.
"""


def _run_id(run_id: str) -> str:
    """The canonical form of a run id from a path; 404 if it cannot be one."""
    if not looks_like_id(run_id):
        raise RunNotFound(f"run {run_id} not found")
    return str(UUID(run_id))


def _page_response(page: dict[str, Any], where: str) -> Response:
    """A run page written to JSON in one pass, without validating it against ``RunPage``.

    Validating 1,000 summaries and writing them back out cost four times
    what writing the page does, and the page is built by our own code from
    stored columns, not from input. ``RunPage`` still documents the answer;
    that the two agree is checked by a contract test (tests/api/test_run_lists:
    the body is what ``RunPage`` validates and writes back byte for byte) and
    by schemathesis's response checks.
    """
    return Response(to_json(page, where=where), media_type="application/json")


@router.get(
    "/runs",
    response_model=RunPage,
    responses=problem_responses(401, 403, 422),
    description=("List the tenant's runs." + _LIST_DOC),
)
def list_runs(
    request: Request,
    paging: PageParams = Depends(page_params),
    filters: RunFilters = Depends(run_list_filters),
    principal: Principal = Depends(_READ),
    db: Database = Depends(get_db),
) -> Any:
    """List the tenant's runs."""
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
    return _page_response(page, f"GET {request.url.path}")


@router.get(
    "/automations/{automation_id}/runs",
    response_model=RunPage,
    responses=problem_responses(401, 403, 404, 422),
    description="List one automation's runs (by its id or name)." + _LIST_DOC,
)
def list_automation_runs(
    request: Request,
    automation_id: str = AutomationRef,
    paging: PageParams = Depends(page_params),
    filters: RunFilters = Depends(automation_run_filters),
    principal: Principal = Depends(_READ),
    db: Database = Depends(get_db),
) -> Any:
    """List one automation's runs; 404 `automation_not_found` if there is no such automation."""
    try:
        with db.read() as conn:
            page = run_lists.list_automation_runs(
                conn,
                principal.tenant_id,
                automation_id,
                filters,
                limit=paging.limit,
                offset=paging.offset,
                cursor=paging.cursor,
            )
    except InvalidCursor as exc:
        raise invalid_cursor(exc.detail) from None
    return _page_response(page, f"GET {request.url.path}")


@router.get(
    "/runs/{run_id}",
    response_model=RunDetail,
    responses=problem_responses(401, 403, 404),
)
def get_run(
    run_id: str = RunId,
    principal: Principal = Depends(_READ),
    db: Database = Depends(get_db),
    settings: Settings = Depends(get_settings),
) -> dict[str, Any]:
    """One run: trigger event, identity, steps with their attempts, and the last error.

    Step outputs over the inline limit are left out, with `result_truncated: true`
    and their `result_size`.
    """
    with db.read() as conn:
        return get_run_detail(
            conn, principal.tenant_id, _run_id(run_id), inline_limit=settings.inline_output_bytes
        )


@router.get(
    "/runs/{run_id}/steps",
    response_model=RunSteps,
    responses=problem_responses(401, 403, 404),
)
def get_run_steps(
    run_id: str = RunId,
    principal: Principal = Depends(_READ),
    db: Database = Depends(get_db),
    settings: Settings = Depends(get_settings),
) -> dict[str, Any]:
    """A run's steps in definition order, with `depends_on`, attempts, durations and outputs.

    Counts per step status come as `counts` and as `completed_count`,
    `failed_count`, ... Outputs over the inline limit are left out, with
    `result_truncated: true`; get them from `/runs/{id}/steps/{key}/output`.
    """
    with db.read() as conn:
        return run_lists.steps_overview(
            conn, principal.tenant_id, _run_id(run_id), settings.inline_output_bytes
        )


@router.get(
    "/runs/{run_id}/steps/{step_key}/output",
    response_model=StepOutput,
    responses=problem_responses(401, 403, 404),
)
def get_step_output(
    run_id: str = RunId,
    step_key: str = Path(description="the step's key"),
    principal: Principal = Depends(_READ),
    db: Database = Depends(get_db),
) -> dict[str, Any]:
    """A step's whole output, however large (run views cut outputs at the inline limit).

    404 `step_not_found` if the run has no such step, `output_not_available` if
    the step has no output (it has not completed).
    """
    with db.read() as conn:
        return run_lists.step_output(conn, principal.tenant_id, _run_id(run_id), step_key)
