"""What lands while a round (or a delivery) is being evaluated wins cleanly.

A round is read, evaluated with no transaction open, then committed; a
delivery likewise. These tests stop a round (or a delivery) between its
evaluation and its commit, let a cancel, an event, a wait's timeout or the
run's timeout land, then let it commit: exactly one outcome each, no lost
update, on both databases.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from conveyor.domain.ids import new_id
from conveyor.engine import waits as wait_engine
from conveyor.engine import worker as worker_module
from conveyor.engine.batch import advance_batch, commit_batch, evaluate_one, load_batch
from conveyor.engine.control import Actor, cancel_run
from conveyor.engine.round_state import Limits, Plan
from conveyor.engine.rounds import Item
from conveyor.store import tasks as task_store
from conveyor.store.tables import tasks
from conveyor.testing.factories import make_tenant
from tests.engine.conftest import Harness
from tests.engine.test_waits import OLIVIA, _order, follow_up
from tests.engine.waits_support import history, send_event, wait_row

# The slow worker's lease outlives anything the tests do with the clock.
LEASE = timedelta(hours=1)


def _limits() -> Limits:
    return Limits(worker_id="slow", lease=LEASE, max_output_bytes=1 << 20)


def _claim(h: Harness) -> list[Item]:
    token = new_id()
    now = h.clock.now()
    with h.db.transaction() as conn:
        rows = task_store.claim(
            conn,
            owner="slow",
            token=token,
            now=now,
            lease_until=now + LEASE,
            limit=10,
        )
    return [Item(row, token) for row in rows]


def _evaluated(h: Harness) -> list[Any]:
    """Claim what is due, read it and evaluate its rounds; commit nothing yet."""
    items = _claim(h)
    assert items, "nothing was due"
    with h.db.read() as conn:
        snapshot = load_batch(conn, items, h.clock.now())
    return [evaluate_one(snapshot, it, h.clock.now, _limits()) for it in items]


def _commit(h: Harness, done: list[Any]) -> dict[str, Plan | None]:
    with h.db.transaction() as conn:
        return commit_batch(conn, done, h.clock.now(), _limits())


def _redo(h: Harness, done: list[Any], plans: dict[str, Plan | None]) -> None:
    """What the slow worker does with a plan to go again: another round, same lease."""
    for ev in done:
        plan = plans[ev.item.task["id"]]
        while plan is not None and plan.again:
            item = Item(ev.item.task, ev.item.token)
            plan = advance_batch(h.db, [item], h.clock.now, _limits())[ev.item.task["id"]]


def _types(h: Harness, run_id: str, prefix: str = "") -> list[str]:
    return [t for t in h.event_types(run_id) if t.startswith(prefix)]


def test_a_cancel_during_evaluation_wins(harness: Harness) -> None:
    h = harness
    a = h.automation({"name": "quick", "steps": [{"key": "s", "type": "set", "vars": {"x": 1}}]})
    run_id = h.trigger(a)
    done = _evaluated(h)  # the round completed the run, in memory
    assert done[0].rnd.run["status"] == "completed"
    with h.db.transaction() as conn:
        cancel_run(conn, h.tenant, run_id, actor=Actor("user", "u"), reason=None, now=h.clock.now())
    plans = _commit(h, done)
    assert plans == {done[0].item.task["id"]: None}  # the cancel took the task: nothing written
    d = h.detail(run_id)
    assert d["status"] == "cancelled"
    assert d["steps"][0]["status"] == "cancelled"
    assert "run.completed" not in h.event_types(run_id)
    assert h.work() == 0  # nothing left to do


def test_an_event_during_evaluation_of_the_timeout_wins(harness: Harness) -> None:
    h = harness
    h.automation(follow_up())
    run_id = _order(h)
    h.clock.advance(30 * 60)  # the wait's timeout is due
    done = _evaluated(h)  # the round decided, in memory, that the wait timed out
    assert done[0].rnd.steps["wait_for_open"]["branch_taken"] == "timed_out"
    send_event(h.db, h.tenant, "mail.open", h.clock.now(), payload={"order_id": "ord_1"})
    plans = _commit(h, done)
    (plan,) = plans.values()
    assert plan is not None
    assert plan.again  # the round lost: it is redone from what won
    _redo(h, done, plans)
    h.work()
    assert wait_row(h.db, run_id)["status"] == "received"
    assert h.step(run_id, "wait_for_open")["branch_taken"] == "received"
    assert h.step(run_id, "push")["status"] == "completed"
    assert h.step(run_id, "crm")["status"] == "skipped"
    assert h.detail(run_id)["status"] == "completed"
    assert _types(h, run_id, "wait.") == ["wait.started", "wait.received"]


def test_a_timeout_during_a_deliverys_evaluation_wins(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = harness
    h.automation(follow_up())
    run_id = _order(h)
    h.clock.advance(30 * 60)
    real_match = wait_engine.Offer.match

    def match_then_time_out(self: wait_engine.Offer, *args: Any) -> None:
        real_match(self, *args)
        assert self.pairs, "the event matched the open wait"
        h.work()  # meanwhile the worker times the wait out

    monkeypatch.setattr(wait_engine.Offer, "match", match_then_time_out)
    send_event(h.db, h.tenant, "mail.open", h.clock.now(), payload={"order_id": "ord_1"})
    assert wait_row(h.db, run_id)["status"] == "timed_out"
    assert h.step(run_id, "wait_for_open")["branch_taken"] == "timed_out"
    assert h.step(run_id, "crm")["status"] == "completed"
    assert h.step(run_id, "push")["status"] == "skipped"
    assert _types(h, run_id, "wait.") == [
        "wait.started",
        "wait.timed_out",
        "wait.late_event_ignored",
    ]


def test_a_wait_written_during_a_deliverys_evaluation_still_gets_the_event(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The delivery read no wait; the wait's commit did not see the event yet: it is woken."""
    h = harness
    h.automation(follow_up())
    result = send_event(
        h.db, h.tenant, "order.completed", h.clock.now(), payload={"order_id": "ord_1"}
    )
    (started,) = result.runs_started
    run_id = str(started["run_id"])
    real_match = wait_engine.Offer.match

    def match_then_start_the_wait(self: wait_engine.Offer, *args: Any) -> None:
        real_match(self, *args)
        assert not self.pairs  # no wait existed when the delivery read
        h.work()  # meanwhile the run starts and writes its wait

    monkeypatch.setattr(wait_engine.Offer, "match", match_then_start_the_wait)
    send_event(h.db, h.tenant, "mail.open", h.clock.now(), payload={"order_id": "ord_1"})
    monkeypatch.undo()
    h.work()
    assert wait_row(h.db, run_id)["status"] == "received"
    assert h.step(run_id, "wait_for_open")["branch_taken"] == "received"
    assert h.detail(run_id)["status"] == "completed"


