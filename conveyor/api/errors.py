"""The one place where errors become HTTP responses (RFC 9457 problem+json).

Domain errors carry a stable ``code`` and know nothing of HTTP; the table
below gives each family its status. Nothing of a 5xx's cause reaches the
client: it is logged here instead.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from conveyor import metrics
from conveyor.api.ratelimit import RateLimited
from conveyor.api.routing import UnsupportedMediaType
from conveyor.api.safe_json import SafeJSONResponse
from conveyor.api.schemas.problems import ProblemDetail, ValidationProblem
from conveyor.crypto import SecretKeyMissing, SecretUnreadable
from conveyor.domain.contacts import InvalidIdentity, UnknownContact
from conveyor.domain.errors import (
    Conflict,
    ConveyorError,
    EgressDenied,
    ExpressionError,
    Forbidden,
    InvalidCursor,
    InvalidDefinition,
    LeaseLost,
    NotFound,
    Unauthenticated,
)
from conveyor.domain.run_filters import PayloadFilterNeedsWindow
from conveyor.domain.scopes import UnknownScope
from conveyor.domain.senders import SenderNotAllowed
from conveyor.engine.bulk import InvalidBulkFilters
from conveyor.engine.control import InvalidRetry
from conveyor.engine.launch import InvalidConcurrencyKey
from conveyor.services.channels import InvalidChannelSettings
from conveyor.services.dry_run_results import DryRunResultNotFound
from conveyor.services.dry_runs import InvalidDryRun
from conveyor.services.tenants import InvalidTenantName
from conveyor.store.db import is_transient, is_unavailable

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:conveyor:problem:"

# First match wins, so subclasses come before their bases.
_STATUS_OF: tuple[tuple[type[ConveyorError], int], ...] = (
    (Unauthenticated, 401),
    (Forbidden, 403),
    (DryRunResultNotFound, 404),
    (NotFound, 404),
    (Conflict, 409),
    (UnsupportedMediaType, 415),
    (InvalidCursor, 422),
    (InvalidDefinition, 422),
    (EgressDenied, 422),
    (ExpressionError, 422),
    (UnknownScope, 422),
    (InvalidRetry, 422),
    (InvalidBulkFilters, 422),
    (PayloadFilterNeedsWindow, 422),
    (InvalidConcurrencyKey, 422),
    (InvalidTenantName, 422),
    (InvalidIdentity, 422),
    (UnknownContact, 422),
    (InvalidDryRun, 422),
    (SecretKeyMissing, 422),
    (InvalidChannelSettings, 422),
    (SenderNotAllowed, 422),
    (RateLimited, 429),
    # A sealed value the server's keys do not open: the operator's to fix.
    (SecretUnreadable, 500),
    # A worker's lost lease reaching a request is a bug, never the client's fault.
    (LeaseLost, 500),
)
# Any other ConveyorError is the client's mistake unless listed above.
_DEFAULT_STATUS = 400

_CODE_OF_STATUS = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    503: "not_ready",
}

_DESCRIPTIONS = {
    400: "Malformed request, such as a body that is not JSON (`malformed_json`)",
    401: "Missing, invalid or revoked API key (`unauthenticated`)",
    403: (
        "The API key lacks the scope this operation needs (`forbidden`), or a write "
        "authenticated by the session cookie failed the CSRF check (`csrf_failed`)"
    ),
    404: "The object does not exist in this tenant",
    409: "The request conflicts with the current state",
    413: "The request body is over the size limit (`payload_too_large`)",
    415: "The request has a body that is not JSON (`unsupported_media_type`)",
    422: "The input is not valid (`validation_error`, with `errors`)",
    429: "Too many requests from this API key or address (`rate_limited`, `Retry-After`)",
    500: "Unexpected server error (`internal_error`)",
    503: (
        "The database cannot be reached (`database_unavailable`, `Retry-After: 2`), "
        "or a transaction was aborted by a conflict (`database_busy`): nothing was "
        "stored, send it again"
    ),
}


def status_of(exc: ConveyorError) -> int:
    """The HTTP status for a domain error."""
    for cls, status in _STATUS_OF:
        if isinstance(exc, cls):
            return status
    return _DEFAULT_STATUS


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    """A problem+json response."""
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + code,
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
    }
    for key, value in extensions.items():
        body.setdefault(key, value)
    if status == 422 and "errors" not in body:
        # The schema promises every 422 an `errors` list; a domain error that
        # names no field gets one item saying what it said.
        body["errors"] = [{"loc": list(body.pop("loc", ())), "msg": detail, "type": code}]
    # Safe: a 422's `loc` may name a key of the client's JSON, whatever it holds.
    return SafeJSONResponse(
        jsonable_encoder(body), status_code=status, headers=headers, media_type=PROBLEM_JSON
    )


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` entry of a route declaring these error statuses (for OpenAPI)."""
    return {
        status: {
            "model": ValidationProblem if status == 422 else ProblemDetail,
            "description": _DESCRIPTIONS.get(status, HTTPStatus(status).phrase),
        }
        for status in statuses
    }


