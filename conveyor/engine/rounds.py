"""One round of a run, evaluated with no database transaction open.

A round records the outcomes of the attempts the worker just finished,
evaluates the graph, runs inline steps on the spot, and either hands back the
next external attempts to execute, parks the run until its earliest timer, or
finishes it. It works on what the batch read (``conveyor.engine.batch``) and
changes only the ``Round`` in memory; the batch's commit writes it, fenced on
the task's lease and on the run being unchanged since it was read.

User code (step settings, conditions, waits' ``match``, a concurrency key)
runs here, each step attempt under its own budget (``conveyor.domain.sandbox``:
``CONVEYOR_EXPRESSION_TIMEOUT`` seconds of CPU, size caps). A breach fails
the step with ``expression_timeout`` or ``expression_too_large``, never
retried. One round evaluates a run's inline steps for at most
``Limits.round_cpu`` seconds; then it commits what is done and the run goes
back to the queue, due at once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import RowMapping

from conveyor.actions.base import ActionResult, StepError
from conveyor.actions.registry import get_action
from conveyor.domain import sandbox
from conveyor.domain.cpu import CpuLimit
from conveyor.domain.errors import ConveyorError, ExpressionTimeout, ExpressionTooLarge
from conveyor.domain.graph import evaluate
from conveyor.domain.ids import new_id
from conveyor.domain.status import AttemptStatus, RunStatus, StepStatus
from conveyor.engine.launch import concurrency_key
from conveyor.engine.round_state import FAILURE_STATUSES, Finish, Outcome, Plan, Round
from conveyor.engine.steps import Prepared, build_scope, prepare
from conveyor.store import tasks as task_store

# The line of each run that ends other than completed (``log_end``).
end_log = logging.getLogger("conveyor.runs")


@dataclass
class Item:
    """One claimed task to advance, with the outcomes of its last external attempts."""

    task: RowMapping
    token: str
    outcomes: Sequence[Outcome] = ()


def advance(rnd: Round, it: Item, now: datetime) -> Plan:
    """Evaluate one round of ``rnd``'s run (no transaction open); return the plan."""
    tries = int(it.task.get("tries") or 0)
    if tries >= rnd.limits.poison_after:
        poison(rnd, now, tries)
        return Plan(done=True)
    if it.task["kind"] == task_store.RUN_TIMEOUT:
        timeout = rnd.loaded.definition.timeout
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
        return Plan(done=True)
    run = rnd.run
    if run["status"] == RunStatus.PENDING:
        if not _may_start(rnd, now):
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


def poison(rnd: Round, now: datetime, tries: int) -> None:
    """Set a poison run aside: its task was lost ``tries`` times in a row.

    Each time, the worker holding it crashed or hung before it could commit
    (or even give the run back). The step in flight fails, the rest are
    cancelled, and the run fails with ``poisoned`` (failure triggers fire).
    """
    why = f"the run's task was lost {tries} times in a row: its worker crashed or hung each time"
    err = {"code": "poisoned", "message": why}
    in_flight = [k for k, s in rnd.steps.items() if s["status"] == StepStatus.RUNNING]
    for key in in_flight:
        attempt = int(rnd.steps[key]["attempts"])
        rnd.close_attempt(key, attempt, AttemptStatus.LOST, now, err)
        rnd.set_step(
            key,
            status=StepStatus.FAILED,
            error=err,
            failure="error",
            completed_at=now,
            wake_at=None,
        )
        rnd.event("step.failed", key, attempt=attempt, error=err, failure="error")
    rnd.event("run.poisoned", tries=tries, reason=why)
    error = {"step_key": in_flight[0] if in_flight else None, **err}
    terminate(rnd, RunStatus.FAILED, now, why="run poisoned", error=error)


def _breach(exc: ConveyorError) -> StepError:
    """A step attempt's evaluation breached its budget: fail the step, no retry."""
    return StepError(exc.detail, retryable=False, code=exc.code)


def _may_start(rnd: Round, now: datetime) -> bool:
    """Whether a pending run may start; its concurrency key is evaluated here if need be.

    A run created without its key (by an event, a schedule, a retry, a child
    launch) has it evaluated in its first round. A key that cannot be
    evaluated fails the run. With a key, the run asks the commit for a slot
    (``slot_wanted``) and is evaluated as if it got one; if it does not, the
    commit drops this round and queues the run instead.
    """
    run, conc = rnd.run, rnd.loaded.definition.concurrency
    if conc is None:
        return True
    if run["concurrency_key"] is None:
        budget = sandbox.Budget()
        try:
            with sandbox.using(budget):
                key = concurrency_key(rnd.loaded, run["trigger_event"] or {}, run["identity"])
        except ConveyorError as exc:
            error = {"step_key": None, "code": exc.code, "message": exc.detail}
            rnd.set_run(status=RunStatus.FAILED, error=error, completed_at=now)
            rnd.event("run.failed", error=error)
            _finish_work(rnd, RunStatus.FAILED)
            return False
        if key is None:
            return True
        rnd.set_run(concurrency_key=key)
    if not run.get("slot_held"):
        rnd.slot_wanted = True
    return True


