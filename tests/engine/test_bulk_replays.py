"""Replaying many runs at once (bulk replay pages), on both databases.

A page of a bulk replay retries its runs together (``control.retry_runs``).
These tests hold it to two promises: the database ends up exactly as if each
run had been replayed on its own (``retry_run`` in a SAVEPOINT, as pages did
before), refusals included; and a page costs the same statements whatever
its number of runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, event, select, update

from conveyor.domain.errors import ConveyorError
from conveyor.domain.ids import new_id
from conveyor.domain.run_filters import RunFilters
from conveyor.engine import bulk
from conveyor.engine.control import Actor, cancel_run, retry_run, retry_runs
from conveyor.store import automations as automation_store
from conveyor.store import bulk as bulk_store
from conveyor.store.db import Database
from conveyor.store.tables import run_events, run_tags, runs, step_runs, tasks
from conveyor.testing.factories import make_automation, make_tenant, trigger
from tests.engine.conftest import Harness

# a completes, b fails (its template reads a missing field), c never runs.
FLAKY = {
    "name": "flaky",
    "tags": ["nightly"],
    "steps": [
        {"key": "a", "type": "set", "vars": {"n": "{{ trigger.payload.n }}"}},
        {"key": "b", "type": "set", "vars": {"x": "{{ trigger.payload.nope.x }}"}},
        {"key": "c", "type": "set", "vars": {"done": True}},
    ],
}
FINE = {"name": "fine", "steps": [{"key": "only", "type": "set", "vars": {"ok": True}}]}
GONE = {"name": "gone", "steps": [FLAKY["steps"][1]]}
ACTOR = Actor(kind="api_key", id="key-1", label="ops")


def _mixed_runs(h: Harness) -> list[str]:
    """Run ids of every kind a replay meets, in the order a page would list them."""
    h.automation(FLAKY)
    h.automation(FINE)
    gone = h.automation(GONE)
    failed = [
        h.trigger("flaky", {"n": 1}),
        h.trigger("flaky", {"n": 2}, idempotency_key="nightly-2"),
        h.trigger("flaky", {"n": 3}, idempotency_key="nightly-3"),
    ]
    completed = h.trigger("fine")
    orphan = h.trigger("gone")
    h.work()
    # A replay of a replay: its lineage root is the first run.
    with h.db.transaction() as conn:
        again = retry_run(
            conn,
            h.tenant,
            failed[0],
            mode="from_failed",
            step_key=None,
            payload=None,
            version="original",
            resend=False,
            reason=None,
            actor=ACTOR,
            now=h.clock.now(),
        )
    h.work()
    with h.db.transaction() as conn:
        automation_store.soft_delete_automation(conn, h.tenant, gone, h.clock.now())
    cancelled = h.trigger("flaky", {"n": 4})
    with h.db.transaction() as conn:
        cancel_run(conn, h.tenant, cancelled, actor=ACTOR, reason=None, now=h.clock.now())
    other = make_tenant(h.db, "other", now=h.clock.now())
    make_automation(h.db, other, FLAKY, now=h.clock.now())
    foreign = trigger(h.db, other, "flaky", {"n": 5}, now=h.clock.now())
    h.work()
    assert h.detail(again["id"])["status"] == "failed"
    assert h.detail(orphan)["status"] == "failed"
    assert h.detail(completed)["status"] == "completed"
    assert h.detail(cancelled)["status"] == "cancelled"
    pending = h.trigger("fine")  # not worked: still pending
    missing = new_id()
    return [*failed, again["id"], completed, orphan, cancelled, pending, missing, foreign]


def _snapshot(conn: Connection, originals: list[str]) -> str:
    """Everything the replays wrote, with the new rows' random ids named by what they retry."""
    new_runs = conn.execute(select(runs).where(runs.c.retry_of.in_(originals))).mappings().all()
    names = {
        str(r["id"]): f"<retry of {r['retry_of']}>"
        for r in new_runs
        if str(r["id"]) not in originals  # a replay of a replay is among the originals
    }
    touched = sorted(names) + sorted(originals)
    state: dict[str, Any] = {}
    for table in (runs, step_runs, run_events, run_tags, tasks):
        column = table.c.id if table is runs else table.c.run_id
        rows = conn.execute(select(table).where(column.in_(touched))).mappings().all()
        keep = [{k: v for k, v in r.items() if not (k == "id" and table is not runs)} for r in rows]
        state[table.name] = keep
    text = json.dumps(state, default=str, sort_keys=True)
    for run_id, name in names.items():
        text = text.replace(run_id, name).replace(run_id.replace("-", ""), name)
    # Sorted after renaming, so the rows' order does not depend on random ids.
    loaded = json.loads(text)
    return json.dumps({k: sorted(v, key=lambda r: json.dumps(r)) for k, v in loaded.items()})


