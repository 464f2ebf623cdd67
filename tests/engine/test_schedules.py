"""Schedule triggers on both databases: firing times, audience, missed firings, never twice."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from conveyor.clock import FakeClock
from conveyor.domain.errors import InvalidDefinition, LeaseLost
from conveyor.engine import schedules
from conveyor.engine.worker import Worker
from conveyor.services.automations import (
    create_automation,
    delete_automation,
    update_automation,
)
from conveyor.services.contacts import upsert_contact
from conveyor.settings import Settings
from conveyor.store import tasks as task_store
from conveyor.store.db import Database
from conveyor.store.messaging_tables import schedules as schedules_table
from conveyor.store.tables import runs, tasks
from conveyor.testing.factories import make_tenant


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def scheduled(cron: str = "0 9 * * *", tz: str = "Europe/Paris", **trigger: Any) -> dict[str, Any]:
    return {
        "name": "daily",
        "trigger": {"type": "schedule", "cron": cron, "timezone": tz, **trigger},
        "steps": [
            {"key": "hello", "type": "set", "vars": {"at": "{{ trigger.payload.scheduled_at }}"}}
        ],
    }


class Scheduler:
    """A tenant, automations made through the service (which keeps schedules), a worker."""

    def __init__(self, db: Database, settings: Settings, start: str) -> None:
        self.db = db
        self.settings = settings
        self.clock = FakeClock(utc(start))
        self.tenant = make_tenant(db, "sched", now=self.clock.now())

    def create(self, definition: dict[str, Any]) -> str:
        with self.db.transaction() as conn:
            return str(create_automation(conn, self.tenant, definition, now=self.clock.now())["id"])

    def update(self, ref: str, definition: dict[str, Any]) -> None:
        with self.db.transaction() as conn:
            update_automation(conn, self.tenant, ref, definition, now=self.clock.now())

    def contact(self, email: str, **attributes: Any) -> str:
        with self.db.transaction() as conn:
            view, _ = upsert_contact(
                conn, self.tenant, {"email": email, "attributes": attributes}, self.clock.now()
            )
        return str(view["id"])

    def work(self, **overrides: Any) -> int:
        settings = self.settings.model_copy(update=overrides)
        return asyncio.run(Worker(self.db, settings, clock=self.clock).run_until_idle())

    def jump(self, when: str) -> None:
        """Set the clock to a wall-clock time (forward only)."""
        self.clock.advance(utc(when) - self.clock.now())

    def at(self, when: str, **overrides: Any) -> int:
        self.jump(when)
        return self.work(**overrides)

    def runs(self) -> list[dict[str, Any]]:
        with self.db.read() as conn:
            rows = conn.execute(select(runs).order_by(runs.c.created_at, runs.c.id)).mappings()
            return [dict(r) for r in rows]

    def fired_at(self) -> list[str]:
        return [r["trigger_event"]["payload"]["scheduled_at"] for r in self.runs()]

    def schedule(self, automation_id: str) -> dict[str, Any] | None:
        with self.db.read() as conn:
            row = (
                conn.execute(
                    select(schedules_table).where(schedules_table.c.automation_id == automation_id)
                )
                .mappings()
                .first()
            )
        return dict(row) if row else None

    def schedule_tasks(self) -> list[dict[str, Any]]:
        with self.db.read() as conn:
            rows = conn.execute(select(tasks).where(tasks.c.kind == "schedule")).mappings()
            return [dict(r) for r in rows]


@pytest.fixture
def sched(db: Database, settings: Settings) -> Scheduler:
    return Scheduler(db, settings, "2026-03-27T12:00:00")


def test_fires_at_local_time_across_spring_forward(sched: Scheduler) -> None:
    automation = sched.create(scheduled())
    assert sched.schedule(automation)["next_fire_at"] == utc("2026-03-28T08:00")
    for when in (
        "2026-03-28T07:59:59",
        "2026-03-28T08:00",
        "2026-03-29T07:00:01",
        "2026-03-30T07:00",
    ):
        sched.at(when)
    assert sched.fired_at() == [
        "2026-03-28T08:00:00Z",
        "2026-03-29T07:00:00Z",
        "2026-03-30T07:00:00Z",
    ]
    run = sched.runs()[0]
    assert (run["trigger_type"], run["trigger_source_type"]) == ("schedule", "schedule")
    assert run["trigger_source_id"] == automation
    assert run["status"] == "completed"
    assert sched.schedule(automation)["next_fire_at"] == utc("2026-03-31T07:00")
    assert sched.schedule(automation)["last_fired_at"] == utc("2026-03-30T07:00")


def test_fires_once_on_a_fall_back_night(db: Database, settings: Settings) -> None:
    s = Scheduler(db, settings, "2026-10-24T12:00:00")
    s.create(scheduled("30 2 * * *"))  # 02:30 happens twice on the 25th in Paris
    for when in ("2026-10-25T00:30", "2026-10-25T01:30", "2026-10-25T02:00", "2026-10-26T01:30"):
        s.at(when)
    assert s.fired_at() == ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]


def test_audience_starts_one_run_per_matching_contact(
    sched: Scheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(schedules, "PAGE", 2)  # several pages, several transactions
    pro = [sched.contact(f"pro{i}@example.com", plan="pro") for i in range(5)]
    sched.contact("free@example.com", plan="free")
    sched.contact("none@example.com")
    sched.create(scheduled(audience="contact.attributes.get('plan') == 'pro'"))
    sched.at("2026-03-28T08:00")
    started = sched.runs()
    assert sorted(r["contact_id"] for r in started) == sorted(pro)
    assert {r["identity"]["type"] for r in started} == {"contact_id"}
    assert {r["idempotency_key"] for r in started} == {
        f"schedule:2026-03-28T08:00:00Z:{c}" for c in pro
    }
    sched.at("2026-03-29T07:00")
    assert len(sched.runs()) == 10


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        pytest.param("once", ["2026-03-28T12:00:00Z"], id="once"),
        pytest.param(
            "all",
            [f"2026-03-28T{h:02}:00:00Z" for h in range(8, 13)],
            id="all",
        ),
        pytest.param("skip", [], id="skip"),
    ],
)
def test_missed_firings_follow_the_policy(
    sched: Scheduler, policy: str, expected: list[str]
) -> None:
    sched.jump("2026-03-28T07:30")
    automation = sched.create(scheduled("0 * * * *", "UTC"))  # next firing 08:00
    # every worker is down from 08:00 to 12:10: five firings were missed
    sched.at("2026-03-28T12:10", schedule_missed=policy)
    assert sched.fired_at() == expected
    assert sched.schedule(automation)["next_fire_at"] == utc("2026-03-28T13:00")
    (task,) = sched.schedule_tasks()
    assert task["due_at"] == utc("2026-03-28T13:00")


def test_running_the_schedule_task_again_fires_nothing_twice(sched: Scheduler) -> None:
    sched.create(scheduled())
    sched.at("2026-03-28T08:00")
    sched.work()  # a restarted worker at the same instant
    sched.at("2026-03-28T08:00:30")
    assert len(sched.runs()) == 1


def test_a_taken_over_firing_starts_each_run_once(
    sched: Scheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker fires the first page and stalls; its lease expires; another finishes."""
    monkeypatch.setattr(schedules, "PAGE", 2)
    contacts = [sched.contact(f"c{i}@example.com") for i in range(5)]
    sched.create(scheduled(audience="true"))
    sched.jump("2026-03-28T08:00")
    lease = timedelta(seconds=sched.settings.lease_seconds)
    with sched.db.transaction() as conn:
        (task,) = task_store.claim(
            conn,
            owner="stalled",
            token="00000000-0000-0000-0000-000000000001",
            now=sched.clock.now(),
            lease_until=sched.clock.now() + lease,
            limit=10,
        )
    token = "00000000-0000-0000-0000-000000000001"
    policy = schedules.Policy()
    firing = schedules.fire_schedule(sched.db, task, token, sched.clock.now, lease, policy, None)
    assert firing is not None
    assert len(sched.runs()) == 2  # the first page only

    sched.clock.advance(lease + timedelta(seconds=1))  # the stalled worker's lease expires
    sched.work()  # another worker claims the task and fires the whole audience
    assert sorted(r["contact_id"] for r in sched.runs()) == sorted(contacts)

    with pytest.raises(LeaseLost):  # the stalled one wakes up
        schedules.fire_schedule(sched.db, task, token, sched.clock.now, lease, policy, firing)
    assert len(sched.runs()) == 5
    assert sched.schedule_tasks()[0]["due_at"] == utc("2026-03-29T07:00")


