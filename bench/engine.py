"""W1: how fast the engine runs short runs, on SQLite and PostgreSQL.

2,000 runs of a 3-step linear automation of ``set`` steps, executed by real
``conveyor worker`` processes. Two phases per database:

* steady: a client offers runs at a fixed rate (open loop; every 10 ms it
  triggers the runs then due, in one transaction) while the workers run.
  Latency is trigger-to-completed; if the workers fall behind, it grows.
* backlog: the runs are all queued first, then the workers start and drain;
  runs/s is measured from the first run started to the last completed.

Prints runs/s, steps/s, p50/p95/p99 latency and each worker's peak RSS.
``--results`` appends the figures to bench/RESULTS.md.

``--json`` measures CPU instead, for an A/B (bench/ab.py): one worker, runs
triggered while it works (100 per transaction, as fast as the client goes),
and one JSON line with the CPU ms per run of the worker and of the database
(PostgreSQL: all its processes), runs/s, and the machine's other CPU use.

``--json --rate R`` offers R runs/s steadily instead, started in groups every
10 ms as ``conveyor serve`` writes triggers that came together (cheaper for this
client than ``trigger_run`` per run, so it keeps up): the worker's cost under a
moderate load, where its batches are small.

Usage: python bench/engine.py [--db sqlite|postgresql|all] [--runs 2000]
       python bench/engine.py --db sqlite|postgresql --json [--label A] [--runs 2000]
                              [--rate R]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from common import (
    cpu_seconds,
    fresh_database,
    machine,
    machine_busy_seconds,
    postgres_cpu_seconds,
    start_workers,
    stop_workers,
)
from sqlalchemy import func, select

from conveyor.services.grouped_triggers import Trigger, start_runs
from conveyor.services.runs import trigger_run
from conveyor.store.db import Database
from conveyor.store.tables import runs
from conveyor.testing.factories import make_automation, make_tenant

ROOT = Path(__file__).resolve().parent.parent

STEPS = 3
DEFINITION = {
    "name": "w1",
    "steps": [{"key": f"s{i}", "type": "set", "vars": {f"v{i}": i}} for i in range(STEPS)],
}


@dataclass
class Result:
    """Figures of one scenario."""

    name: str
    runs: int
    seconds: float
    trigger_rate: float
    p50: float
    p95: float
    p99: float
    rss_mb: list[float]
    backlog: bool = False

    @property
    def runs_per_s(self) -> float:
        return self.runs / self.seconds

    def line(self) -> str:
        rss = ", ".join(f"{r:.0f}" for r in self.rss_mb)
        # A backlog's latency is queueing time, so it is not reported.
        lat = (
            " n/a | n/a | n/a"
            if self.backlog
            else (f" {self.p50 * 1000:.0f} | {self.p95 * 1000:.0f} | {self.p99 * 1000:.0f}")
        )
        return (
            f"| {self.name} | {self.runs_per_s:,.0f} | {self.runs_per_s * STEPS:,.0f} |{lat} | "
            f"{self.trigger_rate:,.0f} | {rss} |"
        )


def _trigger_batch(db: Database, tenant: str, automation: str, n: int) -> None:
    with db.transaction() as conn:
        for _ in range(n):
            trigger_run(
                conn,
                tenant_id=tenant,
                automation_ref=automation,
                payload={},
                identity=None,
                idempotency_key=None,
                source_type="user",
                source_id="bench",
                now=datetime.now(UTC),
            )


def _start_group(db: Database, tenant: str, automation: str, n: int) -> None:
    """``n`` runs started as one group, as ``conveyor serve`` writes triggers that came together."""
    trigger = Trigger(tenant, automation, {}, None, None, "user", "bench")
    start_runs(db, [trigger] * n, datetime.now(UTC))


def trigger_all(
    db: Database,
    tenant: str,
    automation: str,
    count: int,
    rate: float | None,
    grouped: bool = False,
) -> float:
    """Trigger ``count`` runs, at ``rate`` per second if given; return the rate achieved.

    ``grouped``: each 10 ms's runs go in as one group of triggers (cheaper for
    this client than ``trigger_run`` per run, so it keeps up with a high rate).
    """
    write = _start_group if grouped else _trigger_batch
    started = time.perf_counter()
    done = 0
    while done < count:
        if rate is None:
            n = min(100, count - done)
        else:
            due = int((time.perf_counter() - started) * rate) + 1
            n = min(due - done, count - done)
            if n <= 0:
                time.sleep(0.01)
                continue
        write(db, tenant, automation, n)
        done += n
    return count / (time.perf_counter() - started)


def wait_done(db: Database, count: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with db.read() as conn:
            done = conn.execute(
                select(func.count()).select_from(runs).where(runs.c.status == "completed")
            ).scalar_one()
        if done >= count:
            return
        time.sleep(0.05)
    raise SystemExit(f"only {done} of {count} runs completed in {timeout} s")


def measure(
    db: Database, name: str, count: int, trigger_rate: float, rss: list[float], backlog: bool
) -> Result:
    with db.read() as conn:
        rows = conn.execute(select(runs.c.created_at, runs.c.started_at, runs.c.completed_at)).all()
    first = min(r.started_at if backlog else r.created_at for r in rows)
    last = max(r.completed_at for r in rows)
    lat = sorted((r.completed_at - r.created_at).total_seconds() for r in rows)
    q = statistics.quantiles(lat, n=100, method="inclusive")
    return Result(
        name, count, (last - first).total_seconds(), trigger_rate, q[49], q[94], q[98], rss, backlog
    )


def scenario(kind: str, workers: int, count: int, backlog: bool, rate: float) -> Result:
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        db = fresh_database(kind, tmp)
        tenant = make_tenant(db, "bench")
        automation = make_automation(db, tenant, DEFINITION)
        mode = "backlog" if backlog else f"steady at {rate:.0f} runs/s offered"
        name = f"{kind}, {workers} worker{'s' if workers > 1 else ''}, {mode}"
        if backlog:
            achieved = trigger_all(db, tenant, automation, count, None)
            procs = start_workers(db, workers, tmp)
        else:
            procs = start_workers(db, workers, tmp)
            achieved = trigger_all(db, tenant, automation, count, rate)
        wait_done(db, count)
        rss = stop_workers(procs)
        result = measure(db, name, count, achieved, rss, backlog)
        db.dispose()
        print(result.line(), flush=True)
        return result


def cpu_row(kind: str, count: int, label: str, rate: float | None = None) -> dict[str, object]:
    """W1 with one worker: the CPU each process spends per run (see the module docstring).

    ``rate``: runs offered per second (steady, as the steady phase) instead of
    as fast as the client goes: the worker's cost at a moderate load.
    """
    name = "conveyor_bench_w1"
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        db = fresh_database(kind, tmp, name)
        tenant = make_tenant(db, "bench")
        automation = make_automation(db, tenant, DEFINITION)
        (proc,) = start_workers(db, 1, tmp)
        pg = kind == "postgresql"

        def now() -> dict[str, float]:
            return {
                "worker": cpu_seconds(proc.pid),
                "database": postgres_cpu_seconds(name)[0] if pg else 0.0,
                "self": cpu_seconds("self"),
                "machine": machine_busy_seconds(),
            }

        before = now()
        trigger_all(db, tenant, automation, count, rate, grouped=rate is not None)
        wait_done(db, count)
        after = now()
        stop_workers([proc])
        result = measure(db, kind, count, 0.0, [], True)
        db.dispose()
    used = {k: after[k] - before[k] for k in before}
    ours = used["worker"] + used["database"] + used["self"]
    per_run = {k: v * 1000 / count for k, v in used.items()}
    return {
        "db": kind,
        "label": label,
        "runs": count,
        "offered_per_s": rate,
        "runs_per_s": result.runs_per_s,
        "cpu_worker_ms": per_run["worker"],
        "cpu_database_ms": per_run["database"] if pg else None,
        "cpu_total_ms": per_run["worker"] + per_run["database"],
        "other_cpu_ms": max(used["machine"] - ours, 0.0) * 1000 / count,
    }


HEADER = (
    "| scenario | runs/s | steps/s | p50 ms | p95 ms | p99 ms | triggers/s | worker peak RSS MB |\n"
    "|---|---:|---:|---:|---:|---:|---:|---|"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql", "all"], default="all")
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument(
        "--sqlite-rate",
        type=float,
        default=700.0,
        help="runs/s offered in the steady phase on SQLite",
    )
    parser.add_argument(
        "--pg-rate",
        type=float,
        default=550.0,
        help="runs/s offered in the steady phase on PostgreSQL",
    )
    parser.add_argument("--results", action="store_true", help="append to bench/RESULTS.md")
    parser.add_argument("--json", action="store_true", help="CPU per run, one JSON line")
    parser.add_argument("--label", default="", help="a name for the JSON line (A/B runs)")
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="with --json: runs offered per second (steady), not as fast as the client goes",
    )
    args = parser.parse_args()
    if args.json:
        kinds = ["sqlite", "postgresql"] if args.db == "all" else [args.db]
        for kind in kinds:
            print(json.dumps(cpu_row(kind, args.runs, args.label, args.rate)), flush=True)
        return
    plan: list[tuple[str, int]] = []
    if args.db in ("sqlite", "all"):
        plan.append(("sqlite", 1))
    if args.db in ("postgresql", "all"):
        plan += [("postgresql", 1), ("postgresql", 2)]
    print(f"W1: {args.runs} runs x {STEPS} set steps -- {machine()}")
    print(HEADER)
    rates = {"sqlite": args.sqlite_rate, "postgresql": args.pg_rate}
    results = [
        scenario(kind, n, args.runs, backlog, rates[kind])
        for kind, n in plan
        for backlog in (False, True)
    ]
    if args.results:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        with (ROOT / "bench" / "RESULTS.md").open("a") as fh:
            fh.write(
                f"\n### W1 (engine), {stamp}\n\n{machine()}; {args.runs} runs x "
                f"{STEPS} `set` steps.\n\n{HEADER}\n"
            )
            fh.write("\n".join(r.line() for r in results) + "\n")


if __name__ == "__main__":
    main()
