"""Seed 000's API (Omneo's dry runs, docs/seeds/000.md), over Conveyor's dry-run services.

- ``POST /v3/automations/{automation}/trigger`` with ``dry_run: true`` (and
  optionally ``start_date``/``end_date``): 202, the dry run is simulated in the
  background, as ``POST /api/v1/automations/{id}/trigger`` does it.
- ``GET /v3/automation-dry-run-results``: the results, newest first, with the
  nine ``filter[...]`` of the document, paged with ``page`` and ``per_page``.
- ``GET`` / ``DELETE /v3/automation-dry-run-results/{id}``: one result (no bulk delete).

Bodies are wrapped in ``data`` (lists add ``links`` and ``meta``); errors are
``{"message", "code"}``, and a 422 adds ``errors``: each field's messages.
Keys are sent as for ``/api/v1``; the scopes ``read-reactions`` and
``delete-reactions`` are other names for ``dry-runs:read`` and ``dry-runs:delete``.
Ids are UUID strings, not integers.
"""

from __future__ import annotations

import math
from datetime import date, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from conveyor.api.auth import require
from conveyor.api.compat.seed000_errors import ERRORS, Seed000Route, _field
from conveyor.api.deps import get_db, get_now, get_settings
from conveyor.api.pagination import MAX_INT, MAX_LIMIT
from conveyor.api.routers.dry_run_results import Requester, ResultType, Status
from conveyor.api.run_filters import Id
from conveyor.api.schemas.dry_run_results import DryRunResult
from conveyor.api.schemas.dry_runs import DryRun
from conveyor.api.time_ranges import (
    DAY_RANGE_PATTERN,
    TIME_RANGE_PATTERN,
    DayRange,
    Days,
    TimeRange,
    Times,
)
from conveyor.domain.scopes import Scope
from conveyor.domain.wire_types import PositiveInteger
from conveyor.services import dry_run_results as result_service
from conveyor.services import dry_runs as dry_run_service
from conveyor.services.dry_run_results import ResultFilters
from conveyor.services.keys import Principal
from conveyor.settings import Settings
from conveyor.store.db import Database

TITLE = "seed 000 (Omneo automation dry runs)"

DEFAULT_PER_PAGE = 15  # Laravel's, whose paginator this list's envelope follows


router = APIRouter(prefix="/v3", tags=["seed 000"], route_class=Seed000Route)

_TRIGGER = require(Scope.AUTOMATIONS_TRIGGER)
_READ = require(Scope.DRY_RUNS_READ)  # also granted as `read-reactions`
_DELETE = require(Scope.DRY_RUNS_DELETE)  # also granted as `delete-reactions`


class DryRunTrigger(BaseModel):
    """The trigger's body: a dry run (real runs are started on `/api/v1`)."""

    model_config = ConfigDict(extra="forbid")

    dry_run: Literal[True] = Field(description="must be true: this endpoint only simulates")
    start_date: date | None = Field(
        None, description="first day simulated (YYYY-MM-DD); default `end_date`, else today"
    )
    end_date: date | None = Field(
        None, description="last day simulated, inclusive; default `start_date`, else today"
    )
    timezone: str | None = Field(
        None, max_length=64, description="Conveyor's: the IANA zone the days are local to"
    )
    profile_ids: list[str] | None = Field(
        None,
        min_length=1,
        max_length=10_000,
        description="Conveyor's: the contacts to simulate (required for a manual trigger)",
    )
    version: PositiveInteger | None = Field(
        None, description="Conveyor's: the version to simulate; default the current one"
    )
    payload: dict[str, Any] = Field(
        default_factory=dict, description="Conveyor's: a manual trigger's simulated payload"
    )


class DryRunData(BaseModel):
    """The dry run requested."""

    data: DryRun


