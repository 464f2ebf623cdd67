"""Seed 002's wire: its error shape, its auth carriers and its camelCase schemas.

The document is a FastAPI application's: errors are ``{"detail": ...}``, a
422 ``{"detail": [{loc, msg, type}]}``; names are camelCase. Nothing here
decides anything: errors are Conveyor's (same status, same code, same
message), moved into that shape; keys are Conveyor's, renamed.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from datetime import datetime
from typing import Any, Literal

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import APIKeyCookie, APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from pydantic.alias_generators import to_camel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from conveyor.api.auth import COOKIE_NAME, authenticate_request
from conveyor.api.csrf import CSRF_COOKIE, CSRF_HEADER, SAFE_METHODS, check_csrf
from conveyor.api.errors import status_of
from conveyor.api.routing import HygienicRoute
from conveyor.api.safe_json import SafeJSONResponse
from conveyor.domain.errors import ConveyorError, Forbidden, MalformedJSON
from conveyor.domain.scopes import Scope
from conveyor.services.keys import Principal

VAI_COOKIE = "vai_token"


# ---------------------------------------------------------------- errors


def _items(errors: Any) -> list[dict[str, Any]]:
    # Only loc/msg/type, as Conveyor's own 422: `input` would echo what was sent.
    return [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in errors
    ]


def _domain_error(exc: ConveyorError, status: int) -> Response:
    if isinstance(exc, MalformedJSON):
        # A body FastAPI cannot read is a 422 there (Conveyor: 400 `malformed_json`).
        unreadable = [{"loc": ["body"], "msg": exc.detail, "type": exc.code}]
        return SafeJSONResponse({"detail": unreadable}, status_code=422)
    headers = {"WWW-Authenticate": 'Bearer realm="conveyor"'} if status == 401 else None
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        headers = {"Retry-After": str(retry_after)}
    if status == 422:
        # A 422 is always the list: a field the error names becomes its `loc`.
        if "errors" in exc.extra:
            detail: Any = _items(exc.extra["errors"])
        else:
            field = exc.extra.get("field")
            loc = ["body", to_camel(field)] if isinstance(field, str) else []
            detail = [{"loc": loc, "msg": exc.detail, "type": exc.code}]
        return SafeJSONResponse({"detail": detail}, status_code=422)
    return SafeJSONResponse(
        {"detail": exc.detail, "code": exc.code}, status_code=status, headers=headers
    )


class VaiRoute(HygienicRoute):
    """Conveyor's route class, answering errors as the document's FastAPI does.

    A validation error (unknown query parameters and malformed JSON too) is
    ``422 {"detail": [{loc, msg, type}]}``; any other 4xx ``{"detail": message,
    "code": code}`` with Conveyor's status and code. 5xx are left to the
    application's handlers (logged, problem+json).
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """Conveyor's handler, with its 4xx errors put in the document's shape."""
        handler = super().get_route_handler()

        async def vai_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                return SafeJSONResponse({"detail": _items(exc.errors())}, status_code=422)
            except ConveyorError as exc:
                status = status_of(exc)
                if status >= 500:
                    raise
                return _domain_error(exc, status)
            except StarletteHTTPException as exc:
                if exc.status_code >= 500:
                    raise
                return SafeJSONResponse(
                    {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
                )

        return vai_handler


# ---------------------------------------------------------------- auth

_bearer = HTTPBearer(
    auto_error=False, scheme_name="authorization", description="`Authorization: Bearer <key>`"
)
_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, scheme_name="X-API-Key", description="`X-API-Key: <key>`"
)
_CSRF_RULE = (
    f"; a POST with it must also send `{CSRF_HEADER}` (the `{CSRF_COOKIE}` cookie's value) "
    "and come from this server's origin"
)
_vai_cookie = APIKeyCookie(
    name=VAI_COOKIE,
    auto_error=False,
    scheme_name=VAI_COOKIE,
    description="an API key, as the document's cookie" + _CSRF_RULE,
)
_conveyor_cookie = APIKeyCookie(
    name=COOKIE_NAME,
    auto_error=False,
    scheme_name=COOKIE_NAME,
    description="Conveyor's session cookie (`POST /api/v1/session`)" + _CSRF_RULE,
)


async def _cookie_csrf(
    request: Request,
    bearer: HTTPAuthorizationCredentials | None = Depends(_bearer),
    header: str | None = Depends(_header),
    vai: str | None = Depends(_vai_cookie),
    conveyor: str | None = Depends(_conveyor_cookie),
) -> None:
    """Conveyor's CSRF rule, for either cookie: checked before the key is looked up."""
    if (vai or conveyor) and not (bearer or header) and request.method not in SAFE_METHODS:
        await check_csrf(request)


