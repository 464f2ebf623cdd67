"""The route class of every router: strict JSON bodies in, defensive JSON out.

**In.** FastAPI parses a JSON body with ``json.loads``, which takes NaN,
Infinity and lone surrogates, and recurses as deep as the body nests. Here the
body is parsed first, once, by ``jsonsafe.loads`` (FastAPI then uses that
value): a non-finite number or a lone surrogate is a 400 ``malformed_json``
whose ``detail`` and ``pointer`` name the place, nesting past
``jsonsafe.MAX_DEPTH`` a 422 ``validation_error`` whose ``loc`` points at the
first container too deep. The check runs before the endpoint, so nothing is
stored. An endpoint marked ``per_item_json`` (event ingestion) gets the value
as parsed and sorts the flaws out item by item itself.

**Media type.** A request with a body whose ``Content-Type`` is not JSON
(``application/json`` or ``application/*+json``; none at all is not JSON
either) is 415 ``unsupported_media_type`` on every route, before anything
else is looked at: HTML forms, which another site can make a browser send,
never reach an endpoint. A request without a body passes (where the body is
optional). An endpoint marked ``accepts_form`` (the login) also takes an
URL-encoded form and reads it itself.

**Query.** On every ``/api/`` route, a query parameter the route does not
declare is a 422 ``validation_error`` (``errors[].type`` ``unknown_parameter``,
its ``msg`` listing the known ones), and an unknown ``filter[name]`` on a list
with filters an ``unknown_filter``: a typo never silently widens a list. The
known names come from the route's declared query parameters (its
``dependant``, sub-dependencies included), plus the ``filter[...]`` names of a
dependency marked ``reads_filters``, which reads those from the query itself.
A new route is strict without doing anything.

**Parameters.** U+0000 (NUL) in a query or path parameter, name or value,
is 422 ``validation_error`` (``type`` ``nul_character``, ``loc`` the
parameter): PostgreSQL refuses NUL even in a comparison, so a filter holding
one would fail the request there (a 500), while SQLite would answer as if
nothing matched. In a JSON body it is a flaw like a lone surrogate (400).

**Fast path.** An endpoint marked ``fast_path(fast)`` (the trigger) has its
common case answered by ``fast``, which reads the request itself, without
FastAPI solving the route's dependencies; anything else ``fast`` declines
goes through FastAPI as usual (see ``fast_path``).

**Out.** The endpoint's result is kept aside as it returns; if encoding it
then fails, it is sanitized and encoded again (``safe_json``). Encoding that
succeeds costs nothing more.
"""

from __future__ import annotations

import functools
import inspect
import json
import re
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from contextvars import ContextVar
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from fastapi import params
from fastapi.dependencies.models import Dependant
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, TypeAdapter
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from conveyor.api.safe_json import ENCODING_ERRORS, report
from conveyor.domain import jsonsafe
from conveyor.domain.errors import ConveyorError, MalformedJSON

F = TypeVar("F", bound=Callable[..., Any])

FORM = "application/x-www-form-urlencoded"

_PER_ITEM = "__conveyor_per_item_json__"
_FORM = "__conveyor_accepts_form__"
_FILTERS = "__conveyor_reads_filters__"
_FAST = "__conveyor_fast_path__"
_SUSPICION = "conveyor_json_suspicion"
# `filter[name]`: the bracket spelling of a list filter (group 1: the name).
FILTER_PARAM = re.compile(r"^filter\[([^\]]*)\]$")
_UNSET: Any = object()


def per_item_json(endpoint: F) -> F:
    """Mark an endpoint that checks the flaws of its JSON body itself, item by item.

    Its body is parsed as usual (still 422 past the depth ``json`` can parse)
    but not refused for a flaw; ``json_suspicion(request).find(item)`` finds
    an item's.
    """
    setattr(endpoint, _PER_ITEM, True)
    return endpoint


def accepts_form(endpoint: F) -> F:
    """Mark an endpoint that also takes an URL-encoded form body, which it reads itself."""
    setattr(endpoint, _FORM, True)
    return endpoint


FastPath = Callable[[Request, Any], Awaitable[Response | None]]


