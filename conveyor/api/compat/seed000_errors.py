"""Seed 000's errors (docs/seeds/000.md): Laravel's shape, with Conveyor's stable code.

``{"message", "code"}``, and on a 422 ``validation_error`` also ``errors``: each
field's messages, keyed as Laravel keys them (``filter.status``). The route
class answers every 4xx raised in a route so; a 5xx is left to the app's
handlers, which log it.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from conveyor.api.errors import status_of
from conveyor.api.routing import HygienicRoute, StrictQuery
from conveyor.domain.errors import ConveyorError


class Error(BaseModel):
    """Every error: a message, Conveyor's stable code, and on a 422 the fields at fault."""

    message: str = Field(description="what went wrong, for people")
    code: str = Field(description="a stable code, as on `/api/v1` (`validation_error`...)")
    errors: dict[str, list[str]] | None = Field(
        None, description="422 `validation_error` only: each field's messages (`filter.status`)"
    )


def _error(
    status: int, code: str, message: str, errors: dict[str, list[str]] | None = None
) -> JSONResponse:
    body: dict[str, Any] = {"message": message, "code": code}
    if errors is not None:
        body["errors"] = errors
    headers = {"WWW-Authenticate": 'Bearer realm="conveyor"'} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


def _field(loc: Any) -> str:
    """A Laravel-style field name: ``("query", "filter[status]")`` is ``filter.status``."""
    parts = [str(p) for p in loc]
    if len(parts) > 1 and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:]
    return ".".join(parts).replace("[", ".").replace("]", "")


def _validation(exc: RequestValidationError) -> JSONResponse:
    items = list(exc.errors())
    bad_json = next((e for e in items if e.get("type") == "json_invalid"), None)
    if bad_json is not None:
        reason = (bad_json.get("ctx") or {}).get("error", "invalid JSON")
        return _error(400, "malformed_json", f"the request body is not valid JSON: {reason}")
    errors: dict[str, list[str]] = {}
    for item in items:
        errors.setdefault(_field(item.get("loc", ())), []).append(str(item.get("msg", "")))
    first = next(iter(errors.items()), ("", [""]))
    message = f"{first[0]}: {first[1][0]}" if first[0] else first[1][0]
    if len(items) > 1:
        message += f" (and {len(items) - 1} more error{'s' if len(items) > 2 else ''})"
    return _error(422, "validation_error", message, errors)


class Seed000Route(HygienicRoute):
    """HygienicRoute with a strict query on these paths, answering errors in the seed's shape."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        self._query = StrictQuery(self.dependant)  # HygienicRoute does it under /api/ only

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """The hygienic handler, with its 4xx errors answered as ``Error``; 5xx left to the app."""
        handler = super().get_route_handler()

        async def seed_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                return _validation(exc)
            except ConveyorError as exc:
                status = status_of(exc)
                if status >= 500:
                    raise
                response = _error(status, exc.code, exc.detail)
                retry_after = getattr(exc, "retry_after", None)
                if retry_after is not None:
                    response.headers["Retry-After"] = str(retry_after)
                return response
            except HTTPException as exc:
                if exc.status_code >= 500:
                    raise
                detail = exc.detail if isinstance(exc.detail, str) and exc.detail else "error"
                response = _error(exc.status_code, "http_error", detail)
                response.headers.update(exc.headers or {})
                return response

        return seed_handler


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": Error, "description": text}
    for status, text in (
        (401, "no valid API key"),
        (403, "the key lacks the scope"),
        (404, "not found"),
        (422, "invalid input, or an unknown query parameter or filter"),
    )
}
