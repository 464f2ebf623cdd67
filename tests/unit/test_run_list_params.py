"""Run list query parameters: RFC 3339 times, and the trigger types the API accepts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import get_args

import pytest

from conveyor.api.run_filters import TriggerSourceType, TriggerType, parse_rfc3339
from conveyor.domain.run_filters import TRIGGER_SOURCE_TYPES, TRIGGER_TYPES


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-01T12:00:00Z", datetime(2026, 3, 1, 12, tzinfo=UTC)),
        ("2026-03-01t12:00:00z", datetime(2026, 3, 1, 12, tzinfo=UTC)),
        ("2026-03-01T14:30:00+02:30", datetime(2026, 3, 1, 12, tzinfo=UTC)),
        ("2026-03-01T02:00:00-10:00", datetime(2026, 3, 1, 12, tzinfo=UTC)),
        ("2026-03-01T12:00:00.5Z", datetime(2026, 3, 1, 12, 0, 0, 500_000, tzinfo=UTC)),
        ("2026-03-01T12:00:00.123456789Z", datetime(2026, 3, 1, 12, 0, 0, 123_456, tzinfo=UTC)),
    ],
)
def test_rfc3339_times_are_read_as_utc(text: str, expected: datetime) -> None:
    assert parse_rfc3339(text) == expected


@pytest.mark.parametrize(
    "value",
    ["2026-03-01", "2026-03-01T12:00:00", "2026-03-01T25:00:00Z", 1772366400, None, "now"],
)
def test_anything_else_is_refused(value: object) -> None:
    with pytest.raises(ValueError, match=r"RFC 3339|valid date-time"):
        parse_rfc3339(value)


def test_trigger_types_match_the_domain() -> None:
    assert set(get_args(TriggerType)) == set(TRIGGER_TYPES)
    assert set(get_args(TriggerSourceType)) == set(TRIGGER_SOURCE_TYPES)
