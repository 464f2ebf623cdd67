"""``/api/v1/dry-run-results``: what a dry run found, per simulated day and contact.

Browse and read with ``dry-runs:read``; delete one at a time with
``dry-runs:delete`` (there is deliberately no bulk delete).

Date filters (``conveyor.api.time_ranges``) take a day, or a range
``from..to`` (either end may be left out):

* ``run_at`` (the simulated day): days only, both ends inclusive, so
  ``run_at=2026-06-01..2026-06-07`` is the first week of June;
* ``created_at`` and ``updated_at``: also an RFC 3339 time (the span of its
  precision: a second, a millisecond...), and ranges whose ends are days or
  times; the start is inclusive, an end day is included whole and an end time
  is exclusive.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import StringConstraints, TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from conveyor.api.auth import require
from conveyor.api.deps import get_db
from conveyor.api.errors import problem_responses
from conveyor.api.list_filters import decode_position, encode_position, merge_filters
from conveyor.api.pagination import PageParams, page_params
from conveyor.api.routing import HygienicRoute, reads_filters
from conveyor.api.run_filters import Id
from conveyor.api.schemas.common import Page
from conveyor.api.schemas.dry_run_results import DryRunResult
from conveyor.api.time_ranges import (
    DAY_RANGE_PATTERN,
    TIME_RANGE_PATTERN,
    DayRange,
    Days,
    TimeRange,
    Times,
)
from conveyor.domain.scopes import Scope
from conveyor.services import dry_run_results as service
from conveyor.services.dry_run_results import ResultFilters
from conveyor.services.keys import Principal
from conveyor.store.db import Database

router = APIRouter(prefix="/api/v1/dry-run-results", tags=["dry runs"], route_class=HygienicRoute)

_READ = require(Scope.DRY_RUNS_READ)
_DELETE = require(Scope.DRY_RUNS_DELETE)

Status = Literal["success", "failed", "skipped"]
ResultType = Annotated[str, StringConstraints(min_length=1, max_length=32)]
Requester = Annotated[str, StringConstraints(min_length=1, max_length=200)]

_ADAPTERS: dict[str, TypeAdapter[Any]] = {
    "dry_run_id": TypeAdapter(Id),
    "automation_id": TypeAdapter(Id),
    "run_at": TypeAdapter(Days),
    "profile_id": TypeAdapter(Id),
    "status": TypeAdapter(Status),
    "result_type": TypeAdapter(ResultType),
    "result_id": TypeAdapter(Id),
    "requested_by": TypeAdapter(Requester),
    "created_at": TypeAdapter(Times),
    "updated_at": TypeAdapter(Times),
}
_RANGES = ("run_at", "created_at", "updated_at")


@reads_filters(_ADAPTERS)
async def _filters(
    request: Request,
    dry_run_id: Id | None = Query(None, description="only results of this dry run"),
    automation_id: Id | None = Query(None, description="only results of this automation"),
    run_at: str | None = Query(
        None,
        json_schema_extra={"pattern": DAY_RANGE_PATTERN},
        description="the simulated day: `2026-06-01`, or a range of days "
        "`2026-06-01..2026-06-07` (inclusive; either end may be left out)",
    ),
    profile_id: Id | None = Query(None, description="only results about this contact"),
    status: Status | None = Query(None, description="only results with this outcome"),
    result_type: ResultType | None = Query(None, description="only this kind of result object"),
    result_id: Id | None = Query(None, description="only the result naming this simulated run"),
    requested_by: Requester | None = Query(
        None,
        description="only results of dry runs requested by this key: its label, or its "
        "id for a key without one (as the results' `requested_by` shows it)",
    ),
    created_at: str | None = Query(
        None,
        json_schema_extra={"pattern": TIME_RANGE_PATTERN},
        description="a UTC day, an RFC 3339 time (the span of its precision: that second, "
        "that millisecond...), or a range `from..to` of days or times (start inclusive; an "
        "end day is included whole, an end time is exclusive; either end may be left out)",
    ),
    updated_at: str | None = Query(
        None,
        json_schema_extra={"pattern": TIME_RANGE_PATTERN},
        description="as `created_at`, for the last update",
    ),
) -> ResultFilters:
    # The date filters are checked here rather than by FastAPI so that both
    # spellings share one parser (and one error message).
    errors: list[dict[str, Any]] = []
    ranges: dict[str, Any] = {}
    for name, raw in (("run_at", run_at), ("created_at", created_at), ("updated_at", updated_at)):
        if raw is None:
            continue
        try:
            ranges[name] = _ADAPTERS[name].validate_python(raw)
        except PydanticValidationError as exc:
            errors.extend(
                {"loc": ("query", name), "msg": e["msg"], "type": e["type"]} for e in exc.errors()
            )
    if errors:
        raise RequestValidationError(errors)
    plain = {
        "dry_run_id": dry_run_id,
        "automation_id": automation_id,
        "profile_id": profile_id,
        "status": status,
        "result_type": result_type,
        "result_id": result_id,
        "requested_by": requested_by,
        **{name: ranges.get(name) for name in _RANGES},
    }
    merged = merge_filters(request, plain, _ADAPTERS)
    days: DayRange = merged.pop("run_at", DayRange(None, None))
    created: TimeRange = merged.pop("created_at", TimeRange(None, None))
    updated: TimeRange = merged.pop("updated_at", TimeRange(None, None))
    return ResultFilters(
        **merged,
        run_at_from=days.start,
        run_at_to=days.end,
        created_from=created.start,
        created_before=created.end,
        updated_from=updated.start,
        updated_before=updated.end,
    )


ResultId = Path(description="the result's id")


@router.get("", response_model=Page[DryRunResult], responses=problem_responses(401, 403, 422))
def list_results(
    paging: PageParams = Depends(page_params),
    filters: ResultFilters = Depends(_filters),
    principal: Principal = Depends(_READ),
    db: Database = Depends(get_db),
) -> dict[str, Any]:
    """List the tenant's dry-run results, newest first.

    Filters (all given must hold; each also answers to `filter[name]=`):
    `dry_run_id`, `automation_id`, `run_at`, `profile_id`, `status`,
    `result_type`, `result_id`, `requested_by`, `created_at`, `updated_at`.
    `run_at` is a day or a range of days `from..to`; `created_at` and
    `updated_at` also take an RFC 3339 time, alone or as a range end. Page with
    `limit` and `offset`, or `cursor`.
    """
    after = decode_position(paging.cursor)
    offset = 0 if after is not None else paging.offset
    with db.read() as conn:
        page, last = service.list_results(
            conn, principal.tenant_id, filters, limit=paging.limit, offset=offset, after=after
        )
    return {
        "items": page.items,
        "total": page.total,
        "limit": paging.limit,
        "offset": offset,
        "next_cursor": encode_position(*last) if last is not None else None,
    }


@router.get("/{result_id}", response_model=DryRunResult, responses=problem_responses(401, 403, 404))
def get_result(
    result_id: str = ResultId,
    principal: Principal = Depends(_READ),
    db: Database = Depends(get_db),
) -> dict[str, Any]:
    """One result: what would have happened, step by step, for this contact and day."""
    with db.read() as conn:
        return service.get_result(conn, principal.tenant_id, result_id)


@router.delete(
    "/{result_id}",
    status_code=204,
    response_class=Response,
    responses=problem_responses(401, 403, 404),
)
def delete_result(
    result_id: str = ResultId,
    principal: Principal = Depends(_DELETE),
    db: Database = Depends(get_db),
) -> Response:
    """Delete one result and its simulated run (a real run is never touched).

    There is no bulk delete: each result is reviewed and removed on its own.
    """
    with db.transaction() as conn:
        service.delete_result(conn, principal.tenant_id, result_id)
    return Response(status_code=204)
