"""Fairness between tenants, with a real ``conveyor worker``.

One tenant's 200 runs each hold a slot for a slow HTTP call, more than the
worker has; another tenant's one-step run, triggered after them, gets the
first slot that frees: it starts before many of the first tenant's runs
(first come, first served would start it after every one of them), and
completes while they are still waiting for slots. Ordering, not a clock.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select

from conveyor.store.db import Database
from conveyor.store.tables import runs
from conveyor.testing.factories import make_automation, make_tenant, trigger
from tests.support.http_server import HitServer

CONVEYOR = Path(sys.executable).with_name("conveyor")
SLOW_RUNS = 200


def _wait_for(what: str, predicate: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def _count(db: Database, *where: object) -> int:
    with db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(runs).where(*where)).scalar_one())


@pytest.mark.slow
def test_another_tenants_run_gets_the_first_free_slot(
    db: Database, http_server: HitServer, tmp_path: Path
) -> None:
    busy, other = make_tenant(db, "busy"), make_tenant(db, "other")
    call = {"key": "call", "type": "http_request", "url": http_server.url + "/sleep/0.5/slow/x"}
    slow = make_automation(db, busy, {"name": "slow", "steps": [call]})
    quick = make_automation(
        db, other, {"name": "quick", "steps": [{"key": "s", "type": "set", "vars": {"x": 1}}]}
    )
    for i in range(SLOW_RUNS):
        trigger(db, busy, slow, {"i": i})
    env = {
        **os.environ,
        "CONVEYOR_DATABASE_URL": db.url.render_as_string(hide_password=False),
        "CONVEYOR_WORKER_CONCURRENCY": "32",
        "CONVEYOR_POLL_INTERVAL": "0.05",
        "CONVEYOR_EGRESS_ALLOW": "127.0.0.1/32",
        "CONVEYOR_LOG_LEVEL": "WARNING",
    }
    with (tmp_path / "worker.log").open("wb") as log:
        worker = subprocess.Popen([str(CONVEYOR), "worker"], env=env, stdout=log, stderr=log)
    try:
        # Alone, the busy tenant may use every slot.
        _wait_for("every slot busy", lambda: http_server.max_inflight["slow"] >= 32)
        mine = trigger(db, other, quick, {})
        _wait_for(
            "the other tenant's run",
            lambda: _count(db, runs.c.id == mine, runs.c.status == "completed") == 1,
        )
        waiting = _count(db, runs.c.tenant_id == busy, runs.c.status == "pending")
        with db.read() as conn:
            started = conn.execute(select(runs.c.started_at).where(runs.c.id == mine)).scalar_one()
        _wait_for(
            "the busy tenant's runs",
            lambda: _count(db, runs.c.tenant_id == busy, runs.c.status == "completed") == SLOW_RUNS,
        )
        # Counted once all have started: the next of theirs starts only when a slot frees.
        later = _count(db, runs.c.tenant_id == busy, runs.c.started_at > started)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    assert waiting > 0  # it completed while the busy tenant's runs still waited for slots
    assert later > 0  # and started before some of them, though triggered after all
