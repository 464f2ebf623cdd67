"""Prune throughput: rows removed per second by ``conveyor prune`` on many runs.

Loads ``--runs`` synthetic runs (bench/api_data.py: 30 days of runs in every
status, 3 step rows each, tags) into a fresh database, then prunes them as a
prune ``--later`` days from now would (every finished run due), one page of
``--batch`` lineages per transaction, exactly as ``conveyor prune`` does
(``conveyor.services.retention.prune_all``). It prints the rows removed per
kind, the seconds, and rows/s and runs/s. A ``--dry-run`` pass (counting only)
runs first and must report the same counts.

The issue asks for a million runs (``--runs 1000000``: the load alone takes
minutes). Runs the load generator left live, and the first runs of a
``retry_of`` chain without ``root_run_id`` (older rows), stay for a later prune.

``--w1-rounds K`` also runs W1 (``--w1-runs`` runs a round) alone and during
the prune, K rounds each, interleaved (bench/prune_w1.py), before the rest of
the prune is timed alone.

Usage: python bench/prune.py [--db sqlite|postgresql|all] [--runs N] [--batch N] [--results]
                             [--w1-rounds K] [--w1-runs N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import prune_w1
from api_data import load_postgresql, load_sqlite, make_tenants
from common import fresh_database, machine

from conveyor.services import retention
from conveyor.settings import Settings
from conveyor.store.db import Database

ROOT = Path(__file__).resolve().parent.parent
HEADER = (
    "| database | runs loaded | batch | rows removed | runs removed | seconds | rows/s | runs/s "
    "| dry run s |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def _prune(db: Database, policy: retention.Policy, apply: bool) -> tuple[dict[str, int], float]:
    def run_page(page: retention.PageFn) -> retention.Progress:
        with db.transaction() as conn:
            return page(conn)

    started = time.perf_counter()
    progress = retention.prune_all(run_page, policy, apply=apply)
    return progress.totals(), time.perf_counter() - started


def bench(
    kind: str, runs: int, batch: int, later: int, tmp: Path, w1: tuple[int, int] | None = None
) -> tuple[str, str]:
    """Load, dry-run, prune; one results row (and W1's rows when ``w1`` is (runs, rounds))."""
    db = fresh_database(kind, tmp, "conveyor_bench_prune")
    try:
        tenants = make_tenants(db)
        if kind == "sqlite":
            path = db.url.database
            assert path is not None
            db.dispose()
            loaded = load_sqlite(path, tenants, runs)
        else:
            loaded = load_postgresql(db, tenants, runs)
        print(f"{kind}: loaded {runs:,} runs in {loaded:.0f} s")
        settings = Settings(retention_batch_size=batch)
        policy = retention.Policy.from_settings(settings, datetime.now(UTC) + timedelta(days=later))
        if w1 is not None:
            policy = prune_w1.before_w1(policy)
        counted, dry_seconds = _prune(db, policy, apply=False)
        w1_rows = ""
        if w1 is not None:
            # Some pages go during the rounds; the throughput below is the rest, alone.
            rounds, gated = prune_w1.rounds(kind, db, "conveyor_bench_prune", policy, *w1)
            w1_rows = prune_w1.table(kind, rounds)
            before = gated.removed()  # the rounds' pages are not part of the throughput
            gated.gate.set()
            started = time.perf_counter()
            removed = gated.join()
            seconds = time.perf_counter() - started
            counted = {}  # the rounds removed some already: the counts no longer match
        else:
            removed, seconds = _prune(db, policy, apply=True)
            assert counted == removed, (counted, removed)
        rows, runs_removed = sum(removed.values()), removed["runs"]
        if w1 is not None:  # what the rounds removed is not timed
            rows, runs_removed = rows - before[0], runs_removed - before[1]
        print(f"{kind}: {', '.join(f'{k} {v:,}' for k, v in removed.items() if v)}")
        return (
            f"| {kind} | {runs:,} | {batch} | {rows:,} | {runs_removed:,} | {seconds:.1f} "
            f"| {rows / seconds:,.0f} | {runs_removed / seconds:,.0f} | {dry_seconds:.1f} |",
            w1_rows,
        )
    finally:
        db.dispose()


def main() -> None:
    """Run the benchmark and print (optionally append) the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql", "all"], default="all")
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--later", type=int, default=200, help="prune as if this many days on")
    parser.add_argument("--results", action="store_true", help="append to bench/RESULTS.md")
    parser.add_argument(
        "--w1-rounds", type=int, default=0, help="rounds of W1 alone / during the prune (0: none)"
    )
    parser.add_argument("--w1-runs", type=int, default=1000, help="W1 runs per round")
    args = parser.parse_args()
    kinds = ["sqlite", "postgresql"] if args.db == "all" else [args.db]
    w1 = (args.w1_runs, args.w1_rounds) if args.w1_rounds else None
    with tempfile.TemporaryDirectory() as tmp:
        results = [bench(k, args.runs, args.batch, args.later, Path(tmp), w1) for k in kinds]
    table = "\n".join([HEADER, *(line for line, _ in results)])
    if w1 is not None:
        table += "\n\nW1 alone and during the prune, interleaved:\n\n" + "\n".join(
            [prune_w1.W1_HEADER, *(rows for _, rows in results)]
        )
    print(table)
    if args.results:
        when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        with (ROOT / "bench" / "RESULTS.md").open("a") as out:
            out.write(f"\n### Prune throughput, {when}\n\n{machine()}\n\n{table}\n")


if __name__ == "__main__":
    main()
