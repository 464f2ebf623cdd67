"""The engine end to end on both databases: statuses, branches, retries, timers."""

from __future__ import annotations

from typing import Any

import pytest

from tests.engine.conftest import Harness
from tests.support.http_server import HitServer


def _set(key: str, **values: Any) -> dict[str, Any]:
    return {"key": key, "type": "set", "vars": values}


def test_linear_run_completes_and_records_history(harness: Harness) -> None:
    a = harness.automation(
        {
            "name": "linear",
            "steps": [
                _set("a", n=1),
                _set("b", n="{{ vars.n + 1 }}"),
                _set("c", total="{{ vars.n * 10 }}"),
            ],
        }
    )
    run_id = harness.trigger(a, {"order": 7})
    assert harness.detail(run_id)["status"] == "pending"
    harness.work()
    d = harness.detail(run_id)
    assert d["status"] == "completed"
    assert [s["status"] for s in d["steps"]] == ["completed"] * 3
    assert d["steps"][2]["result"] == {"total": 20}
    assert all(
        len(s["attempts"]) == 1 and s["attempts"][0]["status"] == "succeeded" for s in d["steps"]
    )
    assert d["started_at"] is not None
    assert d["completed_at"] is not None
    assert d["trigger_event"]["payload"] == {"order": 7}
    assert harness.event_types(run_id) == [
        "run.created",
        "run.started",
        "step.started",
        "step.completed",
        "step.started",
        "step.completed",
        "step.started",
        "step.completed",
        "run.completed",
    ]


def test_branches_skip_the_other_path_and_cascade(harness: Harness) -> None:
    a = harness.automation(
        {
            "name": "branchy",
            "steps": [
                {"key": "check", "type": "condition", "expression": "trigger.payload.total > 50"},
                {**_set("big", kind="big"), "depends_on": ["check.true"]},
                {**_set("big_follow", x=1), "depends_on": ["big"]},
                {**_set("small", kind="small"), "depends_on": ["check.false"]},
            ],
        }
    )
    run_id = harness.trigger(a, {"total": 80})
    harness.work()
    d = harness.detail(run_id)
    by_key = {s["key"]: s for s in d["steps"]}
    assert d["status"] == "completed"
    assert by_key["check"]["branch_taken"] == "true"
    assert by_key["big_follow"]["status"] == "completed"
    assert by_key["small"]["status"] == "skipped"
    assert "took branch 'true'" in by_key["small"]["skip_reason"]
    assert by_key["small"]["depends_on"] == ["check.false"]


def test_filter_false_halts_and_run_still_completes(harness: Harness) -> None:
    a = harness.automation(
        {
            "name": "filtered",
            "steps": [
                {"key": "only_vip", "type": "filter", "expression": "trigger.payload.vip"},
                _set("after", x=1),
            ],
        }
    )
    run_id = harness.trigger(a, {"vip": False})
    harness.work()
    d = harness.detail(run_id)
    assert d["status"] == "completed"
    assert d["steps"][0]["halted"] is True
    assert d["steps"][1]["status"] == "skipped"


def test_template_error_fails_the_step_naming_the_variable(harness: Harness) -> None:
    a = harness.automation(
        {
            "name": "broken",
            "steps": [
                _set("a", x="{{ trigger.payload.missing_thing }}"),
                _set("b", y=1),
            ],
        }
    )
    run_id = harness.trigger(a, {})
    harness.work()
    d = harness.detail(run_id)
    assert d["status"] == "failed"
    assert "missing_thing" in d["last_error"]["message"]
    assert d["last_error"]["step_key"] == "a"
    assert d["steps"][1]["status"] == "skipped"


