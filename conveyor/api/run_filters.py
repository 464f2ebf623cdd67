"""The run list filters as query parameters, for run lists (and live run streams).

Every filter answers to its plain name and to ``filter[name]``; giving both with
different values is a 422, as is an unknown ``filter[...]`` name (a typo must not
silently widen a list). ``created_after`` and ``created_before`` are RFC 3339 times
with a time zone and nothing else: a date without a time, a naive time or a number
is refused rather than guessed at. ``created_at`` takes a day, a time or a range
(``conveyor.api.time_ranges``) and narrows the other two.

The payload filter is ``payload.<path>=<value>`` (or ``filter[payload.<path>]``):
the query parameter's name carries the path, so it is read from the request
rather than declared (the strict query check lets ``payload.`` names through
for these dependencies). One path at a time; the bounds and what matches are
``conveyor.domain.run_filters.PayloadMatch``'s.

Use ``Depends(run_list_filters)`` (every filter) or
``Depends(automation_run_filters)`` (all but the automation, which the path names).
The dependencies are ``async`` (they do no I/O) so that FastAPI runs them on the
event loop rather than sending each through the thread pool.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import AfterValidator, BeforeValidator, StringConstraints, TypeAdapter, WithJsonSchema
from pydantic import ValidationError as PydanticValidationError

from conveyor.api.routing import FILTER_PARAM, reads_filters
from conveyor.api.time_ranges import (
    TIME_RANGE_PATTERN,
    Times,
    fold_created_at,
    parse_rfc3339,
    query_time_range,
)
from conveyor.domain.run_filters import (
    PAYLOAD_PREFIX,
    PayloadMatch,
    RunFilters,
    check_payload_path,
    check_payload_value,
)
from conveyor.domain.status import RunStatus


def _canonical_id(value: str) -> str:
    try:
        return str(UUID(value))
    except ValueError:
        raise ValueError("must be an id (a UUID)") from None


# Declared a UUID in the schema: exactly what the validator takes.
Id = Annotated[
    str, AfterValidator(_canonical_id), WithJsonSchema({"type": "string", "format": "uuid"})
]
Time = Annotated[datetime, BeforeValidator(parse_rfc3339)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=100)]
Value = Annotated[str, StringConstraints(min_length=1, max_length=500)]
# The same values as TRIGGER_TYPES and TRIGGER_SOURCE_TYPES (a test holds them together).
TriggerType = Literal[
    "manual", "event", "schedule", "automation_failure", "retry", "automation", "dry_run"
]
TriggerSourceType = Literal[
    "user", "api_key", "event", "schedule", "automation", "bulk_operation", "dry_run", "retry"
]

# The type of one value of each filter, to check the `filter[name]` spelling the
# same way FastAPI checks the plain one.
_TYPES: dict[str, Any] = {
    "status": list[RunStatus],
    "automation_id": Id,
    "automation_name": Name,
    "trigger_type": TriggerType,
    "trigger_source_type": TriggerSourceType,
    "contact_id": Id,
    "identity": Value,
    "concurrency_key": Value,
    "retry_of": Id,
    "tag": Name,
    "created_after": Time,
    "created_before": Time,
    "created_at": Times,
    "dry_run": bool,
}
_ADAPTERS = {name: TypeAdapter(t) for name, t in _TYPES.items()}
_AUTOMATION = ("automation_id", "automation_name")


def _bracket_values(
    request: Request, allowed: set[str], errors: list[dict[str, Any]]
) -> dict[str, Any]:
    """The filters given as ``filter[name]``, checked; problems go to ``errors``."""
    values: dict[str, Any] = {}
    for key in dict.fromkeys(request.query_params.keys()):
        match = FILTER_PARAM.match(key)
        if match is None:
            continue
        name = match.group(1)
        if name.startswith(PAYLOAD_PREFIX):
            continue  # read by _payload
        if name not in allowed:
            errors.append(
                {
                    "loc": ("query", key),
                    "msg": f"unknown filter {name!r}; known: {', '.join(sorted(allowed))}",
                    "type": "unknown_filter",
                }
            )
            continue
        given = request.query_params.getlist(key)
        raw: Any = given if name == "status" else given[-1]
        try:
            values[name] = _ADAPTERS[name].validate_python(raw)
        except PydanticValidationError as exc:
            for e in exc.errors():
                loc = ("query", key, *e["loc"])
                errors.append({"loc": loc, "msg": e["msg"], "type": e["type"]})
    return values


def _payload(request: Request, errors: list[dict[str, Any]]) -> PayloadMatch | None:
    """The ``payload.<path>=<value>`` filter, checked; problems go to ``errors``."""
    given: dict[str, tuple[str, str]] = {}  # path -> (parameter, value)
    for key in dict.fromkeys(request.query_params.keys()):
        match = FILTER_PARAM.match(key)
        name = match.group(1) if match is not None else key
        if not name.startswith(PAYLOAD_PREFIX):
            continue
        path, value = name[len(PAYLOAD_PREFIX) :], request.query_params.getlist(key)[-1]
        problems = []
        for check, text in ((check_payload_path, path), (check_payload_value, value)):
            try:
                check(text)
            except ValueError as exc:
                problems.append(str(exc))
        for problem in problems:
            errors.append({"loc": ("query", key), "msg": problem, "type": "value_error"})
        if problems:
            continue
        if path in given and given[path][1] != value:
            msg = f"differs from `{given[path][0]}`; give one spelling, or the same value"
            errors.append({"loc": ("query", key), "msg": msg, "type": "value_error"})
        given.setdefault(path, (key, value))
    if len(given) > 1:
        names = ", ".join(f"`{key}`" for key, _ in given.values())
        errors.append(
            {
                "loc": ("query", PAYLOAD_PREFIX + "<path>"),
                "msg": f"one payload filter at a time; given {names}",
                "type": "value_error",
            }
        )
        return None
    for path, (_, value) in given.items():
        return PayloadMatch(path=path, value=value)
    return None


def _same(name: str, a: Any, b: Any) -> bool:
    return set(a) == set(b) if name == "status" else bool(a == b)


def _filters(request: Request, plain: Mapping[str, Any], allowed: set[str]) -> RunFilters:
    errors: list[dict[str, Any]] = []
    bracket = _bracket_values(request, allowed, errors)
    payload = _payload(request, errors)
    merged: dict[str, Any] = {}
    for name in allowed:
        mine, theirs = plain.get(name), bracket.get(name)
        if mine is not None and theirs is not None and not _same(name, mine, theirs):
            errors.append(
                {
                    "loc": ("query", f"filter[{name}]"),
                    "msg": f"differs from `{name}`; give one spelling, or the same value",
                    "type": "value_error",
                }
            )
        value = mine if mine is not None else theirs
        if value is not None:
            merged[name] = tuple(dict.fromkeys(value)) if name == "status" else value
    if errors:
        raise RequestValidationError(errors)
    fold_created_at(merged)
    merged["payload"] = payload
    return RunFilters(**{k: v for k, v in merged.items() if v is not None})


async def _common_filters(
    request: Request,
    status: list[RunStatus] | None = Query(
        None, description="only runs in one of these statuses (repeat the parameter)"
    ),
    trigger_type: TriggerType | None = Query(None, description="only runs started this way"),
    trigger_source_type: TriggerSourceType | None = Query(
        None, description="only runs whose trigger came from this kind of source"
    ),
    contact_id: Id | None = Query(None, description="only runs about this contact"),
    identity: Value | None = Query(
        None, description="only runs whose resolved identity has this value (an email, ...)"
    ),
    concurrency_key: Value | None = Query(None, description="only runs with this concurrency key"),
    retry_of: Id | None = Query(None, description="only retries and replays of this run"),
    tag: Name | None = Query(None, description="only runs of automations carrying this tag"),
    created_after: Time | None = Query(
        None, description="only runs created at or after this RFC 3339 time (with a time zone)"
    ),
    created_before: Time | None = Query(
        None, description="only runs created before this RFC 3339 time (with a time zone)"
    ),
    created_at: str | None = Query(
        None,
        json_schema_extra={"pattern": TIME_RANGE_PATTERN},
        description="only runs created on this UTC day (`2026-06-01`), in the span of this "
        "RFC 3339 time's precision, or in a range `from..to` of days or times (start "
        "included; an end day included whole, an end time excluded; either end may be "
        "left out)",
    ),
    dry_run: bool | None = Query(
        None, description="dry-run simulation records instead of real runs [default: false]"
    ),
) -> dict[str, Any]:
    return {
        "status": status or None,
        "trigger_type": trigger_type,
        "trigger_source_type": trigger_source_type,
        "contact_id": contact_id,
        "identity": identity,
        "concurrency_key": concurrency_key,
        "retry_of": retry_of,
        "tag": tag,
        "created_after": created_after,
        "created_before": created_before,
        "created_at": query_time_range("created_at", created_at),
        "dry_run": dry_run,
    }


@reads_filters({*_TYPES, PAYLOAD_PREFIX})
async def run_list_filters(
    request: Request,
    common: dict[str, Any] = Depends(_common_filters),
    automation_id: Id | None = Query(None, description="only runs of this automation (its id)"),
    automation_name: Name | None = Query(
        None, description="only runs of the automation with this name"
    ),
) -> RunFilters:
    """Every run list filter, from ``name=`` or ``filter[name]=`` query parameters."""
    plain = {**common, "automation_id": automation_id, "automation_name": automation_name}
    return _filters(request, plain, set(_TYPES))


@reads_filters({*_TYPES, PAYLOAD_PREFIX} - set(_AUTOMATION))
async def automation_run_filters(
    request: Request, common: dict[str, Any] = Depends(_common_filters)
) -> RunFilters:
    """The run list filters but the automation (named by the path instead)."""
    return _filters(request, common, set(_TYPES) - set(_AUTOMATION))
