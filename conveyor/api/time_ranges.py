"""Time and day filters of lists: RFC 3339 times, days, and ranges ``from..to``.

A *time* is RFC 3339 with ``Z`` or an offset, and nothing else: a naive time or
a number is refused rather than guessed at. A *day* is ``YYYY-MM-DD`` (UTC).

A time filter (``created_at``, ``updated_at``) takes one of:

* a day, ``2026-06-01``: that UTC day;
* a time, ``2026-06-01T12:00:00Z``: the span its precision names, so a time
  to the second is that second and ``12:00:00.250Z`` that millisecond (an
  item's own ``created_at``, pasted back, finds it);
* a range ``from..to`` whose ends are days or times, either end left out
  (``2026-06-01..``): the start is included; an end day is included whole, an
  end time is where the range stops (excluded).

A day filter (``run_at``) takes a day or a range of days, both ends included.
The range syntax is the same everywhere: two dots, no spaces.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Annotated, Any

from fastapi.exceptions import RequestValidationError
from pydantic import PlainValidator
from pydantic_core import PydanticCustomError

__all__ = [
    "DAY_RANGE_PATTERN",
    "RANGE",
    "TIME_RANGE_PATTERN",
    "DayRange",
    "Days",
    "TimeRange",
    "Times",
    "fold_created_at",
    "parse_day_range",
    "parse_rfc3339",
    "parse_time_range",
    "query_time_range",
]

RANGE = ".."

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))$"
)
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")

# The shapes the parsers take, for the OpenAPI document (the parsers check the
# rest, such as the month being 1 to 12, and explain what is wrong).
# As tight as a pattern can be (no year 0, month 13 or hour 24), so what matches
# is refused only for what no pattern can say: a day the month does not have
# (`invalid_day`), a range that ends before it starts (`empty_range`).
_YEAR = r"(\d{3}[1-9]|\d{2}[1-9]0|\d[1-9]00|[1-9]000)"
_DAY_TEXT = _YEAR + r"-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])"
_CLOCK = r"([01]\d|2[0-3]):[0-5]\d"
_TIME_TEXT = _DAY_TEXT + rf"[Tt]{_CLOCK}:[0-5]\d(\.\d{{1,9}})?([Zz]|[+-]{_CLOCK})"
_END = f"({_DAY_TEXT}|{_TIME_TEXT})"
DAY_RANGE_PATTERN = f"^({_DAY_TEXT}|{_DAY_TEXT}\\.\\.({_DAY_TEXT})?|\\.\\.{_DAY_TEXT})$"
TIME_RANGE_PATTERN = f"^({_END}|{_END}\\.\\.({_END})?|\\.\\.{_END})$"
_ONE_OF = "a day (YYYY-MM-DD), an RFC 3339 time, or a range `from..to` of those"


class CalendarError(ValueError):
    """A well-formed day, time or range the calendar refuses; ``kind`` is the error's type."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _instant(value: Any) -> tuple[datetime, int]:
    """An RFC 3339 time as an aware UTC datetime, and how many fraction digits it has."""
    match = _RFC3339.match(value) if isinstance(value, str) else None
    if match is None:
        # A `+` sent unencoded in a query string arrives as a space.
        hint = " (send a `+` in a URL as `%2B`)" if isinstance(value, str) and " " in value else ""
        raise ValueError(
            "must be an RFC 3339 date-time with a time zone, such as 2026-03-01T12:00:00Z" + hint
        )
    year, month, day, hour, minute, second, fraction, zulu, sign, oh, om = match.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    offset = timedelta(0)
    if not zulu:
        offset = timedelta(hours=int(oh), minutes=int(om))
        offset = -offset if sign == "-" else offset
    try:
        local = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micro
        )
        return local.replace(tzinfo=timezone(offset)).astimezone(UTC), len(fraction or "")
    except (ValueError, OverflowError) as exc:
        raise CalendarError("invalid_day", f"not a valid date-time: {exc}") from None


def parse_rfc3339(value: Any) -> datetime:
    """An RFC 3339 date-time with ``Z`` or an offset, as an aware UTC datetime."""
    return _instant(value)[0]


@dataclass(frozen=True)
class DayRange:
    """Inclusive ``YYYY-MM-DD`` bounds (None: open)."""

    start: str | None
    end: str | None


