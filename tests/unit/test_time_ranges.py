"""Time and day filters: a day, a time (the span of its precision), or a range ``from..to``."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from conveyor.api.time_ranges import (
    DAY_RANGE_PATTERN,
    TIME_RANGE_PATTERN,
    DayRange,
    TimeRange,
    fold_created_at,
    parse_day_range,
    parse_time_range,
)


def _t(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


SECOND = timedelta(seconds=1)
DAY = timedelta(days=1)

TIMES = [
    ("2026-06-01", _t(2026, 6, 1), _t(2026, 6, 2)),
    ("2026-06-01T12:00:00Z", _t(2026, 6, 1, 12), _t(2026, 6, 1, 12) + SECOND),
    ("2026-06-01T14:00:00+02:00", _t(2026, 6, 1, 12), _t(2026, 6, 1, 12) + SECOND),
    (
        "2026-06-01T12:00:00.5Z",
        _t(2026, 6, 1, 12, 0, 0, 500_000),
        _t(2026, 6, 1, 12, 0, 0, 600_000),
    ),
    (
        "2026-06-01T12:00:00.250Z",
        _t(2026, 6, 1, 12, 0, 0, 250_000),
        _t(2026, 6, 1, 12, 0, 0, 251_000),
    ),
    ("2026-06-01T12:00:00.000007Z", _t(2026, 6, 1, 12, 0, 0, 7), _t(2026, 6, 1, 12, 0, 0, 8)),
    ("2026-06-01T12:00:00.000007999Z", _t(2026, 6, 1, 12, 0, 0, 7), _t(2026, 6, 1, 12, 0, 0, 8)),
    ("2026-06-01..2026-06-03", _t(2026, 6, 1), _t(2026, 6, 4)),
    ("2026-06-01..", _t(2026, 6, 1), None),
    ("..2026-06-01", None, _t(2026, 6, 2)),
    ("2026-06-01T08:00:00Z..2026-06-01T09:00:00Z", _t(2026, 6, 1, 8), _t(2026, 6, 1, 9)),
    ("2026-06-01T08:00:00Z..2026-06-01", _t(2026, 6, 1, 8), _t(2026, 6, 2)),
    ("2026-05-31..2026-06-01T00:00:00.5Z", _t(2026, 5, 31), _t(2026, 6, 1, 0, 0, 0, 500_000)),
]


@pytest.mark.parametrize(("text", "start", "end"), TIMES, ids=[t[0] for t in TIMES])
def test_time_filters(text: str, start: datetime | None, end: datetime | None) -> None:
    assert parse_time_range(text) == TimeRange(start, end)
    assert re.match(TIME_RANGE_PATTERN, text), "the documented pattern takes it too"


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "..",
        "2026-6-1",
        "2026-02-30",
        "2026-06-01T12:00:00",
        "2026-06-01T12:00Z",
        "2026-06-01 12:00:00Z",
        "2026-06-01T25:00:00Z",
        "2026-06-02..2026-06-01",
        "2026-06-01T12:00:00Z..2026-06-01T12:00:00Z",
        "2026-06-01...2026-06-02",
        "1780000000",
        "today",
    ],
)
def test_what_a_time_filter_refuses(text: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_time_range(text)


@pytest.mark.parametrize("text", ["..", "2026-6-1", "2026-06-01T12:00:00", "x..y", "1780000000"])
def test_the_pattern_refuses_the_wrong_shapes(text: str) -> None:
    assert not re.match(TIME_RANGE_PATTERN, text)
    assert not re.match(DAY_RANGE_PATTERN, text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-06-01", DayRange("2026-06-01", "2026-06-01")),
        ("2026-06-01..2026-06-07", DayRange("2026-06-01", "2026-06-07")),
        ("2026-06-07..", DayRange("2026-06-07", None)),
        ("..2026-06-07", DayRange(None, "2026-06-07")),
    ],
)
def test_day_filters(text: str, expected: DayRange) -> None:
    assert parse_day_range(text) == expected
    assert re.match(DAY_RANGE_PATTERN, text)


@pytest.mark.parametrize("text", ["2026-06-01T00:00:00Z", "2026-06-07..2026-06-01", "..", ""])
def test_what_a_day_filter_refuses(text: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_day_range(text)


def test_created_at_narrows_the_other_bounds() -> None:
    filters = {
        "created_at": parse_time_range("2026-06-01..2026-06-03"),
        "created_after": _t(2026, 6, 2),
        "created_before": _t(2026, 7, 1),
    }
    fold_created_at(filters)
    assert filters == {"created_after": _t(2026, 6, 2), "created_before": _t(2026, 6, 4)}
    alone = {"created_at": parse_time_range("..2026-06-03")}
    fold_created_at(alone)
    assert alone == {"created_after": None, "created_before": _t(2026, 6, 4)}
    untouched = {"created_after": _t(2026, 6, 2)}
    fold_created_at(untouched)
    assert untouched == {"created_after": _t(2026, 6, 2)}
