"""When a serving worker's loop wakes: for new work and for due times, not for every finished round.

A round that ends its run frees a lease; on PostgreSQL, waking the claim loop
for it would cost an empty claim and a next-due read per batch under a steady
trickle of triggers (SQLite keeps that wake-up: it has no other way to learn of
work other processes queued). A round that sets a due time (a short delay)
must wake the loop on both, which otherwise sleeps until its next poll.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import select

from conveyor.clock import SystemClock
from conveyor.engine.worker import Worker
from conveyor.settings import Settings
from conveyor.store import tasks as task_store
from conveyor.store.db import Database
from conveyor.store.tables import runs
from conveyor.testing.factories import make_automation, make_tenant, trigger

WAIT = 60.0  # only catches a hang
POLL = 30.0  # far longer than any wait below: only a wake-up can explain a prompt claim
ONE_STEP = {"name": "one-step", "steps": [{"key": "a", "type": "set", "vars": {"x": 1}}]}
NAP = {
    "name": "nap",
    "steps": [
        {"key": "nap", "type": "delay", "duration": 0.3},
        {"key": "after", "type": "set", "vars": {"x": 1}, "depends_on": ["nap"]},
    ],
}


@contextmanager
def _serving(db: Database, settings: Settings) -> Iterator[Worker]:
    worker = Worker(
        db,
        settings.model_copy(update={"worker_claim_linger": 0.0, "poll_interval": POLL}),
        clock=SystemClock(),
    )
    thread = threading.Thread(target=asyncio.run, args=(worker.serve(1.0),), daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(WAIT)


def _finished(db: Database, ids: list[str]) -> dict[str, tuple[datetime, datetime]]:
    """Each run's (created_at, completed_at), once all of them completed."""
    deadline = time.monotonic() + WAIT
    while True:
        with db.read() as conn:
            rows = conn.execute(
                select(runs.c.id, runs.c.created_at, runs.c.completed_at).where(
                    runs.c.id.in_(ids), runs.c.status == "completed"
                )
            ).all()
        if len(rows) == len(ids):
            return {str(r[0]): (r[1], r[2]) for r in rows}
        assert time.monotonic() < deadline, "the runs did not complete"
        time.sleep(0.05)


def test_runs_that_end_do_not_wake_the_loop_for_an_empty_claim(
    db: Database, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    claims: list[int] = []
    real_claim = task_store.claim

    def counted(*args: Any, **kwargs: Any) -> Any:
        rows = real_claim(*args, **kwargs)
        claims.append(len(rows))
        return rows

    monkeypatch.setattr(task_store, "claim", counted)
    clock = SystemClock()
    tenant = make_tenant(db, "wakeups", now=clock.now())
    make_automation(db, tenant, ONE_STEP, now=clock.now())
    # On PostgreSQL the triggers come from another engine, as from `conveyor serve`:
    # the worker hears of them by NOTIFY alone, not also by this process's hook.
    # SQLite has no NOTIFY: there the in-process hook is the wake-up.
    source = db if db.is_sqlite else Database(db.url.render_as_string(hide_password=False))
    with _serving(db, settings):
        _finished(db, [trigger(source, tenant, "one-step", {}, now=clock.now())])  # started
        time.sleep(0.3)
        before = len(claims)
        ids = []
        for i in range(5):
            ids.append(trigger(source, tenant, "one-step", {"i": i}, now=clock.now()))
            _finished(db, ids)
            time.sleep(0.2)  # the loop is idle again before the next trigger
        after = claims[before:]
    if source is not db:
        source.dispose()
    # One claim per trigger that woke it. On PostgreSQL a finished run adds no
    # empty claim; on SQLite (no wake-up across processes) a finished batch is
    # when the worker looks for what other processes queued: one more claim each.
    assert sum(after) == 5
    assert len(after) == (10 if db.is_sqlite else 5), after


def test_a_round_that_sets_a_due_time_wakes_the_loop(db: Database, settings: Settings) -> None:
    clock = SystemClock()
    tenant = make_tenant(db, "naps", now=clock.now())
    make_automation(db, tenant, NAP, now=clock.now())
    with _serving(db, settings):
        run_id = trigger(db, tenant, "nap", {}, now=clock.now())
        created, completed = _finished(db, [run_id])[run_id]
    # The nap's 0.3 s, not the 30 s poll: the round that parked the run woke the loop.
    assert 0.3 <= (completed - created).total_seconds() < 10
