"""Seed 001 (Sendrealm): `GET /automations/{id}/runs` and `GET /automation-runs/{runId}`.

Answers are in a `data` envelope, with Sendrealm's names (`step_key`,
`step_type`, `trigger_event_name`, `resolved_identity_type` and
`resolved_identity_value`, `trigger_event.event_name`); errors are
`{status, error: {code, message, details}}`. Authenticated as `/api/v1` is
(`Authorization: Bearer <key>`, scope `runs:read`), over the same services as
`GET /api/v1/automations/{id}/runs` and `GET /api/v1/runs/{id}`.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from http import HTTPStatus
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.responses import Response

from conveyor.api.auth import require
from conveyor.api.compat import seed001_views as views
from conveyor.api.deps import get_db, get_settings
from conveyor.api.errors import status_of
from conveyor.api.pagination import PageParams, page_params
from conveyor.api.ratelimit import RateLimited
from conveyor.api.routing import HygienicRoute, StrictQuery
from conveyor.api.run_filters import automation_run_filters
from conveyor.api.safe_json import SafeJSONResponse
from conveyor.domain.errors import ConveyorError, RunNotFound
from conveyor.domain.ids import looks_like_id
from conveyor.domain.run_filters import RunFilters
from conveyor.domain.scopes import Scope
from conveyor.services import run_lists
from conveyor.services.keys import Principal
from conveyor.services.runs import get_run_detail
from conveyor.settings import Settings
from conveyor.store.db import Database

TITLE = "seed 001 (Sendrealm automation runs)"

# The codes of statuses that carry no domain error (a framework's 4xx).
_CODE_OF_STATUS = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
}


def error_response(
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """Seed 001's error answer: ``{status, error: {code, message, details}}``."""
    body = {"status": status, "error": {"code": code, "message": message, "details": details}}
    return SafeJSONResponse(body, status_code=status, headers=headers)


def _domain_error(exc: ConveyorError) -> Response | None:
    """The answer to a domain error; None for a 5xx (the app's handlers log and answer it)."""
    status = status_of(exc)
    if status >= 500:
        return None
    headers = {"WWW-Authenticate": 'Bearer realm="conveyor"'} if status == 401 else None
    if isinstance(exc, RateLimited):
        headers = {"Retry-After": str(exc.retry_after)}
    details = dict(exc.extra) or None
    return error_response(status, exc.code, exc.detail, details, headers)


def _validation_error(exc: RequestValidationError) -> Response:
    items = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    summary = "; ".join(".".join(str(p) for p in i["loc"]) + f": {i['msg']}" for i in items[:5])
    return error_response(422, "validation_error", f"invalid input: {summary}", items)


def _http_error(exc: HTTPException) -> Response | None:
    status = exc.status_code
    if status >= 500:
        return None
    message = (
        exc.detail if isinstance(exc.detail, str) and exc.detail else HTTPStatus(status).phrase
    )
    code = _CODE_OF_STATUS.get(status, "http_error")
    return error_response(status, code, message, headers=dict(exc.headers or {}) or None)


class Seed001Route(HygienicRoute):
    """A ``HygienicRoute`` with a strict query, answering its errors in seed 001's shape."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        # HygienicRoute checks queries under /api/ only; these paths are not.
        self._strict = StrictQuery(self.dependant)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """The hygienic handler, its 4xx errors answered as seed 001 does."""
        handler = super().get_route_handler()
        route = self  # its query check is made after this runs, in __init__

        async def seed001_handler(request: Request) -> Response:
            # A 5xx is re-raised: the app's handlers log it and answer.
            try:
                route._strict.check(request)
                return await handler(request)
            except ConveyorError as exc:
                answer = _domain_error(exc)
                if answer is None:
                    raise
                return answer
            except RequestValidationError as exc:
                return _validation_error(exc)
            except HTTPException as exc:
                answer = _http_error(exc)
                if answer is None:
                    raise
                return answer

        return seed001_handler


router = APIRouter(tags=["seed 001"], route_class=Seed001Route)

_READ = require(Scope.RUNS_READ)
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": views.Seed001ErrorBody, "description": HTTPStatus(status).phrase}
    for status in (401, 403, 404, 422, 429)
}


@router.get(
    "/automations/{id}/runs",
    responses={200: {"model": views.Seed001RunPage, "description": "Run list"}, **_ERRORS},
)
def list_automation_runs(
    automation: str = Path(alias="id", description="the automation's id (or its name)"),
    paging: PageParams = Depends(page_params),
    filters: RunFilters = Depends(automation_run_filters),
    principal: Principal = Depends(_READ),
    db: Database = Depends(get_db),
) -> dict[str, Any]:
    """List automation runs, newest first (`GET /api/v1/automations/{id}/runs`, renamed).

    Pages and filters as `/api/v1`: `limit` (1-1000), `offset` or `cursor`,
    `status`, ... (see docs/api.md); the page's figures are under `meta`.
    """
    with db.read() as conn:
        page = run_lists.list_automation_runs(
            conn,
            principal.tenant_id,
            automation,
            filters,
            limit=paging.limit,
            offset=paging.offset,
            cursor=paging.cursor,
        )
    meta = {k: page[k] for k in ("total", "total_exact", "limit", "offset", "next_cursor")}
    return {"data": [views.run_item(item) for item in page["items"]], "meta": meta}


@router.get(
    "/automation-runs/{runId}",
    responses={200: {"model": views.Seed001RunEnvelope, "description": "Run detail"}, **_ERRORS},
)
def get_automation_run(
    run_id: str = Path(alias="runId", description="the run's id"),
    principal: Principal = Depends(_READ),
    db: Database = Depends(get_db),
    settings: Settings = Depends(get_settings),
) -> dict[str, Any]:
    """A run: trigger event, identity, per-step timeline, waits, linked messages, last error.

    `GET /api/v1/runs/{id}` renamed; a step output over the inline limit is left
    out (`result_truncated: true`), as there.
    """
    if not looks_like_id(run_id):
        raise RunNotFound(f"run {run_id} not found")
    with db.read() as conn:
        detail = get_run_detail(
            conn, principal.tenant_id, str(UUID(run_id)), inline_limit=settings.inline_output_bytes
        )
    return {"data": views.run_detail(detail)}


# Where this adapter answers: an error raised before its routes (a body over the
# size limit, an idempotency conflict) is turned into its shape by compat.SeedErrors.
PREFIXES = ("/automations", "/automation-runs")


def from_problem(status: int, problem: dict[str, Any]) -> dict[str, Any]:
    """A problem+json body, as this seed's error."""
    details = problem.get("errors")
    error = {"code": problem.get("code"), "message": problem.get("detail", ""), "details": details}
    return {"status": status, "error": error}
