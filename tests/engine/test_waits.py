"""``wait_for_event`` on both databases: received, timed out, late events, lookback, cancel."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from conveyor.engine.control import Actor, cancel_run
from conveyor.services.events import NewEvent, ingest_events
from tests.engine.conftest import Harness
from tests.engine.waits_support import history, send_event, start_run, wait_row

OLIVIA = "olivia@example.com"


def follow_up(**wait: Any) -> dict[str, Any]:
    """order.completed starts a run that waits for the order's mail.open, 30 minutes."""
    settings = {
        "event": "mail.open",
        "match": "event.payload.order_id == trigger.payload.order_id",
        "timeout": "PT30M",
        **wait,
    }
    return {
        "name": "follow-up",
        "trigger": {"type": "event", "event": "order.completed"},
        "steps": [
            {"key": "wait_for_open", "type": "wait_for_event", **settings},
            {
                "key": "push",
                "type": "set",
                "vars": {"opened": "{{ steps.wait_for_open.output.payload.order_id }}"},
                "depends_on": ["wait_for_open.received"],
            },
            {
                "key": "crm",
                "type": "set",
                "vars": {"missed": True},
                "depends_on": ["wait_for_open.timed_out"],
            },
        ],
    }


def _order(h: Harness, order_id: str = "ord_1", email: str = OLIVIA) -> str:
    """Send order.completed; return the run it started (parked on its wait after work)."""
    result = send_event(
        h.db,
        h.tenant,
        "order.completed",
        h.clock.now(),
        email=email,
        payload={"order_id": order_id},
    )
    (started,) = result.runs_started
    h.work()
    return str(started["run_id"])


def _open(h: Harness, order_id: str = "ord_1", email: str = OLIVIA, **kw: Any) -> Any:
    return send_event(
        h.db,
        h.tenant,
        "mail.open",
        h.clock.now(),
        email=email,
        payload={"order_id": order_id},
        **kw,
    )


def _types(h: Harness, run_id: str, prefix: str = "wait.") -> list[str]:
    return [e["type"] for e in history(h.db, run_id) if e["type"].startswith(prefix)]


def test_event_before_the_timeout_takes_the_received_branch(harness: Harness) -> None:
    h = harness
    h.automation(follow_up())
    run_id = _order(h)
    parked = h.detail(run_id)
    assert parked["status"] == "waiting"
    assert h.step(run_id, "wait_for_open")["status"] == "waiting"
    w = wait_row(h.db, run_id)
    assert w["status"] == "waiting"
    assert w["contact_id"] is not None  # the trigger event's contact
    assert w["timeout_at"] == h.clock.now() + timedelta(minutes=30)

    h.clock.advance(90)
    sent = _open(h, event_id="evt_open_1")
    h.work()

    d = h.detail(run_id)
    steps = {s["key"]: s for s in d["steps"]}
    assert d["status"] == "completed"
    assert steps["wait_for_open"]["branch_taken"] == "received"
    assert steps["wait_for_open"]["result"]["id"] == "evt_open_1"
    assert steps["wait_for_open"]["result"]["payload"] == {"order_id": "ord_1"}
    assert steps["push"]["result"] == {"opened": "ord_1"}
    assert steps["crm"]["status"] == "skipped"
    (view,) = d["waits"]
    assert view == steps["wait_for_open"]["waits"][0]
    assert view["status"] == "received"
    assert view["outcome_branch"] == "received"
    assert view["resumed_by_event"]["id"] == "evt_open_1"
    assert view["resumed_by_event"]["event_name"] == "mail.open"
    assert view["timed_out_at"] is None
    assert view["contact_id"] == sent.contact_id
    assert _types(h, run_id) == ["wait.started", "wait.received"]

    h.advance(3600)  # the old timer has nothing left to do
    assert wait_row(h.db, run_id)["status"] == "received"
    assert _types(h, run_id) == ["wait.started", "wait.received"]


def test_no_event_takes_the_timed_out_branch(harness: Harness) -> None:
    h = harness
    h.automation(follow_up())
    run_id = _order(h)
    h.advance(29 * 60)
    assert h.detail(run_id)["status"] == "waiting"
    h.advance(60)
    d = h.detail(run_id)
    steps = {s["key"]: s for s in d["steps"]}
    assert d["status"] == "completed"
    assert steps["wait_for_open"]["branch_taken"] == "timed_out"
    assert steps["push"]["status"] == "skipped"
    assert steps["crm"]["status"] == "completed"
    w = wait_row(h.db, run_id)
    assert (w["status"], w["outcome_branch"]) == ("timed_out", "timed_out")
    assert w["timed_out_at"] == w["timeout_at"]
    assert w["resumed_by_event_id"] is None
    assert _types(h, run_id) == ["wait.started", "wait.timed_out"]


