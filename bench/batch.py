"""Runs created and committed per second through batch triggers and event ingestion.

A real ``conveyor serve`` and NO worker: what is measured is run creation
(every run stays pending). Two ways in, 1,000 runs per request (the issue's
target is 5,000 runs/s or more through each):

- ``batch``: ``POST /api/v1/automations/w1/trigger/batch`` with 1,000 items
  (``{"payload": {"n": i}}``, no identity, no key);
- ``events``: ``POST /api/v1/events`` with 1,000 events (unique ids, no
  identity), each starting one run of ``w1e`` (W1 with an event trigger).

W1 is bench/engine.py's 3 ``set`` steps. Per database and way: ``--requests``
requests sent by ``--clients`` keep-alive clients after one uncounted warm-up
request; runs/s = runs created / wall time of the load (every answer is 200
once its transaction committed; anything else is counted and warned about);
request latency p50 and max; CPU ms per run (user + system, /proc) of serve,
the database (every ``postgres`` process, bench/common.py; SQLite runs inside
serve: ``-``) and this load generator. The rate limit is lifted
(``CONVEYOR_RATE_LIMIT=1000000/second``); ``CONVEYOR_MAX_RUNS_PER_REQUEST``
stays at its default (2,000), above the 1,000 a request starts.

Usage: python bench/batch.py [--db sqlite|postgresql|all] [--requests 20] [--clients 2]
       [--label TEXT] [--json] [--results]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from common import (
    cpu_seconds,
    fresh_database,
    machine,
    machine_busy_seconds,
    postgres_cpu_seconds,
    start_server,
)

from conveyor.services.keys import create_key
from conveyor.store.db import Database
from conveyor.store.runs import count_runs
from conveyor.testing.factories import make_automation, make_tenant

ROOT = Path(__file__).resolve().parent.parent
PG_NAME = "conveyor_bench_batch"
STEPS = 3
PER_REQUEST = 1000
W1 = [{"key": f"s{i}", "type": "set", "vars": {f"v{i}": i}} for i in range(STEPS)]
DEFINITIONS = [
    {"name": "w1", "steps": W1},
    {"name": "w1e", "trigger": {"type": "event", "event": "bench.event"}, "steps": W1},
]
ENV = {"CONVEYOR_LOG_LEVEL": "WARNING", "CONVEYOR_RATE_LIMIT": "1000000/second"}
HEADER = (
    "| database | way in | requests x runs | clients | runs/s | req p50 ms | req max ms "
    "| CPU ms/run: serve | database | load gen | total |\n"
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


@dataclass
class Row:
    """One (database, way in)'s figures; the JSON line is ``asdict`` of it."""

    db: str
    way: str
    label: str
    requests: int
    clients: int
    runs: int
    non_200: int
    load_s: float
    runs_per_s: float
    req_p50_ms: float
    req_max_ms: float
    cpu_serve_ms: float
    cpu_database_ms: float | None
    cpu_load_ms: float
    cpu_total_ms: float
    other_cpu_ms: float

    def line(self) -> str:
        name = f"{self.db}, {self.label}" if self.label else self.db
        database = "-" if self.cpu_database_ms is None else f"{self.cpu_database_ms:.3f}"
        return (
            f"| {name} | {self.way} | {self.requests} x {PER_REQUEST:,} | {self.clients} "
            f"| {self.runs_per_s:,.0f} | {self.req_p50_ms:.0f} | {self.req_max_ms:.0f} "
            f"| {self.cpu_serve_ms:.3f} | {database} | {self.cpu_load_ms:.3f} "
            f"| {self.cpu_total_ms:.3f} |"
        )


class Bodies:
    """Request bodies, each made once before the load (events need fresh ids)."""

    def __init__(self) -> None:
        self.sent = 0

    def make(self, way: str) -> bytes:
        self.sent += 1
        if way == "batch":
            body: dict[str, Any] = {"runs": [{"payload": {"n": i}} for i in range(PER_REQUEST)]}
        else:
            body = {
                "events": [
                    {"id": f"r{self.sent}-e{i}", "name": "bench.event", "payload": {"n": i}}
                    for i in range(PER_REQUEST)
                ]
            }
        return json.dumps(body).encode()


