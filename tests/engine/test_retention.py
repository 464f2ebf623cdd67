"""Retention on both databases: prune removes exactly what the settings say, by lineage.

Time is driven: rows are made at the fake clock's time, the clock moves on, and
a prune runs at the new time (``conveyor.services.retention``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import date, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from conveyor.domain.ids import new_id
from conveyor.engine.control import Actor, retry_run
from conveyor.services import retention
from conveyor.services.events import NewEvent, ingest_events
from conveyor.services.keys import create_key, revoke_key
from conveyor.settings import Settings
from conveyor.store import idempotency as idempotency_store
from conveyor.store import prune as prune_store
from conveyor.store.db import Database
from conveyor.store.dryrun_tables import dry_run_results, dry_runs
from conveyor.store.messaging_tables import events, messages
from conveyor.store.tables import (
    api_keys,
    bulk_operations,
    idempotency_records,
    run_events,
    runs,
    step_attempts,
    step_runs,
    tasks,
)
from conveyor.testing.factories import request_dry_run
from tests.engine.conftest import Harness

DAY = 86_400.0
OK = {
    "name": "ok",
    "trigger": {"type": "event", "event": "order.completed"},
    "steps": [
        {"key": "one", "type": "set", "vars": {"n": 1}},
        {
            "key": "mail",
            "type": "send_email_template",
            "template": "receipt",
            "to": "ann@example.com",
        },
    ],
}
MANUAL = {"name": "manual", "steps": [{"key": "one", "type": "set", "vars": {"n": 1}}]}
FAILING = {
    "name": "failing",
    "steps": [{"key": "boom", "type": "condition", "expression": "trigger.payload.nope.x"}],
}
ACTOR = Actor("user", "test")


def _template(h: Harness) -> None:
    from conveyor.services.templates import put_template

    with h.db.transaction() as conn:
        put_template(
            conn,
            h.tenant,
            "receipt",
            "email",
            {"subject": "Hi", "text": "Thanks"},
            now=h.clock.now(),
        )


def prune(h: Harness, apply: bool = True, **overrides: Any) -> dict[str, int]:
    """Prune at the clock's time with the settings' retention (and ``overrides``)."""
    # The suite keeps events forever (tests/conftest.py); here the default applies.
    settings = h.settings.model_copy(update={"retention_events_days": 90, **overrides})
    policy = retention.Policy.from_settings(settings, h.clock.now())

    def run_page(page: retention.PageFn) -> retention.Progress:
        with h.db.transaction() as conn:
            return page(conn)

    counts = retention.prune_all(run_page, policy, apply=apply).totals()
    return {k: v for k, v in counts.items() if v}


def count(db: Database, table: Any, *where: Any) -> int:
    with db.read() as conn:
        stmt = select(func.count()).select_from(table)
        for w in where:
            stmt = stmt.where(w)
        return int(conn.execute(stmt).scalar_one())


def exists(db: Database, run_id: str) -> bool:
    return count(db, runs, runs.c.id == run_id) == 1


def event(h: Harness, event_id: str, **kw: Any) -> None:
    item = NewEvent(0, event_id, "order.completed", None, {"total": 1}, kw.get("occurred_at"))
    (result,) = ingest_events(h.db, h.tenant, [item], h.clock.now())
    assert result.status != "rejected", result


def test_runs_go_after_their_status_retention_with_everything_hanging_off_them(
    harness: Harness,
) -> None:
    h = harness
    _template(h)
    h.automation(OK)
    h.automation(FAILING)
    event(h, "e-old")  # starts one `ok` run, which sends one message
    failed = h.trigger("failing")
    h.work()
    (done,) = [r for r in _runs(h) if r["automation_name"] == "ok"]
    assert (done["status"], h.detail(failed)["status"]) == ("completed", "failed")
    assert count(h.db, messages) == 1
    h.clock.advance(29 * DAY)
    h.automation(MANUAL)
    recent = h.trigger("manual")
    h.work()

    h.clock.advance(2 * DAY)  # day 31: the completed run is due, the failed one is not
    steps_of_done = count(h.db, step_runs, step_runs.c.run_id == done["id"])
    history_of_done = count(h.db, run_events, run_events.c.run_id == done["id"])
    attempts_of_done = count(h.db, step_attempts, step_attempts.c.run_id == done["id"])
    removed = prune(h)
    assert removed == {
        "runs": 1,
        "steps": steps_of_done,
        "attempts": attempts_of_done,
        "history": history_of_done,
        "messages": 1,
    }
    assert not exists(h.db, done["id"])
    assert exists(h.db, failed)
    assert exists(h.db, recent)
    assert count(h.db, step_runs, step_runs.c.run_id == done["id"]) == 0
    assert count(h.db, messages) == 0
    assert prune(h) == {}  # nothing more is due

    h.clock.advance(60 * DAY)  # day 91: the failed run and the event are due; `recent` too
    removed = prune(h)
    assert removed["runs"] == 2
    assert removed["events"] == 1
    assert not exists(h.db, failed)
    assert not exists(h.db, recent)
    assert count(h.db, runs) == 0
    assert count(h.db, events) == 0


def _runs(h: Harness) -> list[dict[str, Any]]:
    with h.db.read() as conn:
        return [dict(r) for r in conn.execute(select(runs).order_by(runs.c.id)).mappings()]


def _retry(h: Harness, run_id: str) -> str:
    with h.db.transaction() as conn:
        row = retry_run(
            conn,
            h.tenant,
            run_id,
            mode="full",
            step_key=None,
            payload=None,
            version="original",
            resend=False,
            reason="test",
            actor=ACTOR,
            now=h.clock.now(),
        )
    return str(row["id"])


def test_a_lineage_goes_only_when_every_run_of_it_is_past_retention(harness: Harness) -> None:
    h = harness
    h.automation(MANUAL)
    old = h.trigger("manual")
    other = h.trigger("manual")
    h.work()
    h.clock.advance(29 * DAY)
    retry = _retry(h, old)  # not worked yet: pending
    h.clock.advance(40 * DAY)
    history = _history(h, other)
    assert prune(h) == {"runs": 1, "steps": 1, "attempts": 1, "history": history}
    assert exists(h.db, old)
    assert exists(h.db, retry)
    assert not exists(h.db, other)

    h.work()  # the retry finishes now, day 69
    assert h.detail(retry)["status"] == "completed"
    h.clock.advance(29 * DAY)
    assert prune(h) == {}  # the retry is 29 days old: its old first run stays too
    assert exists(h.db, old)
    h.clock.advance(2 * DAY)
    removed = prune(h)
    assert removed["runs"] == 2
    assert not exists(h.db, old)
    assert not exists(h.db, retry)


def _history(h: Harness, run_id: str) -> int:
    return count(h.db, run_events, run_events.c.run_id == run_id)


def test_zero_keeps_forever_and_dry_run_counts_what_a_prune_removes(harness: Harness) -> None:
    h = harness
    h.automation(MANUAL)
    h.automation(FAILING)
    for _ in range(3):
        h.trigger("manual")
    h.trigger("failing")
    event(h, "e-1")
    h.work()
    h.clock.advance(1000 * DAY)
    forever = {
        "retention_runs_days": 0,
        "retention_failed_runs_days": 0,
        "retention_events_days": 0,
    }
    assert prune(h, **forever) == {}
    failed = next(r for r in _runs(h) if r["status"] == "failed")
    history = _history(h, failed["id"])
    assert prune(h, **{**forever, "retention_failed_runs_days": 1}) == {
        "runs": 1,
        "steps": 1,
        "attempts": 1,
        "history": history,
    }

    before = (count(h.db, runs), count(h.db, step_runs), count(h.db, events))
    would = prune(h, apply=False, retention_events_days=90)
    assert (count(h.db, runs), count(h.db, step_runs), count(h.db, events)) == before
    assert would["runs"] == 3
    assert would["events"] == 1
    assert prune(h, retention_events_days=90) == would
    assert count(h.db, runs) == 0


def test_small_batches_walk_every_page(harness: Harness) -> None:
    h = harness
    h.automation(MANUAL)
    ids = [h.trigger("manual") for _ in range(7)]
    h.work()
    keep = _retry(h, ids[3])  # a retry still pending keeps its lineage
    h.clock.advance(31 * DAY)
    assert prune(h, apply=False, retention_batch_size=2)["runs"] == 6
    assert prune(h, retention_batch_size=2)["runs"] == 6
    assert {r["id"] for r in _runs(h)} == {ids[3], keep}


def test_dry_runs_bulk_operations_revoked_keys_and_idempotency_records(harness: Harness) -> None:
    h = harness
    h.automation(MANUAL)
    with h.db.transaction() as conn:
        contact = _contact(conn, h)
    request_dry_run(
        h.db, h.tenant, "manual", date(2026, 6, 1), date(2026, 6, 2), [contact], now=h.clock.now()
    )
    h.work()
    with h.db.read() as conn:
        assert conn.execute(select(dry_runs.c.status)).scalar_one() == "completed"
    results = count(h.db, dry_run_results)
    simulated = count(h.db, runs, runs.c.dry_run.is_(True))
    assert results == 2
    assert simulated == 2
    simulated_steps = count(h.db, step_runs)  # no real run yet: every step is simulated
    now = h.clock.now()
    with h.db.transaction() as conn:
        view, _ = create_key(conn, tenant_id=h.tenant, scopes=["runs:read"], now=now)
        revoke_key(conn, h.tenant, view["id"], now=now)
        create_key(conn, tenant_id=h.tenant, scopes=["runs:read"], now=now)  # live: kept
        idempotency_store.try_insert(
            conn,
            tenant_id=h.tenant,
            key_id=view["id"],
            key="k",
            method="POST",
            path="/x",
            body_hash="0" * 64,
            now=now,
            expires_at=now + timedelta(days=1),
        )
        conn.execute(bulk_operations.insert().values(**_bulk(h, "completed", now)))
        conn.execute(bulk_operations.insert().values(**_bulk(h, "running", now)))

    h.clock.advance(2 * DAY)  # only the idempotency record has expired
    assert prune(h) == {"idempotency_records": 1}
    h.clock.advance(29 * DAY)  # day 31: dry runs and finished bulk operations
    assert prune(h) == {
        "steps": simulated_steps,
        "dry_runs": 1,
        "dry_run_results": 2,
        "simulated_runs": 2,
        "bulk_operations": 1,
    }
    assert count(h.db, runs) == 0
    assert count(h.db, bulk_operations) == 1
    h.clock.advance(60 * DAY)  # day 91: the revoked key
    assert prune(h) == {"api_keys": 1}
    assert count(h.db, api_keys) == 1
    assert count(h.db, idempotency_records) == 0


def _contact(conn: Any, h: Harness) -> str:
    from conveyor.store import contacts as contact_store

    row = contact_store.create_contact(
        conn, h.tenant, {"external_id": "ann", "email": "ann@example.com"}, h.clock.now()
    )
    return str(row["id"])


def _bulk(h: Harness, status: str, now: Any) -> dict[str, Any]:
    return {
        "id": new_id(),
        "tenant_id": h.tenant,
        "kind": "cancel",
        "filters": {},
        "arguments": {},
        "status": status,
        "errors": [],
        "created_at": now,
        "updated_at": now,
        "completed_at": now if status == "completed" else None,
    }


def test_the_prune_task_runs_from_the_worker_and_records_the_last_prune(
    harness: Harness,
) -> None:
    h = harness
    h.automation(MANUAL)
    old = h.trigger("manual")
    h.work()
    h.clock.advance(31 * DAY)
    h.settings.retention_prune_interval = 3600  # the suite turns it off (tests/conftest.py)
    with h.db.transaction() as conn:
        assert not retention.queue(conn, h.clock.now(), 0)  # automatic pruning off
        assert retention.queue(conn, h.clock.now(), 3600)
        assert not retention.queue(conn, h.clock.now(), 3600)  # one task, however many ask
    h.work()
    assert not exists(h.db, old)
    with h.db.read() as conn:
        last = retention.last_prune(conn)
        task = conn.execute(select(tasks).where(tasks.c.kind == prune_store.PRUNE)).one()
    assert last is not None
    assert last["source"] == "worker"
    assert last["counts"]["runs"] == 1
    assert task.due_at == h.clock.now() + timedelta(seconds=3600)
    assert task.lease_token is None
    young = h.trigger("manual")
    h.advance(3600)  # the next prune: nothing due
    assert exists(h.db, young)
    with h.db.read() as conn:
        assert retention.last_prune(conn)["counts"]["runs"] == 0  # type: ignore[index]

    h.settings.retention_prune_interval = 0  # turned off since: the task goes after its prune
    h.advance(3600)
    with h.db.read() as conn:
        assert conn.execute(select(tasks).where(tasks.c.kind == prune_store.PRUNE)).first() is None


def test_pruning_while_a_worker_runs_loses_nothing_that_is_not_due(harness: Harness) -> None:
    h = harness
    h.automation(
        {
            "name": "busy",
            "steps": [
                {"key": "a", "type": "set", "vars": {"n": 1}},
                {"key": "b", "type": "set", "vars": {"n": 2}, "depends_on": ["a"]},
                {"key": "c", "type": "set", "vars": {"n": 3}, "depends_on": ["b"]},
            ],
        }
    )
    old = [h.trigger("busy") for _ in range(25)]
    h.work()
    h.clock.advance(31 * DAY)
    fresh = [h.trigger("busy") for _ in range(25)]
    pruned: dict[str, int] = {}
    failures: list[BaseException] = []

    def pruner() -> None:
        try:
            pruned.update(prune(h, retention_batch_size=3))
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=pruner)
    thread.start()
    asyncio.run(h.worker.run_until_idle())
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert not failures
    assert pruned["runs"] == 25
    assert all(not exists(h.db, r) for r in old)
    for run_id in fresh:
        detail = h.detail(run_id)
        assert detail["status"] == "completed"
        assert [s["status"] for s in detail["steps"]] == ["completed"] * 3
    assert prune(h) == {}


@pytest.mark.parametrize("days", [0, 90])
def test_settings_defaults_and_zero(days: int) -> None:
    settings = Settings(retention_events_days=days)
    policy = retention.Policy.from_settings(settings, _now())
    assert (policy.events is None) == (days == 0)
    assert Settings.model_fields["retention_runs_days"].default == 30
    assert Settings.model_fields["retention_failed_runs_days"].default == 90


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime(2026, 6, 8, tzinfo=UTC)


def test_a_serving_worker_queues_the_prune_task_itself(harness: Harness) -> None:
    h = harness
    h.automation(MANUAL)
    old = h.trigger("manual")
    h.work()
    h.clock.advance(31 * DAY)
    h.settings.retention_prune_interval = 3600
    h.settings.poll_interval = 0.05
    thread = threading.Thread(target=asyncio.run, args=(h.worker.serve(1.0),))
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while _last(h) is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        h.worker.stop()
        thread.join(timeout=60)
    assert not exists(h.db, old)
    last = _last(h)
    assert last is not None
    assert last["counts"]["runs"] == 1


def _last(h: Harness) -> dict[str, Any] | None:
    with h.db.read() as conn:
        return retention.last_prune(conn)