def test_a_late_event_is_recorded_and_reopens_nothing(harness: Harness) -> None:
    h = harness
    h.automation(follow_up())
    run_id = _order(h)
    h.advance(30 * 60)
    before = h.detail(run_id)
    assert before["status"] == "completed"

    h.clock.advance(5)
    _open(h, event_id="evt_late")
    h.work()

    after = h.detail(run_id)
    assert after["status"] == "completed"
    assert after["steps"] == before["steps"]
    assert wait_row(h.db, run_id)["status"] == "timed_out"
    late = [e for e in history(h.db, run_id) if e["type"] == "wait.late_event_ignored"]
    assert len(late) == 1
    assert late[0]["step_key"] == "wait_for_open"
    assert late[0]["data"]["event_id"] == "evt_late"
    assert _types(h, run_id) == ["wait.started", "wait.timed_out", "wait.late_event_ignored"]


def test_event_and_timeout_at_the_same_instant_decide_once(harness: Harness) -> None:
    """Whichever side reaches the wait row first wins; the other changes nothing."""
    h = harness
    h.automation(follow_up())
    first = _order(h, "ord_1")
    second = _order(h, "ord_2", email="noah@example.com")
    h.clock.advance(30 * 60)  # both timeouts are due now
    _open(h, "ord_1")  # the event lands before any worker looks: the event wins
    h.work()
    _open(h, "ord_2", email="noah@example.com")  # the worker went first: the timer won
    h.work()
    assert h.step(first, "wait_for_open")["branch_taken"] == "received"
    assert _types(h, first) == ["wait.started", "wait.received"]
    assert h.step(second, "wait_for_open")["branch_taken"] == "timed_out"
    assert _types(h, second) == ["wait.started", "wait.timed_out", "wait.late_event_ignored"]


def test_match_false_and_other_contacts_are_ignored(harness: Harness) -> None:
    h = harness
    h.automation(follow_up())
    run_id = _order(h)
    _open(h, "ord_other")  # same contact, another order
    _open(h, "ord_1", email="noah@example.com")  # same order id, another contact
    send_event(h.db, h.tenant, "mail.click", h.clock.now(), payload={"order_id": "ord_1"})
    h.work()
    assert wait_row(h.db, run_id)["status"] == "waiting"
    assert h.detail(run_id)["status"] == "waiting"
    assert _types(h, run_id) == ["wait.started"]


def test_lookback_takes_an_event_that_landed_just_before_the_wait(harness: Harness) -> None:
    h = harness
    h.automation(
        {
            "name": "pause-then-wait",
            "steps": [
                {"key": "pause", "type": "delay", "duration": "PT10S"},
                {
                    "key": "wait_for_open",
                    "type": "wait_for_event",
                    "event": "mail.open",
                    "timeout": "PT30M",
                    "lookback": "PT1M",
                },
            ],
        }
    )
    h.automation(
        {
            "name": "no-lookback",
            "steps": [
                {"key": "pause", "type": "delay", "duration": "PT10S"},
                {
                    "key": "wait_for_open",
                    "type": "wait_for_event",
                    "event": "mail.open",
                    "timeout": "PT30M",
                },
            ],
        }
    )
    with_lookback = start_run(h.db, h.tenant, "pause-then-wait", h.clock.now())
    without = start_run(h.db, h.tenant, "no-lookback", h.clock.now())
    h.work()
    h.clock.advance(5)
    _open(h, "x", event_id="evt_early")  # while both runs are still in their delay
    h.advance(5)
    step = h.step(with_lookback, "wait_for_open")
    assert step["status"] == "completed"
    assert step["branch_taken"] == "received"
    assert step["result"]["id"] == "evt_early"
    assert h.detail(with_lookback)["status"] == "completed"
    assert wait_row(h.db, with_lookback)["resumed_by_event_id"] == "evt_early"
    assert _types(h, with_lookback) == ["wait.started", "wait.received"]
    # Without a lookback the event came before the wait started: it does not count.
    assert h.step(without, "wait_for_open")["status"] == "waiting"


def test_an_event_older_than_the_lookback_does_not_count(harness: Harness) -> None:
    h = harness
    h.automation(
        {
            "name": "short-lookback",
            "steps": [
                {"key": "pause", "type": "delay", "duration": "PT2M"},
                {"key": "w", "type": "wait_for_event", "event": "mail.open", "lookback": "PT1M"},
            ],
        }
    )
    run_id = start_run(h.db, h.tenant, "short-lookback", h.clock.now())
    h.work()
    _open(h)  # two minutes before the wait starts
    h.advance(120)
    assert h.step(run_id, "w")["status"] == "waiting"


