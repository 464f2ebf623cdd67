"""One tenant floods live streams; how fast do another tenant's run lists answer?

A real ``conveyor serve`` (no worker: the streamed run stays pending, so its
streams stay open) on SQLite and PostgreSQL. Tenant B has ``--runs`` runs.
First B sends ``--requests`` ``GET /api/v1/runs?limit=20`` one after another
(the baseline); then tenant A's one key makes ``--streams`` concurrent
attempts at ``GET /api/v1/runs/{id}/events`` as a live stream and holds open
every one it gets; once every attempt has its answer, B sends the same
requests again. Reported per database: A's answers by status and code, B's
latency p50/p99 without and during the flood, and serve's CPU seconds and
peak RSS during the flood.

It runs against whatever Conveyor the interpreter has installed, so the same
script measures a base install and a change:
``/work/base/.venv/bin/python bench/streams.py`` then
``.venv/bin/python bench/streams.py``.

Usage: python bench/streams.py [--db sqlite|postgresql|all] [--streams 1000]
       [--requests 200] [--runs 200] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from common import cpu_seconds, fresh_database, machine, peak_rss_mb, start_server

from conveyor.services import keys as key_service
from conveyor.services import tenants as tenant_service
from conveyor.store.db import Database
from conveyor.testing.factories import make_automation, trigger

DEFINITION = {"name": "w", "steps": [{"key": "a", "type": "set", "vars": {"x": 1}}]}


def _tenant(db: Database, name: str, runs: int) -> tuple[str, list[str]]:
    now = datetime.now(UTC)
    with db.transaction() as conn:
        tenant = tenant_service.create_tenant(conn, name, now=now)
        _, token = key_service.create_key(
            conn, tenant_id=tenant["id"], scopes=["runs:read"], label=name, now=now
        )
    make_automation(db, tenant["id"], DEFINITION)
    return token, [trigger(db, tenant["id"], "w") for _ in range(runs)]


def _latencies(url: str, token: str, count: int) -> list[float]:
    headers = {"Authorization": f"Bearer {token}"}
    out = []
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        for _ in range(count):
            started = time.perf_counter()
            response = client.get("/api/v1/runs", params={"limit": 20})
            out.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
    return out


def _code(response: httpx.Response) -> str:
    if response.status_code == 200:
        return "200"
    try:
        return f"{response.status_code} {response.json().get('code')}"
    except ValueError:
        return str(response.status_code)


async def _flood(
    url: str, token: str, run_id: str, attempts: int, answered: asyncio.Event
) -> tuple[collections.Counter[str], list[asyncio.Task[None]]]:
    """Start ``attempts`` streams; return the answers' codes once all came, and the open ones."""
    codes: collections.Counter[str] = collections.Counter()
    limits = httpx.Limits(max_connections=attempts + 10, max_keepalive_connections=0)
    client = httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(60, read=None), limits=limits)
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    done = 0

    async def one() -> None:
        nonlocal done
        async with client.stream("GET", f"/api/v1/runs/{run_id}/events", headers=headers) as r:
            if r.status_code != 200:
                await r.aread()
            codes[_code(r)] += 1
            done += 1
            if done == attempts:
                answered.set()
            if r.status_code == 200:
                async for _ in r.aiter_bytes():  # hold it open, as a dashboard would
                    pass

    tasks = [asyncio.create_task(one()) for _ in range(attempts)]
    return codes, tasks


async def _during(
    url: str, a_token: str, b_token: str, run_id: str, args: argparse.Namespace, pid: int
) -> dict[str, Any]:
    answered = asyncio.Event()
    codes, tasks = await _flood(url, a_token, run_id, args.streams, answered)
    try:
        await asyncio.wait_for(answered.wait(), 120)
    except TimeoutError:
        pass  # a server that never answers some attempts: report what came
    cpu_before, started = cpu_seconds(pid), time.monotonic()
    during = await asyncio.to_thread(_latencies, url, b_token, args.requests)
    cpu = cpu_seconds(pid) - cpu_before
    elapsed = time.monotonic() - started
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"codes": dict(codes), "during": during, "serve_cpu_s_per_s": cpu / elapsed}


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def scenario(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    """One database: baseline, flood, the figures."""
    with tempfile.TemporaryDirectory() as tmp:
        db = fresh_database(kind, Path(tmp), "conveyor_bench_streams")
        a_token, (a_run,) = _tenant(db, "flooder", 1)
        b_token, _ = _tenant(db, "bystander", args.runs)
        # The per-key rate limit would stop B's sequential requests and most of
        # A's attempts: lifted here, so what stops A is the stream cap alone.
        env = {"CONVEYOR_RATE_LIMIT": "100000/second", "CONVEYOR_RATE_LIMIT_BURST": "100000"}
        proc, url = start_server(db, Path(tmp) / "serve.log", env)
        try:
            _latencies(url, b_token, 20)  # warm-up
            before = _latencies(url, b_token, args.requests)
            flood = asyncio.run(_during(url, a_token, b_token, a_run, args, proc.pid))
            rss = peak_rss_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(30)
            db.dispose()
    return {
        "db": kind,
        "streams": args.streams,
        "answers": flood["codes"],
        "before_p50_ms": _pct(before, 50),
        "before_p99_ms": _pct(before, 99),
        "during_p50_ms": _pct(flood["during"], 50),
        "during_p99_ms": _pct(flood["during"], 99),
        "serve_cpu_cores_during": flood["serve_cpu_s_per_s"],
        "serve_peak_rss_mb": rss,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql", "all"], default="all")
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--json", action="store_true", help="one JSON line per database")
    args = parser.parse_args()
    kinds = ["sqlite", "postgresql"] if args.db == "all" else [args.db]
    if not args.json:
        print(machine())
        print(
            "| db | A's answers | B p50 / p99 ms before | B p50 / p99 ms during "
            "| serve CPU cores during | serve peak RSS MB |"
        )
        print("|---|---|---:|---:|---:|---:|")
    for kind in kinds:
        r = scenario(kind, args)
        if args.json:
            print(json.dumps(r))
            continue
        answers = ", ".join(f"{n} x {code}" for code, n in sorted(r["answers"].items()))
        print(
            f"| {kind} | {answers} | {r['before_p50_ms']:.1f} / {r['before_p99_ms']:.1f} "
            f"| {r['during_p50_ms']:.1f} / {r['during_p99_ms']:.1f} "
            f"| {r['serve_cpu_cores_during']:.2f} | {r['serve_peak_rss_mb']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