def test_the_runs_timeout_during_evaluation_wins(harness: Harness) -> None:
    h = harness
    h.automation({**follow_up(), "timeout": "PT10M"})
    run_id = _order(h)
    h.clock.advance(5 * 60)
    send_event(h.db, h.tenant, "mail.open", h.clock.now(), payload={"order_id": "ord_1"})
    done = _evaluated(h)  # the round takes the event and completes the run, in memory
    assert done[0].rnd.run["status"] == "completed"
    h.clock.advance(6 * 60)  # meanwhile the run's timeout passes and another worker acts on it
    h.work()
    assert h.detail(run_id)["status"] == "timed-out"
    assert _commit(h, done) == {done[0].item.task["id"]: None}  # its task went with the run
    d = h.detail(run_id)
    assert d["status"] == "timed-out"
    assert "run.completed" not in h.event_types(run_id)
    assert [s["status"] for s in d["steps"]] == ["cancelled", "cancelled", "cancelled"]


def test_history_is_whole(harness: Harness) -> None:
    """The redone round of the event race writes its history once."""
    h = harness
    h.automation(follow_up())
    run_id = _order(h, email=OLIVIA)
    h.clock.advance(30 * 60)
    done = _evaluated(h)
    send_event(h.db, h.tenant, "mail.open", h.clock.now(), payload={"order_id": "ord_1"})
    _redo(h, done, _commit(h, done))
    h.work()
    seqs = [e["seq"] for e in history(h.db, run_id)]
    assert seqs == list(range(1, len(seqs) + 1))


def test_no_write_lock_is_held_while_a_round_is_evaluated(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a round evaluates (for as long as it likes), others write: a heartbeat, a tenant."""
    h = harness
    a = h.automation({"name": "quick", "steps": [{"key": "s", "type": "set", "vars": {"x": 1}}]})
    run_id = h.trigger(a)
    evaluating, release = threading.Event(), threading.Event()
    real = worker_module.evaluate_one

    def slow(*args: Any) -> Any:
        evaluating.set()
        assert release.wait(60), "the test never released the evaluation"
        return real(*args)

    monkeypatch.setattr(worker_module, "evaluate_one", slow)
    worker = threading.Thread(target=h.work)
    worker.start()
    try:
        assert evaluating.wait(60), "the round never started evaluating"
        with h.db.transaction() as conn:  # would wait for the writer lock if one were held
            leases = [(str(t["id"]), str(t["lease_token"])) for t in _leased(conn)]
            assert task_store.heartbeat(conn, leases, h.clock.now() + LEASE) == 1
        make_tenant(h.db, "another")  # a write of another tenant's
        assert h.detail(run_id)["status"] == "pending"  # the round has not committed yet
    finally:
        release.set()
        worker.join(60)
    assert h.detail(run_id)["status"] == "completed"


def _leased(conn: Any) -> list[Any]:
    return list(
        conn.execute(select(tasks).where(tasks.c.lease_token.is_not(None))).mappings().all()
    )
