"""Runs API latency at scale: lists, deep pages, run detail and steps, over HTTP.

Loads N runs (default 1,000,000) with 3 step rows each into a fresh database
(bench/api_data.py: ~20 automations, 4 tenants with one holding 70 % of the
runs, every status, 30 days), starts a real ``conveyor serve`` on it, and times
sequential requests of the big tenant with one keep-alive HTTP client: a
warm-up, then ``--requests`` timed requests per case. Prints p50/p99 per case.

Targets (issue 3, PostgreSQL, a million runs): every list p99 < 50 ms (offset
pages past 10,000 may be slower), detail p99 < 20 ms.

Usage: python bench/api.py [--db sqlite|postgresql|all] [--runs N] [--results]
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

import httpx
import psycopg
import sqlalchemy
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parent))

from api_data import Tenant, existing_tenants, load_postgresql, load_sqlite, make_tenants
from common import PG_ADMIN, UNLIMITED, machine, sample_gets, start_server

from conveyor.clock import SystemClock
from conveyor.services.keys import create_key
from conveyor.store.db import Database
from conveyor.store.migrate import upgrade
from conveyor.store.tables import runs

ROOT = Path(__file__).resolve().parent.parent
PG_NAME = "conveyor_bench_api"
WARMUP = 20


@dataclass
class Case:
    """One kind of request, timed."""

    name: str
    request: Callable[[int], str]  # i-th request -> path and query
    rows: int = 0
    p50: float = 0.0
    p99: float = 0.0
    mean: float = 0.0


def database(kind: str, data_dir: Path) -> Database:
    """The benchmark's database (SQLite: a file in ``data_dir``), migrated."""
    if kind == "sqlite":
        return Database(f"sqlite:///{data_dir / 'bench-api.db'}")
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    return Database(f"{base}/{PG_NAME}")


def drop_database(kind: str, data_dir: Path) -> None:
    """Remove the benchmark's database, if it exists."""
    if kind == "sqlite":
        for suffix in ("", "-wal", "-shm"):
            (data_dir / f"bench-api.db{suffix}").unlink(missing_ok=True)
    else:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{PG_NAME}" WITH (FORCE)')


def loaded_runs(db: Database) -> int:
    """How many runs a database kept from an earlier load holds (0 if none)."""
    try:
        with db.read() as conn:
            return int(conn.execute(select(sqlalchemy.func.count()).select_from(runs)).scalar_one())
    except sqlalchemy.exc.SQLAlchemyError:
        return 0


def prepare(
    kind: str, count: int, data_dir: Path, reuse: bool
) -> tuple[Database, list[Tenant], str]:
    """A database holding ``count`` runs: loaded now, or kept from before with ``--reuse``."""
    if reuse:
        db = database(kind, data_dir)
        if loaded_runs(db) == count:
            return db, existing_tenants(db), "kept from an earlier load"
        db.dispose()
    drop_database(kind, data_dir)
    if kind == "postgresql":
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{PG_NAME}"')
    db = database(kind, data_dir)
    upgrade(db)
    tenants = make_tenants(db)
    print(f"{kind}: loading {count:,} runs x 3 steps ...", flush=True)
    if kind == "sqlite":
        db.dispose()
        seconds = load_sqlite(str(data_dir / "bench-api.db"), tenants, count)
    else:
        seconds = load_postgresql(db, tenants, count)
    return db, tenants, f"loaded in {seconds:.0f} s"


def api_key(db: Database, tenant: Tenant) -> str:
    with db.transaction() as conn:
        _, token = create_key(
            conn, tenant_id=tenant.id, scopes=["runs:read"], label="bench", now=SystemClock().now()
        )
    return token


def sample_runs(db: Database, tenant: Tenant, n: int) -> list[str]:
    """``n`` random run ids of the tenant, from its whole history."""
    with db.read() as conn:
        query = select(runs.c.id).where(runs.c.tenant_id == tenant.id, runs.c.dry_run.is_(False))
        ids = [str(i) for i in conn.execute(query).scalars()]
    return random.Random(3).sample(ids, min(n, len(ids)))


def timed(client: httpx.Client, case: Case, count: int) -> Case:
    samples, response, _ = sample_gets(client, case.name, case.request, count, WARMUP)
    body = response.json()
    case.rows = len(body["items"]) if "items" in body else len(body.get("steps", [])) or 1
    q = statistics.quantiles(samples, n=100, method="inclusive")
    case.p50, case.p99, case.mean = q[49] * 1000, q[98] * 1000, statistics.fmean(samples) * 1000
    return case


def walk_cursor(client: httpx.Client, pages: int) -> str:
    """The cursor of page ``pages`` of the unfiltered list (limit 100)."""
    cursor = None
    for _ in range(pages - 1):
        params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        cursor = client.get("/api/v1/runs", params=params).raise_for_status().json()["next_cursor"]
    assert cursor is not None
    return cursor


