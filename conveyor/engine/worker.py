"""The worker: claim due tasks, run rounds, execute attempts, heartbeat leases.

Database work runs in a small thread pool (one thread on SQLite, where writers
serialise anyway and a busy-wait would only add latency); rounds are evaluated
in evaluator threads (user code never runs on the event loop); attempts of
external steps run concurrently on the event loop. A worker is woken by
``LISTEN/NOTIFY`` on PostgreSQL and by in-process signals (``conveyor dev``),
and otherwise polls.

**Outages.** Every loop waits out a database it cannot reach, with capped,
jittered back-off (``conveyor.engine.backoff``); a worker only exits when told
to. A round that could not be committed is tried again with the outcomes of
its external attempts, kept in memory (at most one batch per slot), so a call
that completed during the outage is recorded, not repeated; if its lease ran
out first, the commit's fence discards them and the step may run again.

**Fairness.** While another tenant has work due, a tenant holds at most
``Settings.tenant_slots`` of this worker's slots: the claim skips tenants at
their share first, and takes from them only when nobody else has work due.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, TypeVar

import httpx
from sqlalchemy import Connection, RowMapping

from conveyor import metrics
from conveyor.clock import Clock, SystemClock
from conveyor.domain.ids import new_id
from conveyor.engine import metering, own_loops, schedules
from conveyor.engine.attempts import run_attempt
from conveyor.engine.backoff import Backoff, Outage
from conveyor.engine.batch import (
    BatchState,
    Evaluated,
    Snapshot,
    commit_batch,
    evaluate_one,
    load_batch,
    report_ended,
    split_duplicates,
    task_fields,
)
from conveyor.engine.presence import Presence
from conveyor.engine.round_state import Limits, Plan
from conveyor.engine.rounds import Item
from conveyor.engine.wakeup import PgListener
from conveyor.net.http import EgressClient
from conveyor.settings import Settings
from conveyor.store import dry_runs as dry_run_store
from conveyor.store import prune as prune_store
from conveyor.store import tasks as task_store
from conveyor.store.db import Database, is_transient, is_unavailable

log = logging.getLogger("conveyor.worker")
# A round whose commit the database aborted (a deadlock) is tried again this often.
ROUND_CONFLICT_RETRIES = 3
T = TypeVar("T")
# Task kinds with their own loop rather than a run's round.
_OWN_LOOP = frozenset(
    {task_store.BULK, schedules.SCHEDULE, dry_run_store.DRY_RUN, prune_store.PRUNE}
)
# Threads that evaluate rounds (user code runs there, never on the event loop).
EVAL_THREADS = 4
# A batch whose evaluation has not finished after this long commits the rounds
# that are done, and another thread takes the rest: one slow run must not
# hold back the others of its batch.
STALL_SECONDS = 0.05


class Worker:
    """Executes runs. ``serve()`` until ``stop()``; tests use ``run_until_idle()``."""

    def __init__(self, db: Database, settings: Settings, clock: Clock | None = None) -> None:
        self.db = db
        self.settings = settings
        settings.apply_limits()
        self.clock: Clock = clock or SystemClock()
        self.limits = Limits(
            worker_id=settings.worker_id,
            lease=timedelta(seconds=settings.lease_seconds),
            max_output_bytes=settings.max_output_bytes,
        )
        self.limits.round_cpu = 2 * settings.expression_timeout
        self.limits.poison_after = settings.poison_after
        self.outage = Outage()
        self._executor: ThreadPoolExecutor | None = None
        self._evaluators: ThreadPoolExecutor | None = None
        self._leases: dict[str, str] = {}  # task id -> lease token, for tasks held
        self._tenants: dict[str, str] = {}  # task id -> tenant, for tasks held
        self._jobs: set[asyncio.Task[None]] = set()
        self._finished_jobs = 0
        self._drained = False  # the last claim took fewer tasks than it asked for
        self._claimed_at = 0.0  # time.monotonic() of the last claim
        self._calls: dict[str, set[asyncio.Task[Any]]] = {}  # run id -> jobs calling out
        self._wake = asyncio.Event()
        # Whether every finished task wakes the loop: in run_until_idle, while
        # serve waits for a free slot, and always on SQLite. On PostgreSQL a
        # round that ends wakes nobody: new work wakes the loop (NOTIFY, or this
        # process's commits, including a round's that makes its task due again),
        # and a wake-up per finished batch would cost an empty claim and a
        # next-due read each time. SQLite has no wake-up across processes: a
        # finished batch is the moment to look for what others queued meanwhile.
        self._wake_on_done = True
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._http: httpx.AsyncClient | None = None
        self.processed = 0
        self._dry_run_days = 0  # dry-run day tasks held (capped by worker_dry_run_days)
        self.presence = Presence(settings)  # the heartbeat row `conveyor status` reads

    # -- plumbing --------------------------------------------------------
    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` in one transaction on the DB thread pool."""

        def call() -> T:
            with self.db.transaction() as conn:
                return fn(conn, *args)

        assert self._executor is not None, "the worker is not started"
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, call)

    in_transaction = _db  # for conveyor.engine.own_loops

    async def evaluate(self, fn: Callable[[], T]) -> T:
        """Run ``fn()`` in an evaluator thread (work running user code between transactions)."""
        assert self._evaluators is not None, "the worker is not started"
        return await asyncio.get_running_loop().run_in_executor(self._evaluators, fn)

    @property
    def stopping(self) -> bool:
        """Whether ``stop()`` was called."""
        return self._stopping

    def _signal(self) -> None:
        """Wake the loop; safe to call from any thread."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake.set)

    def stop(self) -> None:
        """Ask the worker to finish: claim nothing more, finish or release in-flight work."""
        self._stopping = True
        self.limits.draining = True
        self._signal()

    # -- claiming --------------------------------------------------------
    def _skip_kinds(self) -> tuple[str, ...]:
        """Task kinds not to claim now: dry-run days once this worker holds its share."""
        if self._dry_run_days >= self.settings.worker_dry_run_days:
            return (dry_run_store.DRY_RUN,)
        return ()

    def _at_share(self) -> list[str]:
        """Tenants holding their share of this worker's slots (see the module docstring)."""
        held = collections.Counter(self._tenants.values())
        return sorted(t for t, n in held.items() if n >= self.settings.tenant_slots)

    def _claim(self, conn: Connection, limit: int) -> tuple[str, list[RowMapping], Snapshot | None]:
        """Claim due tasks; the runs' rounds are read in the same transaction (no user code).

        Tenants at their share are skipped, unless nobody else has work due
        (work-conserving). Reading here saves the first round of a claimed
        batch a transaction of its own.
        """
        now = self.clock.now()
        token = new_id()
        room = self.settings.worker_dry_run_days - self._dry_run_days
        claim = functools.partial(
            task_store.claim,
            conn,
            owner=self.settings.worker_id,
            token=token,
            now=now,
            lease_until=now + self.limits.lease,
            skip_kinds=self._skip_kinds(),
        )
        at_share = self._at_share()
        rows = list(claim(limit=limit, skip_tenants=at_share))
        if at_share and len(rows) < limit:  # nobody else has more due: the rest may go to them
            rows += claim(limit=limit - len(rows))
        # A batch may hold more dry-run days than this worker should simulate at
        # once: the surplus goes back in the same transaction, for other workers.
        days = [r for r in rows if r["kind"] == dry_run_store.DRY_RUN]
        if len(days) > room:
            surplus = {str(r["id"]) for r in days[max(room, 0) :]}
            task_store.unclaim(conn, list(surplus), token)
            rows = [r for r in rows if str(r["id"]) not in surplus]
        rounds = [Item(row, token) for row in rows if row["kind"] not in _OWN_LOOP]
        snapshot = load_batch(conn, split_duplicates(rounds)[0], now) if rounds else None
        return token, rows, snapshot

    async def _claim_and_start(self) -> int:
        free = self.settings.worker_concurrency - len(self._leases)
        if free <= 0:
            return 0
        asked = min(free, self.settings.worker_batch_size)
        self._claimed_at = time.monotonic()
        token, rows, snapshot = await self._db(self._claim, asked)
        # Fewer than asked: nothing more is due now, so the serve loop waits
        # for a wake-up instead of claiming again only to find nothing.
        self._drained = len(rows) < asked
        for row in rows:
            self._leases[row["id"]] = token
            if row["tenant_id"] is not None:  # the `prune` task is the operator's, no tenant's
                self._tenants[row["id"]] = str(row["tenant_id"])
        if rows:
            metrics.SLOTS_BUSY.set(len(self._leases))
        batch = [Item(row, token) for row in rows if row["kind"] not in _OWN_LOOP]
        if batch:
            self._spawn(self._rounds(batch, snapshot))
        for row in rows:
            if row["kind"] == task_store.BULK:
                self._spawn(own_loops.bulk(self, row, token))
            elif row["kind"] == schedules.SCHEDULE:
                self._spawn(own_loops.schedule(self, row, token))
            elif row["kind"] == dry_run_store.DRY_RUN:
                self._dry_run_days += 1
                self._spawn(own_loops.dry_run_day(self, row, token))
            elif row["kind"] == prune_store.PRUNE:
                self._spawn(own_loops.prune(self, row, token))
        return len(rows)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        job = asyncio.create_task(coro)
        self._jobs.add(job)
        job.add_done_callback(self._job_finished)

    def _job_finished(self, job: asyncio.Task[None]) -> None:
        self._jobs.discard(job)
        self._finished_jobs += 1

    def done(self, task_id: str, wake: bool = True) -> None:
        """This worker no longer holds the task; ``wake``: claim again (it may be due again)."""
        self._tenants.pop(task_id, None)
        if self._leases.pop(task_id, None) is not None:
            self.processed += 1
            metrics.SLOTS_BUSY.set(len(self._leases))
        if wake or self._wake_on_done:
            self._wake.set()

    _done = done

    def dry_run_day_ended(self) -> None:
        """A dry-run day ended (done or not): room for another."""
        self._dry_run_days -= 1
        self._wake.set()

    # -- processing ------------------------------------------------------
    async def _rounds(self, items: list[Item], snapshot: Snapshot | None = None) -> None:
        """Advance a batch of runs by one round each, then follow up on each plan.

        While the database cannot be reached, the same round (with the
        outcomes of its external attempts) is tried again after a back-off. A
        commit the database aborted (a deadlock with another writer of the same
        rows, on PostgreSQL) stored nothing: the round is tried again at once,
        a few times, before it counts as failed.
        """
        backoff: Backoff | None = None
        aborted = 0
        while True:
            try:
                outcomes = await self._advance(items, snapshot)
                break
            except asyncio.CancelledError:
                await self._release(items)
                raise
            except Exception as exc:
                if is_transient(exc) and aborted < ROUND_CONFLICT_RETRIES:
                    aborted += 1
                    metrics.DATABASE_RETRIES.labels("round").inc()
                    log.info("round aborted by the database (%s); trying it again", exc)
                    snapshot = None
                    continue
                if not is_unavailable(exc):
                    await self._round_failed(items, exc)
                    return
                self.outage.failed("round", exc)
                backoff = backoff or Backoff()
                snapshot = None  # read it again once the database is back
                await asyncio.sleep(backoff.next())
        self.outage.recovered()
        if backoff is not None:  # leases lost meanwhile were lost to the outage
            lost = [ev.item.task["id"] for ev, plan in outcomes if plan is None]
            with contextlib.suppress(Exception):
                await self._db(task_store.forgive, lost)
        await self._follow(outcomes)

    async def _round_failed(self, items: list[Item], exc: Exception) -> None:
        """A round raised (a bug, not an outage): retry its runs one by one, later."""
        if len(items) > 1:
            # One bad run must not hold up the others: retry them one by one.
            for it in items:
                self._spawn(self._rounds([it]))
            return
        log.error(
            "run %s failed to advance",
            items[0].task["run_id"],
            exc_info=exc,
            extra={"data": task_fields(items[0])},
        )
        await self._retry_later(items[0])

    async def _follow(self, outcomes: list[tuple[Evaluated, Plan | None]]) -> None:
        """Act on each round's plan."""
        for ev, plan in outcomes:
            it = ev.item
            if ev.error is not None:
                log.error(
                    "run %s failed to advance",
                    it.task["run_id"],
                    exc_info=(type(ev.error), ev.error, ev.error.__traceback__),
                    extra={"data": task_fields(it)},
                )
                await self._retry_later(it)
            elif plan is None:
                log.warning(
                    "lease lost on task %s (run %s)",
                    it.task["id"],
                    it.task["run_id"],
                    extra={"data": task_fields(it)},
                )
                self._done(it.task["id"])
            elif plan.again:
                self._spawn(self._rounds([Item(it.task, it.token)]))
            elif plan.done:  # a due time it set wakes the loop by itself (rounds.flush)
                self._done(it.task["id"], wake=False)
            else:
                self._spawn(self._external(it, plan))

    async def _advance(
        self, items: list[Item], snapshot: Snapshot | None = None
    ) -> list[tuple[Evaluated, Plan | None]]:
        """Read, evaluate and commit the rounds of a batch (``conveyor.engine.batch``).

        One evaluator thread reads the batch (unless the claim read it:
        ``snapshot``), evaluates each run (no transaction open) and commits
        them in one transaction (on SQLite, which has one writer, the
        database thread commits instead). If it is still
        evaluating after ``STALL_SECONDS`` (a run spends its budget), the rounds
        done so far are committed at once and another thread takes the runs
        not yet started, so one slow run does not hold back the rest.
        """
        assert self._evaluators is not None, "the worker is not started"
        unique, duplicates = split_duplicates(items)
        state = BatchState(unique, duplicates)
        state.snapshot = snapshot
        loop = asyncio.get_running_loop()
        results: list[tuple[Evaluated, Plan | None]] = []
        jobs = [loop.run_in_executor(self._evaluators, self._evaluate, state)]
        while True:
            _, running = await asyncio.wait(jobs, timeout=STALL_SECONDS)
            if not running:
                break
            early = state.take_done()
            if early:
                results += report_ended(await self._db(self._commit_now, early))
            if state.snapshot is not None and state.pending and len(jobs) < EVAL_THREADS:
                jobs.append(loop.run_in_executor(self._evaluators, self._evaluate, state))
        for job in jobs:
            results += job.result()
        rest = state.take_done()
        if rest:
            results += report_ended(await self._db(self._commit_now, rest))
        metering.committed(results)  # every commit of the batch is done
        return results

    def _evaluate(self, state: BatchState) -> list[tuple[Evaluated, Plan | None]]:
        """In an evaluator thread: (read,) evaluate what is left, commit what this thread did.

        Only the first thread of a batch reads, and only if the claim did not
        (helpers start once the snapshot exists).
        """
        if state.snapshot is None:
            with self.db.read() as conn:
                state.snapshot = load_batch(conn, list(state.pending), self.clock.now())
        while (it := state.next()) is not None:
            state.finished(evaluate_one(state.snapshot, it, self.clock.now, self.limits))
        if self.db.is_sqlite:
            return []  # SQLite has one writer: the database thread commits, not this one
        done = state.take_done()
        if not done:
            return []
        with self.db.transaction() as conn:
            results = self._commit_now(conn, done)
        return report_ended(results)

    def _commit_now(
        self, conn: Connection, done: list[Evaluated]
    ) -> list[tuple[Evaluated, Plan | None]]:
        plans = commit_batch(conn, done, self.clock.now(), self.limits)
        return [(ev, plans.get(ev.item.task["id"])) for ev in done]

    async def _external(self, it: Item, plan: Plan) -> None:
        run_id = it.task["run_id"]
        job = asyncio.current_task()
        assert job is not None
        self._calls.setdefault(run_id, set()).add(job)
        try:
            outcomes = await asyncio.gather(
                *(
                    run_attempt(
                        p, http=self._http, db=self.db, settings=self.settings, now=self.clock.now
                    )
                    for p in plan.execute
                )
            )
        except asyncio.CancelledError:
            await self._release([it])
            raise
        finally:
            self._calls.get(run_id, set()).discard(job)
            if not self._calls.get(run_id):
                self._calls.pop(run_id, None)
        await self._rounds([Item(it.task, it.token, list(outcomes))])

    def _on_signal(self, topic: str, payload: str) -> None:
        """A run was cancelled: abort its in-flight calls (any thread may call this)."""
        if topic == "cancel" and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._abort_run, payload)

    def _abort_run(self, run_id: str) -> None:
        for job in list(self._calls.get(run_id, ())):
            job.cancel()

    async def release(self, items: list[Item]) -> None:
        """Give leases back so another worker can take the tasks at once."""
        for it in items:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._db(task_store.release, it.task["id"], it.token))
            self._done(it.task["id"])

    _release = release

    async def retry_later(self, it: Item) -> None:
        """Back off a task whose round raised: a bug must not spin a worker hot."""
        claims = int(it.task["claims"])
        due = self.clock.now() + timedelta(seconds=min(2.0**claims, 300.0))
        with contextlib.suppress(Exception):
            await self._db(task_store.retry_later, it.task["id"], it.token, due)
        self._done(it.task["id"])

    _retry_later = retry_later

    # -- heartbeats ------------------------------------------------------
    def _heartbeat(self, conn: Connection, leases: list[tuple[str, str]]) -> int:
        self.presence.beat(conn, self.clock.now(), len(leases))
        if not leases:
            return 0
        return task_store.heartbeat(conn, leases, self.clock.now() + self.limits.lease)

    async def _heartbeat_loop(self) -> None:
        interval = self.presence.interval  # at most a third of the lease
        while True:
            await asyncio.sleep(interval)
            # The worker's own row is beaten even when it holds no lease.
            leases = list(self._leases.items())
            try:
                await self._db(self._heartbeat, leases)
            except Exception as exc:
                if is_unavailable(exc):
                    self.outage.failed("heartbeat", exc)
                else:
                    log.exception("heartbeat failed")

    # -- loops -----------------------------------------------------------
    async def _start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()  # bound to this loop; tests run several loops
        self._executor = ThreadPoolExecutor(
            max_workers=1 if self.db.is_sqlite else 4, thread_name_prefix="conveyor-db"
        )
        self._evaluators = ThreadPoolExecutor(
            max_workers=EVAL_THREADS, thread_name_prefix="conveyor-eval"
        )
        self._http = EgressClient.from_settings(self.settings)
        self.db.add_wakeup_listener(self._signal)
        self.db.add_signal_listener(self._on_signal)
        metrics.SLOTS_TOTAL.set(self.settings.worker_concurrency)

    async def _close(self) -> None:
        metrics.SLOTS_TOTAL.set(0)
        metrics.SLOTS_BUSY.set(0)
        self.db.remove_wakeup_listener(self._signal)
        self.db.remove_signal_listener(self._on_signal)
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        if self._evaluators is not None:
            self._evaluators.shutdown(wait=True)
            self._evaluators = None

    async def _idle_wait(self) -> None:
        if not self._wake.is_set():  # else woken while claiming
            timeout = self.settings.poll_interval
            nxt = await self._db(task_store.next_due, self.clock.now(), self._skip_kinds())
            if nxt is not None:
                timeout = max(0.0, min(timeout, (nxt - self.clock.now()).total_seconds()))
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                return
        # More may be committed in a moment: the next claim comes no sooner than
        # the linger after the last one, so that under a steady trickle a batch
        # holds what arrived over that long at least (and new work after a
        # quiet spell is claimed at once).
        delay = self._claimed_at + self.settings.worker_claim_linger - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _claim_or_wait(self, backoff: Backoff) -> Backoff:
        """One turn of the serve loop: claim, else wait; an unreachable database is waited out.

        Returns the back-off to use next (a fresh one after a turn that worked).
        """
        try:
            claimed = await self._claim_and_start()
            if (claimed == 0 or self._drained) and not self._stopping:
                if len(self._leases) >= self.settings.worker_concurrency:
                    self._wake_on_done = True  # a finished task frees the slot we wait for
                    try:
                        await self._wake.wait()
                    finally:
                        self._wake_on_done = self.db.is_sqlite
                else:
                    await self._idle_wait()
        except Exception as exc:
            if is_unavailable(exc):
                self.outage.failed("claim", exc)
            else:
                log.exception("claiming failed; retrying")
            await asyncio.sleep(max(backoff.next(), min(self.settings.poll_interval, 1.0)))
            return backoff
        self.outage.recovered()
        return Backoff()

    async def serve(self, shutdown_grace: float = 30.0) -> None:
        """Claim and run tasks until ``stop()``; then drain for up to ``shutdown_grace`` s."""
        await self._start()
        listener = (
            PgListener(self.db, self._signal, self._on_signal) if not self.db.is_sqlite else None
        )
        side = [asyncio.create_task(self._heartbeat_loop())]
        if listener is not None:
            side.append(asyncio.create_task(listener.run()))
        with contextlib.suppress(Exception):  # the database is down: the first beat writes it
            await self._db(self.presence.register, self.clock.now())
        await own_loops.queue_prune(self)
        log.info("worker %s started", self.settings.worker_id)
        self._wake_on_done = self.db.is_sqlite
        try:
            backoff = Backoff()
            while not self._stopping:
                self._wake.clear()
                backoff = await self._claim_or_wait(backoff)
            await self._drain(shutdown_grace)
        finally:
            for t in side:
                t.cancel()
            await asyncio.gather(*side, return_exceptions=True)
            with contextlib.suppress(Exception):  # unreachable: the row goes dead, then pruned
                await self._db(self.presence.leave)
            await self._close()
            log.info("worker %s stopped", self.settings.worker_id)

    async def _drain(self, grace: float) -> None:
        deadline = asyncio.get_running_loop().time() + grace
        while self._jobs:  # jobs spawn follow-ups, so wait until none is left
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            await asyncio.wait(list(self._jobs), timeout=remaining)
        for job in list(self._jobs):  # cancelled jobs release their leases
            job.cancel()
        await asyncio.gather(*list(self._jobs), return_exceptions=True)

    async def run_until_idle(self, max_tasks: int = 100_000) -> int:
        """Process due tasks until none is due and nothing is in flight (tests, scripts).

        Time does not pass by itself here when the clock is a ``FakeClock``:
        advance it and call again to fire timers.
        """
        await self._start()
        start = self.processed
        try:
            while self.processed - start < max_tasks:
                # Clear before looking, so a job finishing after the look still wakes us.
                self._wake.clear()
                finished = self._finished_jobs
                claimed = await self._claim_and_start()
                # A job that committed follow-up work while we were claiming must
                # not end the loop: look again whenever one finished meanwhile.
                if claimed == 0 and not self._jobs and finished == self._finished_jobs:
                    break
                if claimed == 0 and self._jobs:
                    await self._wake.wait()
        finally:
            while self._jobs:
                await asyncio.gather(*list(self._jobs), return_exceptions=True)
            await self._close()
        return self.processed - start
