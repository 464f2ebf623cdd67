"""``trigger_automation`` on both databases: child runs with and without waiting."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from conveyor.engine.control import Actor, cancel_run
from conveyor.engine.wake import wake_step
from conveyor.store.tables import runs
from tests.engine.conftest import Harness
from tests.engine.waits_support import history, start_run

CHILD = {
    "name": "child",
    "steps": [
        {"key": "echo", "type": "set", "vars": {"got": "{{ trigger.payload.n }}"}},
        {"key": "pause", "type": "delay", "duration": "PT1M"},
    ],
}
FAILING_CHILD = {
    "name": "failing-child",
    "steps": [{"key": "boom", "type": "condition", "expression": "trigger.payload.nope.x"}],
}


def parent(target: str, *, wait: bool, **extra: Any) -> dict[str, Any]:
    return {
        "name": f"parent-of-{target}",
        "steps": [
            {
                "key": "start_child",
                "type": "trigger_automation",
                "automation": target,
                "payload": {"n": "{{ trigger.payload.n }}"},
                "wait": wait,
                **extra,
            },
            {"key": "after", "type": "set", "vars": {"done": True}},
        ],
    }


def _children(h: Harness, parent_id: str) -> list[dict[str, Any]]:
    with h.db.read() as conn:
        rows = conn.execute(select(runs).where(runs.c.parent_run_id == parent_id)).mappings()
        return [dict(r) for r in rows]


def test_without_wait_the_step_completes_at_once_and_names_the_child(harness: Harness) -> None:
    h = harness
    h.automation(CHILD)
    h.automation(parent("child", wait=False))
    parent_id = start_run(h.db, h.tenant, "parent-of-child", h.clock.now(), payload={"n": 5})
    h.work()
    p = h.detail(parent_id)
    assert p["status"] == "completed"
    (child,) = _children(h, parent_id)
    assert p["steps"][0]["result"] == {"child_run_id": child["id"]}
    assert child["trigger_type"] == "automation"
    assert child["trigger_source_type"] == "automation"
    assert child["trigger_source_id"] == parent_id
    assert child["identity"] == {"type": "email", "value": "olivia@example.com"}  # inherited
    c = h.detail(child["id"])
    assert c["parent_run_id"] == parent_id
    assert c["status"] == "waiting"  # in its delay; the parent did not wait
    assert c["steps"][0]["result"] == {"got": 5}
    started = [e for e in history(h.db, parent_id) if e["type"] == "child_run.started"]
    assert started[0]["data"]["child_run_id"] == child["id"]


def test_with_wait_the_step_waits_for_the_child_and_reports_it(harness: Harness) -> None:
    h = harness
    h.automation(CHILD)
    h.automation(parent("child", wait=True))
    parent_id = start_run(h.db, h.tenant, "parent-of-child", h.clock.now(), payload={"n": 1})
    h.work()
    (child,) = _children(h, parent_id)
    assert h.detail(parent_id)["status"] == "waiting"
    assert h.step(parent_id, "start_child")["status"] == "waiting"
    assert h.step(parent_id, "after")["status"] == "pending"

    h.advance(60)  # the child's delay ends, the child completes and wakes the parent
    assert h.detail(child["id"])["status"] == "completed"
    p = h.detail(parent_id)
    assert p["status"] == "completed"
    step = p["steps"][0]
    assert step["result"]["child_run_id"] == child["id"]
    assert step["result"]["status"] == "completed"
    assert len(_children(h, parent_id)) == 1


def test_a_failed_child_fails_the_waiting_step_with_its_error(harness: Harness) -> None:
    h = harness
    h.automation(FAILING_CHILD)
    h.automation(parent("failing-child", wait=True))
    parent_id = start_run(
        h.db, h.tenant, "parent-of-failing-child", h.clock.now(), payload={"n": 1}
    )
    h.work()
    (child,) = _children(h, parent_id)
    assert h.detail(child["id"])["status"] == "failed"
    p = h.detail(parent_id)
    assert p["status"] == "failed"
    step = p["steps"][0]
    assert step["status"] == "failed"
    assert step["error"]["code"] == "child_run_failed"
    assert step["error"]["details"]["child_run_id"] == child["id"]
    assert step["error"]["details"]["error"]["code"] == "expression_error"
    assert "ended failed" in step["error"]["message"]
    assert p["steps"][1]["status"] == "skipped"


def test_a_cancelled_child_fails_the_waiting_step(harness: Harness) -> None:
    h = harness
    h.automation(CHILD)
    h.automation(parent("child", wait=True))
    parent_id = start_run(h.db, h.tenant, "parent-of-child", h.clock.now(), payload={"n": 1})
    h.work()
    (child,) = _children(h, parent_id)
    with h.db.transaction() as conn:
        cancel_run(
            conn, h.tenant, child["id"], actor=Actor("user", "t"), reason=None, now=h.clock.now()
        )
    h.work()
    step = h.step(parent_id, "start_child")
    assert step["status"] == "failed"
    assert step["error"]["details"]["status"] == "cancelled"


def test_an_unknown_automation_fails_the_step(harness: Harness) -> None:
    h = harness
    h.automation(parent("nobody", wait=False))
    parent_id = start_run(h.db, h.tenant, "parent-of-nobody", h.clock.now(), payload={"n": 1})
    h.work()
    step = h.step(parent_id, "start_child")
    assert step["status"] == "failed"
    assert step["error"]["code"] == "automation_not_found"


def test_an_explicit_identity_is_the_childs(harness: Harness) -> None:
    h = harness
    h.automation(CHILD)
    h.automation(parent("child", wait=False, identity={"type": "external_id", "value": "u-9"}))
    parent_id = start_run(h.db, h.tenant, "parent-of-child", h.clock.now(), payload={"n": 1})
    h.work()
    (child,) = _children(h, parent_id)
    assert child["identity"] == {"type": "external_id", "value": "u-9"}


def test_a_self_triggering_automation_stops_at_the_depth_limit(harness: Harness) -> None:
    h = harness
    h.automation(
        {
            "name": "again",
            "steps": [{"key": "again", "type": "trigger_automation", "automation": "again"}],
        }
    )
    start_run(h.db, h.tenant, "again", h.clock.now())
    h.work()
    with h.db.read() as conn:
        total = conn.execute(select(func.count()).select_from(runs)).scalar_one()
        failed = conn.execute(select(runs.c.error).where(runs.c.status == "failed")).scalars().all()
    assert total == 11  # the first run and ten generations of children
    assert [e["code"] for e in failed] == ["child_depth_exceeded"]


def test_a_step_woken_early_finds_its_child_and_starts_no_other(harness: Harness) -> None:
    h = harness
    h.automation(CHILD)
    h.automation(parent("child", wait=True))
    parent_id = start_run(h.db, h.tenant, "parent-of-child", h.clock.now(), payload={"n": 1})
    h.work()
    with h.db.transaction() as conn:
        assert wake_step(conn, h.tenant, parent_id, "start_child", h.clock.now())
    h.work()  # executed again while the child is still in its delay
    (child,) = _children(h, parent_id)
    assert h.step(parent_id, "start_child")["status"] == "waiting"
    h.advance(60)
    assert h.detail(parent_id)["status"] == "completed"
    assert len(_children(h, parent_id)) == 1
    assert h.step(parent_id, "start_child")["result"]["child_run_id"] == child["id"]
