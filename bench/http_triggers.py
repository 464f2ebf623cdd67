"""W1 runs triggered over HTTP: throughput, latency, and CPU per run of every process.

Run it as ``python bench/http.py`` (``make bench-http``); this module holds the
code so that bench/http.py can stand in for the standard library's package.

N concurrent clients (one keep-alive connection each; ``--generator``: asyncio
httpx clients by default, ``raw`` asyncio sockets or Debian's ``wrk``, see
bench/loadgen.py) send ``POST /api/v1/automations/w1/trigger`` through a real
``conveyor serve`` and ONE real ``conveyor worker``, on SQLite and PostgreSQL;
W1 is bench/engine.py's 3-step automation of ``set`` steps. After a warm-up
(``--warmup`` runs, not counted), the CPU counters are read, ``--runs``
triggers are sent, and once every run is ``completed`` the counters are read
again.

Per database: requests/s (2xx answers / wall time of the load), runs/s (runs /
(last ``completed_at`` - first ``created_at``)), request latency and
trigger-to-completion latency (``completed_at - created_at``) p50/p99, peak
RSS (``VmHWM``) of serve and worker, and the CPU ms per run (user + system,
``/proc/<pid>/stat``) of serve, worker, database, load generator and total.

- database: for PostgreSQL every process whose command is ``postgres``
  (common.postgres_cpu_seconds). Processes started during the load count from
  zero; backends that exit (a pool's overflow connections) still count, through
  the postmaster's reaped-children time. Other clients of the server count too,
  so use an idle one. SQLite works inside serve and worker: ``-``.
- load generator: this process (it also polls the database for the end) and
  its reaped children: the ``wrk`` process with ``--generator wrk``.
- JSON only: ``other_cpu_ms``, the machine's busy time minus the four, and
  ``pg_other_db_cpu_ms``, live backends of other databases (noise; a warning
  when above 5 % of the total); ``pg_sessions``, sessions opened on the
  database during the load (``pg_stat_database``, give or take a pool).

Usage: python bench/http.py [--db sqlite|postgresql|all] [--runs 2000] [--clients 16]
       [--generator httpx|raw|wrk] [--warmup 100] [--label TEXT] [--json] [--results]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import loadgen
import psycopg
from common import (
    LOG_LEVEL,
    PG_ADMIN,
    cpu_seconds,
    fresh_database,
    machine,
    machine_busy_seconds,
    peak_rss_mb,
    postgres_cpu_seconds,
    py_spy,
    start_server,
    start_workers,
    stop_py_spy,
    stop_workers,
)
from sqlalchemy import func, select

from conveyor.services.keys import create_key
from conveyor.store.db import Database
from conveyor.store.tables import runs
from conveyor.testing.factories import make_automation, make_tenant

ROOT = Path(__file__).resolve().parent.parent
PG_NAME = "conveyor_bench_http"
STEPS = 3
DEFINITION = {
    "name": "w1",
    "steps": [{"key": f"s{i}", "type": "set", "vars": {f"v{i}": i}} for i in range(STEPS)],
}
TRIGGER = "/api/v1/automations/w1/trigger"
BODY = b'{"payload": {}}'
# No rate limit gets in the way of the load (the default is 50/second). W1 calls
# nothing outside, but the egress allow is set the way anything calling local
# servers must set it (the default permits nothing private).
ENV = {
    "CONVEYOR_LOG_LEVEL": LOG_LEVEL,  # BENCH_LOG_LEVEL=INFO measures the access lines too
    "CONVEYOR_RATE_LIMIT": "1000000/second",
    "CONVEYOR_EGRESS_ALLOW": "127.0.0.1/32",
}
HEADER = (
    "| database | clients | runs | requests/s | runs/s | req p50 ms | req p99 ms "
    "| e2e p50 ms | e2e p99 ms | serve RSS MB | worker RSS MB | CPU ms/run: serve "
    "| worker | database | load gen | total |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


@dataclass
class Row:
    """One database's figures; the JSON line is ``asdict`` of it."""

    db: str
    label: str
    generator: str
    clients: int
    runs: int
    non_2xx: int
    load_s: float
    requests_per_s: float
    runs_per_s: float
    req_p50_ms: float
    req_p99_ms: float
    e2e_p50_ms: float
    e2e_p99_ms: float
    serve_rss_mb: float
    worker_rss_mb: float
    cpu_serve_ms: float
    cpu_worker_ms: float
    cpu_database_ms: float | None
    cpu_load_ms: float
    cpu_total_ms: float
    other_cpu_ms: float
    pg_other_db_cpu_ms: float | None
    pg_sessions: int | None

    def line(self) -> str:
        name = ", ".join(part for part in (self.db, self.generator, self.label) if part)
        database = "-" if self.cpu_database_ms is None else f"{self.cpu_database_ms:.2f}"
        return (
            f"| {name} | {self.clients} | {self.runs:,} | {self.requests_per_s:,.0f} "
            f"| {self.runs_per_s:,.0f} | {self.req_p50_ms:.1f} | {self.req_p99_ms:.1f} "
            f"| {self.e2e_p50_ms:.0f} | {self.e2e_p99_ms:.0f} | {self.serve_rss_mb:.0f} "
            f"| {self.worker_rss_mb:.0f} | {self.cpu_serve_ms:.2f} | {self.cpu_worker_ms:.2f} "
            f"| {database} | {self.cpu_load_ms:.2f} | {self.cpu_total_ms:.2f} |"
        )


