"""Dashboard pages at scale: server-side rendering of the runs list and run pages, over HTTP.

Uses the data of bench/api.py (N runs, default 1,000,000, with 3 step rows
each: bench/api_data.py), reusing its database when one holding N runs is
there (bench/api.py --keep, or an earlier run of this one with --keep), else
loading it. Starts a real ``conveyor serve``, signs in through
``POST /api/v1/session`` with a key of the big tenant (``runs:read`` and
``runs:write``: the list then also counts what its bulk actions would act
on, as an operator's page does) and times sequential page loads with one
keep-alive client holding the session cookie: a warm-up, then ``--requests``
timed loads per case. Prints p50/p95/p99 per case.

The payload cases search `order_id` (one run) and `total` (about 0.2 % of the
runs). On SQLite a payload search needs a time window, so there they carry
``window=24h``; on PostgreSQL they run without one, on the GIN index.

Target (issue 15, PostgreSQL, a million runs): every page p95 < 150 ms.

Usage: python bench/web.py [--db sqlite|postgresql|all] [--runs N] [--results]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

import httpx
import sqlalchemy
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parent))

from api import drop_database, prepare, sample_runs
from api_data import Tenant
from common import UNLIMITED, machine, sample_gets, start_server

from conveyor.clock import SystemClock
from conveyor.services.keys import create_key
from conveyor.store.db import Database
from conveyor.store.tables import runs

ROOT = Path(__file__).resolve().parent.parent
WARMUP = 20
TARGET_MS = 150.0


@dataclass
class Case:
    """One kind of page, timed."""

    name: str
    request: Callable[[int], str]  # i-th request -> path and query
    p50: float = 0.0
    p95: float = 0.0
    p99: float = 0.0
    size_kb: float = 0.0


def sign_in(client: httpx.Client, db: Database, tenant: Tenant) -> None:
    """Sign ``client`` in as the dashboard's login page does (the session cookie)."""
    with db.transaction() as conn:
        _, token = create_key(
            conn,
            tenant_id=tenant.id,
            scopes=["runs:read", "runs:write"],
            label="bench-web",
            now=SystemClock().now(),
        )
    origin = str(client.base_url).rstrip("/")
    response = client.post("/api/v1/session", json={"api_key": token}, headers={"Origin": origin})
    response.raise_for_status()


def payload_values(db: Database, tenant: Tenant, n: int) -> list[int]:
    """``order_id`` values of ``n`` random runs of the tenant (each matches one run)."""
    with db.read() as conn:
        query = (
            select(runs.c.trigger_event)
            .where(runs.c.tenant_id == tenant.id, runs.c.dry_run.is_(False))
            .order_by(runs.c.created_at.desc())
            .limit(200_000)
        )
        events = list(conn.execute(query).scalars())
    picked = random.Random(5).sample(events, min(n, len(events)))
    return [int(e["payload"]["order_id"]) for e in picked]


def deep_cursor(client: httpx.Client, pages: int) -> str:
    """The cursor of the runs list after ``pages`` pages of 100 (the API's, as the UI's)."""
    cursor = None
    for _ in range(pages):
        params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        cursor = client.get("/api/v1/runs", params=params).raise_for_status().json()["next_cursor"]
    assert cursor is not None
    return cursor


def timed(client: httpx.Client, case: Case, count: int) -> Case:
    samples, _, size = sample_gets(client, case.name, case.request, count, WARMUP)
    q = statistics.quantiles(samples, n=100, method="inclusive")
    case.p50, case.p95, case.p99 = q[49] * 1000, q[94] * 1000, q[98] * 1000
    case.size_kb = size / count / 1024
    return case