def cases(client: httpx.Client, tenant: Tenant, run_ids: list[str]) -> list[Case]:
    automation = tenant.automations[0].name
    tagged = next(a.tag for a in tenant.automations if a.tag)
    cursor = walk_cursor(client, 100)

    def const(path: str) -> Callable[[int], str]:
        return lambda _i: path

    return [
        Case("list, first page (100)", const("/api/v1/runs")),
        Case("list, status=failed", const("/api/v1/runs?status=failed")),
        Case("list, status=failed+exhausted+timed-out",
             const("/api/v1/runs?status=failed&status=exhausted&status=timed-out")),
        Case("list, one automation", const(f"/api/v1/automations/{automation}/runs")),
        Case("list, automation + status=failed",
             const(f"/api/v1/automations/{automation}/runs?status=failed")),
        Case(f"list, tag={tagged}", const(f"/api/v1/runs?tag={tagged}")),
        Case("list, identity", lambda i: f"/api/v1/runs?identity=user{i % 50_000}@example.com"),
        Case("list, dry_run=true (1 % of runs)", const("/api/v1/runs?dry_run=true")),
        Case("list, page 100 by cursor", const(f"/api/v1/runs?cursor={cursor}")),
        Case("list, page 100 by offset (9,900)", const("/api/v1/runs?offset=9900")),
        Case("list, offset 50,000", const("/api/v1/runs?offset=50000")),
        Case("list, limit 1000", const("/api/v1/runs?limit=1000")),
        Case("run detail", lambda i: f"/api/v1/runs/{run_ids[i % len(run_ids)]}"),
        Case("run steps", lambda i: f"/api/v1/runs/{run_ids[i % len(run_ids)]}/steps"),
    ]  # fmt: skip


HEADER = "| case | rows | p50 ms | p99 ms | mean ms |\n|---|---:|---:|---:|---:|"


def line(case: Case) -> str:
    return f"| {case.name} | {case.rows} | {case.p50:.1f} | {case.p99:.1f} | {case.mean:.1f} |"


def scenario(
    kind: str, count: int, requests: int, data_dir: Path, reuse: bool, keep: bool
) -> tuple[str, list[Case]]:
    db, tenants, how = prepare(kind, count, data_dir, reuse)
    big = tenants[0]
    with db.read() as conn:
        total = conn.execute(
            select(sqlalchemy.func.count()).select_from(runs).where(runs.c.tenant_id == big.id)
        ).scalar_one()
    loaded = f"{count:,} runs ({how}); the measured tenant has {total:,}"
    print(f"{kind}: {loaded}", flush=True)
    token = api_key(db, big)
    run_ids = sample_runs(db, big, 400)
    # Sequential requests outrun a key's default rate limit (50/second).
    proc, url = start_server(db, data_dir / f"server-{kind}.log", env=UNLIMITED)
    try:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            results = []
            for case in cases(client, big, run_ids):
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
    parser.add_argument("--db", choices=["sqlite", "postgresql", "all"], default="all")
    parser.add_argument("--runs", type=int, default=1_000_000, help="runs to load per database")
    parser.add_argument("--requests", type=int, default=200, help="timed requests per case")
    parser.add_argument("--results", action="store_true", help="append to bench/RESULTS.md")
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="where the SQLite file goes [a temp dir]"
    )
    parser.add_argument("--keep", action="store_true", help="keep the loaded databases")
    parser.add_argument(
        "--reuse", action="store_true", help="reuse databases kept by --keep if they hold --runs"
    )
    args = parser.parse_args()
    kinds = ["sqlite", "postgresql"] if args.db == "all" else [args.db]
    print(f"Runs API: {args.runs:,} runs, {args.requests} requests per case -- {machine()}")
    sections = []
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir or Path(tmp)
        data_dir.mkdir(parents=True, exist_ok=True)
        for kind in kinds:
            print(f"\n{kind}\n{HEADER}", flush=True)
            loaded, results = scenario(
                kind, args.runs, args.requests, data_dir, args.reuse, args.keep
            )
            sections.append((kind, loaded, results))
    if args.results:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        with (ROOT / "bench" / "RESULTS.md").open("a") as fh:
            fh.write(f"\n### Runs API, {stamp}\n\n{machine()}; {args.requests} sequential "
                     "requests per case after a warm-up, one keep-alive client, "
                     "`conveyor serve` (one uvicorn process).\n")  # fmt: skip
            for kind, loaded, results in sections:
                fh.write(f"\n**{kind}**: {loaded}.\n\n{HEADER}\n")
                fh.write("\n".join(line(r) for r in results) + "\n")


if __name__ == "__main__":
    main()