def cpu_now(serve: int, worker: int, pg: bool) -> dict[str, float]:
    """CPU seconds used so far by each process of the benchmark, by the whole machine, and
    (keys ``pg <pid>``) by each backend of another database.
    """
    database, others = postgres_cpu_seconds(PG_NAME) if pg else (0.0, {})
    return {
        "serve": cpu_seconds(serve),
        "worker": cpu_seconds(worker),
        "database": database,
        # Its reaped children too: wrk, once waited for (serve and worker are reaped later).
        "load": loadgen.cpu_seconds_with_children(),
        "machine": machine_busy_seconds(),
        **{f"pg {pid}": seconds for pid, seconds in others.items()},
    }


def load(
    args: argparse.Namespace, url: str, key: str, count: int, ready: Callable[[], object]
) -> loadgen.Load:
    """Send ``count`` triggers with ``args.generator`` over ``args.clients`` connections."""
    return loadgen.run(args.generator, url, TRIGGER, BODY, key, count, args.clients, ready)


def pg_sessions() -> int:
    """Sessions ever opened on the benchmark's PostgreSQL database (PostgreSQL 14+)."""
    with psycopg.connect(PG_ADMIN) as conn:
        query = "SELECT sessions FROM pg_stat_database WHERE datname = %s"
        return int(conn.execute(query, (PG_NAME,)).fetchone()[0])  # type: ignore[index]


def wait_completed(db: Database, count: int, timeout: float = 900) -> None:
    """Poll until ``count`` runs are ``completed``; stop if any run ends otherwise."""
    deadline = time.monotonic() + timeout
    query = select(runs.c.status, func.count()).group_by(runs.c.status)
    while True:
        with db.read() as conn:
            by_status = {str(s): int(n) for s, n in conn.execute(query)}
        done = by_status.get("completed", 0)
        if done >= count:
            return
        unfinished = by_status.get("pending", 0) + by_status.get("running", 0)
        if sum(by_status.values()) > done + unfinished or time.monotonic() > deadline:
            raise SystemExit(f"expected {count} completed runs, have {by_status}")
        time.sleep(0.05)