def cases(
    kind: str, client: httpx.Client, tenant: Tenant, run_ids: list[str], orders: list[int]
) -> list[Case]:
    automation = tenant.automations[0].name
    cursor = deep_cursor(client, 100)
    # SQLite needs a window for a payload search (docs/dashboard.md).
    window = {"window": "24h"} if kind == "sqlite" else {}

    def page(**params: str) -> Callable[[int], str]:
        url = f"/ui/runs?{urlencode(params)}" if params else "/ui/runs"
        return lambda _i: url

    def payload(path: str, values: list[int]) -> Callable[[int], str]:
        return lambda i: (
            "/ui/runs?" + urlencode({"payload": f"{path}={values[i % len(values)]}", **window})
        )

    suffix = ", window=24h" if window else ""
    return [
        Case("runs list, no filter", page()),
        Case("runs list, status=failed", page(status="failed")),
        Case("runs list, one automation", page(automation=automation)),
        Case("runs list, automation + status=failed", page(automation=automation, status="failed")),
        Case(f"runs list, payload order_id=<one run>{suffix}", payload("order_id", orders)),
        Case(f"runs list, payload total=<0.2 %>{suffix}", payload("total", list(range(1, 500)))),
        Case("runs list, window=24h", page(window="24h")),
        Case("runs list, page 101 by cursor", page(cursor=cursor)),
        Case("run page", lambda i: f"/ui/runs/{run_ids[i % len(run_ids)]}"),
    ]  # fmt: skip


HEADER = "| case | p50 ms | p95 ms | p99 ms | page KB |\n|---|---:|---:|---:|---:|"


def line(case: Case) -> str:
    miss = "" if case.p95 < TARGET_MS else " **(over 150 ms)**"
    return (
        f"| {case.name} | {case.p50:.1f} | {case.p95:.1f}{miss} | {case.p99:.1f} "
        f"| {case.size_kb:.0f} |"
    )


def scenario(
    kind: str, count: int, requests: int, data_dir: Path, fresh: bool, keep: bool
) -> tuple[str, list[Case]]:
    db, tenants, how = prepare(kind, count, data_dir, reuse=not fresh)
    big = tenants[0]
    with db.read() as conn:
        total = conn.execute(
            select(sqlalchemy.func.count()).select_from(runs).where(runs.c.tenant_id == big.id)
        ).scalar_one()
    loaded = f"{count:,} runs ({how}); the measured tenant has {total:,}"
    print(f"{kind}: {loaded}", flush=True)
    run_ids = sample_runs(db, big, 400)
    orders = payload_values(db, big, 400)
    # The walk to the deep cursor goes faster than a key's default rate limit.
    proc, url = start_server(db, data_dir / f"server-web-{kind}.log", env=UNLIMITED)
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            sign_in(client, db, big)
            results = []
            for case in cases(kind, client, big, run_ids, orders):
                results.append(timed(client, case, requests))
                print(line(case), flush=True)
    finally:
        proc.terminate()
        proc.wait(30)
        db.dispose()
    if not keep:
        drop_database(kind, data_dir)
    return loaded, results


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql", "all"], default="postgresql")
    parser.add_argument("--runs", type=int, default=1_000_000, help="runs to load per database")
    parser.add_argument("--requests", type=int, default=200, help="timed page loads per case")
    parser.add_argument("--results", action="store_true", help="append to bench/RESULTS.md")
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="where the SQLite file goes [a temp dir]"
    )
    parser.add_argument("--keep", action="store_true", help="keep the databases afterwards")
    parser.add_argument(
        "--fresh", action="store_true", help="load anew even if a database holds --runs already"
    )
    args = parser.parse_args()
    kinds = ["sqlite", "postgresql"] if args.db == "all" else [args.db]
    print(f"Dashboard pages: {args.runs:,} runs, {args.requests} loads per case -- {machine()}")
    sections = []
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir or Path(tmp)
        data_dir.mkdir(parents=True, exist_ok=True)
        for kind in kinds:
            print(f"\n{kind}\n{HEADER}", flush=True)
            loaded, results = scenario(
                kind, args.runs, args.requests, data_dir, args.fresh, args.keep
            )
            sections.append((kind, loaded, results))
    if args.results:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        with (ROOT / "bench" / "RESULTS.md").open("a") as fh:
            fh.write(f"\n### Dashboard pages, {stamp}\n\n{machine()}; {args.requests} sequential "
                     "page loads per case after a warm-up, one keep-alive client signed in "
                     "with the session cookie (a key with `runs:read` and `runs:write`), "
                     "`conveyor serve` (one uvicorn process). Target: p95 < 150 ms on "
                     "PostgreSQL.\n")  # fmt: skip
            for kind, loaded, results in sections:
                fh.write(f"\n**{kind}**: {loaded}.\n\n{HEADER}\n")
                fh.write("\n".join(line(r) for r in results) + "\n")


if __name__ == "__main__":
    main()