def test_retries_with_backoff_then_succeed(harness: Harness, http_server: HitServer) -> None:
    a = harness.automation(
        {
            "name": "flaky",
            "steps": [
                {
                    "key": "call",
                    "type": "http_request",
                    "url": f"{http_server.url}/fail/2/flaky",
                    "retry": {
                        "max_attempts": 3,
                        "initial_delay": "PT10S",
                        "backoff": 2.0,
                        "jitter": 0,
                    },
                }
            ],
        }
    )
    run_id = harness.trigger(a)
    harness.work()
    step = harness.step(run_id, "call")
    assert step["status"] == "pending"
    assert step["next_attempt_at"] is not None
    assert harness.detail(run_id)["status"] == "waiting"
    harness.advance(9)  # not yet due
    assert http_server.hits["/fail/2/flaky"] == 1
    harness.advance(1)  # 10 s: second attempt, fails, next in 20 s
    assert http_server.hits["/fail/2/flaky"] == 2
    harness.advance(19)
    assert http_server.hits["/fail/2/flaky"] == 2
    harness.advance(1)
    assert http_server.hits["/fail/2/flaky"] == 3
    d = harness.detail(run_id)
    assert d["status"] == "completed"
    attempts = d["steps"][0]["attempts"]
    assert [x["status"] for x in attempts] == ["failed", "failed", "succeeded"]
    assert attempts[0]["error"]["code"] == "unexpected_status"
    assert d["steps"][0]["result"]["json"]["hit"] == 3


def test_exhausted_after_all_attempts(harness: Harness, http_server: HitServer) -> None:
    a = harness.automation(
        {
            "name": "doomed",
            "steps": [
                {
                    "key": "call",
                    "type": "http_request",
                    "url": f"{http_server.url}/status/503/x",
                    "retry": {"max_attempts": 2, "initial_delay": "PT1S", "jitter": 0},
                },
                _set("after", x=1),
            ],
        }
    )
    run_id = harness.trigger(a)
    harness.work()
    harness.advance(1)
    d = harness.detail(run_id)
    assert d["status"] == "exhausted"
    assert len(d["steps"][0]["attempts"]) == 2
    assert d["steps"][1]["status"] == "skipped"
    assert d["last_error"]["step_key"] == "call"


def test_failed_without_retries_and_4xx_not_retried(
    harness: Harness, http_server: HitServer
) -> None:
    a = harness.automation(
        {
            "name": "once",
            "retry": {"max_attempts": 5},
            "steps": [
                {
                    "key": "call",
                    "type": "http_request",
                    "url": f"{http_server.url}/status/404/x",
                }
            ],
        }
    )
    run_id = harness.trigger(a)
    harness.work()
    d = harness.detail(run_id)
    # 404 cannot be fixed by retrying: one attempt, and failed (not every attempt was used)
    assert len(d["steps"][0]["attempts"]) == 1
    assert d["status"] == "failed"
    b = harness.automation(
        {
            "name": "noretry",
            "steps": [
                {
                    "key": "call",
                    "type": "http_request",
                    "url": f"{http_server.url}/status/500/y",
                }
            ],
        }
    )
    run_id = harness.trigger(b)
    harness.work()
    assert harness.detail(run_id)["status"] == "failed"


def test_continue_on_error_completes_with_errors(harness: Harness, http_server: HitServer) -> None:
    a = harness.automation(
        {
            "name": "lenient",
            "steps": [
                {
                    "key": "call",
                    "type": "http_request",
                    "url": f"{http_server.url}/status/500/z",
                    "continue_on_error": True,
                },
                _set("after", x=1),
            ],
        }
    )
    run_id = harness.trigger(a)
    harness.work()
    d = harness.detail(run_id)
    assert d["status"] == "completed-with-errors"
    assert d["steps"][0]["status"] == "failed"
    assert d["steps"][1]["status"] == "completed"


def test_step_timeout_ends_run_timed_out(harness: Harness, http_server: HitServer) -> None:
    a = harness.automation(
        {
            "name": "slow",
            "steps": [
                {
                    "key": "call",
                    "type": "http_request",
                    "url": f"{http_server.url}/sleep/3/s",
                    "timeout": "PT0.3S",
                },
            ],
        }
    )
    run_id = harness.trigger(a)
    harness.work()
    d = harness.detail(run_id)
    assert d["status"] == "timed-out"
    assert d["steps"][0]["attempts"][0]["status"] == "timed_out"
    assert d["last_error"]["code"] == "step_timeout"