def scenario(kind: str, args: argparse.Namespace, tmp: Path) -> Row:
    """Set up ``kind``, warm up, measure one load of ``args.runs`` triggers; its row."""
    db = fresh_database(kind, tmp, PG_NAME)
    tenant = make_tenant(db, "bench")
    make_automation(db, tenant, DEFINITION)
    with db.transaction() as conn:
        scopes, now = ["automations:trigger"], datetime.now(UTC)
        _, key = create_key(conn, tenant_id=tenant, scopes=scopes, label="bench", now=now)
    server, url = start_server(db, tmp / f"serve-{kind}.log", env=ENV)
    workers = start_workers(db, 1, tmp, env=ENV)
    worker = workers[0]
    try:
        if args.warmup:
            load(args, url, key, args.warmup, lambda: None)
            wait_completed(db, args.warmup)
        with db.read() as conn:
            warm = set(conn.execute(select(runs.c.id)).scalars())
        sessions = 0 if db.is_sqlite else pg_sessions()
        time.sleep(0.5)  # let the warm-up's last round finish
        before: dict[str, float] = {}

        spies = []

        def start() -> None:
            # Sampling costs the sampled process a little: not for A/B figures.
            if args.profile_serve:
                spies.append(py_spy(server.pid, args.profile_serve, args.profile_rate))
            if args.profile_worker:
                spies.append(py_spy(worker.pid, args.profile_worker, args.profile_rate))
            before.update(cpu_now(server.pid, worker.pid, not db.is_sqlite))

        done = load(args, url, key, args.runs, start)
        answers = done.answers
        for spy in spies:
            stop_py_spy(spy)
        ok = sum(n for status, n in answers.items() if status.startswith("2"))
        wait_completed(db, len(warm) + ok)
        after = cpu_now(server.pid, worker.pid, not db.is_sqlite)
        serve_rss = peak_rss_mb(server.pid)
    finally:
        worker_rss = stop_workers(workers)[0]
        server.terminate()
        server.wait(30)
    if not db.is_sqlite:
        sessions = pg_sessions() - sessions
    if ok != args.runs:
        print(f"warning: {kind}: answers other than 2xx: {answers}", file=sys.stderr)
    with db.read() as conn:
        rows = conn.execute(select(runs.c.id, runs.c.created_at, runs.c.completed_at)).all()
    db.dispose()
    rows = [r for r in rows if r.id not in warm]
    e2e = [(r.completed_at - r.created_at).total_seconds() for r in rows]
    span = (max(r.completed_at for r in rows) - min(r.created_at for r in rows)).total_seconds()
    # Processes that started during the load count from zero; those that ended are left out.
    cpu = {name: (after[name] - before.get(name, 0.0)) * 1000 / len(rows) for name in after}
    other_dbs = sum(ms for name, ms in cpu.items() if name.startswith("pg "))
    mine = cpu["serve"] + cpu["worker"] + cpu["database"] + cpu["load"]
    q = statistics.quantiles(e2e, n=100, method="inclusive")
    return Row(
        db=kind,
        label=args.label,
        generator=args.generator,
        clients=args.clients,
        runs=len(rows),
        non_2xx=sum(answers.values()) - ok,
        load_s=round(done.seconds, 3),
        requests_per_s=ok / done.seconds,
        runs_per_s=len(rows) / span,
        req_p50_ms=done.req_p50_ms,
        req_p99_ms=done.req_p99_ms,
        e2e_p50_ms=q[49] * 1000,
        e2e_p99_ms=q[98] * 1000,
        serve_rss_mb=serve_rss,
        worker_rss_mb=worker_rss,
        cpu_serve_ms=cpu["serve"],
        cpu_worker_ms=cpu["worker"],
        cpu_database_ms=None if db.is_sqlite else cpu["database"],
        cpu_load_ms=cpu["load"],
        cpu_total_ms=mine,
        other_cpu_ms=cpu["machine"] - mine,
        pg_other_db_cpu_ms=None if db.is_sqlite else other_dbs,
        pg_sessions=None if db.is_sqlite else sessions,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql", "all"], default="all")
    parser.add_argument("--runs", type=int, default=2000, help="measured triggers")
    parser.add_argument("--clients", type=int, default=16, help="concurrent HTTP clients")
    parser.add_argument("--warmup", type=int, default=100, help="uncounted triggers first")
    parser.add_argument("--label", default="", help="names the rows (for A/B runs)")
    parser.add_argument(
        "--generator",
        choices=loadgen.GENERATORS,
        default="httpx",
        help="the load generator: httpx clients, raw asyncio sockets, or wrk (Debian's)",
    )
    parser.add_argument("--json", action="store_true", help="also print each row as JSON")
    parser.add_argument("--results", action="store_true", help="append to bench/RESULTS.md")
    parser.add_argument(
        "--profile-serve",
        type=Path,
        default=None,
        help="sample serve with py-spy during the load; raw stacks to this file",
    )
    parser.add_argument(
        "--profile-worker",
        type=Path,
        default=None,
        help="sample the worker with py-spy during the load; raw stacks to this file",
    )
    parser.add_argument(
        "--profile-rate",
        type=int,
        default=1000,
        help="py-spy samples per second (lower disturbs the load less)",
    )
    args = parser.parse_args()
    kinds = ["sqlite", "postgresql"] if args.db == "all" else [args.db]
    about = machine()
    print(
        f"W1 over HTTP: {args.runs} runs, {args.clients} {args.generator} clients, "
        f"1 worker -- {about}\n"
    )
    print(HEADER, flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            row = scenario(kind, args, Path(tmp))
            results.append(row)
            if max(row.other_cpu_ms, row.pg_other_db_cpu_ms or 0) > 0.05 * row.cpu_total_ms:
                print(
                    f"warning: {kind}: the machine was busy with other work: "
                    f"{row.other_cpu_ms:.2f} CPU ms/run outside this benchmark's processes, "
                    f"{row.pg_other_db_cpu_ms or 0:.2f} in other databases' backends",
                    file=sys.stderr,
                )
            print(row.line(), flush=True)
            if args.json:
                print(json.dumps(asdict(row)), flush=True)
    if args.results:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        label = f", {args.label}" if args.label else ""
        with (ROOT / "bench" / "RESULTS.md").open("a") as fh:
            fh.write(
                f"\n### W1 over HTTP (bench/http.py){label}, {stamp}\n\n{about}; "
                f"{args.runs:,} runs x {STEPS} `set` steps triggered by {args.clients} "
                f"keep-alive {args.generator} clients, one `conveyor serve`, "
                f"one `conveyor worker`; "
                f"CPU in ms per run.\n\n{HEADER}\n"
            )
            fh.write("\n".join(r.line() for r in results) + "\n")


if __name__ == "__main__":
    main()
