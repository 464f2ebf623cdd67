"""W2 and timeout lateness: waits for events with real ``conveyor worker`` processes.

* **W2**: 200 runs park in ``wait_for_event`` (one contact each), then 200
  matching events are ingested as one batch, in one transaction, through the
  events service (``ingest_events``, what ``POST /api/v1/events`` calls,
  which delivers the batch to the waits with ``deliver_events``). W2 is the time from the moment the
  batch is sent to the last run completed (its ``completed_at``). For scale,
  DBOS Transact 3.4 (recv/send) took 0.64 s on PostgreSQL and 1.43 s on
  SQLite on this machine.
* **Timeout lateness**: 1,000 runs park on waits with a long timeout; then
  all their deadlines are moved to the same instant T a couple of seconds
  ahead (wait rows, step wake-ups and the runs' tasks, in one transaction),
  so 1,000 timeouts fall due together: the worst burst. Lateness is each
  wait's step ``completed_at`` (branch ``timed_out``) minus T; p50 and p99.

Targets (issue 4): W2 < 0.5 s on PostgreSQL, lateness p99 < 1 s.

Usage: python bench/waits.py [--db sqlite|postgresql|all] [--w2-runs 200]
       [--timeouts 1000] [--results]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy
from common import fresh_database, machine, start_workers, stop_workers
from sqlalchemy import func, select, update

from conveyor.domain.ids import new_id
from conveyor.services.events import NewEvent, ingest_events
from conveyor.services.runs import trigger_run
from conveyor.store.db import Database
from conveyor.store.messaging_tables import waits
from conveyor.store.tables import runs, step_runs, tasks
from conveyor.testing.factories import make_automation, make_tenant

ROOT = Path(__file__).resolve().parent.parent
PG_NAME = "conveyor_bench_waits"


def definition(name: str, timeout: str | None) -> dict[str, object]:
    wait: dict[str, object] = {
        "key": "w",
        "type": "wait_for_event",
        "event": "ping",
        "match": "event.payload.n == trigger.payload.n",
    }
    if timeout:
        wait["timeout"] = timeout
    return {
        "name": name,
        "steps": [wait, {"key": "done", "type": "set", "vars": {"ok": True}}],
    }


def count(db: Database, stmt: sqlalchemy.Select[tuple[int]]) -> int:
    with db.read() as conn:
        return int(conn.execute(stmt).scalar_one())


def wait_until(db: Database, stmt: sqlalchemy.Select[tuple[int]], target: int, what: str) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if count(db, stmt) >= target:
            return
        time.sleep(0.01)
    raise SystemExit(f"timed out waiting for {what}")


def park(db: Database, tenant: str, automation: str, n: int) -> None:
    """Trigger ``n`` runs, each about its own contact, and wait until every one is parked."""
    with db.transaction() as conn:
        for i in range(n):
            trigger_run(
                conn,
                tenant_id=tenant,
                automation_ref=automation,
                payload={"n": i},
                identity={"type": "email", "value": f"w{i}@bench.test"},
                idempotency_key=None,
                source_type="user",
                source_id="bench",
                now=datetime.now(UTC),
            )
    parked = select(func.count()).select_from(runs).where(runs.c.status == "waiting")
    wait_until(db, parked, n, "the runs to park")


@dataclass
class W2:
    name: str
    runs: int
    seconds: float
    ingest_seconds: float

    def line(self) -> str:
        return (
            f"| {self.name} | W2: {self.runs} waits, one batch of {self.runs} events | "
            f"{self.seconds:.3f} s | ingestion transaction {self.ingest_seconds * 1000:.0f} ms |"
        )


@dataclass
class Lateness:
    name: str
    waits: int
    p50: float
    p99: float
    worst: float

    def line(self) -> str:
        return (
            f"| {self.name} | timeout lateness: {self.waits} waits due at once | "
            f"p50 {self.p50 * 1000:.0f} ms, p99 {self.p99 * 1000:.0f} ms | "
            f"max {self.worst * 1000:.0f} ms |"
        )


def w2(kind: str, workers: int, n: int) -> W2:
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        db = fresh_database(kind, tmp, PG_NAME)
        tenant = make_tenant(db, "bench")
        automation = make_automation(db, tenant, definition("w2", "PT1H"))
        procs = start_workers(db, workers, tmp)
        try:
            park(db, tenant, automation, n)
            items = [
                NewEvent(
                    i,
                    new_id(),
                    "ping",
                    {"type": "email", "value": f"w{i}@bench.test"},
                    {"n": i},
                    None,
                )
                for i in range(n)
            ]
            sent = datetime.now(UTC)
            started = time.perf_counter()
            results = ingest_events(db, tenant, items, datetime.now(UTC))
            ingest_s = time.perf_counter() - started
            assert all(r.status == "accepted" for r in results)
            done = select(func.count()).select_from(runs).where(runs.c.status == "completed")
            wait_until(db, done, n, "the runs to complete")
        finally:
            stop_workers(procs)
        with db.read() as conn:
            last = conn.execute(select(func.max(runs.c.completed_at))).scalar_one()
            received = conn.execute(
                select(func.count()).select_from(waits).where(waits.c.status == "received")
            ).scalar_one()
        db.dispose()
    assert received == n, received
    name = f"{kind}, {workers} worker{'s' if workers > 1 else ''}"
    result = W2(name, n, (last - sent).total_seconds(), ingest_s)
    print(result.line(), flush=True)
    return result


def lateness(kind: str, workers: int, n: int) -> Lateness:
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        db = fresh_database(kind, tmp, PG_NAME)
        tenant = make_tenant(db, "bench")
        automation = make_automation(db, tenant, definition("late", "PT1H"))
        procs = start_workers(db, workers, tmp)
        try:
            park(db, tenant, automation, n)
            at = datetime.now(UTC) + timedelta(seconds=3)
            with db.transaction() as conn:  # every deadline at the same instant
                conn.execute(update(waits).values(timeout_at=at))
                conn.execute(
                    update(step_runs).where(step_runs.c.status == "waiting").values(wake_at=at)
                )
                conn.execute(update(tasks).where(tasks.c.kind == "run").values(due_at=at))
            done = select(func.count()).select_from(runs).where(runs.c.status == "completed")
            wait_until(db, done, n, "the waits to time out")
        finally:
            stop_workers(procs)
        with db.read() as conn:
            ends = (
                conn.execute(
                    select(step_runs.c.completed_at).where(
                        step_runs.c.step_key == "w", step_runs.c.branch_taken == "timed_out"
                    )
                )
                .scalars()
                .all()
            )
        db.dispose()
    assert len(ends) == n, len(ends)
    late = sorted((e - at).total_seconds() for e in ends)
    q = statistics.quantiles(late, n=100, method="inclusive")
    name = f"{kind}, {workers} worker{'s' if workers > 1 else ''}"
    result = Lateness(name, n, q[49], q[98], late[-1])
    print(result.line(), flush=True)
    return result


HEADER = "| database, workers | scenario | result | detail |\n|---|---|---:|---|"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql", "all"], default="all")
    parser.add_argument("--w2-runs", type=int, default=200)
    parser.add_argument("--timeouts", type=int, default=1000)
    parser.add_argument("--what", choices=["w2", "lateness", "all"], default="all")
    parser.add_argument("--results", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args()
    plan: list[tuple[str, int]] = []
    if args.db in ("sqlite", "all"):
        plan.append(("sqlite", 1))
    if args.db in ("postgresql", "all"):
        plan += [("postgresql", 1), ("postgresql", 2)]
    print(f"W2 and timeout lateness -- {machine()}")
    print(HEADER)
    lines = []
    for kind, workers in plan:
        if args.what in ("w2", "all"):
            lines.append(w2(kind, workers, args.w2_runs).line())
        if args.what in ("lateness", "all"):
            lines.append(lateness(kind, workers, args.timeouts).line())
    if args.results:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        with (ROOT / "bench" / "RESULTS.md").open("a") as fh:
            fh.write(f"\n### W2 and timeout lateness (waits), {stamp}\n\n{machine()}.\n\n")
            fh.write(f"{HEADER}\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
