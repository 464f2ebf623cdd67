"""Cron times in a time zone, across DST changes, and the missed-firings policy (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from conveyor.domain.definition import Trigger
from conveyor.domain.errors import InvalidDefinition
from conveyor.engine.schedules import (
    Policy,
    check_trigger,
    choose_fire_time,
    latest_due,
    next_fire,
)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def fires(cron: str, tz: str, start: str, count: int) -> list[str]:
    out, at = [], utc(start)
    for _ in range(count):
        at = next_fire(cron, tz, at)
        out.append(at.strftime("%m-%d %H:%M"))
    return out


@pytest.mark.parametrize(
    ("cron", "tz", "start", "expected"),
    [
        pytest.param(
            "0 9 * * *",
            "Europe/Paris",
            "2026-03-27T12:00",
            ["03-28 08:00", "03-29 07:00", "03-30 07:00"],  # CET then CEST
            id="paris-daily-spring-forward",
        ),
        pytest.param(
            "0 9 * * *",
            "Europe/Paris",
            "2026-10-23T12:00",
            ["10-24 07:00", "10-25 08:00", "10-26 08:00"],  # CEST then CET
            id="paris-daily-fall-back",
        ),
        pytest.param(
            "30 2 * * *",
            "Europe/Paris",
            "2026-03-27T12:00",
            # 02:30 does not exist on the 29th: the job runs at 03:00 CEST, once
            ["03-28 01:30", "03-29 01:00", "03-30 00:30"],
            id="paris-missing-time-runs-once-after-the-gap",
        ),
        pytest.param(
            "30 2 * * *",
            "Europe/Paris",
            "2026-10-23T12:00",
            # 02:30 happens twice on the 25th: the job runs once, at the first
            ["10-24 00:30", "10-25 00:30", "10-26 01:30"],
            id="paris-repeated-time-runs-once",
        ),
        pytest.param(
            "0 8 * * 1-5",
            "America/New_York",
            "2026-03-05T00:00",
            ["03-05 13:00", "03-06 13:00", "03-09 12:00"],  # EST then EDT, weekdays
            id="new-york-weekdays-spring-forward",
        ),
        pytest.param(
            "*/30 * * * *",
            "America/New_York",
            "2026-11-01T04:45",
            # elapsed time: 01:00 and 01:30 EDT, then 01:00 and 01:30 EST, then 02:00 EST
            ["11-01 05:00", "11-01 05:30", "11-01 06:00", "11-01 06:30", "11-01 07:00"],
            id="new-york-every-half-hour-fall-back",
        ),
        pytest.param(
            "*/30 * * * *",
            "America/New_York",
            "2026-03-08T06:45",
            # 01:30 EST is followed by 03:00 EDT, 30 real minutes later
            ["03-08 07:00", "03-08 07:30", "03-08 08:00"],
            id="new-york-every-half-hour-spring-forward",
        ),
    ],
)
def test_next_fire_across_dst(cron: str, tz: str, start: str, expected: list[str]) -> None:
    assert fires(cron, tz, start, len(expected)) == expected


@pytest.mark.parametrize(
    ("cron", "tz", "now", "expected"),
    [
        pytest.param("0 * * * *", "UTC", "2026-06-08T14:15", "2026-06-08T14:00", id="hourly"),
        pytest.param("0 * * * *", "UTC", "2026-06-08T14:00", "2026-06-08T14:00", id="on-time"),
        pytest.param(
            "30 2 * * *", "Europe/Paris", "2026-10-25T01:45", "2026-10-25T00:30", id="fall-back"
        ),
        pytest.param(
            "0 9 * * *", "Europe/Paris", "2026-03-30T06:59", "2026-03-29T07:00", id="spring"
        ),
    ],
)
def test_latest_due(cron: str, tz: str, now: str, expected: str) -> None:
    assert latest_due(cron, tz, utc(now)) == utc(expected)


def test_latest_due_and_next_fire_agree_across_a_year() -> None:
    at = utc("2026-01-01T00:00")
    for _ in range(400):
        nxt = next_fire("30 2 * * *", "Europe/Paris", at)
        assert latest_due("30 2 * * *", "Europe/Paris", nxt) == nxt
        assert latest_due("30 2 * * *", "Europe/Paris", nxt - timedelta(seconds=1)) < nxt
        at = nxt


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        pytest.param(Policy("once"), "2026-06-08T14:00", id="once-fires-the-latest"),
        pytest.param(Policy("all"), "2026-06-08T10:00", id="all-fires-the-oldest-first"),
        pytest.param(Policy("skip"), "2026-06-08T14:00", id="skip-fires-the-latest-if-in-grace"),
        pytest.param(Policy("skip", grace=timedelta(seconds=30)), None, id="skip-drops-a-late-one"),
    ],
)
def test_missed_firings_policy(policy: Policy, expected: str | None) -> None:
    now = utc("2026-06-08T14:00:45")
    chosen = choose_fire_time("0 * * * *", "UTC", utc("2026-06-08T10:00"), now, policy)
    assert chosen == (utc(expected) if expected else None)


@pytest.mark.parametrize(
    ("trigger", "loc"),
    [
        pytest.param({"cron": "61 * * * *"}, ["trigger", "cron"], id="bad-minute"),
        pytest.param({"cron": "* * *"}, ["trigger", "cron"], id="too-few-fields"),
        pytest.param({"cron": "0 0 31 2 *"}, ["trigger", "cron"], id="never"),
        pytest.param(
            {"cron": "0 9 * * *", "timezone": "Mars/Olympus"}, ["trigger", "timezone"], id="tz"
        ),
    ],
)
def test_bad_schedules_are_refused(trigger: dict[str, str], loc: list[str]) -> None:
    with pytest.raises(InvalidDefinition) as exc:
        check_trigger(Trigger(type="schedule", **trigger))
    assert [e["loc"] for e in exc.value.errors] == [loc]


def test_a_good_schedule_passes() -> None:
    check_trigger(Trigger(type="schedule", cron="0 9 * * 1-5", timezone="Europe/Paris"))
    check_trigger(Trigger(type="manual"))
