"""CONVEYOR_WORKER_CLAIM_LINGER: the shortest time between two claims of a worker that is not full.

After a quiet spell the first run triggered is claimed at once; runs
triggered GAP apart after it are claimed in one batch, the linger after that
first claim (they start within a moment of each other). Without a linger each
run is claimed as it comes (they start GAP apart).
"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime

from sqlalchemy import select

from conveyor.clock import SystemClock
from conveyor.engine.worker import Worker
from conveyor.settings import Settings
from conveyor.store.db import Database
from conveyor.store.tables import runs
from conveyor.testing.factories import make_automation, make_tenant, trigger

WAIT = 60.0  # only catches a hang
GAP = 0.2  # seconds between two triggers
DEFINITION = {"name": "one-step", "steps": [{"key": "a", "type": "set", "vars": {"x": 1}}]}


def _starts(db: Database, settings: Settings, linger: float) -> list[datetime]:
    """Trigger three runs GAP apart into an idle serving worker; their starts, in that order."""
    clock = SystemClock()
    tenant = make_tenant(db, f"linger-{linger}", now=clock.now())
    make_automation(db, tenant, DEFINITION, now=clock.now())
    worker = Worker(
        db,
        settings.model_copy(update={"worker_claim_linger": linger, "poll_interval": 10.0}),
        clock=clock,
    )
    thread = threading.Thread(target=asyncio.run, args=(worker.serve(1.0),), daemon=True)
    thread.start()
    try:
        # A first run, completed, shows the worker started (slow on a busy host);
        # a wake-up after its claim (its own NOTIFY, or on SQLite its end) makes
        # the worker claim once more, finding nothing, a linger later; then it
        # waits, and the quiet spell has begun.
        _completed(db, [trigger(db, tenant, "one-step", {}, now=clock.now())])
        time.sleep(2 * linger + 0.5)
        ids = []
        for i in range(3):
            ids.append(trigger(db, tenant, "one-step", {"i": i}, now=clock.now()))
            time.sleep(GAP)
        started = _completed(db, ids)
    finally:
        worker.stop()
        thread.join(WAIT)
    return [started[i] for i in ids]


def _completed(db: Database, ids: list[str]) -> dict[str, datetime]:
    """The start time of each run, by id, once all of them completed."""
    deadline = time.monotonic() + WAIT
    while True:
        with db.read() as conn:
            rows = conn.execute(
                select(runs.c.id, runs.c.started_at).where(
                    runs.c.id.in_(ids), runs.c.status == "completed"
                )
            )
            times = {str(r.id): r.started_at for r in rows if r.started_at is not None}
        if len(times) == len(ids):
            return times
        assert time.monotonic() < deadline, "the runs did not complete"
        time.sleep(0.05)


def _apart(a: datetime, b: datetime) -> float:
    return abs((b - a).total_seconds())


def test_a_lingering_worker_claims_runs_triggered_a_moment_apart_together(
    db: Database, settings: Settings
) -> None:
    first, second, third = _starts(db, settings, linger=3 * GAP + 0.5)
    assert _apart(second, third) < GAP / 2  # one batch, though triggered GAP apart
    # The first, after a quiet spell, was not held back for the others.
    assert _apart(first, second) > GAP


def test_without_a_linger_each_run_is_claimed_as_it_comes(db: Database, settings: Settings) -> None:
    first, second, third = _starts(db, settings, linger=0.0)
    assert _apart(first, second) > GAP / 2
    assert _apart(second, third) > GAP / 2
