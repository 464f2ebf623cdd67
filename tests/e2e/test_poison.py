"""A poison task for real: its worker is killed (SIGKILL) three times while it holds it.

Each time a fresh ``conveyor worker`` takes the task over once the lease runs
out and starts the step again; after three tries the next worker sets the run
aside: it fails with ``poisoned`` instead of being retried forever, while the
other runs complete.
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
from sqlalchemy import select

from conveyor.services.runs import get_run_detail
from conveyor.store.db import Database
from conveyor.store.tables import tasks
from conveyor.testing.factories import make_automation, make_tenant, trigger
from tests.support.http_server import HitServer

CONVEYOR = Path(sys.executable).with_name("conveyor")


def _wait_for(what: str, predicate: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def _worker(db: Database, name: str, log_dir: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CONVEYOR_DATABASE_URL": db.url.render_as_string(hide_password=False),
        "CONVEYOR_WORKER_ID": name,
        "CONVEYOR_LEASE_SECONDS": "2",
        "CONVEYOR_POLL_INTERVAL": "0.1",
        "CONVEYOR_POISON_AFTER": "3",
        "CONVEYOR_EGRESS_ALLOW": "127.0.0.1/32",
        "CONVEYOR_LOG_LEVEL": "WARNING",
    }
    with (log_dir / f"{name}.log").open("wb") as log:
        return subprocess.Popen([str(CONVEYOR), "worker"], env=env, stdout=log, stderr=log)


def _holder(db: Database, run_id: str) -> str | None:
    with db.read() as conn:
        row = conn.execute(select(tasks.c.lease_owner).where(tasks.c.run_id == run_id)).first()
    return row[0] if row else None


@pytest.mark.slow
def test_a_task_that_kills_its_worker_three_times_is_set_aside(
    pg_db: Database, http_server: HitServer, tmp_path: Path
) -> None:
    tenant = make_tenant(pg_db, "poison")
    hang = {"key": "hang", "type": "http_request", "url": "", "timeout": "PT600S"}
    hang["url"] = http_server.url + "/sleep/300/{{ run.id }}/hang"
    poison = make_automation(
        pg_db,
        tenant,
        {"name": "poison", "steps": [hang, {"key": "after", "type": "set", "vars": {}}]},
    )
    quick = make_automation(
        pg_db, tenant, {"name": "quick", "steps": [{"key": "s", "type": "set", "vars": {"x": 1}}]}
    )
    run_id = trigger(pg_db, tenant, poison, {})
    others: list[str] = []
    workers: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(3):
            worker = _worker(pg_db, f"w{i}", tmp_path)
            workers.append(worker)
            others += [trigger(pg_db, tenant, quick, {"i": n}) for n in range(5)]
            _wait_for(
                f"worker w{i} to be calling",
                lambda i=i: (
                    _holder(pg_db, run_id) == f"w{i}" and http_server.inflight[run_id] == i + 1
                ),  # each earlier call still sleeps
            )
            worker.send_signal(signal.SIGKILL)  # dies holding the task, mid-call
            worker.wait(10)
        last = _worker(pg_db, "w3", tmp_path)
        workers.append(last)
        others += [trigger(pg_db, tenant, quick, {"i": n}) for n in range(5)]

        def ended() -> bool:
            with pg_db.read() as conn:
                return get_run_detail(conn, tenant, run_id)["status"] == "failed"

        _wait_for("the poison run to be set aside", ended)

        def all_done() -> bool:
            with pg_db.read() as conn:
                return all(get_run_detail(conn, tenant, r)["status"] == "completed" for r in others)

        _wait_for("the other runs", all_done)
    finally:
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(30)
    with pg_db.read() as conn:
        detail = get_run_detail(conn, tenant, run_id)
    assert detail["last_error"]["code"] == "poisoned", detail["last_error"]
    hang_step, after_step = detail["steps"]
    assert hang_step["status"] == "failed"
    assert hang_step["error"]["code"] == "poisoned"
    assert [a["status"] for a in hang_step["attempts"]] == ["lost", "lost", "lost"]
    assert after_step["status"] == "cancelled"
    with pg_db.read() as conn:
        from conveyor.store.runs import get_events

        types = [e["type"] for e in get_events(conn, run_id)]
    assert "run.poisoned" in types
    assert types[-1] == "run.failed"
    assert http_server.hits[f"/sleep/300/{run_id}/hang"] == 3  # one call per try, none after