def test_delay_parks_and_resumes_on_time(harness: Harness) -> None:
    a = harness.automation(
        {
            "name": "later",
            "steps": [
                _set("a", x=1),
                {"key": "wait", "type": "delay", "duration": "PT1H"},
                _set("b", y=2),
            ],
        }
    )
    run_id = harness.trigger(a)
    harness.work()
    d = harness.detail(run_id)
    assert d["status"] == "waiting"
    assert d["steps"][1]["status"] == "waiting"
    assert d["steps"][1]["wake_at"] is not None
    harness.advance(3599)
    assert harness.detail(run_id)["status"] == "waiting"
    harness.advance(1)
    d = harness.detail(run_id)
    assert d["status"] == "completed"
    assert d["steps"][2]["status"] == "completed"
    assert "run.resumed" in harness.event_types(run_id)


def test_run_timeout_cancels_what_is_left(harness: Harness) -> None:
    a = harness.automation(
        {
            "name": "bounded",
            "timeout": "PT10M",
            "steps": [
                {"key": "wait", "type": "delay", "duration": "PT1H"},
                _set("b", y=2),
            ],
        }
    )
    run_id = harness.trigger(a)
    harness.work()
    harness.advance(600)
    d = harness.detail(run_id)
    assert d["status"] == "timed-out"
    assert [s["status"] for s in d["steps"]] == ["cancelled", "cancelled"]
    assert d["last_error"]["code"] == "run_timeout"
    harness.advance(3600)  # the delay's timer must not revive anything
    assert harness.detail(run_id)["status"] == "timed-out"


def test_output_over_the_limit_fails_the_step(harness: Harness) -> None:
    harness.worker.limits.max_output_bytes = 1024
    a = harness.automation({"name": "big", "steps": [_set("a", blob="x" * 2000)]})
    run_id = harness.trigger(a)
    harness.work()
    d = harness.detail(run_id)
    assert d["status"] == "failed"
    assert d["last_error"]["code"] == "output_too_large"


def test_large_output_is_truncated_in_views(harness: Harness) -> None:
    a = harness.automation({"name": "wide", "steps": [_set("a", blob="y" * 70_000)]})
    run_id = harness.trigger(a)
    harness.work()
    step = harness.detail(run_id)["steps"][0]
    assert step["status"] == "completed"
    assert step["result_truncated"] is True
    assert step["result"] is None
    assert step["result_size"] > 70_000


def test_idempotency_key_returns_the_first_run(harness: Harness) -> None:
    a = harness.automation({"name": "once-only", "steps": [_set("a", x=1)]})
    first = harness.trigger(a, {"n": 1}, idempotency_key="order-1")
    again = harness.trigger(a, {"n": 2}, idempotency_key="order-1")
    other = harness.trigger(a, {"n": 3}, idempotency_key="order-2")
    assert first == again
    assert other != first


@pytest.mark.parametrize("count", [150])
def test_many_runs_in_one_batch(harness: Harness, count: int) -> None:
    a = harness.automation({"name": "bulk", "steps": [_set("a", x=1), _set("b", y=2)]})
    ids = [harness.trigger(a, {"i": i}) for i in range(count)]
    harness.work()
    assert {harness.detail(i)["status"] for i in ids} == {"completed"}


def test_expressions_see_the_runs_contact(harness: Harness) -> None:
    from sqlalchemy import update

    from conveyor.domain.ids import new_id
    from conveyor.store.messaging_tables import contacts
    from conveyor.store.tables import runs

    contact_id = new_id()
    now = harness.clock.now()
    with harness.db.transaction() as conn:
        conn.execute(
            contacts.insert().values(
                id=contact_id,
                tenant_id=harness.tenant,
                email="olivia@example.com",
                external_id="c-1",
                push_targets=[],
                attributes={"plan": "pro"},
                created_at=now,
                updated_at=now,
            )
        )
    a = harness.automation(
        {
            "name": "personal",
            "steps": [_set("a", to="{{ contact.email }}", plan="{{ contact.attributes.plan }}")],
        }
    )
    run_id = harness.trigger(a)
    with harness.db.transaction() as conn:  # as identity resolution would have set it
        conn.execute(update(runs).where(runs.c.id == run_id).values(contact_id=contact_id))
    harness.work()
    assert harness.step(run_id, "a")["result"] == {"to": "olivia@example.com", "plan": "pro"}
