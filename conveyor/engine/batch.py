"""A batch of rounds in three phases: read, evaluate, commit.

1. ``load_batch`` (a read transaction): the runs of the claimed tasks, their
   steps, contacts and definitions, their waits, and the stored events a wait
   woken to look again may take.
2. ``evaluate_batch`` (no transaction; a worker thread): one round per run
   (``conveyor.engine.rounds``); user code runs here, under its budgets.
3. ``commit_batch`` (one write transaction, a fixed number of statements for
   the batch): fenced on each task's lease and on each run being as it was
   read (its ``version``); then the waits' compare-and-sets,
   the concurrency slots, the steps' deferred database work, the ends of runs,
   and one write per table. A run that changed meanwhile (a cancel, an event
   delivered, another task's round), or whose wait decision lost, is left out
   and advanced again at once from what is now stored. No user code runs in
   the commit.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from sqlalchemy import Connection, RowMapping

from conveyor import logs
from conveyor.domain.status import RunStatus, StepStatus
from conveyor.engine import metering
from conveyor.engine.children import wake_parent
from conveyor.engine.failures import fire_failure_triggers
from conveyor.engine.round_state import Limits, Plan, Round
from conveyor.engine.rounds import Item, advance, log_end, settle_deferred, take_history
from conveyor.store import definitions, slots
from conveyor.store import rounds as round_store
from conveyor.store import runs as run_store
from conveyor.store import tasks as task_store
from conveyor.store import waits as wait_store
from conveyor.store.db import Database
from conveyor.store.definitions import LoadedDefinition

log = logging.getLogger("conveyor.worker")


@dataclass
class Snapshot:
    """What a batch read, in one read transaction."""

    runs: dict[str, RowMapping]
    steps: dict[str, list[RowMapping]]
    contacts: dict[str, RowMapping]
    definitions: dict[str, LoadedDefinition]
    waits: dict[tuple[str, str], RowMapping]
    windows: dict[tuple[str, str], Sequence[RowMapping]]


def load_batch(conn: Connection, items: Sequence[Item], now: datetime) -> Snapshot:
    """Read everything the rounds of ``items`` need (no locks are taken)."""
    run_ids = list(dict.fromkeys(str(it.task["run_id"]) for it in items))
    runs = round_store.load_runs(conn, run_ids, lock=False)
    steps = round_store.load_steps(conn, run_ids)
    contacts = round_store.load_contacts(
        conn, [r["contact_id"] for r in runs.values() if r["contact_id"]]
    )
    loaded = {
        r["version_id"]: definitions.load(conn, r["version_id"])
        for r in runs.values()
        if not RunStatus(r["status"]).terminal
    }
    waiting = [
        rid
        for rid in runs
        if any(s["step_type"] == "wait_for_event" and s["attempts"] for s in steps[rid])
    ]
    waits = wait_store.waits_of_runs(conn, waiting)
    return Snapshot(runs, steps, contacts, loaded, waits, _windows(conn, steps, waits, now))


def _windows(
    conn: Connection,
    steps: dict[str, list[RowMapping]],
    waits: dict[tuple[str, str], RowMapping],
    now: datetime,
) -> dict[tuple[str, str], Sequence[RowMapping]]:
    """The stored events of each wait woken to look again (open, its time not come)."""
    out: dict[tuple[str, str], Sequence[RowMapping]] = {}
    for (run_id, key), wait in waits.items():
        if wait["status"] != wait_store.WAITING:
            continue
        if wait["timeout_at"] is not None and wait["timeout_at"] <= now:
            continue
        step = next((s for s in steps.get(run_id, ()) if s["step_key"] == key), None)
        due = step is not None and step["wake_at"] is not None and step["wake_at"] <= now
        if step is None or step["status"] != StepStatus.WAITING or not due:
            continue
        out[(run_id, key)] = wait_store.events_in_window(
            conn,
            wait["tenant_id"],
            wait["event_name"],
            contact_id=wait["contact_id"],
            identity_value=wait["identity_value"],
            since=wait["lookback_from"],
            until=now,
        )
    return out


@dataclass
class Evaluated:
    """One item's round, ready to commit."""

    item: Item
    plan: Plan
    rnd: Round | None = None  # None: nothing to write but the task's own fate
    read: RowMapping | None = None  # the run as read, for the fence
    error: BaseException | None = None  # the round raised: retried later, alone
    duplicate: bool = False  # another task of the same run is in the batch: run this one alone


def split_duplicates(items: Sequence[Item]) -> tuple[list[Item], list[Evaluated]]:
    """One item per run; the others get a plan to run again alone, after this batch."""
    seen: set[str] = set()
    unique, again = [], []
    for it in items:
        run_id = str(it.task["run_id"])
        if run_id in seen:
            again.append(Evaluated(it, Plan(again=True), duplicate=True))
        else:
            seen.add(run_id)
            unique.append(it)
    return unique, again