def _outcome(result: dict[str, Any] | ConveyorError) -> Any:
    if isinstance(result, ConveyorError):
        return (type(result).__name__, result.code, result.detail)
    return f"<retry of {result['retry_of']}>"


@pytest.fixture
def rolled_back(db: Database) -> Callable[[Callable[[Connection], Any]], Any]:
    """Run a function in a transaction that is then rolled back; return its answer."""

    def run(fn: Callable[[Connection], Any]) -> Any:
        with db.engine.connect() as conn:
            tx = conn.begin()
            try:
                return fn(conn)
            finally:
                tx.rollback()

    return run


def test_a_page_of_mixed_runs_ends_as_replaying_them_one_by_one(
    harness: Harness, rolled_back: Callable[[Callable[[Connection], Any]], Any]
) -> None:
    h = harness
    ids = _mixed_runs(h)
    now = h.clock.now()
    options: dict[str, Any] = {
        "mode": "from_failed",
        "step_key": None,
        "payload": None,
        "version": "original",
        "resend": True,
        "reason": "the API was down",
        "actor": ACTOR,
        "now": now,
    }

    def together(conn: Connection) -> tuple[list[Any], str]:
        results = retry_runs(conn, h.tenant, ids, **options)
        return [_outcome(r) for r in results], _snapshot(conn, ids)

    def one_by_one(conn: Connection) -> tuple[list[Any], str]:
        results: list[Any] = []
        for run_id in ids:  # what a bulk page did before: a SAVEPOINT per run
            try:
                with conn.begin_nested():
                    results.append(_outcome(retry_run(conn, h.tenant, run_id, **options)))
            except ConveyorError as exc:
                results.append(_outcome(exc))
        return results, _snapshot(conn, ids)

    batch_results, batch_state = rolled_back(together)
    single_results, single_state = rolled_back(one_by_one)
    assert batch_results == single_results
    assert batch_state == single_state

    failed = ids[:3]
    again, completed, orphan, cancelled, pending, missing, foreign = ids[3:]
    codes = dict(zip(ids, batch_results, strict=True))
    for run_id in [*failed, again, cancelled]:
        assert codes[run_id] == f"<retry of {run_id}>"
    assert codes[completed][1] == "run_not_retryable"
    assert codes[pending][1] == "run_not_retryable"
    assert codes[orphan][1] == "automation_not_found"
    assert codes[missing][1] == "run_not_found"
    assert codes[foreign][1] == "run_not_found"

    # What a replay promises, checked once on the batch's own result.
    with h.db.transaction() as conn:
        results = dict(zip(ids, retry_runs(conn, h.tenant, ids, **options), strict=True))
    h.work()
    for run_id in [*failed, again]:
        new = results[run_id]
        assert isinstance(new, dict)
        detail = h.detail(new["id"])
        assert detail["retry_of"] == run_id
        assert detail["root_run_id"] == (failed[0] if run_id == again else run_id)
        assert h.step(new["id"], "a")["reused_from"] is not None
        assert h.step(new["id"], "b")["reused_from"] is None
        assert h.event_types(new["id"])[:2] == ["run.created", "step.reused"]
        assert h.event_types(run_id)[-1] == "run.retried"
    with h.db.read() as conn:
        keys = conn.execute(
            select(runs.c.idempotency_key).where(runs.c.retry_of.in_(failed[1:]))
        ).scalars()
        assert list(keys) == [None, None]  # a replay takes no key (the original keeps its own)
    cancelled_new = results[cancelled]
    assert isinstance(cancelled_new, dict)
    assert h.step(cancelled_new["id"], "a")["reused_from"] is None  # nothing had completed