@dataclass(frozen=True)
class TimeRange:
    """An inclusive start and an exclusive end (None: open)."""

    start: datetime | None
    end: datetime | None


def _day(text: str) -> date:
    if not _DAY.match(text):
        raise ValueError(f"{text!r} is not a day (YYYY-MM-DD)")
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise CalendarError("invalid_day", f"{text!r} is not a valid day: {exc}") from None


def _ends(value: Any, what: str) -> tuple[str, str, bool]:
    """The two ends of ``value`` (empty when open), and whether it was a range."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"must be {what}")
    if RANGE not in value:
        return value, value, False
    start, _, end = value.partition(RANGE)
    if not start and not end:
        raise ValueError("a range needs at least one end, as in `2026-06-01..2026-06-07`")
    return start, end, True


def parse_day_range(value: Any) -> DayRange:
    """``2026-06-01``, ``2026-06-01..2026-06-07``, ``2026-06-01..`` or ``..2026-06-07``."""
    start, end, _ = _ends(value, "a day (YYYY-MM-DD) or a range `from..to`")
    first = _day(start) if start else None
    last = _day(end) if end else None
    if first is not None and last is not None and last < first:
        raise CalendarError("empty_range", "the range ends before it starts")
    return DayRange(first.isoformat() if first else None, last.isoformat() if last else None)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def _span(text: str) -> tuple[datetime, datetime]:
    """The instants a day or a time stands for: ``[start, end)``."""
    if _DAY.match(text):
        start = _midnight(_day(text))
        return start, start + timedelta(days=1)
    instant, digits = _instant(text)
    # Finer than microseconds is cut to them (what the databases keep).
    return instant, instant + timedelta(microseconds=10 ** (6 - min(digits, 6)))


def parse_time_range(value: Any) -> TimeRange:
    """A day, a time (the span of its precision), or ``from..to`` of days or times."""
    start, end, is_range = _ends(value, _ONE_OF)
    if not is_range:
        return TimeRange(*_span(value))
    lower = _span(start)[0] if start else None
    upper = None
    if end:
        # An end day is included whole; an end time is where the range stops.
        upper = _span(end)[1] if _DAY.match(end) else parse_rfc3339(end)
    if lower is not None and upper is not None and upper <= lower:
        raise CalendarError(
            "empty_range", "the range ends before it starts (or where it starts: it is empty)"
        )
    return TimeRange(lower, upper)


def query_time_range(name: str, value: str | None) -> TimeRange | None:
    """A time filter given as the query parameter ``name``; a 422 naming it if it is not one.

    Such a filter is declared as a string (FastAPI takes no other type in a
    query) and read here, with the same parser as its ``filter[name]`` spelling.
    """
    if value is None:
        return None
    try:
        return parse_time_range(value)
    except ValueError as exc:
        kind = exc.kind if isinstance(exc, CalendarError) else "value_error"
        error = {"loc": ("query", name), "msg": f"Value error, {exc}", "type": kind}
        raise RequestValidationError([error]) from None


def fold_created_at(filters: dict[str, Any]) -> None:
    """Fold a ``created_at`` range into the ``created_after`` and ``created_before`` bounds.

    All given filters must hold, so each bound is the narrower of the two (the
    result may be empty: nothing matches then).
    """
    span: TimeRange | None = filters.pop("created_at", None)
    if span is None:
        return
    lower = [b for b in (span.start, filters.get("created_after")) if b is not None]
    upper = [b for b in (span.end, filters.get("created_before")) if b is not None]
    filters["created_after"] = max(lower, default=None)
    filters["created_before"] = min(upper, default=None)


# Strings in the query (and the OpenAPI document), ranges once validated.
def _typed(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``parse`` as a validator whose calendar errors keep their own type."""

    def validate(value: Any) -> Any:
        try:
            return parse(value)
        except CalendarError as exc:
            raise PydanticCustomError(
                exc.kind, "Value error, {reason}", {"reason": str(exc)}
            ) from None

    return validate


Days = Annotated[DayRange, PlainValidator(_typed(parse_day_range), json_schema_input_type=str)]
Times = Annotated[TimeRange, PlainValidator(_typed(parse_time_range), json_schema_input_type=str)]