def _principal(
    request: Request,
    bearer: HTTPAuthorizationCredentials | None = Depends(_bearer),
    header: str | None = Depends(_header),
    vai: str | None = Depends(_vai_cookie),
    conveyor: str | None = Depends(_conveyor_cookie),
    _csrf: None = Depends(_cookie_csrf),
) -> Principal:
    """The caller's key: Bearer, then X-API-Key, then ``conveyor_token``, then ``vai_token``."""
    token = (bearer.credentials if bearer else None) or header or conveyor or vai
    return authenticate_request(request, token)


class VaiScope:
    """``require(scope)`` of ``/api/v1``, with the ``vai_token`` cookie as one more carrier."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    async def __call__(self, principal: Principal = Depends(_principal)) -> Principal:
        """Check the scope; 403 naming it when the key lacks it."""
        if not principal.has(self.scope):
            raise Forbidden(f"this API key lacks the scope `{self.scope.value}`")
        return principal


# ---------------------------------------------------------------- schemas

_CAMEL = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")


class Run(BaseModel):
    """A run, as the document names it (Conveyor's other summary fields follow, camelCase)."""

    model_config = _CAMEL

    id: str
    tenant_id: str
    automation_id: str
    automation_version_id: str
    version_number: int
    status: str = Field(examples=["pending"])
    trigger_type: str = Field(examples=["manual"])
    trigger_source_type: str = Field(examples=["api_key"])
    trigger_source_id: str | None
    concurrency_key: str | None
    orchestrator_type: str = Field(examples=["local"])
    external_job_id: str | None = Field(None, description="always null: runs run in Conveyor")
    error: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    updated_at: datetime
    duration_seconds: float | None


class RunList(BaseModel):
    """A page of runs, newest first, and how many match over all pages."""

    model_config = _CAMEL

    items: list[Run]
    total: int


class Step(BaseModel):
    """One step of a run."""

    model_config = _CAMEL

    key: str
    name: str | None
    status: str = Field(examples=["completed"])
    action_run_id: str = Field(description="the step run's id")
    decision_id: str | None = Field(None, description="always null: Conveyor has no decisions")
    depends_on: list[str]
    started_at: datetime | None
    completed_at: datetime | None
    duration_seconds: float | None
    error: dict[str, Any] | None
    result: Any
    result_truncated: bool


class RunSteps(BaseModel):
    """A run's steps in definition order, with a count per step status."""

    model_config = _CAMEL

    automation_run_id: str
    pending_count: int
    running_count: int
    completed_count: int
    failed_count: int
    steps: list[Step]


class RetryRequest(BaseModel):
    """How to retry (always as a new run); the document's `mode` and `stepKey`, and
    Conveyor's `payload`, `version`, `resend` and `reason`."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=False, extra="forbid")

    mode: Literal["from_failed", "from_step", "full"] = "from_failed"
    step_key: str | None = None
    payload: dict[str, Any] | None = None
    version: Literal["original", "latest"] = "original"
    resend: StrictBool = False
    reason: str | None = Field(None, max_length=1000)


class Error(BaseModel):
    """An error other than a 422: FastAPI's ``HTTPException`` body, with Conveyor's code."""

    detail: str = Field(description="what went wrong, for people")
    code: str = Field(examples=["run_not_found"], description="Conveyor's stable error code")


_ERRORS = {
    401: "missing, invalid or revoked API key (`unauthenticated`)",
    403: "the key lacks the scope (`forbidden`), or a cookie-authenticated POST failed "
    "the CSRF check (`csrf_failed`)",
    404: "no such run in this tenant (`run_not_found`)",
    409: "the run's status does not allow it (`run_not_cancellable`, `run_not_retryable`)",
    429: "too many requests (`rate_limited`, `Retry-After`)",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route for these statuses (the 422 is FastAPI's own)."""
    return {s: {"model": Error, "description": _ERRORS[s]} for s in statuses}


# ---------------------------------------------------------------- names


def camel(record: Mapping[str, Any], drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """``record`` with its top-level keys in camelCase (values left as they are)."""
    return {to_camel(k): v for k, v in record.items() if k not in drop}


def run_out(summary: Mapping[str, Any]) -> dict[str, Any]:
    """A Conveyor run summary under the document's names."""
    return {**camel(summary), "externalJobId": None}


_STEP_DROP = ("id", "attempts")


def steps_out(overview: Mapping[str, Any]) -> dict[str, Any]:
    """Conveyor's steps overview under the document's names."""
    steps = [
        {**camel(s, _STEP_DROP), "actionRunId": s["id"], "decisionId": None}
        for s in overview["steps"]
    ]
    out = camel(overview, ("run_id", "steps", "counts"))
    return {"automationRunId": overview["run_id"], **out, "steps": steps}