def evaluate_one(
    snapshot: Snapshot, it: Item, clock: Callable[[], datetime], limits: Limits
) -> Evaluated:
    """One item's round (no transaction open; user code runs under its budgets)."""
    run_id = str(it.task["run_id"])
    run = snapshot.runs.get(run_id)
    if run is None or RunStatus(run["status"]).terminal:
        return Evaluated(it, Plan(done=True), read=run)
    # Each line the round logs names its run (evaluator threads keep their
    # own context, so the binding is undone before the next run's round).
    token = logs.bind(tenant_id=str(run["tenant_id"]), run_id=run_id)
    try:
        loaded = snapshot.definitions[run["version_id"]]
        rnd = Round(run, loaded, snapshot.steps[run_id], clock, limits, it.task["id"])
        rnd.contact = snapshot.contacts.get(run["contact_id"]) if run["contact_id"] else None
        rnd.waits = {k: w for (r, k), w in snapshot.waits.items() if r == run_id}
        rnd.windows = {k: e for (r, k), e in snapshot.windows.items() if r == run_id}
        plan = advance(rnd, it, clock())
    except Exception as exc:  # a bug must not take the batch down with it
        return Evaluated(it, Plan(done=True), read=run, error=exc)
    finally:
        logs.unbind(token)
    return Evaluated(it, plan, rnd, run)


R = TypeVar("R", bound=Sequence[tuple[Evaluated, "Plan | None"]])


def report_ended(results: R) -> R:
    """After a commit: log each run its rounds ended other than completed; return ``results``."""
    for ev, _ in results:
        rnd = ev.rnd
        if rnd is not None and rnd.written and rnd.finish is not None:
            log_end(rnd.run)
    return results


def task_fields(it: Item) -> dict[str, str]:
    """The log fields naming a task's tenant and run."""
    return {"tenant_id": str(it.task["tenant_id"]), "run_id": str(it.task["run_id"])}


def commit_batch(
    conn: Connection, done: Sequence[Evaluated], now: datetime, limits: Limits
) -> dict[str, Plan | None]:
    """Write the rounds that may still be written; return each task's plan.

    A plan of None means the lease was lost (nothing of that run was written).
    """
    plans: dict[str, Plan | None] = {}
    held: set[str] = set()
    by_token: dict[str, list[str]] = {}
    for ev in done:
        by_token.setdefault(ev.item.token, []).append(ev.item.task["id"])
    for token, ids in by_token.items():
        held |= round_store.fence_many(conn, token, ids, now + limits.lease)
    live = [ev for ev in done if ev.item.task["id"] in held]
    for ev in done:
        if ev.item.task["id"] not in held:
            plans[ev.item.task["id"]] = None
    writes = round_store.Writes()
    survivors = _unchanged(conn, live, plans, writes)
    survivors = _decide_waits(conn, survivors, plans, now)
    # The database work of each round; a run of this batch that another's work
    # changed (a parent woken by its child's end) is not written: it goes again.
    touched: set[str] = set()
    written = []
    for ev in survivors:
        rnd = ev.rnd
        assert rnd is not None
        if rnd.slot_wanted and not slots.acquire(conn, rnd.run, _limit(rnd), now):
            _queue(conn, rnd, now)
            plans[ev.item.task["id"]] = Plan(done=True)
            continue
        if _run_deferred(conn, rnd):
            rnd.w.reschedules = [r for r in rnd.w.reschedules if r[0] != rnd.task_id]
            rnd.w.delete_tasks = [t for t in rnd.w.delete_tasks if t != rnd.task_id]
            ev.plan = Plan(again=True)
        if rnd.finish is not None:
            touched |= end_run(conn, rnd, now)
        written.append(ev)
    for ev in written:
        rnd = ev.rnd
        assert rnd is not None
        if rnd.run["id"] in touched:
            plans[ev.item.task["id"]] = Plan(again=True)
            continue
        rnd.flush()
        writes.extend(rnd.w)
        plans[ev.item.task["id"]] = ev.plan
    round_store.flush(conn, writes)
    fire_failure_triggers(conn, writes.failures, now)
    return plans


def _unchanged(
    conn: Connection,
    live: list[Evaluated],
    plans: dict[str, Plan | None],
    writes: round_store.Writes,
) -> list[Evaluated]:
    """The rounds whose runs are as they were read; the others get their plans here."""
    current = round_store.run_versions(conn, [str(ev.item.task["run_id"]) for ev in live])
    survivors: list[Evaluated] = []
    for ev in live:
        task_id = ev.item.task["id"]
        if ev.error is not None:
            continue  # the worker retries it later, alone
        if ev.duplicate:
            plans[task_id] = ev.plan
        elif ev.rnd is None:  # the run ended or is gone: its task goes
            writes.delete_tasks.append(task_id)
            plans[task_id] = ev.plan
        elif _changed(ev.read, current.get(str(ev.item.task["run_id"]))):
            plans[task_id] = Plan(again=True)
        else:
            survivors.append(ev)
    return survivors


def _changed(read: RowMapping | None, now: int | None) -> bool:
    """Whether the run is not as the round read it (another writer came between)."""
    if read is None or now is None:
        return True
    return int(read["version"]) != now


