"""Leases and fencing: a worker that lost its lease cannot write; lost attempts are retaken."""

from __future__ import annotations

from datetime import timedelta

from conveyor.actions.base import ActionResult
from conveyor.domain.ids import new_id
from conveyor.engine.batch import advance_batch
from conveyor.engine.round_state import Limits, Outcome
from conveyor.engine.rounds import Item
from conveyor.store import runs as run_store
from conveyor.store import tasks as task_store
from tests.engine.conftest import Harness
from tests.support.http_server import HitServer


def _claim(harness: Harness, owner: str) -> tuple[str, list[dict[str, object]]]:
    token = new_id()
    now = harness.clock.now()
    with harness.db.transaction() as conn:
        rows = task_store.claim(
            conn,
            owner=owner,
            token=token,
            now=now,
            lease_until=now + timedelta(seconds=30),
            limit=10,
        )
    return token, [dict(r) for r in rows]


def _limits(owner: str, poison_after: int = 100) -> Limits:
    """A round's limits; poison detection is off unless a test asks for it."""
    return Limits(
        worker_id=owner,
        lease=timedelta(seconds=30),
        max_output_bytes=1 << 20,
        poison_after=poison_after,
    )


def test_claimed_task_is_not_claimed_twice_until_its_lease_expires(harness: Harness) -> None:
    a = harness.automation({"name": "one", "steps": [{"key": "a", "type": "set", "vars": {}}]})
    harness.trigger(a)
    _, first = _claim(harness, "w1")
    _, second = _claim(harness, "w2")
    assert len(first) == 1
    assert second == []
    harness.clock.advance(29)
    assert _claim(harness, "w2")[1] == []
    harness.clock.advance(2)
    _, third = _claim(harness, "w2")
    assert [t["id"] for t in third] == [first[0]["id"]]


def test_stale_worker_cannot_commit_after_takeover(
    harness: Harness, http_server: HitServer
) -> None:
    url = f"{http_server.url}/ok/fenced"
    a = harness.automation(
        {
            "name": "fenced",
            "steps": [
                {"key": "call", "type": "http_request", "url": url},
            ],
        }
    )
    run_id = harness.trigger(a)
    token_a, tasks = _claim(harness, "worker-a")
    item = Item(tasks[0], token_a)  # type: ignore[arg-type]
    plans = advance_batch(harness.db, [item], harness.clock.now, _limits("worker-a"))
    plan = plans[tasks[0]["id"]]  # type: ignore[index]
    assert [p.key for p in plan.execute] == ["call"]
    assert harness.step(run_id, "call")["status"] == "running"

    # worker A stalls past its lease; the real worker takes the task over
    harness.advance(31)
    d = harness.detail(run_id)
    assert d["status"] == "completed"
    attempts = d["steps"][0]["attempts"]
    assert [x["status"] for x in attempts] == ["lost", "succeeded"]
    assert attempts[0]["worker_id"] == "worker-a"
    assert http_server.hits["/ok/fenced"] == 1
    with harness.db.read() as conn:
        events_before = len(run_store.get_events(conn, run_id))

    # worker A wakes up and tries to record its (stale) success: nothing is written
    now = harness.clock.now()
    stale = Outcome("call", 1, now, now, result=ActionResult(output={"stale": True}))
    plans = advance_batch(
        harness.db,
        [Item(tasks[0], token_a, [stale])],  # type: ignore[arg-type]
        harness.clock.now,
        _limits("worker-a"),
    )
    assert plans == {}
    d = harness.detail(run_id)
    assert d["steps"][0]["result"]["json"]["path"] == "/ok/fenced"
    with harness.db.read() as conn:
        assert len(run_store.get_events(conn, run_id)) == events_before


def test_lost_attempts_do_not_use_up_retries_but_are_bounded(harness: Harness) -> None:
    a = harness.automation(
        {
            "name": "crashy",
            "steps": [
                {"key": "call", "type": "http_request", "url": "http://127.0.0.1:9/never"},
            ],
        }
    )
    run_id = harness.trigger(a)
    for _ in range(5):
        token, tasks = _claim(harness, "doomed")
        advance_batch(
            harness.db,
            [Item(tasks[0], token)],  # type: ignore[arg-type]
            harness.clock.now,
            _limits("doomed"),
        )
        harness.clock.advance(31)  # the worker "dies" each time
    token, tasks = _claim(harness, "next")
    advance_batch(harness.db, [Item(tasks[0], token)], harness.clock.now, _limits("next"))  # type: ignore[arg-type]
    d = harness.detail(run_id)
    assert d["status"] == "failed"
    assert d["last_error"]["code"] == "worker_lost"
    assert [x["status"] for x in d["steps"][0]["attempts"]] == ["lost"] * 5


def test_a_run_whose_worker_dies_three_times_in_a_row_is_poisoned(harness: Harness) -> None:
    a = harness.automation(
        {
            "name": "crashy",
            "steps": [
                {"key": "call", "type": "http_request", "url": "http://127.0.0.1:9/never"},
                {"key": "after", "type": "set", "vars": {}},
            ],
        }
    )
    run_id = harness.trigger(a)
    tries = []
    for _ in range(3):  # each time the worker starts the call, then "dies"
        token, tasks = _claim(harness, "doomed")
        tries.append(tasks[0]["tries"])
        plans = advance_batch(
            harness.db,
            [Item(tasks[0], token)],
            harness.clock.now,
            _limits("doomed", 3),  # type: ignore[arg-type]
        )
        assert plans[tasks[0]["id"]].execute  # the call was under way
        harness.clock.advance(31)
    token, tasks = _claim(harness, "next")
    assert [*tries, tasks[0]["tries"]] == [0, 1, 2, 3]
    advance_batch(harness.db, [Item(tasks[0], token)], harness.clock.now, _limits("next", 3))  # type: ignore[arg-type]
    d = harness.detail(run_id)
    assert d["status"] == "failed"
    assert d["last_error"]["code"] == "poisoned"
    call, after = d["steps"]
    assert (call["status"], call["error"]["code"]) == ("failed", "poisoned")
    assert [x["status"] for x in call["attempts"]] == ["lost", "lost", "lost"]
    assert after["status"] == "cancelled"
    assert "run.poisoned" in harness.event_types(run_id)
    assert harness.work() == 0  # nothing is left of it in the queue


def test_a_claim_that_gives_the_task_back_starts_the_count_again(harness: Harness) -> None:
    a = harness.automation(
        {"name": "sleepy", "steps": [{"key": "d", "type": "delay", "duration": "PT1H"}]}
    )
    run_id = harness.trigger(a)
    token, tasks = _claim(harness, "doomed")
    harness.clock.advance(31)  # dies before its round commits: one try
    token, tasks = _claim(harness, "ok")
    assert tasks[0]["tries"] == 1
    advance_batch(harness.db, [Item(tasks[0], token)], harness.clock.now, _limits("ok"))  # type: ignore[arg-type]
    assert harness.detail(run_id)["status"] == "waiting"  # parked: the task given back
    harness.clock.advance(3600)
    token, tasks = _claim(harness, "later")
    assert tasks[0]["tries"] == 0