def fast_path(fast: FastPath) -> Callable[[F], F]:
    """Mark an endpoint whose common case ``fast`` answers without FastAPI's dependency solving.

    ``fast(request, body)`` is called after the route's own checks (media
    type, parameters, unknown query, strict JSON), with the body as parsed
    (``None`` without one). It returns the response, or ``None`` to decline:
    FastAPI then handles the request as it always does. It must decline,
    before doing anything that shows (a rate limit charged, a row written),
    every request whose parameters FastAPI would refuse or the endpoint would
    treat another way, so that both paths answer a request alike. Only for a
    route where solving the dependencies costs much of the request: the
    trigger (``routers/automations.py``).
    """

    def mark(endpoint: F) -> F:
        setattr(endpoint, _FAST, fast)
        return endpoint

    return mark


def reads_filters(names: Iterable[str]) -> Callable[[F], F]:
    """Mark a dependency that reads ``filter[name]`` query parameters itself, for these names.

    Those spellings then count as known to the strict query check of every
    route that depends on it. A name ending in a dot is a prefix: ``payload.``
    lets ``payload.<anything>`` (and ``filter[payload.<anything>]``) through,
    for the dependency to check.
    """
    known = frozenset(names)

    def mark(dependency: F) -> F:
        setattr(dependency, _FILTERS, known)
        return dependency

    return mark


def _query_names(field: Any) -> list[str]:
    """The query parameter names a declared field takes (a model's fields, for a model)."""
    annotation = field.field_info.annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [f.alias or name for name, f in annotation.model_fields.items()]
    return [field.alias]


def known_query(dependant: Dependant) -> tuple[frozenset[str], frozenset[str]]:
    """The query parameters a route declares, and the filters it reads as ``filter[name]``."""
    names: set[str] = set()
    filters: set[str] = set()
    seen: set[int] = set()
    pending = [dependant]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        for field in current.query_params:
            if isinstance(field.field_info, params.Query):
                names.update(_query_names(field))
        filters.update(getattr(current.call, _FILTERS, ()))
        pending.extend(current.dependencies)
    for name in names:
        match = FILTER_PARAM.match(name)
        if match is not None:
            filters.add(match.group(1))
    return frozenset(names), frozenset(filters)


class StrictQuery:
    """The query parameters one route knows; ``check`` refuses any other."""

    __slots__ = ("filters", "names")

    def __init__(self, dependant: Dependant) -> None:
        self.names, self.filters = known_query(dependant)

    def _known_text(self) -> str:
        plain = sorted(n for n in self.names if FILTER_PARAM.match(n) is None)
        plain += sorted(f"{f}<path>" for f in self.filters if f.endswith("."))
        if not plain and not self.filters:
            return "this operation takes no query parameters"
        text = "known: " + ", ".join(plain)
        if self.filters:
            text += "; filters also as `filter[name]`"
        return text

    def _prefixed(self, name: str) -> bool:
        return any(p.endswith(".") and name.startswith(p) for p in self.filters)

    def check(self, request: Request) -> None:
        """Raise a 422 naming each query parameter the route does not know."""
        errors: list[dict[str, Any]] = []
        for key in dict.fromkeys(request.query_params.keys()):
            if key in self.names or self._prefixed(key):
                continue
            match = FILTER_PARAM.match(key)
            if match is not None and self.filters:
                name = match.group(1)
                if name in self.filters or self._prefixed(name):
                    continue
                known = ", ".join(
                    sorted(f"{f}<path>" if f.endswith(".") else f for f in self.filters)
                )
                msg, kind = f"unknown filter {name!r}; known: {known}", "unknown_filter"
            else:
                msg, kind = f"unknown parameter {key!r}; {self._known_text()}", "unknown_parameter"
            errors.append({"loc": ("query", key), "msg": msg, "type": kind})
        if errors:
            raise RequestValidationError(errors)


class UnsupportedMediaType(ConveyorError):
    """The request body is not JSON: send it with `Content-Type: application/json`."""

    code = "unsupported_media_type"


def json_suspicion(request: Request) -> jsonsafe.Suspicion:
    """Which flaws the request's JSON body may hold (for ``per_item_json`` endpoints)."""
    found = getattr(request.state, _SUSPICION, None)
    # Without a parsed JSON body (none, or not JSON), there is nothing to rule out.
    return found if isinstance(found, jsonsafe.Suspicion) else jsonsafe.Suspicion()