@router.post(
    "/automations/{automation}/trigger",
    status_code=202,
    response_model=DryRunData,
    responses=ERRORS,
)
def trigger_dry_run(
    response: Response,
    automation: str = Path(description="the automation's id (a UUID) or name"),
    body: DryRunTrigger = Body(),
    principal: Principal = Depends(_TRIGGER),
    db: Database = Depends(get_db),
    now: datetime = Depends(get_now),
    settings: Settings = Depends(get_settings),
) -> dict[str, Any]:
    """Simulate the automation over `start_date`..`end_date`; 202, results come later.

    Needs `automations:trigger`. Follow the dry run at `/api/v1/dry-runs/{id}`
    (its `Location`), and read its results below.
    """
    with db.transaction() as conn:
        dry_run = dry_run_service.request_dry_run(
            conn,
            principal.tenant_id,
            automation,
            start_date=body.start_date,
            end_date=body.end_date,
            timezone=body.timezone,
            profile_ids=body.profile_ids,
            version=body.version,
            payload=body.payload,
            requested_by=principal.requester,
            max_days=settings.dry_run_max_days,
            history_days=settings.retention_events_days,
            now=now,
        )
    response.headers["Location"] = f"/api/v1/dry-runs/{dry_run['id']}"
    return {"data": dry_run}


