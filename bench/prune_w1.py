"""W1 while a prune runs, beside W1 alone, interleaved (used by bench/prune.py --w1-rounds).

The prune runs in a process of its own, page by page, behind a gate that
is checked between pages: closed, the prune waits (it holds no transaction);
open, it goes on. One real ``conveyor worker`` runs W1 (bench/engine.py's
3-step automation) in a tenant of its own in the same database. Rounds
alternate: W1 alone (gate closed), then W1 during the prune (gate open),
``rounds`` times; each round triggers ``runs`` runs (100 per transaction) and
waits for them. Per round: the worker's CPU ms per run, the database's
(PostgreSQL: every backend of the database, the prune's included, so "during"
also carries the prune's own queries), and runs/s.

The policy's run cutoffs are the moment before the rounds (``before_w1``): every loaded run is due,
no W1 run ever is, so the prune never takes a measured run away.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import cpu_seconds, postgres_cpu_seconds, start_workers, stop_workers
from engine import DEFINITION, trigger_all
from sqlalchemy import func, select

from conveyor.services import retention
from conveyor.store.db import Database
from conveyor.store.tables import runs
from conveyor.testing.factories import make_automation, make_tenant


class GatedPrune:
    """``retention.prune_all`` in a process of its own (not this one's GIL, which
    triggers W1), stopping between pages while the gate is closed."""

    def __init__(self, db: Database, policy: retention.Policy) -> None:
        ctx = multiprocessing.get_context("fork")
        self.gate = ctx.Event()
        self._pages = ctx.Value("l", 0)
        self._rows = ctx.Value("q", 0)
        self._runs = ctx.Value("q", 0)
        self._totals: Any = ctx.Queue()
        self.progress: dict[str, int] | None = None
        db.dispose()  # the child opens its own connections
        self.process = ctx.Process(
            target=_run,
            args=(db.url, policy, self.gate, self._pages, (self._rows, self._runs), self._totals),
            daemon=True,
        )

    @property
    def pages(self) -> int:
        """Pages done so far."""
        return int(self._pages.value)

    def removed(self) -> tuple[int, int]:
        """Rows and runs removed so far."""
        return int(self._rows.value), int(self._runs.value)

    def start(self) -> None:
        """Start the process (paused until the gate opens)."""
        self.process.start()

    def finished(self) -> bool:
        """True once the prune has walked everything."""
        return not self.process.is_alive()

    def join(self) -> dict[str, int]:
        """Wait for the end; the rows it removed, per kind."""
        totals: dict[str, int] = self._totals.get()
        self.process.join()
        return totals


def _run(
    url: Any, policy: retention.Policy, gate: Any, pages: Any, removed: Any, totals: Any
) -> None:
    db = Database(url.render_as_string(hide_password=False))

    def run_page(page: retention.PageFn) -> retention.Progress:
        gate.wait()
        with db.transaction() as conn:
            done = page(conn)
        with pages.get_lock():
            pages.value += 1
        counts = done.totals()
        removed[0].value, removed[1].value = sum(counts.values()), counts.get("runs", 0)
        return done

    totals.put(retention.prune_all(run_page, policy, apply=True).totals())
    db.dispose()


def _wait_completed(db: Database, automation: str, count: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    done = 0
    while time.monotonic() < deadline:
        with db.read() as conn:
            done = conn.execute(
                select(func.count())
                .select_from(runs)
                .where(runs.c.automation_id == automation, runs.c.status == "completed")
            ).scalar_one()
        if done >= count:
            return
        time.sleep(0.05)
    raise SystemExit(f"only {done} of {count} W1 runs completed in {timeout} s")


def before_w1(policy: retention.Policy) -> retention.Policy:
    """``policy`` with every run finished before now due, and none finished later."""
    now = datetime.now(UTC)
    return dataclasses.replace(policy, runs=now, failed_runs=now)


def rounds(
    kind: str,
    db: Database,
    pg_name: str,
    policy: retention.Policy,
    count: int,
    n_rounds: int,
) -> tuple[list[dict[str, Any]], GatedPrune]:
    """Alternate W1 alone and W1 during the prune; one row per round. The prune is left paused."""
    tenant = make_tenant(db, "w1-during-prune")
    automation = make_automation(db, tenant, DEFINITION)
    prune = GatedPrune(db, policy)
    prune.start()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        (worker,) = start_workers(db, 1, Path(tmp))
        try:
            total = 0
            for i in range(n_rounds):
                for during in (False, True):
                    if during:
                        prune.gate.set()
                    pages = prune.pages
                    w0, d0 = cpu_seconds(worker.pid), _db_cpu(kind, pg_name)
                    t0 = time.perf_counter()
                    trigger_all(db, tenant, automation, count, None)
                    total += count
                    _wait_completed(db, automation, total)
                    seconds = time.perf_counter() - t0
                    w1, d1 = cpu_seconds(worker.pid), _db_cpu(kind, pg_name)
                    prune.gate.clear()
                    row = {
                        "round": i + 1,
                        "during": during,
                        "prune_pages": prune.pages - pages,
                        "runs_per_s": count / seconds,
                        "cpu_worker_ms": (w1 - w0) * 1000 / count,
                        "cpu_database_ms": (d1 - d0) * 1000 / count if kind != "sqlite" else None,
                    }
                    rows.append(row)
                    print(f"  {kind} W1 {'during prune' if during else 'alone'}: {row}", flush=True)
                    if during and prune.finished():
                        raise SystemExit("the prune ended during the rounds: load more runs")
        finally:
            stop_workers([worker])
    return rows, prune


def _db_cpu(kind: str, name: str) -> float:
    return postgres_cpu_seconds(name)[0] if kind == "postgresql" else 0.0


def table(kind: str, rows: list[dict[str, Any]]) -> str:
    """Medians of the rounds, alone beside during."""

    def med(during: bool, key: str) -> float | None:
        values = [r[key] for r in rows if r["during"] is during and r[key] is not None]
        return statistics.median(values) if values else None

    def fmt(v: float | None, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    out = []
    for key, name, spec in (
        ("cpu_worker_ms", "worker CPU ms/run", ".3f"),
        ("cpu_database_ms", "database CPU ms/run", ".3f"),
        ("runs_per_s", "runs/s", ",.0f"),
    ):
        a, b = med(False, key), med(True, key)
        change = f"{(b - a) / a * 100:+.1f} %" if a and b is not None else "-"
        spread = [r[key] for r in rows if r[key] is not None]
        out.append(
            f"| {kind} | {name} | {fmt(a, spec)} | {fmt(b, spec)} | {change} "
            f"| {fmt(min(spread), spec) if spread else '-'} to "
            f"{fmt(max(spread), spec) if spread else '-'} |"
        )
    return "\n".join(out)


W1_HEADER = (
    "| database | figure | W1 alone (median) | W1 during prune (median) | change "
    "| min to max (both) |\n|---|---|---:|---:|---:|---|"
)
