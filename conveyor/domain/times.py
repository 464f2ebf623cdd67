"""Times on the wire: RFC 3339 in UTC with a ``Z``; durations in definitions."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, overload

from pydantic import AwareDatetime, BeforeValidator, WithJsonSchema
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
    if value.tzinfo is not UTC:  # what the store reads is in UTC already
        value = value.astimezone(UTC)
    return value.isoformat()[:-6] + "Z"  # drop "+00:00"


_N = r"\d{1,6}"
_TIME = rf"T({_N}H({_N}M)?({_N}(\.\d{{1,6}})?S)?|{_N}M({_N}(\.\d{{1,6}})?S)?|{_N}(\.\d{{1,6}})?S)"
_DATE = rf"({_N}Y({_N}M)?({_N}W)?({_N}D)?|{_N}M({_N}W)?({_N}D)?|{_N}W({_N}D)?|{_N}D)"
# ISO 8601 durations with at least one part, each of at most six digits (so any
# sum of them stays inside what a duration can hold), without lookarounds.
DURATION_PATTERN = rf"^-?P({_DATE}({_TIME})?|{_TIME})$"
_DURATION = re.compile(DURATION_PATTERN)
MAX_SECONDS = 10**12  # about 31,700 years


def _duration_input(value: Any) -> Any:
    """Let through exactly what the schema of ``Duration`` allows; refuse the rest."""
    if isinstance(value, timedelta):  # from Python code, not from JSON
        return value
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise PydanticCustomError(
            "time_delta_type", "a duration is an ISO 8601 string (`PT30S`) or a number of seconds"
        )
    if isinstance(value, str) and not _DURATION.match(value):
        raise PydanticCustomError(
            "time_delta_parsing",
            "not an ISO 8601 duration with parts of up to six digits (`PT30S`)",
        )
    if not isinstance(value, str) and not -MAX_SECONDS <= value <= MAX_SECONDS:
        raise PydanticCustomError("time_delta_type", "at most 10^12 seconds either way")
    return value


# Every duration of a definition: an ISO 8601 string, or a number of seconds.
Duration = Annotated[
    timedelta,
    BeforeValidator(_duration_input),
    WithJsonSchema(
        {
            "anyOf": [
                # No `format: duration`: RFC 3339's grammar has no sign and no
                # weeks beside other parts, which the server takes.
                {"type": "string", "pattern": DURATION_PATTERN},
                {
                    "type": "number",
                    "minimum": -MAX_SECONDS,
                    "maximum": MAX_SECONDS,
                    "description": "seconds",
                },
            ]
        }
    ),
]


def _moment_input(value: Any) -> Any:
    # Pydantic would read a number as a Unix time: a moment here is RFC 3339 text.
    if isinstance(value, datetime | str):
        return value
    raise PydanticCustomError("datetime_type", "an RFC 3339 date-time with a time zone")


# A point in time given in a request: RFC 3339 text with a time zone.
Moment = Annotated[AwareDatetime, BeforeValidator(_moment_input)]
