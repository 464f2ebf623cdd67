"""CONVEYOR_WORKER_CLAIM_LINGER: an idle worker woken up waits that long, then claims all at once.

Runs triggered GAP apart are claimed in one batch with a linger (they start
within a moment of each other, long after the first trigger), and one by one
without (they start GAP apart, as they came).
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


def _spread(db: Database, settings: Settings, linger: float) -> float:
    """Trigger three runs GAP apart into an idle serving worker; seconds between their starts."""
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
        # after it the worker lingers once more, claims nothing, and waits.
        _completed(db, [trigger(db, tenant, "one-step", {}, now=clock.now())])
        time.sleep(linger + 0.5)
        ids = []
        for i in range(3):
            ids.append(trigger(db, tenant, "one-step", {"i": i}, now=clock.now()))
            time.sleep(GAP)
        times = _completed(db, ids)
    finally:
        worker.stop()
        thread.join(WAIT)
    return (max(times) - min(times)).total_seconds()


def _completed(db: Database, ids: list[str]) -> list[datetime]:
    """The start times of the runs, once all of them completed."""
    deadline = time.monotonic() + WAIT
    while True:
        with db.read() as conn:
            started = conn.execute(
                select(runs.c.started_at).where(runs.c.id.in_(ids), runs.c.status == "completed")
            ).scalars()
            times = [t for t in started if t is not None]
        if len(times) == len(ids):
            return times
        assert time.monotonic() < deadline, "the runs did not complete"
        time.sleep(0.05)


def test_a_lingering_worker_claims_runs_triggered_a_moment_apart_together(
    db: Database, settings: Settings
) -> None:
    assert _spread(db, settings, linger=3 * GAP + 0.5) < GAP / 2


def test_without_a_linger_each_run_is_claimed_as_it_comes(db: Database, settings: Settings) -> None:
    assert _spread(db, settings, linger=0.0) > GAP
