"""One round of a run, inside one fenced transaction.

A round records the outcomes of the attempts the worker just finished,
evaluates the graph, runs inline (pure) steps on the spot, and either hands
back the next external attempts to execute, parks the run until its earliest
timer, or finishes it. Every transition writes its run-event row in the same
transaction, and nothing is written unless the task's lease is still held.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping

from conveyor.actions.base import StepError
from conveyor.actions.registry import get_action
from conveyor.domain.graph import evaluate
from conveyor.domain.ids import new_id
from conveyor.domain.status import (
    AttemptStatus,
    RunStatus,
    StepStatus,
)
from conveyor.engine.children import wake_parent
from conveyor.engine.failures import fire_failure_triggers
from conveyor.engine.round_state import (
    FAILURE_STATUSES,
    Limits,
    Outcome,
    Plan,
    Round,
)
from conveyor.engine.steps import Prepared, build_scope, prepare
from conveyor.engine.waits import close_waits
from conveyor.store import definitions, slots
from conveyor.store import rounds as round_store
from conveyor.store import tasks as task_store


@dataclass
class Item:
    """One claimed task to advance, with the outcomes of its last external attempts."""

    task: RowMapping
    token: str
    outcomes: Sequence[Outcome] = ()


def advance_batch(
    conn: Connection,
    items: Sequence[Item],
    clock: Callable[[], datetime],
    limits: Limits,
) -> dict[str, Plan]:
    """Run one round of each item's run, all in this transaction (the caller commits).

    Returns a plan per task id; a task whose lease was lost gets no plan and
    nothing of its run is written.
    """
    now = clock()
    held: set[str] = set()
    by_token: dict[str, list[str]] = {}
    for it in items:
        by_token.setdefault(it.token, []).append(it.task["id"])
    for token, ids in by_token.items():
        held |= round_store.fence_many(conn, token, ids, now + limits.lease)
    live = [it for it in items if it.task["id"] in held]
    run_ids = [it.task["run_id"] for it in live]
    run_rows = round_store.load_runs(conn, run_ids)
    step_rows = round_store.load_steps(conn, run_ids)
    contacts = round_store.load_contacts(
        conn, [r["contact_id"] for r in run_rows.values() if r["contact_id"]]
    )
    prepared_batch = _prepare_resumed(conn, live, run_rows, step_rows, now)
    writes = round_store.Writes()
    plans: dict[str, Plan] = {}
    seen_runs: set[str] = set()
    for it in live:
        if it.task["run_id"] in seen_runs:
            plans[it.task["id"]] = Plan(again=True)
            continue
        seen_runs.add(it.task["run_id"])
        run = run_rows.get(it.task["run_id"])
        if run is None or RunStatus(run["status"]).terminal:
            writes.delete_tasks.append(it.task["id"])
            plans[it.task["id"]] = Plan(done=True)
            continue
        loaded = definitions.load(conn, run["version_id"])
        rnd = Round(conn, run, loaded, step_rows[run["id"]], clock, limits, writes, it.task["id"])
        rnd.contact = contacts.get(run["contact_id"]) if run["contact_id"] else None
        rnd.batch_info = prepared_batch
        if it.task["kind"] == task_store.RUN_TIMEOUT:
            timeout = loaded.definition.timeout
            terminate(
                rnd,
                RunStatus.TIMED_OUT,
                now,
                why="run timed out",
                error={
                    "step_key": None,
                    "code": "run_timeout",
                    "message": f"the run's timeout ({timeout}) passed",
                },
            )
            plans[it.task["id"]] = Plan(done=True)
        else:
            plans[it.task["id"]] = _advance(rnd, it, now)
        rnd.flush()
    round_store.flush(conn, writes)
    fire_failure_triggers(conn, writes.failures, now)
    return plans


def _take_slot(rnd: Round, now: datetime) -> bool:
    """Whether a pending run may start: it holds, or now takes, a concurrency slot.

    A run that cannot start is parked: its task is removed at once (not at the
    batch's end) and the run that frees a slot hands it over and queues it.
    """
    run, conc = rnd.run, rnd.loaded.definition.concurrency
    if conc is None or run["concurrency_key"] is None:
        return True
    if slots.holds_slot(rnd.conn, run["id"]) or slots.acquire(rnd.conn, run, conc.limit, now):
        run["slot_held"] = True
        return True
    task_store.delete_task(rnd.conn, rnd.task_id)
    rnd.event("run.queued", concurrency_key=run["concurrency_key"], limit=conc.limit)
    return False


def _prepare_resumed(
    conn: Connection,
    live: Sequence[Item],
    run_rows: Mapping[str, RowMapping],
    step_rows: Mapping[str, Sequence[RowMapping]],
    now: datetime,
) -> dict[tuple[str, str], Any]:
    """Let step types do, once for the batch, what each resumed step would do alone.

    A step type may define ``prepare_batch(conn, [(run id, step key)], now)``
    (``wait_for_event`` times out every due wait in one statement); every step
    offered gets an entry, so its action knows the batch work was done.
    """
    due: dict[str, list[tuple[str, str]]] = {}
    for it in live:
        run = run_rows.get(it.task["run_id"])
        if it.task["kind"] != task_store.RUN or run is None or RunStatus(run["status"]).terminal:
            continue
        for step in step_rows.get(run["id"], ()):
            wake = step["wake_at"]
            if step["status"] == StepStatus.WAITING and wake is not None and wake <= now:
                due.setdefault(step["step_type"], []).append((run["id"], step["step_key"]))
    info: dict[tuple[str, str], Any] = {}
    for step_type, steps in due.items():
        prepare_batch = getattr(get_action(step_type), "prepare_batch", None)
        if prepare_batch is not None:
            done = prepare_batch(conn, steps, now)
            info.update({pair: done.get(pair) for pair in steps})
    return info


def _advance(rnd: Round, it: Item, now: datetime) -> Plan:
    run = rnd.run
    if run["status"] == RunStatus.PENDING:
        if not _take_slot(rnd, now):
            return Plan(done=True)
        rnd.set_run(status=RunStatus.RUNNING, started_at=now)
        rnd.event("run.started")
        timeout = rnd.loaded.definition.timeout
        if timeout is not None:
            deadline = now + timeout
            rnd.set_run(timeout_at=deadline)
            rnd.w.new_tasks.append(
                {
                    "id": new_id(),
                    "tenant_id": run["tenant_id"],
                    "kind": task_store.RUN_TIMEOUT,
                    "run_id": run["id"],
                    "due_at": deadline,
                    "created_at": now,
                }
            )
    elif run["status"] == RunStatus.WAITING:
        rnd.set_run(status=RunStatus.RUNNING)
        rnd.event("run.resumed")
    seen = set()
    for outcome in it.outcomes:
        rnd.apply(outcome)
        seen.add(outcome.key)
    for key, step in rnd.steps.items():
        if step["status"] == StepStatus.RUNNING and key not in seen:
            rnd.recover_lost(key, now)
    plan = _step_forward(rnd, now)
    if plan is None:
        plan = _park(rnd, it.task, now)
    return plan


def _step_forward(rnd: Round, now: datetime) -> Plan | None:
    """Evaluate and run inline steps until only external work or timers remain."""
    graph = rnd.loaded.graph
    while True:
        ev = evaluate(graph, rnd.states())
        _apply_skips(rnd, ev.skipped, ev.cancel, now)
        if ev.finished:
            assert ev.outcome is not None
            _finish(rnd, ev.outcome, now)
            return Plan(done=True)
        runnable = [k for k in ev.ready if _due(rnd.steps[k], now)]
        runnable += [
            k
            for k in graph.order
            if rnd.steps[k]["status"] == StepStatus.WAITING
            and rnd.steps[k]["wake_at"] is not None  # no time: parked until woken
            and _due(rnd.steps[k], now)
        ]
        if not runnable:
            return None
        external, progressed, held = _start_steps(rnd, runnable, now)
        if external:
            return Plan(execute=external)
        if held and not progressed:
            # Shutting down: the run goes back to the queue, due now, for another worker.
            rnd.w.reschedules.append((rnd.task_id, now))
            return Plan(done=True)
        if not progressed:
            return None


def _apply_skips(
    rnd: Round, skipped: Mapping[str, str], cancel: Sequence[str], now: datetime
) -> None:
    for key, reason in skipped.items():
        rnd.set_step(key, status=StepStatus.SKIPPED, skip_reason=reason, completed_at=now)
        rnd.event("step.skipped", key, reason=reason)
    for key in cancel:
        rnd.set_step(
            key,
            status=StepStatus.CANCELLED,
            skip_reason="run failed",
            completed_at=now,
            wake_at=None,
        )
        rnd.event("step.cancelled", key, reason="run failed")


def _start_steps(
    rnd: Round, runnable: Sequence[str], now: datetime
) -> tuple[list[Prepared], bool, bool]:
    """Start an attempt of each runnable step: inline ones run here, external ones are returned.

    Returns the external attempts, whether any step progressed here, and
    whether an external step was held back because the worker is draining.
    """
    defn, graph = rnd.loaded.definition, rnd.loaded.graph
    external: list[Prepared] = []
    progressed = held = False
    scope = build_scope(rnd.run, defn, graph, rnd.steps, now, rnd.contact)
    for key in runnable:
        step = rnd.steps[key]
        if rnd.limits.draining and not get_action(step["step_type"]).inline:
            held = True
            continue
        resumed = step["status"] == StepStatus.WAITING
        attempt = int(step["attempts"]) if resumed else rnd.start_attempt(key, rnd.clock())
        if resumed:
            rnd.set_step(key, status=StepStatus.RUNNING)
            rnd.event("step.resumed", key, attempt=attempt)
        started = rnd.clock()
        try:
            prepared = prepare(
                defn.step(key),
                scope,
                started,
                attempt=attempt,
                resumed=resumed,
                wake_at=step["wake_at"],
            )
            prepared.ctx.run = rnd.run
            if (rnd.run["id"], key) in rnd.batch_info:
                prepared.ctx.extra["batch"] = rnd.batch_info[(rnd.run["id"], key)]
            if not prepared.action.inline:
                external.append(prepared)
                continue
            prepared.ctx.conn = rnd.conn
            result = prepared.action.execute_inline(prepared.ctx)
            for type_, data in prepared.ctx.extra.pop("history", ()):  # e.g. wait.timed_out
                rnd.event(type_, key, **data)
            rnd.apply(Outcome(key, attempt, started, rnd.clock(), result=result))
        except StepError as exc:
            rnd.apply(Outcome(key, attempt, started, rnd.clock(), error=exc))
        progressed = True
    return external, progressed, held


def _due(step: dict[str, Any], now: datetime) -> bool:
    wake: datetime | None = step["wake_at"]
    return wake is None or wake <= now


def _park(rnd: Round, task: RowMapping, now: datetime) -> Plan:
    """Nothing can run now: sleep until the earliest timer of the run."""
    wakes = [
        s["wake_at"]
        for s in rnd.steps.values()
        if s["wake_at"] is not None and not StepStatus(s["status"]).terminal
    ]
    if rnd.run["status"] != RunStatus.WAITING:
        rnd.set_run(status=RunStatus.WAITING)
        rnd.event("run.waiting", next_wake_at=min(wakes).isoformat() if wakes else None)
    if wakes:
        rnd.w.reschedules.append((task["id"], min(wakes)))
    else:
        rnd.w.delete_tasks.append(task["id"])
    return Plan(done=True)


def _finish(rnd: Round, status: RunStatus, now: datetime, **data: Any) -> None:
    """End the run: final status and event, its tasks gone, its slot handed on."""
    close_waits(rnd)  # open waits end `cancelled`
    wake_parent(rnd.conn, rnd.run, now)  # a parent's trigger_automation step may wait for it
    # The run keeps its last error even when it completed: a retried attempt's
    # failure is still worth seeing.
    rnd.set_run(status=status, completed_at=now)
    if rnd.run.get("error") and status != RunStatus.COMPLETED:
        data["error"] = rnd.run["error"]
    rnd.event(f"run.{status}", **data)
    rnd.w.delete_run_tasks.append(rnd.run["id"])
    # A run without a concurrency key never holds a slot: no look-up for it.
    keyed = rnd.run["concurrency_key"] is not None
    if keyed and (rnd.run.get("slot_held") or slots.holds_slot(rnd.conn, rnd.run["id"])):
        heir = slots.release(rnd.conn, rnd.run, now)
        if heir is not None:
            task_store.enqueue(
                rnd.conn,
                tenant_id=rnd.run["tenant_id"],
                kind=task_store.RUN,
                run_id=heir,
                due_at=now,
                now=now,
            )
    if status in FAILURE_STATUSES:
        rnd.w.failures.append(rnd.run)


def terminate(
    rnd: Round,
    status: RunStatus,
    now: datetime,
    *,
    why: str,
    error: dict[str, Any] | None = None,
    **data: Any,
) -> None:
    """End the run from outside its graph (timeout, cancel): stop every unfinished step.

    Deleting the run's tasks fences out a worker still executing one of its
    steps, so that worker's late result is discarded.
    """
    closing = AttemptStatus.TIMED_OUT if status == RunStatus.TIMED_OUT else AttemptStatus.CANCELLED
    for key, step in rnd.steps.items():
        step_status = StepStatus(step["status"])
        if step_status.terminal:
            continue
        if step_status in (StepStatus.RUNNING, StepStatus.WAITING):
            err = {"code": f"run_{status.replace('-', '_')}", "message": why}
            rnd.close_attempt(key, int(step["attempts"]), closing, now, err)
        rnd.set_step(
            key, status=StepStatus.CANCELLED, skip_reason=why, completed_at=now, wake_at=None
        )
        rnd.event("step.cancelled", key, reason=why)
    if error is not None:
        rnd.set_run(error=error)
    _finish(rnd, status, now, **data)