_FILTERS: dict[str, TypeAdapter[Any]] = {
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


def _filters(
    automation_id: Annotated[
        str | None, Query(alias="filter[automation_id]", description="this automation's")
    ] = None,
    run_at: Annotated[
        str | None,
        Query(
            alias="filter[run_at]",
            description="the simulated day `YYYY-MM-DD`, or a range `from..to` (inclusive)",
            json_schema_extra={"pattern": DAY_RANGE_PATTERN},
        ),
    ] = None,
    profile_id: Annotated[
        str | None, Query(alias="filter[profile_id]", description="about this contact")
    ] = None,
    status: Annotated[
        str | None,
        Query(alias="filter[status]", description="`success`, `failed` or `skipped`"),
    ] = None,
    result_type: Annotated[
        str | None, Query(alias="filter[result_type]", description="`run` (a simulated run)")
    ] = None,
    result_id: Annotated[
        str | None, Query(alias="filter[result_id]", description="naming this simulated run")
    ] = None,
    requested_by: Annotated[
        str | None,
        Query(alias="filter[requested_by]", description="the requesting key's label, or id"),
    ] = None,
    created_at: Annotated[
        str | None,
        Query(
            alias="filter[created_at]",
            description="a UTC day, an RFC 3339 time (the span of its precision), or a range "
            "`from..to` of them (start inclusive, an end day whole, an end time exclusive)",
            json_schema_extra={"pattern": TIME_RANGE_PATTERN},
        ),
    ] = None,
    updated_at: Annotated[
        str | None,
        Query(
            alias="filter[updated_at]",
            description="as `filter[created_at]`, for the last update",
            json_schema_extra={"pattern": TIME_RANGE_PATTERN},
        ),
    ] = None,
) -> ResultFilters:
    """The nine filters, checked with `/api/v1/dry-run-results`' own types."""
    given = {
        "automation_id": automation_id,
        "run_at": run_at,
        "profile_id": profile_id,
        "status": status,
        "result_type": result_type,
        "result_id": result_id,
        "requested_by": requested_by,
        "created_at": created_at,
        "updated_at": updated_at,
    }
    values: dict[str, Any] = {}
    errors: list[dict[str, Any]] = []
    for name, raw in given.items():
        if raw is None:
            continue
        try:
            values[name] = _FILTERS[name].validate_python(raw)
        except PydanticValidationError as exc:
            loc = ("query", f"filter[{name}]")
            errors.extend({"loc": loc, "msg": e["msg"], "type": e["type"]} for e in exc.errors())
    if errors:
        raise RequestValidationError(errors)
    days: DayRange = values.pop("run_at", DayRange(None, None))
    created: TimeRange = values.pop("created_at", TimeRange(None, None))
    updated: TimeRange = values.pop("updated_at", TimeRange(None, None))
    return ResultFilters(
        **values,
        run_at_from=days.start,
        run_at_to=days.end,
        created_from=created.start,
        created_before=created.end,
        updated_from=updated.start,
        updated_before=updated.end,
    )


class Links(BaseModel):
    """Links to the other pages of the list (null where there is none)."""

    first: str
    last: str
    prev: str | None
    next: str | None


class Meta(BaseModel):
    """Where this page lies in the list."""

    current_page: int
    from_: int | None = Field(alias="from", description="the first item's position (1-based)")
    last_page: int
    path: str
    per_page: int
    to: int | None = Field(description="the last item's position")
    total: int


class ResultPage(BaseModel):
    """A page of results."""

    data: list[DryRunResult]
    links: Links
    meta: Meta


class ResultData(BaseModel):
    """One result."""

    data: DryRunResult


@router.get("/automation-dry-run-results", response_model=ResultPage, responses=ERRORS)
def list_results(
    request: Request,
    page: int = Query(1, ge=1, le=MAX_INT, description="the page, from 1"),
    per_page: int = Query(DEFAULT_PER_PAGE, ge=1, le=MAX_LIMIT, description="page size"),
    filters: ResultFilters = Depends(_filters),
    principal: Principal = Depends(_READ),
    db: Database = Depends(get_db),
) -> dict[str, Any]:
    """The tenant's dry-run results, newest first; every filter given must hold.

    Needs `dry-runs:read` (`read-reactions`).
    """
    offset = min((page - 1) * per_page, MAX_INT)
    with db.read() as conn:
        found, _ = result_service.list_results(
            conn, principal.tenant_id, filters, limit=per_page, offset=offset
        )
    last_page = max(1, math.ceil(found.total / per_page))
    path = str(request.url.remove_query_params(list(request.query_params.keys())))

    def link(number: int) -> str:
        query = [(k, v) for k, v in request.query_params.multi_items() if k != "page"]
        return f"{path}?{urlencode([*query, ('page', str(number))])}"

    items = found.items
    return {
        "data": items,
        "links": {
            "first": link(1),
            "last": link(last_page),
            "prev": link(page - 1) if page > 1 else None,
            "next": link(page + 1) if page < last_page else None,
        },
        "meta": {
            "current_page": page,
            "from": offset + 1 if items else None,
            "last_page": last_page,
            "path": path,
            "per_page": per_page,
            "to": offset + len(items) if items else None,
            "total": found.total,
        },
    }


ResultRef = Path(description="the result's id (a UUID)")


@router.get("/automation-dry-run-results/{result}", response_model=ResultData, responses=ERRORS)
def get_result(
    result: str = ResultRef,
    principal: Principal = Depends(_READ),
    db: Database = Depends(get_db),
) -> dict[str, Any]:
    """One result. Needs `dry-runs:read` (`read-reactions`)."""
    with db.read() as conn:
        return {"data": result_service.get_result(conn, principal.tenant_id, result)}


@router.delete(
    "/automation-dry-run-results/{result}",
    status_code=204,
    response_class=Response,
    responses=ERRORS,
)
def delete_result(
    result: str = ResultRef,
    principal: Principal = Depends(_DELETE),
    db: Database = Depends(get_db),
) -> Response:
    """Delete one result (and its simulated run). Needs `dry-runs:delete` (`delete-reactions`)."""
    with db.transaction() as conn:
        result_service.delete_result(conn, principal.tenant_id, result)
    return Response(status_code=204)


# Where this adapter answers: an error raised before its routes (a body over the
# size limit, an idempotency conflict) is turned into its shape by compat.SeedErrors.
PREFIXES = ("/v3/automations", "/v3/automation-dry-run-results")


def from_problem(status: int, problem: dict[str, Any]) -> dict[str, Any]:
    """A problem+json body, as this seed's error."""
    errors: dict[str, list[str]] = {}
    for item in problem.get("errors") or []:
        errors.setdefault(_field(item.get("loc", ())), []).append(str(item.get("msg", "")))
    body: dict[str, Any] = {"message": problem.get("detail", ""), "code": problem.get("code")}
    if status == 422 and errors:
        body["errors"] = errors
    return body
