"""One run's state during a round, the changes it makes, and the round's small types.

``Round`` records status changes (checked against the transition tables),
attempts and history lines, in memory: a round is evaluated with no database
transaction open (``conveyor.engine.rounds``). What it wants written goes
into its own ``Writes``; what needs the database but no user code (a wait's
compare-and-set, a child run to start, a slot to take) is recorded as intents
that the batch's commit carries out (``conveyor.engine.batch``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import RowMapping

from conveyor.actions.base import ActionContext, ActionResult, StepError, WaitDecision
from conveyor.domain import jsonsafe
from conveyor.domain.graph import StepState
from conveyor.domain.ids import new_id
from conveyor.domain.retry import decide
from conveyor.domain.status import (
    AttemptStatus,
    RunStatus,
    StepStatus,
    check_run_transition,
    check_step_transition,
)
from conveyor.domain.times import iso
from conveyor.engine.steps import Prepared
from conveyor.store import rounds as round_store
from conveyor.store.definitions import LoadedDefinition

log = logging.getLogger(__name__)

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
    # Advance the run again at once, under the same lease: another task of the
    # same run was in the batch, the run changed while the round was evaluated,
    # or the commit settled a step whose dependents can now run.
    again: bool = False


@dataclass
class Finish:
    """What ending a run needs from the database, done at the commit."""

    close_waits: bool  # the run has a wait step that started and was not decided
    wake_parent: bool  # a parent's trigger_automation step may wait for this run
    release_slot: bool  # the run may hold a concurrency slot


@dataclass
class Limits:
    """Settings a round needs."""

    worker_id: str
    lease: timedelta
    max_output_bytes: int
    # Set when the worker is shutting down: finish what is in flight, start no
    # new external attempt, and hand the run back to the queue instead.
    draining: bool = False
    # CPU seconds a round may spend evaluating one run's inline steps before it
    # commits and re-queues the run (twice the expression timeout).
    round_cpu: float = 2.0
    # A run whose task was lost this many times in a row is set aside (`poisoned`).
    poison_after: int = 3


class Round:
    """One run's state during a round, and the changes it makes (written by the batch)."""

    def __init__(
        self,
        run: RowMapping | Mapping[str, Any],
        loaded: LoadedDefinition,
        steps: Sequence[RowMapping] | Sequence[Mapping[str, Any]],
        clock: Callable[[], datetime],
        limits: Limits,
        task_id: str,
    ) -> None:
        self.task_id = task_id
        self.contact: Mapping[Any, Any] | None = None  # the run's contact, if any
        # What the round read about the run's waits, by step key (the wait row
        # with its event), and the stored events a resumed wait may take.
        self.waits: Mapping[str, RowMapping] = {}
        self.windows: Mapping[str, Sequence[RowMapping]] = {}
        self.run = dict(run)
        self.loaded = loaded
        self.steps = {row["step_key"]: dict(row) for row in steps}
        self.clock = clock
        self.limits = limits
        self.w = round_store.Writes()
        self.events: list[dict[str, Any]] = []
        self.changed: dict[str, set[str]] = {}
        self.new_attempts: list[dict[str, Any]] = []
        # Intents for the commit (see the module docstring).
        self.decisions: list[tuple[str, WaitDecision]] = []  # (step key, decision)
        # (step key, attempt, the attempt's context, whose `deferred` work the commit does)
        self.deferred: list[tuple[str, int, ActionContext]] = []
        self.slot_wanted = False  # a pending run that must take a concurrency slot to start
        self.finish: Finish | None = None
        self.written = False  # flush() ran: the commit writes this round

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
        """Move this round's changes into its ``Writes`` (once, when it commits)."""
        self.written = True
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
                "concurrency_key": r["concurrency_key"],
                "updated_at": self.clock(),
                "event_seq": seq,
            }
        )
        self.events = []
        self.changed = {}
        self.new_attempts = []
        self.run["event_seq"] = seq

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
            # As the store will write it (conveyor.store.types.dumps): measured,
            # and with what JSON cannot hold replaced, so that the steps after
            # this one see the output as stored.
            encoded = jsonsafe.encode(result.output)
        except (TypeError, ValueError) as exc:
            raise_err = StepError(
                f"output is not JSON: {exc}", retryable=False, code="output_not_json"
            )
            self.fail_attempt(outcome.key, outcome.attempt, raise_err, outcome.ended_at)
            return
        size = len(encoded.text)
        if size > self.limits.max_output_bytes:
            err = StepError(
                f"output is {size} bytes, over the {self.limits.max_output_bytes} byte limit",
                retryable=False,
                code="output_too_large",
            )
            self.fail_attempt(outcome.key, outcome.attempt, err, outcome.ended_at)
            return
        if encoded.flaws:
            log.warning(
                "run %s step %s: %d flaw(s) replaced in the output: %s",
                self.run["id"],
                outcome.key,
                len(encoded.flaws),
                jsonsafe.summary(encoded.flaws),
            )
            self.event(
                "step.output_cleaned",
                outcome.key,
                attempt=outcome.attempt,
                replaced=len(encoded.flaws),
                flaws=jsonsafe.described(encoded.flaws),
            )
        self.close_attempt(outcome.key, outcome.attempt, AttemptStatus.SUCCEEDED, outcome.ended_at)
        self.set_step(
            outcome.key,
            status=StepStatus.COMPLETED,
            output=encoded.value,
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

    def _clean(self, key: str, what: str, value: dict[str, Any]) -> dict[str, Any]:
        """``value`` with what JSON cannot hold replaced, and a warning if anything was.

        Done here as well as in the store, so that the run's error, the step's
        and the failure triggers all hold what is stored.
        """
        encoded = jsonsafe.encode(value)
        if encoded.flaws:
            log.warning(
                "run %s step %s: %d flaw(s) replaced in the %s: %s",
                self.run["id"],
                key,
                len(encoded.flaws),
                what,
                jsonsafe.summary(encoded.flaws),
            )
        return dict(encoded.value)

    def fail_attempt(self, key: str, attempt: int, error: StepError, ended_at: datetime) -> None:
        step = self.steps[key]
        defn = self.loaded.definition
        step_def = defn.step(key)
        policy = defn.retry_policy(step_def)
        err = self._clean(key, "error", error.to_json())
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