def _decide_waits(
    conn: Connection, evaluated: list[Evaluated], plans: dict[str, Plan | None], now: datetime
) -> list[Evaluated]:
    """The waits' compare-and-sets of the whole batch; runs whose decision lost go again."""
    timeouts: dict[str, str] = {}
    receives: dict[str, str] = {}
    for ev in evaluated:
        assert ev.rnd is not None
        for _, decision in ev.rnd.decisions:
            if decision.outcome == "timed_out":
                timeouts[decision.wait_id] = ev.item.task["id"]
            else:
                assert decision.event_id is not None
                receives[decision.wait_id] = decision.event_id
    if not timeouts and not receives:
        return evaluated
    won = wait_store.time_out_ids(conn, timeouts, now) | wait_store.receive_many(
        conn, receives, now
    )
    kept = []
    for ev in evaluated:
        assert ev.rnd is not None
        if all(d.wait_id in won for _, d in ev.rnd.decisions):
            kept.append(ev)
        else:  # decided otherwise meanwhile: redo the round from what won
            plans[ev.item.task["id"]] = Plan(again=True)
    return kept


def _limit(rnd: Round) -> int:
    conc = rnd.loaded.definition.concurrency
    assert conc is not None
    return conc.limit


def _queue(conn: Connection, rnd: Round, now: datetime) -> None:
    """No slot is free: the run stays pending (the round is dropped) until one is handed to it.

    Its task goes; the run that frees a slot hands it over and queues it.
    """
    run = rnd.run
    run_store.append_events(
        conn,
        run_id=run["id"],
        tenant_id=run["tenant_id"],
        events=[
            {
                "type": "run.queued",
                "created_at": now,
                "data": {
                    "concurrency_key": run["concurrency_key"],
                    "limit": _limit(rnd),
                },
            }
        ],
        run_values={"concurrency_key": run["concurrency_key"], "updated_at": now},
    )
    task_store.delete_task(conn, rnd.task_id)


def _run_deferred(conn: Connection, rnd: Round) -> bool:
    """The steps' database work (waits to write, children to start); True: run again now."""
    again = False
    for key, attempt, ctx in rnd.deferred:
        for work in ctx.deferred:
            outcome = work.apply(conn)
            take_history(rnd, key, ctx.extra)
            again = settle_deferred(rnd, key, attempt, outcome) or again
    return again


def end_run(conn: Connection, rnd: Round, now: datetime) -> set[str]:
    """What ending a run needs from the database: its waits, its parent, its slot.

    Returns the ids of the other runs this changed (the parent it woke).
    """
    finish = rnd.finish
    assert finish is not None
    if finish.close_waits:  # open waits end `cancelled`
        for key in wait_store.cancel_open(conn, rnd.run["id"]):
            rnd.event("wait.cancelled", key)
    touched: set[str] = set()
    if finish.wake_parent:  # a parent's trigger_automation step may wait for it
        parent = wake_parent(conn, rnd.run, now)
        if parent is not None:
            touched.add(parent)
    if finish.release_slot and (rnd.run.get("slot_held") or slots.holds_slot(conn, rnd.run["id"])):
        heir = slots.release(conn, rnd.run, now)
        if heir is not None:
            task_store.enqueue(
                conn,
                tenant_id=rnd.run["tenant_id"],
                kind=task_store.RUN,
                run_id=heir,
                due_at=now,
                now=now,
            )
    return touched


def advance_batch(
    db: Database, items: Sequence[Item], clock: Callable[[], datetime], limits: Limits
) -> dict[str, Plan]:
    """Read, evaluate and commit one round of each item's run, in this thread.

    The worker runs the same phases across threads (``Worker._advance``);
    this is the plain form, for tests and scripts. Returns a plan per task id;
    a task whose lease was lost gets none, and nothing of its run is written.
    """
    unique, duplicates = split_duplicates(items)
    with db.read() as conn:
        snapshot = load_batch(conn, unique, clock())
    done = duplicates + [evaluate_one(snapshot, it, clock, limits) for it in unique]
    with db.transaction() as conn:
        plans = commit_batch(conn, done, clock(), limits)
    results = [(ev, plans.get(ev.item.task["id"])) for ev in done]
    metering.committed(report_ended(results))
    return {task_id: plan for task_id, plan in plans.items() if plan is not None}


class BatchState:
    """A batch evaluated by one thread or more (``Worker._advance``); each round committed once."""

    def __init__(self, items: list[Item], done: list[Evaluated]) -> None:
        self.pending = collections.deque(items)
        self.done = done
        self.snapshot: Snapshot | None = None
        self.lock = threading.Lock()

    def next(self) -> Item | None:
        """The next item no thread has taken yet, if any."""
        with self.lock:
            return self.pending.popleft() if self.pending else None

    def finished(self, ev: Evaluated) -> None:
        """A thread evaluated an item: its round waits to be committed."""
        with self.lock:
            self.done.append(ev)

    def take_done(self) -> list[Evaluated]:
        """The rounds evaluated and not yet taken for a commit."""
        with self.lock:
            taken, self.done = self.done, []
            return taken
