"""Retention: what is pruned when, one page per transaction (docs/operating.md#retention).

A prune walks six kinds in turn: runs (by lineage), dry runs, events, bulk
operations, revoked API keys and expired idempotency records. Each call of
``prune_page`` does one page of one kind in the caller's transaction and
returns the next ``Progress``; the caller (``conveyor prune``, the workers'
``prune`` task) commits after each page, so a prune never holds locks for
long and a prune cut short loses nothing: the next one starts over and finds
what is left. ``Progress`` is immutable, so a page whose transaction failed
is simply tried again from the progress before it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from conveyor.domain.times import iso
from conveyor.settings import Settings
from conveyor.store import prune as store

log = logging.getLogger("conveyor.retention")
KINDS = ("runs", "dry_runs", "events", "bulk_operations", "api_keys", "idempotency_records")
# Every count a prune reports, in the order it prints them.
COUNTED = (
    "runs",
    "steps",
    "attempts",
    "history",
    "waits",
    "messages",
    "tags",
    "tasks",
    "dry_runs",
    "dry_run_results",
    "simulated_runs",
    "events",
    "bulk_operations",
    "api_keys",
    "idempotency_records",
)
STATE = "prune"  # the maintenance row holding the last prune


def _cutoff(now: datetime, days: int) -> datetime | None:
    return now - timedelta(days=days) if days > 0 else None


@dataclass(frozen=True)
class Policy:
    """The cutoffs of one prune: rows finished before them go; None keeps that kind forever."""

    now: datetime
    runs: datetime | None
    failed_runs: datetime | None
    events: datetime | None
    dry_runs: datetime | None
    bulk: datetime | None
    revoked_keys: datetime | None
    batch: int = 500

    @classmethod
    def from_settings(cls, settings: Settings, now: datetime) -> Policy:
        """The policy of ``CONVEYOR_RETENTION_*`` at ``now``."""
        return cls(
            now=now,
            runs=_cutoff(now, settings.retention_runs_days),
            failed_runs=_cutoff(now, settings.retention_failed_runs_days),
            events=_cutoff(now, settings.retention_events_days),
            dry_runs=_cutoff(now, settings.retention_dry_runs_days),
            bulk=_cutoff(now, settings.retention_bulk_days),
            revoked_keys=_cutoff(now, settings.retention_revoked_keys_days),
            batch=settings.retention_batch_size,
        )


@dataclass(frozen=True)
class Progress:
    """Where a prune is: the kind it works on, its cursor, and what it removed so far."""

    apply: bool = True
    kind: int = 0
    cursor: Any = None
    # Dry runs: the one whose results are being removed, and the last one done.
    dry_run: str | None = None
    counts: Mapping[str, int] = field(default_factory=dict)
    skipped_pages: int = 0

    @property
    def done(self) -> bool:
        """Whether every kind has been walked."""
        return self.kind >= len(KINDS)

    def totals(self) -> dict[str, int]:
        """Every count, zeros included, in ``COUNTED`` order."""
        return {k: int(self.counts.get(k, 0)) for k in COUNTED}

    def _add(self, counts: Mapping[str, int]) -> dict[str, int]:
        merged = dict(self.counts)
        for k, v in counts.items():
            merged[k] = merged.get(k, 0) + v
        return merged

    def advanced(self, counts: Mapping[str, int], cursor: Any, **kw: Any) -> Progress:
        """This progress plus one page: the next kind when ``cursor`` is None."""
        if cursor is None:
            return replace(self, kind=self.kind + 1, cursor=None, counts=self._add(counts), **kw)
        return replace(self, cursor=cursor, counts=self._add(counts), **kw)


def prune_page(conn: Connection, policy: Policy, progress: Progress) -> Progress:
    """Prune (or, not applying, count) one page of the current kind; the progress after it."""
    kind = KINDS[progress.kind]
    if kind == "runs":
        return _runs_page(conn, policy, progress)
    if kind == "dry_runs":
        return _dry_runs_page(conn, policy, progress)
    pages: dict[str, tuple[Callable[..., tuple[dict[str, int], Any]], datetime | None]] = {
        "events": (store.events_page, policy.events),
        "bulk_operations": (store.bulk_page, policy.bulk),
        "api_keys": (store.revoked_keys_page, policy.revoked_keys),
        "idempotency_records": (store.idempotency_page, policy.now),
    }
    page, cutoff = pages[kind]
    if cutoff is None:  # kept forever
        return progress.advanced({}, None)
    counts, cursor = page(conn, cutoff, progress.cursor, policy.batch, progress.apply)
    return progress.advanced(counts, cursor)


def _runs_page(conn: Connection, policy: Policy, progress: Progress) -> Progress:
    run_ids, cursor = store.lineage_page(
        conn,
        done_cutoff=policy.runs,
        failed_cutoff=policy.failed_runs,
        after=progress.cursor,
        limit=policy.batch,
    )
    counts = store.remove_runs(conn, run_ids, progress.apply, "runs")
    return progress.advanced(counts, cursor)


def _dry_runs_page(conn: Connection, policy: Policy, progress: Progress) -> Progress:
    if policy.dry_runs is None:
        return progress.advanced({}, None)
    current = progress.cursor
    if current is None:
        current = store.next_dry_run(conn, policy.dry_runs, progress.dry_run)
        if current is None:
            return progress.advanced({}, None)
        current = (current, None)
    dry_run_id, after = current
    counts, next_result = store.dry_run_results_page(
        conn, dry_run_id, after, policy.batch, progress.apply
    )
    if next_result is not None:
        return replace(progress, cursor=(dry_run_id, next_result), counts=progress._add(counts))
    counts = _merge(counts, store.remove_dry_run(conn, dry_run_id, progress.apply))
    # Look for the next dry run on the next page (cursor None would end the kind).
    return replace(progress, cursor=None, dry_run=dry_run_id, counts=progress._add(counts))


def _merge(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + v
    return out


PageFn = Callable[[Connection], Progress]


def _on_conflict(progress: Progress, exc: IntegrityError) -> Progress:
    log.warning(
        "a page of %s changed while being pruned; left for the next prune: %s",
        KINDS[progress.kind],
        exc.orig,
    )
    return replace(progress, skipped_pages=progress.skipped_pages + 1)


def step(run_page: Callable[[PageFn], Progress], policy: Policy, progress: Progress) -> Progress:
    """Run one page through ``run_page`` (which opens and commits its transaction).

    A page whose delete met a row that changed meanwhile (a retry of a run
    being pruned, committed in between: the foreign key refuses the delete)
    is left as it is, for the next prune, and the walk goes on after it.
    """
    try:
        return run_page(functools.partial(prune_page, policy=policy, progress=progress))
    except IntegrityError as exc:
        skipped = _on_conflict(progress, exc)
        return run_page(functools.partial(_skip_page, policy=policy, progress=skipped))


async def astep(
    run_page: Callable[[PageFn], Awaitable[Progress]], policy: Policy, progress: Progress
) -> Progress:
    """``step`` for a caller whose transactions are awaited (the worker)."""
    try:
        return await run_page(functools.partial(prune_page, policy=policy, progress=progress))
    except IntegrityError as exc:
        skipped = _on_conflict(progress, exc)
        return await run_page(functools.partial(_skip_page, policy=policy, progress=skipped))


def _skip_page(conn: Connection, policy: Policy, progress: Progress) -> Progress:
    """The progress after the current page, counting (not deleting) it."""
    counted = prune_page(conn, policy, replace(progress, apply=False))
    return replace(counted, apply=progress.apply, counts=progress.counts)


def prune_all(
    run_page: Callable[[PageFn], Progress],
    policy: Policy,
    *,
    apply: bool = True,
) -> Progress:
    """Walk every kind to the end, one page per ``run_page`` call (CLI, benchmarks, tests)."""
    progress = Progress(apply=apply)
    while not progress.done:
        progress = step(run_page, policy, progress)
    return progress


def record(
    conn: Connection,
    progress: Progress,
    *,
    started_at: datetime,
    finished_at: datetime,
    source: str,
) -> None:
    """Keep the last prune's time and counts where ``conveyor status`` reads them."""
    store.save_state(
        conn,
        STATE,
        {
            "started_at": iso(started_at),
            "finished_at": iso(finished_at),
            "source": source,
            "counts": progress.totals(),
            "skipped_pages": progress.skipped_pages,
        },
        finished_at,
    )


def last_prune(conn: Connection) -> dict[str, Any] | None:
    """The last prune (``started_at``, ``finished_at``, ``source``, ``counts``), if any."""
    return store.load_state(conn, STATE)


def queue(conn: Connection, now: datetime, interval: float) -> bool:
    """Queue the workers' periodic ``prune`` task (due now) unless it is queued already."""
    if interval <= 0:
        return False
    return store.queue_prune(conn, now, now)


def reschedule(conn: Connection, now: datetime, interval: float) -> None:
    """Make the ``prune`` task due again ``interval`` seconds from ``now`` (0: drop it)."""
    if interval <= 0:  # automatic pruning was turned off since the task was queued
        store.drop_prune_task(conn)
        return
    store.reschedule_prune(conn, now + timedelta(seconds=interval))