def declare_everywhere(
    schema: dict[str, Any],
    *statuses: int,
    only_under: str | None = None,
    methods: tuple[str, ...] | None = None,
) -> None:
    """Declare these problem answers on every operation of an OpenAPI schema.

    For answers any operation can give whatever it does (the database is
    unreachable, for one), rather than a ``responses=`` entry on each route.
    With ``only_under``, only on the paths that start with it; with
    ``methods`` (lower case), only on those operations.
    """
    problem_ref = {"$ref": "#/components/schemas/ProblemDetail"}
    for url, path in schema.get("paths", {}).items():
        if only_under is not None and not url.startswith(only_under):
            continue
        for method, operation in path.items():
            if methods is not None and method not in methods:
                continue
            responses = operation.setdefault("responses", {})
            for status in statuses:
                responses.setdefault(
                    str(status),
                    {
                        "description": _DESCRIPTIONS.get(status, HTTPStatus(status).phrase),
                        "content": {PROBLEM_JSON: {"schema": problem_ref}},
                    },
                )


def _error_items(errors: Any) -> list[dict[str, Any]]:
    # Only loc/msg/type: pydantic's `input` would echo back what was sent
    # (perhaps a secret) and `ctx` can hold objects that are not JSON.
    return [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in errors
    ]


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ConveyorError)
    status = status_of(exc)
    if status >= 500:
        return await _unhandled(request, exc)
    headers = {"WWW-Authenticate": 'Bearer realm="conveyor"'} if status == 401 else None
    if isinstance(exc, RateLimited):
        headers = {"Retry-After": str(exc.retry_after)}
    extensions: dict[str, Any] = dict(exc.extra)
    if isinstance(exc, InvalidDefinition | EgressDenied):
        extensions["errors"] = _error_items(exc.errors)
    return problem(status, exc.code, exc.detail, headers=headers, **extensions)


def _loc_text(loc: list[Any]) -> str:
    return ".".join(str(p) for p in loc)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    bad_json = next((e for e in errors if e.get("type") == "json_invalid"), None)
    if bad_json is not None:
        reason = (bad_json.get("ctx") or {}).get("error", "invalid JSON")
        position = bad_json["loc"][-1] if bad_json.get("loc") else "?"
        return problem(
            400, "malformed_json", f"the request body is not valid JSON: {reason} at {position}"
        )
    items = _error_items(errors)
    summary = "; ".join(f"{_loc_text(i['loc'])}: {i['msg']}" for i in items[:5])
    more = f" (and {len(items) - 5} more)" if len(items) > 5 else ""
    return problem(422, "validation_error", f"invalid input: {summary}{more}", errors=items)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    if status >= 500:
        return await _unhandled(request, exc)
    code = _CODE_OF_STATUS.get(status, "http_error")
    headers = dict(exc.headers or {})
    if status == 404:
        detail = f"no route for {request.method} {request.url.path}"
    elif status == 405:
        detail = f"method {request.method} is not allowed on {request.url.path}"
        # Starlette names only the first route matching the path; name them all.
        allowed = getattr(request.app.state, "allowed_methods", None)
        if allowed is not None:
            methods = sorted(allowed(request.url.path))
            if methods:
                headers["Allow"] = ", ".join(methods)
    elif isinstance(exc.detail, str) and exc.detail:
        detail = exc.detail
    else:
        detail = HTTPStatus(status).phrase
    return problem(status, code, detail, headers=headers)


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    """A database error raised in a route: an outage or a conflict is a 503, anything else 500."""
    if is_unavailable(exc):  # no connection could be had: nothing was stored
        # One line, not a traceback: during an outage every request gets here.
        log.warning(
            "database unavailable on %s %s: %s",
            request.method,
            request.url.path,
            str(exc).splitlines()[0],
        )
        metrics.DATABASE_ERRORS.labels("request", "unavailable").inc()
        detail = "the database cannot be reached just now; nothing was stored, send it again"
        return problem(503, "database_unavailable", detail, headers={"Retry-After": "2"})
    return await _unhandled(request, exc)


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    if is_unavailable(exc):  # raised outside a route (a middleware)
        return await _database_error(request, exc)
    if is_transient(exc):  # nothing was stored; the same request can be sent again
        log.warning("transaction aborted on %s %s: %s", request.method, request.url.path, exc)
        metrics.DATABASE_ERRORS.labels("request", "aborted").inc()
        detail = (
            "the database aborted this request's transaction (a conflict); "
            "nothing was stored, send it again"
        )
        return problem(503, "database_busy", detail, headers={"Retry-After": "1"})
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(500, "internal_error", "an unexpected error occurred; it has been logged")


def register_error_handlers(app: FastAPI) -> None:
    """Answer every error raised under ``app`` with problem+json."""
    app.add_exception_handler(ConveyorError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    # Handled here rather than by the catch-all below, which Starlette makes
    # re-raise (and the server log a traceback) after answering.
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(PoolTimeout, _database_error)
    # Starlette hands an ``Exception`` handler to its outermost middleware, so it
    # also catches errors raised by other middleware.
    app.add_exception_handler(Exception, _unhandled)