def test_a_wait_without_timeout_waits_until_its_event(harness: Harness) -> None:
    h = harness
    h.automation(
        {"name": "forever", "steps": [{"key": "w", "type": "wait_for_event", "event": "approved"}]}
    )
    run_id = start_run(h.db, h.tenant, "forever", h.clock.now())
    h.work()
    assert wait_row(h.db, run_id)["timeout_at"] is None
    h.advance(86_400 * 30)
    assert h.detail(run_id)["status"] == "waiting"
    send_event(h.db, h.tenant, "approved", h.clock.now(), payload={"by": "ops"})
    h.work()
    assert h.step(run_id, "w")["branch_taken"] == "received"
    assert h.detail(run_id)["status"] == "completed"


def test_cancel_closes_the_wait(harness: Harness) -> None:
    h = harness
    h.automation(follow_up())
    run_id = _order(h)
    with h.db.transaction() as conn:
        cancel_run(conn, h.tenant, run_id, actor=Actor("user", "t"), reason=None, now=h.clock.now())
    assert h.detail(run_id)["status"] == "cancelled"
    w = wait_row(h.db, run_id)
    assert w["status"] == "cancelled"
    assert w["outcome_branch"] is None
    _open(h)  # nothing to receive, and not a late event either
    h.advance(3600)
    assert wait_row(h.db, run_id)["status"] == "cancelled"
    assert _types(h, run_id) == ["wait.started", "wait.cancelled"]


def test_the_run_timeout_closes_the_wait(harness: Harness) -> None:
    h = harness
    definition = follow_up(timeout="PT1H")
    definition["timeout"] = "PT10M"
    h.automation(definition)
    run_id = _order(h)
    h.advance(600)
    assert h.detail(run_id)["status"] == "timed-out"
    assert wait_row(h.db, run_id)["status"] == "cancelled"
    assert h.step(run_id, "wait_for_open")["status"] == "cancelled"


@pytest.mark.parametrize(
    ("match", "payload", "received"),
    [
        pytest.param("event.payload.n > 2", {"n": 3}, True, id="true"),
        pytest.param("event.payload.n > 2", {"n": 1}, False, id="false"),
        pytest.param("event.payload.missing == 1", {"n": 1}, False, id="error-is-no-match"),
        pytest.param("vars.want == event.payload.n", {"n": 7}, True, id="sees-vars"),
        pytest.param("steps.v.output.want == event.payload.n", {"n": 7}, True, id="sees-steps"),
        pytest.param("contact.email == 'olivia@example.com'", {}, True, id="sees-contact"),
        pytest.param("trigger.payload.k == event.payload.k", {"k": "a"}, True, id="sees-trigger"),
    ],
)
def test_match_expressions(
    harness: Harness, match: str, payload: dict[str, Any], received: bool
) -> None:
    h = harness
    h.automation(
        {
            "name": "matchy",
            "steps": [
                {"key": "v", "type": "set", "vars": {"want": 7}},
                {
                    "key": "w",
                    "type": "wait_for_event",
                    "event": "ping",
                    "match": match,
                    "timeout": "PT1M",
                },
            ],
        }
    )
    run_id = start_run(h.db, h.tenant, "matchy", h.clock.now(), payload={"k": "a"})
    h.work()
    send_event(h.db, h.tenant, "ping", h.clock.now(), payload=payload)
    h.work()
    assert (wait_row(h.db, run_id)["status"] == "received") is received


def test_one_batch_resumes_many_waits_and_the_first_match_wins(harness: Harness) -> None:
    h = harness
    h.automation(follow_up())
    runs = {i: _order(h, f"ord_{i}", email=f"c{i}@example.com") for i in range(5)}
    items = [
        NewEvent(
            i,
            f"evt_{i}",
            "mail.open",
            {"type": "email", "value": f"c{i % 5}@example.com"},
            {"order_id": f"ord_{i % 5}"},
            None,
        )
        for i in range(8)  # events 5..7 match waits that events 0..2 already took
    ]
    results = ingest_events(h.db, h.tenant, items, h.clock.now())
    assert [r.status for r in results] == ["accepted"] * 8
    h.work()
    for i, run_id in runs.items():
        assert wait_row(h.db, run_id)["resumed_by_event_id"] == f"evt_{i}"
        assert h.step(run_id, "wait_for_open")["branch_taken"] == "received"
        assert _types(h, run_id) == ["wait.started", "wait.received"]


def test_a_run_without_identity_hears_the_event_from_anyone(harness: Harness) -> None:
    h = harness
    h.automation(
        {"name": "anyone", "steps": [{"key": "w", "type": "wait_for_event", "event": "go"}]}
    )
    run_id = start_run(h.db, h.tenant, "anyone", h.clock.now(), email=None)
    h.work()
    w = wait_row(h.db, run_id)
    assert (w["contact_id"], w["identity_value"]) == (None, None)
    send_event(h.db, h.tenant, "go", h.clock.now(), email="ops@example.com")
    h.work()
    assert h.step(run_id, "w")["branch_taken"] == "received"