def _step_forward(rnd: Round, now: datetime) -> Plan | None:
    """Evaluate and run inline steps until only external work or timers remain."""
    graph = rnd.loaded.graph
    cpu = CpuLimit(rnd.limits.round_cpu)
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
        if cpu.passed():
            # This run has had its share of the round: what is done commits, and
            # the run goes back to the queue, due at once, behind the others.
            rnd.event("run.yielded", reason="evaluation time of one round used up")
            rnd.w.reschedules.append((rnd.task_id, now))
            return Plan(done=True)


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
    Each attempt's evaluation (rendering its settings, running an inline
    step) spends one budget.
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
        progressed = True
        token = sandbox.begin()  # this attempt's budget
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
            if not prepared.action.inline:
                external.append(prepared)
                continue
            _inputs(rnd, key, prepared)
            result = prepared.action.execute_inline(prepared.ctx)
        except StepError as exc:
            rnd.apply(Outcome(key, attempt, started, rnd.clock(), error=exc))
            continue
        except (ExpressionTimeout, ExpressionTooLarge) as exc:
            rnd.apply(Outcome(key, attempt, started, rnd.clock(), error=_breach(exc)))
            continue
        finally:
            sandbox.leave(token)
        ctx = prepared.ctx
        take_history(rnd, key, ctx.extra)
        rnd.decisions.extend((key, d) for d in ctx.decisions)
        if ctx.deferred:
            rnd.deferred.append((key, attempt, ctx))
        if not result.deferred:  # else the step stays running until the commit settles it
            rnd.apply(Outcome(key, attempt, started, rnd.clock(), result=result))
    return external, progressed, held


def take_history(rnd: Round, key: str, extra: dict[str, Any]) -> None:
    """Write the history lines an action left (``wait.timed_out``, ``child_run.started``).

    The list is emptied, not removed: work deferred to the commit may add to it.
    """
    lines = extra.setdefault("history", [])
    for type_, data in lines:
        rnd.event(type_, key, **data)
    lines.clear()


def _inputs(rnd: Round, key: str, prepared: Prepared) -> None:
    """What the round read for a step: its wait row and the events it may look at."""
    wait = rnd.waits.get(key)
    if wait is not None:
        prepared.ctx.extra["wait"] = wait
    window = rnd.windows.get(key)
    if window is not None:
        prepared.ctx.extra["window"] = window


def settle_deferred(rnd: Round, key: str, attempt: int, outcome: Any) -> bool:
    """Apply what a step's deferred work returned at the commit; True if the run must go again."""
    now = rnd.clock()
    if isinstance(outcome, StepError):
        rnd.apply(Outcome(key, attempt, now, now, error=outcome))
        return True
    if isinstance(outcome, ActionResult):
        rnd.apply(Outcome(key, attempt, now, now, result=outcome))
        return True
    if outcome == "wake" and rnd.steps[key]["status"] == StepStatus.WAITING:
        rnd.set_step(key, wake_at=now)
        return True
    return False


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
    if any(rnd.steps[key]["status"] == StepStatus.RUNNING for key, _, _ in rnd.deferred):
        # A step's result comes from the commit: the run goes on right after it.
        return Plan(again=True)
    if rnd.run["status"] != RunStatus.WAITING:
        rnd.set_run(status=RunStatus.WAITING)
        rnd.event("run.waiting", next_wake_at=min(wakes).isoformat() if wakes else None)
    if wakes:
        rnd.w.reschedules.append((task["id"], min(wakes)))
    else:
        rnd.w.delete_tasks.append(task["id"])
    return Plan(done=True)


def _finish_work(rnd: Round, status: RunStatus) -> None:
    """Record what ending the run needs from the commit (its waits, parent, slot, watchers)."""
    rnd.finish = Finish(
        close_waits=any(
            s["step_type"] == "wait_for_event"
            and s["attempts"]
            and s["status"] not in (StepStatus.COMPLETED, StepStatus.FAILED)
            for s in rnd.steps.values()
        ),
        wake_parent=rnd.run.get("parent_run_id") is not None,
        # A run without a concurrency key never holds a slot: no look-up for it.
        release_slot=rnd.run["concurrency_key"] is not None,
    )
    rnd.w.delete_run_tasks.append(rnd.run["id"])
    if status in FAILURE_STATUSES:
        rnd.w.failures.append(rnd.run)


def _finish(rnd: Round, status: RunStatus, now: datetime, **data: Any) -> None:
    """End the run: final status and event; its tasks, waits, slot and parent at the commit."""
    # The run keeps its last error even when it completed: a retried attempt's
    # failure is still worth seeing.
    rnd.set_run(status=status, completed_at=now)
    if rnd.run.get("error") and status != RunStatus.COMPLETED:
        data["error"] = rnd.run["error"]
    rnd.event(f"run.{status}", **data)
    _finish_work(rnd, status)


def log_end(run: Mapping[str, Any]) -> None:
    """Log the line of a run that ended other than completed: status, error code, step.

    The error's message is left out: it may quote what a step called or
    received (a URL with a token, an answer's body).
    """
    status = run["status"]
    if status == RunStatus.COMPLETED:
        return
    error = run.get("error") or {}
    code = error.get("code")
    end_log.log(
        logging.INFO if status == RunStatus.CANCELLED else logging.WARNING,
        "run %s ended %s%s",
        run["id"],
        status,
        f" ({code})" if code else "",
        extra={
            "data": {
                "tenant_id": str(run["tenant_id"]),
                "run_id": str(run["id"]),
                "automation_id": str(run["automation_id"]),
                "status": str(status),
                "error_code": code,
                "step_key": error.get("step_key"),
            }
        },
    )


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