def test_schedules_follow_their_automation(sched: Scheduler) -> None:
    automation = sched.create(scheduled())
    first = sched.schedule(automation)
    sched.clock.advance(3600)
    sched.update(automation, {**scheduled(), "description": "same cron"})
    assert sched.schedule(automation)["next_fire_at"] == first["next_fire_at"]
    sched.update(automation, scheduled("0 18 * * *"))
    assert sched.schedule(automation)["next_fire_at"] == utc("2026-03-27T17:00")
    assert [t["due_at"] for t in sched.schedule_tasks()] == [utc("2026-03-27T17:00")]

    sched.update(automation, {**scheduled("0 18 * * *"), "enabled": False})
    assert sched.schedule(automation)["enabled"] is False
    assert sched.schedule_tasks() == []
    sched.at("2026-03-27T17:00")
    assert sched.runs() == []

    sched.update(automation, {**scheduled("0 18 * * *"), "trigger": {"type": "manual"}})
    assert sched.schedule(automation) is None
    sched.update(automation, scheduled("0 18 * * *"))
    assert sched.schedule_tasks() != []
    with sched.db.transaction() as conn:
        delete_automation(conn, sched.tenant, automation, now=sched.clock.now())
    assert sched.schedule(automation) is None
    assert sched.schedule_tasks() == []


def test_a_bad_cron_is_refused(sched: Scheduler) -> None:
    with pytest.raises(InvalidDefinition) as exc:
        sched.create(scheduled("0 25 * * *"))
    assert exc.value.errors[0]["loc"] == ["trigger", "cron"]
