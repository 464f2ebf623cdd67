"""The worker's tasks that are not a run's round: bulk operations, schedules, dry-run days,
and the periodic ``prune``.

Each loops over pages (a bulk operation's runs, a schedule's audience, a dry-run
day's slices) until done, stopping or the lease is lost. A page whose database
work fails because the database cannot be reached is simply tried again after
a back-off (``conveyor.engine.backoff``); the task stays leased meanwhile.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy import Connection, RowMapping

from conveyor import logs, metrics
from conveyor.domain.errors import LeaseLost
from conveyor.dryrun.days import process_day
from conveyor.engine import schedules
from conveyor.engine.backoff import Backoff
from conveyor.engine.bulk import process_page
from conveyor.engine.rounds import Item
from conveyor.services import retention
from conveyor.store import tasks as task_store
from conveyor.store.db import is_unavailable

if TYPE_CHECKING:
    from conveyor.engine.worker import Worker

log = logging.getLogger("conveyor.worker")
T = TypeVar("T")


async def patiently(worker: Worker, what: str, step: Callable[[], Awaitable[T]]) -> T:
    """``await step()``, tried again after a back-off for as long as the database is unreachable."""
    backoff = Backoff()
    while True:
        try:
            result = await step()
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            worker.outage.failed(what, exc)
            await asyncio.sleep(backoff.next())
            continue
        worker.outage.recovered()
        return result


async def bulk(worker: Worker, task: RowMapping, token: str) -> None:
    """Work through a bulk operation a page per transaction, until done or stopping."""
    # Each of these loops is a task of its own: the binding ends with it. (A
    # claimed task's row names its tenant and bulk operation, not its schedule
    # or dry run: those lines name the task.)
    logs.bind(tenant_id=str(task["tenant_id"]), operation_id=str(task["operation_id"]))
    finished = False
    try:
        while not finished and not worker.stopping:
            finished = await patiently(
                worker,
                "bulk operation",
                lambda: worker.in_transaction(
                    process_page, task, token, worker.clock.now, worker.limits.lease
                ),
            )
    except LeaseLost:
        log.warning("lease lost on bulk operation %s", task["operation_id"])
        finished = True
    except asyncio.CancelledError:
        await worker.release([Item(task, token)])
        raise
    except Exception:
        log.exception("bulk operation %s failed", task["operation_id"])
        await worker.retry_later(Item(task, token))
        return
    if finished:
        worker.done(task["id"])
    else:
        await worker.release([Item(task, token)])


async def schedule(worker: Worker, task: RowMapping, token: str) -> None:
    """Fire an automation's schedule, a page of its audience at a time.

    Each page runs in an evaluator thread: the audience is user code, run
    between the page's read and its write (``schedules.fire_schedule``).
    """
    settings = worker.settings
    fields = {"tenant_id": str(task["tenant_id"]), "task_id": str(task["id"])}
    logs.bind(**fields)
    policy = schedules.Policy(
        settings.schedule_missed, timedelta(seconds=settings.schedule_grace_seconds)
    )
    firing: schedules.Firing | None = None
    try:
        while True:
            fire = functools.partial(
                schedules.fire_schedule,
                worker.db,
                dict(task),
                token,
                worker.clock.now,
                worker.limits.lease,
                policy,
                firing,
            )
            bound = logs.in_context(fire, **fields)  # its lines, in an evaluator thread
            firing = await patiently(worker, "schedule", functools.partial(worker.evaluate, bound))
            if firing is None or worker.stopping:
                break
    except LeaseLost:
        log.warning("lease lost on schedule task %s", task["id"])
        firing = None
    except asyncio.CancelledError:
        await worker.release([Item(task, token)])
        raise
    except Exception:
        log.exception("schedule task %s failed", task["id"])
        await worker.retry_later(Item(task, token))
        return
    if firing is None:
        worker.done(task["id"])
    else:  # stopping mid-firing: another worker finishes it (run keys stop repeats)
        await worker.release([Item(task, token)])


async def dry_run_day(worker: Worker, task: RowMapping, token: str) -> None:
    """Simulate one day of a dry run (``conveyor.dryrun.days``).

    The simulation is CPU-bound Python: it runs in an evaluator thread, not on
    the database thread (where it would hold up every other round and its own
    heartbeats), and yields between slices.
    """
    fields = {"tenant_id": str(task["tenant_id"]), "task_id": str(task["id"])}
    logs.bind(**fields)
    try:
        day = logs.in_context(
            functools.partial(
                process_day, worker.db, task, token, worker.clock.now, worker.limits.lease
            ),
            **fields,
        )
        # process_day runs its own transactions (a day is written in slices); a
        # day cut by an outage starts over (its slices are written idempotently).
        await patiently(worker, "dry-run day", lambda: worker.evaluate(day))
    except LeaseLost:
        log.warning("lease lost on dry-run task %s", task["id"])
        metrics.LEASE_LOSSES.inc()
        metrics.DRY_RUN_DAYS.labels("lease_lost").inc()
    except asyncio.CancelledError:
        await worker.release([Item(task, token)])
        raise
    except Exception:
        log.exception("dry-run task %s failed", task["id"])
        metrics.DRY_RUN_DAYS.labels("failed").inc()
        await worker.retry_later(Item(task, token))
        return
    finally:
        worker.dry_run_day_ended()
    metrics.DRY_RUN_DAYS.labels("done").inc()
    worker.done(task["id"])


async def queue_prune(worker: Worker) -> None:
    """Queue the periodic ``prune`` task if no worker has yet (``serve`` does, at start)."""
    interval = worker.settings.retention_prune_interval
    try:
        await worker.in_transaction(retention.queue, worker.clock.now(), interval)
    except Exception:  # the next start queues it; serving must not wait for it
        log.warning("could not queue the prune task", exc_info=True)


async def prune(worker: Worker, task: RowMapping, token: str) -> None:
    """Prune what is past its retention, a page per transaction, then come back later.

    The task is the only one of its kind (a fixed id), so its lease makes
    prunes one at a time across every worker. Each page proves the lease
    first; a prune cut short (stopping, lost lease) is simply done again in
    full by the next one. The last prune's time and counts are recorded with
    the reschedule, in the same transaction.
    """
    settings = worker.settings
    started = worker.clock.now()
    policy = retention.Policy.from_settings(settings, started)
    progress = retention.Progress()
    task_id = str(task["id"])

    async def run_page(page: retention.PageFn) -> retention.Progress:
        def call(conn: Connection) -> retention.Progress:
            task_store.fence(conn, task_id, token, worker.clock.now() + worker.limits.lease)
            return page(conn)

        return await patiently(worker, "prune", lambda: worker.in_transaction(call))

    try:
        while not progress.done and not worker.stopping:
            progress = await retention.astep(run_page, policy, progress)
        if progress.done:
            await worker.in_transaction(_finish, task_id, token, progress, started, worker)
    except LeaseLost:
        log.warning("lease lost on the prune task")
    except asyncio.CancelledError:
        await worker.release([Item(task, token)])
        raise
    except Exception:
        log.exception("prune failed")
        await worker.retry_later(Item(task, token))
        return
    if progress.done:
        log.info("pruned: %s", {k: v for k, v in progress.totals().items() if v})
        worker.done(task_id)
    else:
        await worker.release([Item(task, token)])


def _finish(
    conn: Connection,
    task_id: str,
    token: str,
    progress: retention.Progress,
    started: datetime,
    worker: Worker,
) -> None:
    """Record the prune and make the task due again after the interval (fenced)."""
    now = worker.clock.now()
    task_store.fence(conn, task_id, token, now + worker.limits.lease)
    retention.record(conn, progress, started_at=started, finished_at=now, source="worker")
    retention.reschedule(conn, now, worker.settings.retention_prune_interval)