def refusal(flaw: jsonsafe.Flaw, *, loc: tuple[str, ...] = ("body",)) -> Exception:
    """The error answering a request whose JSON has ``flaw``."""
    if flaw.kind is jsonsafe.Kind.TOO_DEEP:
        error = {"loc": (*loc, *flaw.loc), "msg": flaw.message, "type": "json_too_deep"}
        return RequestValidationError([error])
    place = flaw.pointer or "/"
    return MalformedJSON(
        f"the request body is not acceptable JSON at {place}: {flaw.message}",
        pointer=flaw.pointer,
    )


def check_parameters(request: Request) -> None:
    """Refuse U+0000 (NUL) in a query or path parameter: 422 ``validation_error``.

    A NUL reaches a URL only percent-encoded (a raw one is not HTTP), so a
    query string without ``%00`` and a path without NUL are passed at once.
    """
    in_query = b"%00" in request.scope.get("query_string", b"")
    if not in_query and "\x00" not in request.scope.get("path", ""):
        return
    found: list[tuple[str, Any]] = [("path", item) for item in request.path_params.items()]
    if in_query:
        found += [("query", item) for item in request.query_params.multi_items()]
    message = jsonsafe.Flaw(jsonsafe.Kind.NUL, ()).message
    errors = [
        {"loc": (where, jsonsafe.clean_text(name)), "msg": message, "type": jsonsafe.Kind.NUL.value}
        for where, (name, value) in found
        if "\x00" in name or (isinstance(value, str) and "\x00" in value)
    ]
    if errors:
        raise RequestValidationError(errors)


def is_form(content_type: str | None) -> bool:
    """Whether a ``Content-Type`` is an URL-encoded HTML form."""
    return (content_type or "").split(";", 1)[0].strip().lower() == FORM


async def form_fields(request: Request) -> list[tuple[str, str]]:
    """The fields of an URL-encoded form body, in order (none when it is not a form)."""
    if not is_form(request.headers.get("content-type")):
        return []
    body = await request.body()  # bounded by CONVEYOR_MAX_BODY_BYTES; cached for the route
    return parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)


def _is_json(content_type: str | None) -> bool:
    # The same test FastAPI applies before it parses a body as JSON.
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    kind, _, subtype = media.partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))


async def _has_body(request: Request) -> bool:
    """Whether the request carries a body (an empty chunked one does not)."""
    length = request.headers.get("content-length")
    if length is not None:
        return length.strip().lstrip("0") != ""
    if "transfer-encoding" not in request.headers:
        return False  # HTTP/1.1: neither header, no body
    try:
        return bool(await request.body())  # chunked: an empty one is no body
    except HTTPException:
        raise  # 413 from the size limit
    except Exception:
        return False  # a client gone mid-body: FastAPI answers it as it always has


async def check_media_type(request: Request, *, form: bool = False) -> None:
    """Refuse a body that is not JSON (nor, with ``form``, an URL-encoded form): 415."""
    content_type = request.headers.get("content-type")
    if _is_json(content_type) or (form and is_form(content_type)):
        return
    if not await _has_body(request):
        return
    wanted = "`application/json`" + (f" or `{FORM}`" if form else "")
    sent = f"`{content_type.split(';', 1)[0].strip()}`" if content_type else "no Content-Type"
    raise UnsupportedMediaType(f"the request body must be {wanted}; it was sent as {sent}")


async def strict_json(request: Request, *, per_item: bool = False) -> Any:
    """The request's JSON body parsed strictly; ``None`` for no (or no JSON) body.

    Raises:
        MalformedJSON: a non-finite number or lone surrogate (unless ``per_item``).
        RequestValidationError: not JSON, or nested past ``jsonsafe.MAX_DEPTH``.
    """
    if not _is_json(request.headers.get("content-type")):
        return None
    try:
        body = await request.body()
    except HTTPException:
        raise  # 413 from the size limit
    except Exception:
        return None  # a client gone mid-body: FastAPI answers it as it always has
    if not body:
        return None
    try:
        parsed = jsonsafe.loads(body)
    except jsonsafe.TooDeepToParse as exc:
        raise refusal(exc.flaw) from None
    except json.JSONDecodeError as exc:
        # Answered as FastAPI answers it (errors.py turns it into malformed_json).
        error = {
            "type": "json_invalid",
            "loc": ("body", exc.pos),
            "msg": "JSON decode error",
            "ctx": {"error": exc.msg},
        }
        raise RequestValidationError([error]) from None
    except ValueError as exc:  # not UTF-8 text, a number of too many digits...
        raise MalformedJSON(f"the request body is not valid JSON: {exc}") from None
    if per_item:
        setattr(request.state, _SUSPICION, parsed.suspicion)
    else:
        flaw = parsed.flaw()
        if flaw is not None:
            raise refusal(flaw)
    # Starlette's Request caches its parsed JSON here; FastAPI reads it back.
    request._json = parsed.value
    return parsed.value


