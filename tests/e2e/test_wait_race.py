"""The event-versus-timeout race, for real: two ``conveyor worker`` processes on PostgreSQL.

Forty runs park on waits that time out about three seconds later; for each, a
thread ingests the matching event (through the events service, so delivery is
the production path) at the wait's ``timeout_at``: half of them exactly then,
the others spread from 0.2 s before to 0.6 s after, so both sides win some.
Every wait must end with exactly one outcome: its status is ``received`` xor
``timed_out``, its step took the same branch, the run's history has exactly
one of ``wait.received`` / ``wait.timed_out``, and every event that lost to
the timer is in the history as ``wait.late_event_ignored``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from conveyor.domain.ids import new_id
from conveyor.services.events import NewEvent, ingest_events
from conveyor.services.runs import get_run_detail, trigger_run
from conveyor.store.db import Database
from conveyor.store.messaging_tables import waits
from conveyor.store.runs import get_events
from conveyor.store.tables import runs
from conveyor.testing.factories import make_automation, make_tenant
from tests.e2e.test_crash_recovery import stop_workers

RUNS = 40
RACE = {
    "name": "race",
    "steps": [
        {
            "key": "w",
            "type": "wait_for_event",
            "event": "ping",
            "match": "event.payload.n == trigger.payload.n",
            "timeout": "PT3S",
        },
        {"key": "got_it", "type": "set", "vars": {"x": 1}, "depends_on": ["w.received"]},
        {"key": "gave_up", "type": "set", "vars": {"x": 2}, "depends_on": ["w.timed_out"]},
    ],
}


def _start_worker(db: Database, name: str, log_dir: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CONVEYOR_DATABASE_URL": db.url.render_as_string(hide_password=False),
        "CONVEYOR_WORKER_ID": name,
        "CONVEYOR_LEASE_SECONDS": "5",
        "CONVEYOR_POLL_INTERVAL": "0.2",
        "CONVEYOR_LOG_LEVEL": "WARNING",
    }
    conveyor = Path(sys.executable).with_name("conveyor")
    with (log_dir / f"{name}.log").open("wb") as log:
        return subprocess.Popen([str(conveyor), "worker"], env=env, stdout=log, stderr=log)


def _wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def _count(db: Database, stmt: Any) -> int:
    with db.read() as conn:
        return int(conn.execute(stmt).scalar_one())


def _send(db: Database, tenant: str, n: int, at: float | None = None) -> None:
    """Ingest the event run ``n`` waits for, at wall-clock time ``at`` (epoch seconds)."""
    if at is not None:
        time.sleep(max(0.0, at - time.time()))
    item = NewEvent(
        0, new_id(), "ping", {"type": "email", "value": f"c{n}@race.test"}, {"n": n}, None
    )
    (result,) = ingest_events(db, tenant, [item], datetime.now(UTC))
    assert result.status == "accepted"


@pytest.mark.slow
def test_event_at_the_timeout_has_exactly_one_outcome(pg_db: Database, tmp_path: Path) -> None:
    tenant = make_tenant(pg_db, "race")
    automation = make_automation(pg_db, tenant, RACE)
    workers = [_start_worker(pg_db, f"race{i}", tmp_path) for i in (1, 2)]
    try:
        time.sleep(1.0)  # let them import and connect
        with pg_db.transaction() as conn:
            run_ids = {
                n: trigger_run(
                    conn,
                    tenant_id=tenant,
                    automation_ref=automation,
                    payload={"n": n},
                    identity={"type": "email", "value": f"c{n}@race.test"},
                    idempotency_key=None,
                    source_type="user",
                    source_id="race",
                    now=datetime.now(UTC),
                )[0]["id"]
                for n in range(RUNS)
            }
        _wait_for(
            lambda: _count(pg_db, select(func.count()).select_from(waits)) == RUNS,
            20,
            "every run to park on its wait",
        )
        with pg_db.read() as conn:
            deadline = {
                str(r.run_id): r.timeout_at.timestamp()
                for r in conn.execute(select(waits.c.run_id, waits.c.timeout_at))
            }
        offsets = [0.0] * (RUNS // 2) + [
            -0.2 + 0.8 * i / (RUNS - RUNS // 2 - 1) for i in range(RUNS - RUNS // 2)
        ]
        senders = [
            threading.Thread(target=_send, args=(pg_db, tenant, n, deadline[run_ids[n]] + off))
            for n, off in zip(range(RUNS), offsets, strict=True)
        ]
        for t in senders:
            t.start()
        for t in senders:
            t.join(30)
        done = select(func.count()).select_from(runs).where(runs.c.status == "completed")
        _wait_for(lambda: _count(pg_db, done) == RUNS, 60, "every run to complete")
        for n in range(RUNS):  # a second, certainly late, event for each
            _send(pg_db, tenant, n)
    finally:
        stop_workers(workers)
    for i, w in enumerate(workers, 1):
        assert w.returncode == 0, (tmp_path / f"race{i}.log").read_text()

    outcomes = {"received": 0, "timed_out": 0}
    with pg_db.read() as conn:
        for n, run_id in run_ids.items():
            detail = get_run_detail(conn, tenant, run_id)
            types = [e["type"] for e in get_events(conn, run_id)]
            (wait,) = detail["waits"]
            step = detail["steps"][0]
            status = wait["status"]
            assert status in outcomes, (n, wait)
            outcomes[status] += 1
            assert step["branch_taken"] == status == wait["outcome_branch"], (n, wait, step)
            decided = [t for t in types if t in ("wait.received", "wait.timed_out")]
            assert decided == [f"wait.{status}"], (n, types)
            late = types.count("wait.late_event_ignored")
            # received: the second event is no news (the wait is closed, not timed out);
            # timed out: the event at the timeout and the second one are both late
            assert late == (2 if status == "timed_out" else 0), (n, types)
            by_key = {s["key"]: s["status"] for s in detail["steps"]}
            assert by_key["got_it" if status == "received" else "gave_up"] == "completed"
            assert by_key["gave_up" if status == "received" else "got_it"] == "skipped"
    # Both sides must have won some races, or the race was not exercised.
    assert outcomes["received"] > 0, outcomes
    assert outcomes["timed_out"] > 0, outcomes
