"""Event ingestion throughput over HTTP: batches of 1,000 events, events/s.

Starts a real ``conveyor serve`` (one uvicorn process) on a fresh database and
sends batches of ``--batch-size`` events with one keep-alive httpx client (or
``--clients`` of them at once), after a warm-up. Every event names a contact by
email. Scenarios:

- **nothing starts, known contacts**: no automation listens for the events,
  and their contacts exist (the steady state of a busy tenant);
- **nothing starts, new contacts**: the same, but every event's email is new,
  so each event also creates its contact;
- **each starts a run**: one automation listens (with a ``filter``) and every
  event starts one run of it (no worker runs, so the runs stay pending: only
  ingestion is measured).

events/s is the events sent divided by the wall time from the first request to
the last answer; the batch latency percentiles are per request.

Target (issue 4, PostgreSQL): ≥ 5,000 events/s when nothing starts.

Usage: python bench/events.py [--db sqlite|postgresql|all] [--batches N] [--results]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
from common import PG_ADMIN, machine, start_server
from sqlalchemy import func, select

from conveyor.clock import SystemClock
from conveyor.services.keys import create_key
from conveyor.store.db import Database
from conveyor.store.migrate import upgrade
from conveyor.store.tables import runs
from conveyor.testing.factories import make_automation, make_tenant

ROOT = Path(__file__).resolve().parent.parent
PG_NAME = "conveyor_bench_events"
WARMUP_BATCHES = 3
HEADER = (
    "| database | scenario | clients | events | events/s | batch p50 ms | batch p99 ms | runs |\n"
    "|---|---|---:|---:|---:|---:|---:|---:|"
)
LISTENER = {
    "name": "bench-start",
    "trigger": {"type": "event", "event": "bench.start", "filter": "event.payload.n >= 0"},
    "steps": [{"key": "note", "type": "set", "vars": {"n": "{{ trigger.payload.n }}"}}],
}


@dataclass
class Result:
    """One scenario on one database."""

    kind: str
    scenario: str
    clients: int
    events: int
    seconds: float
    latencies: list[float]
    runs: int

    def row(self) -> str:
        q = statistics.quantiles(self.latencies, n=100, method="inclusive")
        return (
            f"| {self.kind} | {self.scenario} | {self.clients} | {self.events:,} "
            f"| {self.events / self.seconds:,.0f} | {q[49] * 1000:.0f} | {q[98] * 1000:.0f} "
            f"| {self.runs:,} |"
        )


def database(kind: str, data_dir: Path) -> Database:
    """A fresh, migrated database for the benchmark."""
    if kind == "sqlite":
        path = data_dir / "bench-events.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        db = Database(f"sqlite:///{path}")
    else:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{PG_NAME}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{PG_NAME}"')
        base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
        db = Database(f"{base}/{PG_NAME}")
    upgrade(db)
    return db


class Batches:
    """Batch bodies: unique event ids; emails from the known pool, or never seen before."""

    def __init__(self, name: str, size: int, pool: int | None, id_prefix: str) -> None:
        self.name, self.size, self.pool, self.id_prefix = name, size, pool, id_prefix
        self.sent = 0
        self.lock = threading.Lock()

    def next(self) -> dict[str, Any]:
        with self.lock:
            start = self.sent
            self.sent += self.size
        events = []
        for i in range(start, start + self.size):
            email = f"known{i % self.pool}" if self.pool else f"new-{self.id_prefix}-{i}"
            events.append(
                {
                    "id": f"{self.id_prefix}-{i}",
                    "name": self.name,
                    "identity": {"type": "email", "value": f"{email}@example.com"},
                    "payload": {"n": i, "sku": "A-100", "total": 42.5},
                    "occurred_at": "2026-03-01T12:00:00Z",
                }
            )
        return {"events": events}


def post(client: httpx.Client, body: bytes, size: int) -> float:
    t0 = time.perf_counter()
    response = client.post("/api/v1/events", content=body)
    elapsed = time.perf_counter() - t0
    if response.status_code != 200:
        raise SystemExit(f"ingestion failed: {response.status_code} {response.text[:500]}")
    answer = response.json()
    if answer["accepted"] != size:
        raise SystemExit(f"expected {size} accepted, got {answer}")
    return elapsed


def timed(url: str, key: str, batches: Batches, count: int, clients: int) -> tuple[float, list]:
    """Send ``count`` batches over ``clients`` connections; wall time and latencies."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    latencies: list[float] = []
    share = [count // clients + (1 if i < count % clients else 0) for i in range(clients)]
    # Bodies are encoded before the clock starts: the client's JSON work is not the server's.
    bodies = [[json.dumps(batches.next()).encode() for _ in range(n)] for n in share]

    def work(mine: list[bytes]) -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
            for body in mine:
                latencies.append(post(client, body, batches.size))

    threads = [threading.Thread(target=work, args=(b,)) for b in bodies]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, latencies


def count_runs(db: Database) -> int:
    with db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(runs)).scalar_one())