def _statements(db: Database, fn: Callable[[], Any]) -> int:
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        fn()
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    return len(seen)


TOKEN = "00000000-0000-4000-8000-000000000001"


def _leased_task(db: Database, operation_id: str) -> Any:
    """The operation's task, leased as a worker would hold it (under ``TOKEN``)."""
    with db.transaction() as conn:
        conn.execute(
            update(tasks)
            .where(tasks.c.operation_id == operation_id)
            .values(lease_owner="test", lease_token=TOKEN)
        )
        return (
            conn.execute(select(tasks).where(tasks.c.operation_id == operation_id)).mappings().one()
        )


def test_a_replay_page_costs_the_same_statements_whatever_its_size(harness: Harness) -> None:
    h = harness
    h.automation(FLAKY)
    h.automation({**FLAKY, "name": "flakier"})
    for i in range(3):
        h.trigger("flaky", {"n": i})
    for i in range(40):
        h.trigger("flakier", {"n": i}, idempotency_key=f"k{i}")
    h.work()
    h.clock.advance(1)  # an operation acts on runs created before it was asked for

    def page(name: str) -> tuple[int, dict[str, Any]]:
        with h.db.transaction() as conn:
            op_id = bulk.request(
                conn,
                h.tenant,
                "replay",
                RunFilters(automation_name=name),
                arguments={"reason": "retry all"},
                actor=ACTOR,
                now=h.clock.now(),
            )
        task = _leased_task(h.db, op_id)

        def process() -> None:
            with h.db.transaction() as conn:
                assert bulk.process_page(conn, task, TOKEN, h.clock.now, timedelta(seconds=30))

        count = _statements(h.db, process)
        with h.db.read() as conn:
            op = bulk_store.get_operation(conn, op_id)
        assert op is not None
        return count, dict(op)

    small, small_op = page("flaky")
    large, large_op = page("flakier")
    assert (small_op["matched"], small_op["done"], small_op["failed"]) == (3, 3, 0)
    assert (large_op["matched"], large_op["done"], large_op["failed"]) == (40, 40, 0)
    # Not equal on PostgreSQL: from 16 rows on, inserts go through COPY on the
    # driver's cursor, which this listener does not see (one COPY per table).
    assert large <= small, (small, large)


def test_a_refused_run_is_counted_and_does_not_undo_the_page(harness: Harness) -> None:
    h = harness
    h.automation(FLAKY)
    gone = h.automation({**GONE, "name": "flaky-too"})
    kept = [h.trigger("flaky", {"n": i}) for i in range(3)]
    orphan = h.trigger("flaky-too")
    h.work()
    h.clock.advance(1)
    with h.db.transaction() as conn:
        automation_store.soft_delete_automation(conn, h.tenant, gone, h.clock.now())
        op_id = bulk.request(
            conn, h.tenant, "replay", RunFilters(), arguments={}, actor=ACTOR, now=h.clock.now()
        )
    task = _leased_task(h.db, op_id)
    with h.db.transaction() as conn:
        bulk.process_page(conn, task, TOKEN, h.clock.now, timedelta(seconds=30))
    with h.db.read() as conn:
        op = bulk_store.get_operation(conn, op_id)
        retries = conn.execute(select(runs.c.retry_of).where(runs.c.retry_of.is_not(None)))
        retried = sorted(str(r) for r in retries.scalars())
    assert op is not None
    assert (op["status"], op["matched"], op["done"], op["failed"]) == ("completed", 4, 3, 1)
    assert op["errors"] == [
        {
            "run_id": orphan,
            "code": "automation_not_found",
            "detail": "automation flaky-too was deleted",
        }
    ]
    assert retried == sorted(kept)
    for run_id in kept:
        assert h.event_types(run_id)[-1] == "run.retried"
    assert "run.retried" not in h.event_types(orphan)
