"""The worker's tasks that are not a run's round: bulk operations, schedules, dry-run days.

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
from datetime import timedelta
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy import RowMapping

from conveyor import logs
from conveyor.domain.errors import LeaseLost
from conveyor.dryrun.days import process_day
from conveyor.engine import schedules
from conveyor.engine.backoff import Backoff
from conveyor.engine.bulk import process_page
from conveyor.engine.rounds import Item
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
    except asyncio.CancelledError:
        await worker.release([Item(task, token)])
        raise
    except Exception:
        log.exception("dry-run task %s failed", task["id"])
        await worker.retry_later(Item(task, token))
        return
    finally:
        worker.dry_run_day_ended()
    worker.done(task["id"])