def load(
    url: str, key: str, path: str, bodies: list[bytes], clients: int, ready: Callable[[], object]
) -> tuple[float, list[float], dict[str, int]]:
    """Send ``bodies`` over ``clients`` connections: wall time, latencies, answers."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    latencies: list[float] = []
    answers: collections.Counter[str] = collections.Counter()
    todo = list(bodies)

    async def one(client: httpx.AsyncClient) -> None:
        while todo:
            body = todo.pop()
            t0 = time.perf_counter()
            try:
                status = str((await client.post(path, content=body)).status_code)
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            latencies.append(time.perf_counter() - t0)
            answers[status] += 1

    async def go() -> float:
        pool = [
            httpx.AsyncClient(base_url=url, headers=headers, timeout=300) for _ in range(clients)
        ]
        ready()
        t0 = time.perf_counter()
        await asyncio.gather(*(one(c) for c in pool))
        seconds = time.perf_counter() - t0
        for c in pool:
            await c.aclose()
        return seconds

    return asyncio.run(go()), latencies, dict(answers)


def cpu_now(serve: int, pg: bool) -> dict[str, float]:
    """CPU seconds used so far by serve, the database, this process and the machine."""
    return {
        "serve": cpu_seconds(serve),
        "database": postgres_cpu_seconds(PG_NAME)[0] if pg else 0.0,
        "load": cpu_seconds("self"),
        "machine": machine_busy_seconds(),
    }


def measure(db: Database, url: str, key: str, pid: int, way: str, args: argparse.Namespace) -> Row:
    """Warm up, then send ``args.requests`` requests of 1,000 runs the ``way`` way; its row."""
    path = "/api/v1/automations/w1/trigger/batch" if way == "batch" else "/api/v1/events"
    bodies = Bodies()
    load(url, key, path, [bodies.make(way)], 1, lambda: None)  # warm-up
    payloads = [bodies.make(way) for _ in range(args.requests)]
    with db.read() as conn:
        before_runs = count_runs(conn)
    before: dict[str, float] = {}
    seconds, latencies, answers = load(
        url,
        key,
        path,
        payloads,
        args.clients,
        lambda: before.update(cpu_now(pid, not db.is_sqlite)),
    )
    after = cpu_now(pid, not db.is_sqlite)
    with db.read() as conn:
        made = count_runs(conn) - before_runs
    ok = answers.get("200", 0)
    if ok != args.requests or made != args.requests * PER_REQUEST:
        print(f"warning: {db.url.drivername} {way}: {answers}, {made} runs", file=sys.stderr)
    cpu = {name: (after[name] - before[name]) * 1000 / max(made, 1) for name in after}
    mine = cpu["serve"] + cpu["database"] + cpu["load"]
    return Row(
        db="sqlite" if db.is_sqlite else "postgresql",
        way=way,
        label=args.label,
        requests=args.requests,
        clients=args.clients,
        runs=made,
        non_200=sum(answers.values()) - ok,
        load_s=round(seconds, 3),
        runs_per_s=made / seconds,
        req_p50_ms=statistics.median(latencies) * 1000,
        req_max_ms=max(latencies) * 1000,
        cpu_serve_ms=cpu["serve"],
        cpu_database_ms=None if db.is_sqlite else cpu["database"],
        cpu_load_ms=cpu["load"],
        cpu_total_ms=mine,
        other_cpu_ms=cpu["machine"] - mine,
    )


def scenario(kind: str, args: argparse.Namespace, tmp: Path) -> list[Row]:
    """Set up ``kind`` and measure both ways in: its rows."""
    db = fresh_database(kind, tmp, PG_NAME)
    tenant = make_tenant(db, "bench")
    for definition in DEFINITIONS:
        make_automation(db, tenant, definition)
    with db.transaction() as conn:
        scopes, now = ["automations:trigger", "events:write"], datetime.now(UTC)
        _, key = create_key(conn, tenant_id=tenant, scopes=scopes, label="bench", now=now)
    server, url = start_server(db, tmp / f"serve-{kind}.log", env=ENV)
    try:
        return [measure(db, url, key, server.pid, way, args) for way in args.ways]
    finally:
        server.terminate()
        server.wait(30)
        db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql", "all"], default="all")
    parser.add_argument("--requests", type=int, default=20, help="measured requests per way")
    parser.add_argument("--clients", type=int, default=2, help="concurrent HTTP clients")
    parser.add_argument(
        "--ways", nargs="+", choices=["batch", "events"], default=["batch", "events"]
    )
    parser.add_argument("--label", default="", help="names the rows (for A/B runs)")
    parser.add_argument("--json", action="store_true", help="also print each row as JSON")
    parser.add_argument("--results", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args()
    kinds = ["sqlite", "postgresql"] if args.db == "all" else [args.db]
    about = machine()
    load_average = os.getloadavg()[0]
    print(f"Run creation over HTTP, {PER_REQUEST:,} runs a request, no worker -- {about}")
    print(f"load average before: {load_average:.2f}\n")
    print(HEADER, flush=True)
    results: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            for row in scenario(kind, args, Path(tmp)):
                results.append(row)
                if row.other_cpu_ms > 0.05 * row.cpu_total_ms:
                    print(
                        f"warning: {kind} {row.way}: the machine was busy with other work: "
                        f"{row.other_cpu_ms:.3f} CPU ms/run outside this benchmark's processes",
                        file=sys.stderr,
                    )
                print(row.line(), flush=True)
                if args.json:
                    print(json.dumps(asdict(row)), flush=True)
    if args.results:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        label = f", {args.label}" if args.label else ""
        shared = " (host shared with other work)" if load_average > 1 else ""
        with (ROOT / "bench" / "RESULTS.md").open("a") as fh:
            fh.write(
                f"\n### Run creation: batch triggers and events (bench/batch.py){label}, "
                f"{stamp}\n\n{about}; load average {load_average:.2f} before{shared}; "
                f"{args.requests} requests of {PER_REQUEST:,} runs (W1, {STEPS} `set` steps) "
                f"per way in, {args.clients} keep-alive clients, one `conveyor serve`, no "
                "worker; rate limit lifted, run cap at its default (2,000); CPU in ms per "
                f"run.\n\n{HEADER}\n"
            )
            fh.write("\n".join(r.line() for r in results) + "\n")


if __name__ == "__main__":
    main()
