"""The store's batch write paths on PostgreSQL, statement by statement: client and server CPU.

For each number of rows, in a transaction rolled back each time (so the tables
do not grow): history lines inserted by ``COPY`` (``copy_rows``) and by one
``INSERT ... SELECT FROM unnest`` (``insert_unnested``), and step rows updated
from ``unnest`` (``conveyor.store.together``, as a worker's batch does). The
tables first hold ``--runs`` W1 runs (three steps each), so the updates find
their rows through the index as the engine's do.
Sides are interleaved, each repeated ``--rounds`` times; the best round of
each is printed, as CPU microseconds per statement of this client (psycopg and
SQLAlchemy included) and of the PostgreSQL server. It is what
the thresholds of ``conveyor.store.batch`` and ``together`` are chosen from (bench/RESULTS.md,
"Binary arrays").

Usage: python bench/batch_paths.py [--sizes 4,16,64,256,1000] [--runs 2000]
       [--rounds 3] [--repeat 50]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import fresh_database, machine, postgres_cpu_seconds
from engine import DEFINITION, _trigger_batch
from sqlalchemy import Connection, select

from conveyor.store.batch import copy_rows, insert_unnested
from conveyor.store.db import Database
from conveyor.store.tables import run_events, step_runs
from conveyor.store.together import Together
from conveyor.testing.factories import make_automation, make_tenant

NAME = "conveyor_bench_paths"
Write = Callable[[Connection], Any]


def measure(db: Database, write: Write, repeat: int) -> tuple[float, float]:
    """Client and server CPU microseconds per ``write``, each in a rolled-back transaction."""
    server0, _ = postgres_cpu_seconds(NAME)
    client0 = time.process_time()
    for _ in range(repeat):
        with db.engine.connect() as conn, conn.begin() as tx:
            write(conn)
            tx.rollback()
    client = time.process_time() - client0
    server = postgres_cpu_seconds(NAME)[0] - server0
    return client / repeat * 1e6, server / repeat * 1e6


def update(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """The steps' update as a worker's batch sends it (alone here)."""
    together = Together(conn)
    together.update(step_runs, ("run_id", "step_key"), rows)
    together.send()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="4,16,64,256,1000")
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        db = fresh_database("postgresql", Path(tmp), NAME)
        tenant = make_tenant(db, "bench")
        automation = make_automation(db, tenant, DEFINITION)
        for done in range(0, args.runs, 500):
            _trigger_batch(db, tenant, automation, min(500, args.runs - done))
        with db.read() as conn:
            steps = conn.execute(select(step_runs.c.run_id, step_runs.c.step_key)).all()
        now = datetime.now(UTC)
        print(machine())
        print(f"PostgreSQL, {args.runs} runs stored; best of {args.rounds} rounds of {args.repeat}")
        print("rows | COPY insert | unnest insert | unnest update   (client / server CPU us)")
        for size in sizes:
            lines = [
                {
                    "run_id": str(run_id),
                    "tenant_id": tenant,
                    "seq": 1000 + i,
                    "type": "step.completed",
                    "step_key": key,
                    "data": {"attempt": 1, "output": {"v": i}},
                    "created_at": now,
                }
                for i in range(size)
                for run_id, key in [steps[i % len(steps)]]
            ]
            changes = [
                {
                    "run_id": str(run_id),
                    "step_key": key,
                    "status": "completed",
                    "attempts": 1,
                    "output": {"v": 1},
                    "error": None,
                    "started_at": now,
                    "completed_at": now,
                }
                for run_id, key in steps[:size]
            ]
            sides: dict[str, Write] = {
                "copy": lambda c, r=lines: copy_rows(c, run_events, r),
                "insert": lambda c, r=lines: insert_unnested(c, run_events, r),
                "update": lambda c, r=changes: update(c, r),
            }
            best: dict[str, tuple[float, float]] = {}
            for _ in range(args.rounds):
                for name, write in sides.items():
                    figures = measure(db, write, args.repeat)
                    if name not in best or sum(figures) < sum(best[name]):
                        best[name] = figures
            cells = " | ".join(f"{c:7.0f} / {s:6.0f}" for c, s in best.values())
            print(f"{size:5d} | {cells}")
        db.dispose()


if __name__ == "__main__":
    main()
