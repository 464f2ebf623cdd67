"""Concurrency keys with limits, and the automation-failure trigger, on both databases."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from conveyor.store.tables import concurrency_slots
from tests.engine.conftest import Harness


def _statuses(harness: Harness, run_ids: list[str]) -> list[str]:
    return [harness.detail(r)["status"] for r in run_ids]


def _slow(name: str, limit: int = 1) -> dict[str, Any]:
    return {
        "name": name,
        "concurrency": {"key": "trigger.payload.customer", "limit": limit},
        "steps": [
            {"key": "nap", "type": "delay", "duration": "PT10M"},
            {"key": "done", "type": "set", "vars": {}},
        ],
    }


def test_runs_over_the_limit_stay_pending_and_start_in_order(harness: Harness) -> None:
    a = harness.automation(_slow("one-at-a-time"))
    first = [harness.trigger(a, {"customer": "c1"}) for _ in range(3)]
    other = harness.trigger(a, {"customer": "c2"})
    harness.work()
    assert _statuses(harness, first) == ["waiting", "pending", "pending"]
    assert harness.detail(other)["status"] == "waiting"  # another key has its own slot
    assert harness.detail(first[0])["concurrency_key"] == "c1"
    assert "run.queued" in harness.event_types(first[1])
    harness.advance(600)
    assert _statuses(harness, first) == ["completed", "waiting", "pending"]
    harness.advance(600)
    assert _statuses(harness, first) == ["completed", "completed", "waiting"]
    harness.advance(600)
    assert _statuses(harness, first) == ["completed"] * 3
    started = [harness.detail(r)["started_at"] for r in first]
    assert started == sorted(started)
    with harness.db.read() as conn:
        rows = conn.execute(select(concurrency_slots.c.key, concurrency_slots.c.active)).all()
    active = {key: n for key, n in rows}
    assert active == {"c1": 0, "c2": 0}


def test_a_slot_is_handed_on_when_a_run_is_cancelled(harness: Harness) -> None:
    from conveyor.engine.control import Actor, cancel_run

    a = harness.automation(_slow("handover", limit=2))
    runs = [harness.trigger(a, {"customer": "c"}) for _ in range(4)]
    harness.work()
    assert _statuses(harness, runs) == ["waiting", "waiting", "pending", "pending"]
    with harness.db.transaction() as conn:
        cancel_run(
            conn,
            harness.tenant,
            runs[0],
            actor=Actor("user", "t"),
            reason=None,
            now=harness.clock.now(),
        )
        cancel_run(
            conn,
            harness.tenant,
            runs[3],
            actor=Actor("user", "t"),
            reason=None,
            now=harness.clock.now(),
        )
    harness.work()
    assert _statuses(harness, runs) == ["cancelled", "waiting", "waiting", "cancelled"]


def test_a_failed_run_triggers_the_automations_watching_it(
    harness: Harness,
) -> None:
    flaky = harness.automation(
        {
            "name": "checkout-sync",
            "steps": [{"key": "boom", "type": "set", "vars": {"x": "{{ trigger.payload.nope }}"}}],
        }
    )
    harness.automation(
        {
            "name": "on-failure",
            "trigger": {"type": "automation_failure", "automations": ["checkout-sync"]},
            "steps": [
                {"key": "note", "type": "set", "vars": {"failed": "{{ trigger.payload.run_id }}"}}
            ],
        }
    )
    harness.automation(
        {
            "name": "unrelated",
            "trigger": {"type": "automation_failure", "automations": ["something-else"]},
            "steps": [{"key": "note", "type": "set", "vars": {}}],
        }
    )
    run_id = harness.trigger(flaky, {})
    harness.work()
    assert harness.detail(run_id)["status"] == "failed"
    from conveyor.store.runs import count_runs

    with harness.db.read() as conn:
        assert count_runs(conn) == 2
    from conveyor.domain.run_filters import RunFilters
    from conveyor.store.run_queries import list_runs

    with harness.db.read() as conn:
        rows, _, _ = list_runs(
            conn,
            harness.tenant,
            RunFilters(trigger_type="automation_failure"),
            limit=10,
            offset=None,
            cursor=None,
        )
    assert len(rows) == 1
    follow = harness.detail(rows[0].id)
    assert follow["automation_name"] == "on-failure"
    assert follow["status"] == "completed"
    assert follow["trigger_source_type"] == "automation"
    assert follow["trigger_source_id"] == run_id
    assert follow["steps"][0]["result"] == {"failed": run_id}
    assert follow["trigger_event"]["payload"]["status"] == "failed"


def test_failure_handlers_do_not_trigger_each_other(harness: Harness) -> None:
    for name, watched in (("a", "b"), ("b", "a")):
        harness.automation(
            {
                "name": name,
                "trigger": {"type": "automation_failure", "automations": [watched]},
                "steps": [{"key": "boom", "type": "set", "vars": {"x": "{{ trigger.nope }}"}}],
            }
        )
    harness.automation(
        {
            "name": "root",
            "steps": [{"key": "boom", "type": "set", "vars": {"x": "{{ trigger.nope }}"}}],
        }
    )
    harness.automation(
        {
            "name": "watch-root",
            "trigger": {"type": "automation_failure", "automations": ["root"]},
            "steps": [{"key": "boom", "type": "set", "vars": {"x": "{{ trigger.nope }}"}}],
        }
    )
    harness.trigger("root", {})
    harness.work()
    from conveyor.store.runs import count_runs

    with harness.db.read() as conn:
        assert count_runs(conn) == 2  # root, then watch-root; nothing more
