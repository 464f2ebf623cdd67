"""Times on the wire: RFC 3339 in UTC with a ``Z``; durations in definitions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, overload

from pydantic import BeforeValidator, WithJsonSchema
from pydantic_core import PydanticCustomError


@overload
def iso(value: datetime) -> str: ...
@overload
def iso(value: None) -> None: ...
@overload
def iso(value: datetime | None) -> str | None: ...


def iso(value: datetime | None) -> str | None:
    """``value`` as RFC 3339 in UTC with a ``Z`` (None stays None)."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _no_bool(value: Any) -> Any:
    # Pydantic would read `false` as 0 seconds: a boolean is no duration.
    if isinstance(value, bool):
        raise PydanticCustomError(
            "timedelta_type", "a duration is an ISO 8601 string (`PT30S`) or a number of seconds"
        )
    return value


# Every duration of a definition: an ISO 8601 string, or a number of seconds.
Duration = Annotated[
    timedelta,
    BeforeValidator(_no_bool),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "format": "duration"},
                {"type": "number", "description": "seconds"},
            ]
        }
    ),
]