class _Kept:
    """What the endpoint returned, kept in case encoding it fails."""

    __slots__ = ("response", "result")

    def __init__(self) -> None:
        self.result: Any = _UNSET
        self.response: Response | None = None


# Set by the route's handler for the request it handles; the endpoint wrapper
# fills it in. Sync endpoints run in a worker thread, which gets a copy of the
# context: the same _Kept object.
_KEPT: ContextVar[_Kept | None] = ContextVar("conveyor_kept", default=None)


def _keep(result: Any, kwargs: dict[str, Any]) -> None:
    kept = _KEPT.get()
    if kept is not None:
        kept.result = result
        # The Response FastAPI injects: the endpoint may have set a status or headers on it.
        kept.response = next((v for v in kwargs.values() if isinstance(v, Response)), None)


def _keeping(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """``endpoint``, keeping what it returns; sync stays sync and async async, for FastAPI."""
    if inspect.iscoroutinefunction(endpoint):

        @functools.wraps(endpoint)
        async def keeping_async(*args: Any, **kwargs: Any) -> Any:
            result = await endpoint(*args, **kwargs)
            _keep(result, kwargs)
            return result

        return keeping_async

    @functools.wraps(endpoint)
    def keeping(*args: Any, **kwargs: Any) -> Any:
        result = endpoint(*args, **kwargs)
        _keep(result, kwargs)
        return result

    return keeping


class HygienicRoute(APIRoute):
    """An ``APIRoute`` with strict queries and JSON bodies, and a fallback for bad answers."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        self._per_item = bool(getattr(endpoint, _PER_ITEM, False))
        self._form = bool(getattr(endpoint, _FORM, False))
        self._fast: FastPath | None = getattr(endpoint, _FAST, None)
        self._adapter: TypeAdapter[Any] | None = None
        super().__init__(path, _keeping(endpoint), **kwargs)
        self._query = StrictQuery(self.dependant) if path.startswith("/api/") else None

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """FastAPI's handler, with the body parsed first and encoding failures caught."""
        handler = super().get_route_handler()
        route = self

        async def hygienic_handler(request: Request) -> Response:
            await check_media_type(request, form=route._form)
            check_parameters(request)
            if route._query is not None:
                route._query.check(request)
            body = None
            if route.body_field is not None:
                body = await strict_json(request, per_item=route._per_item)
            if route._fast is not None:
                answered = await route._fast(request, body)
                if answered is not None:
                    return answered
            kept = _Kept()
            token = _KEPT.set(kept)
            try:
                return await handler(request)
            except ENCODING_ERRORS:
                # Only a failure after the endpoint returned is one of encoding.
                response = None if kept.result is _UNSET else route._sanitized(request, kept)
                if response is None:
                    raise
                return response
            finally:
                _KEPT.reset(token)

        return hygienic_handler

    def _sanitized(self, request: Request, kept: _Kept) -> Response | None:
        """The kept result, sanitized and encoded; None if it had nothing to sanitize."""
        clean, flaws = jsonsafe.sanitize(kept.result)
        if not flaws:
            return None
        report(f"{request.method} {request.url.path}", clean, flaws)
        if self.response_model is not None:
            if self._adapter is None:
                self._adapter = TypeAdapter(self.response_model)
            content = self._adapter.dump_json(
                self._adapter.validate_python(clean),
                by_alias=self.response_model_by_alias,
                exclude_unset=self.response_model_exclude_unset,
                exclude_defaults=self.response_model_exclude_defaults,
                exclude_none=self.response_model_exclude_none,
            )
        else:
            content = json.dumps(
                jsonable_encoder(clean), ensure_ascii=False, separators=(",", ":")
            ).encode()
        sub = kept.response
        # FastAPI's order: the route's status, else the one the endpoint set, else 200.
        status = self.status_code or (sub.status_code if sub is not None else None) or 200
        response = Response(content, status_code=status, media_type="application/json")
        if sub is not None:
            response.headers.raw.extend(
                (k, v) for k, v in sub.headers.raw if k.lower() != b"content-length"
            )
        return response
