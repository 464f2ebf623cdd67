"""One round of a run, inside one fenced transaction.

A round records the outcomes of the attempts the worker just finished,
evaluates the graph, runs inline (pure) steps on the spot, and either hands
back the next external attempts to execute, parks the run until its earliest
timer, or finishes it. Every transition writes its run-event row in the same
transaction, and nothing is written unless the task's lease is still held.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, RowMapping

from conveyor.actions.base import ActionResult, StepError
from conveyor.actions.registry import get_action
from conveyor.domain.graph import StepState, evaluate
from conveyor.domain.ids import new_id
from conveyor.domain.retry import decide
from conveyor.domain.status import (
    AttemptStatus,
    RunStatus,
    StepStatus,
    check_run_transition,
    check_step_transition,
)
from conveyor.engine.children import wake_parent
from conveyor.engine.launch import Launch, create_run, iso
from conveyor.engine.steps import Prepared, build_scope, prepare
from conveyor.engine.waits import close_waits
from conveyor.store import automations as automation_store
from conveyor.store import definitions, slots
from conveyor.store import rounds as round_store
from conveyor.store import tasks as task_store
from conveyor.store.definitions import LoadedDefinition

FAILURE_STATUSES = frozenset({RunStatus.FAILED, RunStatus.EXHAUSTED, RunStatus.TIMED_OUT})
# A step whose worker died this many times is failed rather than retried forever.
MAX_LOST_ATTEMPTS = 5


@dataclass
class Outcome:
    """The result of one external attempt, as the worker saw it."""

    key: str
    attempt: int
    started_at: datetime
    ended_at: datetime
    result: ActionResult | None = None
    error: StepError | None = None


@dataclass
class Plan:
    """What the worker does after a round."""

    execute: list[Prepared] = field(default_factory=list)
    done: bool = False
    again: bool = False  # another task of the same run was in the batch: run this one alone


@dataclass
class Limits:
    """Settings a round needs."""

    worker_id: str
    lease: timedelta
    max_output_bytes: int
    # Set when the worker is shutting down: finish what is in flight, start no
    # new external attempt, and hand the run back to the queue instead.
    draining: bool = False


class Round:
    """One run's state during a round, and the changes it makes (written by the batch)."""

    def __init__(
        self,
        conn: Connection,
        run: RowMapping,
        loaded: LoadedDefinition,
        steps: Sequence[RowMapping],
        clock: Callable[[], datetime],
        limits: Limits,
        writes: round_store.Writes,
        task_id: str,
    ) -> None:
        self.conn = conn
        self.task_id = task_id
        self.contact: Mapping[Any, Any] | None = None  # the run's contact, if any
        # What an action's `prepare_batch` worked out for a resumed step, by (run, step).
        self.batch_info: Mapping[tuple[str, str], Any] = {}
        self.run = dict(run)
        self.loaded = loaded
        self.steps = {row["step_key"]: dict(row) for row in steps}
        self.clock = clock
        self.limits = limits
        self.w = writes
        self.events: list[dict[str, Any]] = []
        self.changed: dict[str, set[str]] = {}
        self.new_attempts: list[dict[str, Any]] = []

    # -- recording -------------------------------------------------------
    def event(self, type_: str, step_key: str | None = None, **data: Any) -> None:
        self.events.append(
            {"type": type_, "step_key": step_key, "data": data, "created_at": self.clock()}
        )

    def set_run(self, **values: Any) -> None:
        if "status" in values:
            check_run_transition(RunStatus(self.run["status"]), RunStatus(values["status"]))
        self.run.update(values)

    def set_step(self, key: str, **values: Any) -> None:
        step = self.steps[key]
        if "status" in values:
            check_step_transition(StepStatus(step["status"]), StepStatus(values["status"]))
        step.update(values)
        self.changed.setdefault(key, set()).update(values)

    def flush(self) -> None:
        """Hand this round's changes to the batch writer."""
        run_id, tenant_id = self.run["id"], self.run["tenant_id"]
        for key, cols in self.changed.items():
            self.w.step_changes.append((run_id, key, cols, self.steps[key]))
        self.w.new_attempts.extend(self.new_attempts)
        seq = int(self.run["event_seq"])
        for e in self.events:
            seq += 1
            self.w.events.append({"run_id": run_id, "tenant_id": tenant_id, "seq": seq, **e})
        r = self.run
        self.w.runs.append(
            {
                "_id": run_id,
                "status": r["status"],
                "started_at": r["started_at"],
                "completed_at": r["completed_at"],
                "error": r["error"],
                "timeout_at": r["timeout_at"],
                "updated_at": self.clock(),
                "event_seq": seq,
            }
        )

    # -- attempts --------------------------------------------------------
    def start_attempt(self, key: str, now: datetime) -> int:
        step = self.steps[key]
        number = int(step["attempts"]) + 1
        self.set_step(
            key,
            status=StepStatus.RUNNING,
            attempts=number,
            wake_at=None,
            started_at=step["started_at"] or now,
        )
        self.new_attempts.append(
            {
                "id": new_id(),
                "tenant_id": self.run["tenant_id"],
                "run_id": self.run["id"],
                "step_key": key,
                "attempt": number,
                "status": AttemptStatus.RUNNING,
                "worker_id": self.limits.worker_id,
                "started_at": now,
                "ended_at": None,
                "error": None,
            }
        )
        self.event("step.started", key, attempt=number)
        return number

    def close_attempt(
        self,
        key: str,
        attempt: int,
        status: AttemptStatus,
        ended_at: datetime,
        error: dict[str, Any] | None = None,
    ) -> None:
        values: dict[str, Any] = {"status": status, "ended_at": ended_at, "error": error}
        for pending in self.new_attempts:
            if pending["step_key"] == key and pending["attempt"] == attempt:
                pending.update(values)
                return
        self.w.attempt_changes.append((self.run["id"], key, attempt, values))

    # -- outcomes --------------------------------------------------------
    def apply(self, outcome: Outcome) -> None:
        step = self.steps[outcome.key]
        if step["status"] not in (StepStatus.RUNNING, StepStatus.WAITING):
            return  # decided meanwhile (e.g. cancelled); the late result is dropped
        if outcome.error is not None:
            self.fail_attempt(outcome.key, outcome.attempt, outcome.error, outcome.ended_at)
            return
        result = outcome.result or ActionResult()
        if result.park_until is not None or result.park:
            until = result.park_until
            self.set_step(outcome.key, status=StepStatus.WAITING, wake_at=until)
            self.event("step.waiting", outcome.key, until=iso(until) if until else None)
            return
        try:
            size = len(json.dumps(result.output, default=str))
        except (TypeError, ValueError) as exc:
            raise_err = StepError(
                f"output is not JSON: {exc}", retryable=False, code="output_not_json"
            )
            self.fail_attempt(outcome.key, outcome.attempt, raise_err, outcome.ended_at)
            return
        if size > self.limits.max_output_bytes:
            err = StepError(
                f"output is {size} bytes, over the {self.limits.max_output_bytes} byte limit",
                retryable=False,
                code="output_too_large",
            )
            self.fail_attempt(outcome.key, outcome.attempt, err, outcome.ended_at)
            return
        self.close_attempt(outcome.key, outcome.attempt, AttemptStatus.SUCCEEDED, outcome.ended_at)
        self.set_step(
            outcome.key,
            status=StepStatus.COMPLETED,
            output=result.output,
            output_size=size,
            branch_taken=result.branch,
            halted=result.halt,
            completed_at=outcome.ended_at,
            wake_at=None,
        )
        data: dict[str, Any] = {"attempt": outcome.attempt}
        if result.branch is not None:
            data["branch"] = result.branch
        if result.halt:
            data["halted"] = True
        self.event("step.completed", outcome.key, **data)

    def fail_attempt(self, key: str, attempt: int, error: StepError, ended_at: datetime) -> None:
        step = self.steps[key]
        defn = self.loaded.definition
        step_def = defn.step(key)
        policy = defn.retry_policy(step_def)
        err = error.to_json()
        timed_out = error.code == "step_timeout"
        self.close_attempt(
            key,
            attempt,
            AttemptStatus.TIMED_OUT if timed_out else AttemptStatus.FAILED,
            ended_at,
            err,
        )
        self.set_run(error={"step_key": key, **err})
        counted = int(step["attempts"]) - int(step["lost_attempts"])
        decision = decide(
            policy,
            counted,
            retryable=error.retryable,
            requested_delay=getattr(error, "delay", None),
        )
        if decision.retry:
            wake = ended_at + decision.delay
            self.set_step(key, status=StepStatus.PENDING, wake_at=wake, error=err)
            self.event(
                "step.retry_scheduled",
                key,
                attempt=attempt,
                error=err,
                next_attempt_at=wake.isoformat(),
            )
            return
        # Exhausted means every configured attempt was used (the dead-letter
        # case); an error no retry can fix fails the step on the spot.
        used_all = policy.max_attempts > 1 and counted >= policy.max_attempts
        failure = "timeout" if timed_out else ("exhausted" if used_all else "error")
        self.set_step(
            key,
            status=StepStatus.FAILED,
            error=err,
            failure=failure,
            completed_at=ended_at,
            wake_at=None,
        )
        self.event(
            "step.failed",
            key,
            attempt=attempt,
            error=err,
            failure=failure,
            continue_on_error=step_def.continue_on_error,
        )

    def recover_lost(self, key: str, now: datetime) -> None:
        """A step left ``running`` by a worker that died or lost its lease."""
        step = self.steps[key]
        attempt = int(step["attempts"])
        err = {"code": "worker_lost", "message": "the worker running this attempt was lost"}
        self.close_attempt(key, attempt, AttemptStatus.LOST, now, err)
        lost = int(step["lost_attempts"]) + 1
        self.event("step.attempt_lost", key, attempt=attempt)
        if lost >= MAX_LOST_ATTEMPTS:
            self.set_step(key, lost_attempts=lost)
            self.fail_attempt_after_loss(key, attempt, now)
            return
        self.set_step(key, status=StepStatus.PENDING, lost_attempts=lost)

    def fail_attempt_after_loss(self, key: str, attempt: int, now: datetime) -> None:
        err = {"code": "worker_lost", "message": f"lost {MAX_LOST_ATTEMPTS} workers in a row"}
        self.set_step(key, status=StepStatus.FAILED, error=err, failure="error", completed_at=now)
        self.set_run(error={"step_key": key, **err})
        self.event("step.failed", key, attempt=attempt, error=err, failure="error")

    # -- graph -----------------------------------------------------------
    def states(self) -> dict[str, StepState]:
        defn = self.loaded.definition
        return {
            key: StepState(
                status=StepStatus(s["status"]),
                branch=s["branch_taken"],
                halted=bool(s["halted"]),
                continue_on_error=defn.step(key).continue_on_error,
                failure=s["failure"],
            )
            for key, s in self.steps.items()
        }


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


