"""List filters and keyset cursors shared by the contact and event lists.

Every filter answers to its plain name and to ``filter[name]`` (DESIGN §4);
both spellings with different values, or an unknown ``filter[...]`` name, are
a 422, so a typo never silently widens a list. A cursor wraps the last item's
``(time, id)`` position.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from conveyor.api.pagination import decode_cursor, encode_cursor, invalid_cursor
from conveyor.api.routing import FILTER_PARAM
from conveyor.domain import jsonsafe


def merge_filters(
    request: Request,
    plain: Mapping[str, Any],
    adapters: Mapping[str, TypeAdapter[Any]],
    repeatable: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """The filters of a list, from ``name=`` (already parsed, in ``plain``) and ``filter[name]=``.

    Args:
        request: the request, for its ``filter[...]`` parameters.
        plain: each filter's value from its plain parameter (None when absent).
        adapters: how to check each filter's value, by name.
        repeatable: filters given as lists (every value of the parameter counts).

    Raises:
        RequestValidationError: an unknown or invalid ``filter[...]``, or one
            that contradicts the plain spelling.
    """
    errors: list[dict[str, Any]] = []
    merged = {name: value for name, value in plain.items() if value not in (None, [])}
    for key in dict.fromkeys(request.query_params.keys()):
        match = FILTER_PARAM.match(key)
        if match is None:
            continue
        name = match.group(1)
        if name not in adapters:
            known = ", ".join(sorted(adapters))
            errors.append(
                {
                    "loc": ("query", key),
                    "msg": f"unknown filter {name!r}; known: {known}",
                    "type": "unknown_filter",
                }
            )
            continue
        given = request.query_params.getlist(key)
        raw: Any = given if name in repeatable else given[-1]
        try:
            value = adapters[name].validate_python(raw)
        except PydanticValidationError as exc:
            errors.extend(
                {"loc": ("query", key, *e["loc"]), "msg": e["msg"], "type": e["type"]}
                for e in exc.errors()
            )
            continue
        if name in merged and merged[name] != value:
            errors.append(
                {
                    "loc": ("query", key),
                    "msg": f"differs from `{name}`; give one spelling, or the same value",
                    "type": "value_error",
                }
            )
            continue
        merged[name] = value
    if errors:
        raise RequestValidationError(errors)
    return merged


def encode_position(at: datetime, item_id: str) -> str:
    """A cursor for the keyset position ``(at, item_id)``."""
    return encode_cursor(json.dumps([at.isoformat(), item_id], separators=(",", ":")))


def decode_position(cursor: str | None) -> tuple[datetime, str] | None:
    """The position in a cursor made by ``encode_position``; 422 ``invalid_cursor`` if not one."""
    key = decode_cursor(cursor, str)
    if key is None:
        return None
    try:
        at_text, item_id = json.loads(key)
        at = datetime.fromisoformat(at_text)
    except (ValueError, TypeError):
        at, item_id = None, None
    if (
        at is None
        or at.tzinfo is None
        or not isinstance(item_id, str)
        or jsonsafe.find_flaw(item_id) is not None  # a forged cursor's lone surrogate
    ):
        raise invalid_cursor()
    return at, item_id