def scenarios(kind: str, args: argparse.Namespace, data_dir: Path) -> list[Result]:
    db = database(kind, data_dir)
    tenant = make_tenant(db, "bench")
    make_automation(db, tenant, LISTENER)
    with db.transaction() as conn:
        _, key = create_key(
            conn, tenant_id=tenant, scopes=["events:write"], label="bench", now=SystemClock().now()
        )
    # A batch of 1,000 events with an identity is ~150 KB; leave room.
    proc, url = start_server(
        db,
        data_dir / f"server-{kind}.log",
        env={"CONVEYOR_MAX_BODY_BYTES": str(8 * 1024 * 1024)},
    )
    size, pool = args.batch_size, args.contacts
    plan = [
        ("nothing starts, known contacts", Batches("bench.nothing", size, pool, "quiet")),
        ("nothing starts, new contacts", Batches("bench.nothing", size, None, "fresh")),
        ("each starts a run", Batches("bench.start", size, pool, "start")),
    ]
    results = []
    try:
        # Warm up the server and create the pool's contacts, so "known" means known.
        warm = Batches("bench.nothing", size, pool, "warm")
        timed(url, key, warm, max(WARMUP_BATCHES, -(-pool // size)), 1)
        for name, batches in plan:
            before = count_runs(db)
            seconds, latencies = timed(url, key, batches, args.batches, args.clients)
            result = Result(
                kind,
                name,
                args.clients,
                args.batches * size,
                seconds,
                latencies,
                count_runs(db) - before,
            )
            print(result.row(), flush=True)
            results.append(result)
    finally:
        proc.terminate()
        proc.wait(10)
        db.dispose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql", "all"], default="all")
    parser.add_argument("--batches", type=int, default=20, help="timed batches per scenario")
    parser.add_argument("--batch-size", type=int, default=1000, help="events per batch")
    parser.add_argument("--contacts", type=int, default=5000, help="known contacts' pool size")
    parser.add_argument("--clients", type=int, default=1, help="concurrent HTTP clients")
    parser.add_argument("--results", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args()
    kinds = ["sqlite", "postgresql"] if args.db == "all" else [args.db]
    print(f"Event ingestion: {args.batches} x {args.batch_size} events -- {machine()}\n")
    print(HEADER, flush=True)
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            results += scenarios(kind, args, Path(tmp))
    if args.results:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        with (ROOT / "bench" / "RESULTS.md").open("a") as fh:
            fh.write(
                f"\n### Event ingestion, {stamp}\n\n{machine()}; {args.batches} batches of "
                f"{args.batch_size:,} events per scenario after a warm-up, "
                f"{args.clients} keep-alive client(s), `conveyor serve` (one uvicorn "
                f"process), {args.contacts:,} known contacts.\n\n{HEADER}\n"
            )
            fh.write("\n".join(r.row() for r in results) + "\n")


if __name__ == "__main__":
    main()