def fire_failure_triggers(
    conn: Connection, failed_runs: Sequence[Mapping[str, Any]], now: datetime
) -> None:
    """Start the ``automation_failure`` runs watching the automations of these failed runs.

    A run started by a failure trigger does not fire failure triggers itself,
    so two automations watching each other cannot loop.
    """
    watchers: dict[str, list[tuple[RowMapping, LoadedDefinition]]] = {}
    for run in failed_runs:
        if run["trigger_type"] == "automation_failure":
            continue
        tenant = run["tenant_id"]
        if tenant not in watchers:
            watchers[tenant] = [
                (a, definitions.load(conn, a["current_version_id"]))
                for a in automation_store.list_enabled_by_trigger(
                    conn, tenant, "automation_failure"
                )
            ]
        for automation, loaded in watchers[tenant]:
            if run["automation_name"] not in loaded.definition.trigger.automations:
                continue
            create_run(
                conn,
                tenant_id=tenant,
                automation=automation,
                loaded=loaded,
                now=now,
                launch=Launch(
                    trigger_type="automation_failure",
                    source_type="automation",
                    source_id=run["id"],
                    identity=run["identity"],
                    trigger_event=failure_event(run, now),
                ),
            )


def failure_event(run: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """The trigger event a failure-triggered run receives: the failed run's summary."""
    return {
        "id": None,
        "name": "automation.failed",
        "occurred_at": iso(now),
        "payload": {
            "run_id": run["id"],
            "automation_id": run["automation_id"],
            "automation_name": run["automation_name"],
            "status": run["status"],
            "error": run["error"],
            "trigger_event": run["trigger_event"],
            "created_at": iso(run["created_at"]),
            "completed_at": iso(run["completed_at"]),
        },
    }


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
