"""Defensive JSON on the way out: one bad stored value never fails a whole answer.

Values stored by older versions may hold what the door now refuses (lone
surrogates, NaN, nesting no encoder follows). Answers are encoded as usual;
only when that fails is the value sanitized (``conveyor.domain.jsonsafe``)
and encoded again, with a warning naming the object and the place (never the
content). So the hot path pays nothing. ``conveyor repair`` fixes the rows
for good.
"""

from __future__ import annotations

import logging
from typing import Any

import pydantic_core
from pydantic import BaseModel
from starlette.responses import JSONResponse

from conveyor.domain import jsonsafe

log = logging.getLogger(__name__)

# Encoding failures a bad value causes: UnicodeEncodeError (a lone surrogate)
# and Pydantic's serialization error (surrogate, depth) are ValueErrors, as is
# json's refusal of NaN; json's own recursion gives a RecursionError.
ENCODING_ERRORS = (ValueError, RecursionError)

_LOGGED_OBJECTS = 10
_LOGGED_PLACES = 5
_POINTER_CHARS = 80


def report(where: str, clean: Any, flaws: list[jsonsafe.Flaw]) -> None:
    """Log which stored values of an answer were served with replacements, and where."""
    places: dict[str, list[str]] = {}
    for flaw in flaws:
        place = flaw.pointer or "/"
        if len(place) > _POINTER_CHARS:
            place = place[:_POINTER_CHARS] + "..."
        places.setdefault(_owner(clean, flaw.path), []).append(f"{flaw.kind} at {place}")
    for owner, found in list(places.items())[:_LOGGED_OBJECTS]:
        more = f" and {len(found) - _LOGGED_PLACES} more" if len(found) > _LOGGED_PLACES else ""
        log.warning(
            "%s: stored JSON of %s cannot be sent as it is (%s%s): sent with replacements. "
            "Run `conveyor repair` to fix the stored rows.",
            where,
            owner,
            ", ".join(found[:_LOGGED_PLACES]),
            more,
        )


def _owner(value: Any, path: jsonsafe.Path) -> str:
    """The innermost object on ``path`` that has an id (the answer itself if none)."""
    owner = "an object without id"
    for part in path:
        if isinstance(value, dict):
            if isinstance(value.get("id"), str):
                owner = f"object {value['id']}"
            value = value.get(jsonsafe.clean_text(part) if isinstance(part, str) else part)
        elif isinstance(value, list) and isinstance(part, int) and part < len(value):
            value = value[part]
        else:
            break
    return owner


def to_json(value: Any, *, where: str) -> bytes:
    """``value`` as JSON, as Pydantic writes it (NaN as null); bad parts replaced if need be."""
    try:
        return pydantic_core.to_json(value, inf_nan_mode="null", fallback=str)
    except ENCODING_ERRORS:
        clean, flaws = jsonsafe.sanitize(value)
        if not flaws:
            raise
    report(where, clean, flaws)
    return pydantic_core.to_json(clean, inf_nan_mode="null", fallback=str)


def model_json(model: type[BaseModel], value: Any, *, where: str, by_alias: bool = True) -> bytes:
    """``value`` validated as ``model`` and written as JSON; bad parts replaced if need be."""
    try:
        return model.model_validate(value).model_dump_json(by_alias=by_alias).encode()
    except ENCODING_ERRORS:
        clean, flaws = jsonsafe.sanitize(value)
        if not flaws:
            raise
    report(where, clean, flaws)
    return model.model_validate(clean).model_dump_json(by_alias=by_alias).encode()


class SafeJSONResponse(JSONResponse):
    """A ``JSONResponse`` that sends a value it cannot encode with the bad parts replaced."""

    def render(self, content: Any) -> bytes:
        """Encode as ``JSONResponse`` does; on failure, sanitize and encode again."""
        try:
            return super().render(content)
        except ENCODING_ERRORS:
            clean, flaws = jsonsafe.sanitize(content)
            if not flaws:
                raise
        report("a JSON answer", clean, flaws)
        return super().render(clean)


def dumps(value: Any, *, where: str) -> str:
    """``value`` as compact JSON text that any parser reads (for the SSE streams)."""
    return to_json(value, where=where).decode()
