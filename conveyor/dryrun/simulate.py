"""Simulating one run of an automation for one contact, on a virtual clock.

The walk reuses the engine's pieces: ``conveyor.domain.graph.evaluate`` decides
which steps are ready or skipped, ``conveyor.engine.steps.build_scope`` and
``prepare`` give each step the scope and rendered settings a real attempt
would get, and each action's ``simulate`` says what it would do. Only two step
types get help from here, because their outcome depends on time and history:
a delay moves the virtual clock, and a wait looks for the awaited event in the
stored history between the virtual time and its timeout.

The only database reads are templates (through ``ActionContext.conn``) and
stored events (through ``EventHistory``); nothing is written here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from conveyor.actions.base import ActionContext, ActionResult, StepError
from conveyor.actions.wait_for_event import (
    RECEIVED,
    TIMED_OUT,
    WaitForEventSettings,
    event_output,
)
from conveyor.domain import sandbox
from conveyor.domain.errors import ExpressionError, ExpressionTimeout, ExpressionTooLarge
from conveyor.domain.expressions import evaluate_bool
from conveyor.domain.graph import StepState, evaluate, outcome
from conveyor.domain.ids import new_id
from conveyor.domain.status import RunStatus, StepStatus
from conveyor.domain.times import iso
from conveyor.dryrun.history import EventHistory
from conveyor.engine.steps import build_scope, prepare
from conveyor.store.definitions import LoadedDefinition

SUCCESS, FAILED, SKIPPED = "success", "failed", "skipped"
BEYOND_RANGE = "beyond the dry run's range"


@dataclass
class Subject:
    """Who a simulated run is about, and what started it when."""

    contact: Mapping[Any, Any] | None
    trigger_event: dict[str, Any]
    start: datetime  # the virtual time the run would have started
    trigger_type: str
    notes: dict[str, Any] = field(default_factory=dict)  # e.g. events or firings skipped


@dataclass
class Simulation:
    """What one simulated run did."""

    run_id: str
    status: str  # success | failed | skipped
    outcome: RunStatus
    steps: list[dict[str, Any]]  # per step, for the result's `result`
    rows: list[dict[str, Any]]  # step_runs rows of the simulated run record
    started_at: datetime
    ended_at: datetime
    stopped: dict[str, Any] | None = None  # set when the range's end stopped the walk


class _Walk:
    """One run's walk through the graph (state kept between steps)."""

    def __init__(
        self,
        conn: Connection,
        tenant_id: str,
        automation: Mapping[str, Any],
        loaded: LoadedDefinition,
        subject: Subject,
        range_end: datetime,
        history: EventHistory,
    ) -> None:
        self.conn = conn
        self.history = history
        self.template_cache: dict[Any, Any] = {}
        self.loaded = loaded
        self.subject = subject
        self.range_end = range_end
        self.now = subject.start
        self.defs = {s.key: s for s in loaded.definition.steps}
        contact = subject.contact
        contact_id = str(contact["id"]) if contact is not None else None
        self.run: dict[str, Any] = {
            "id": new_id(),
            "tenant_id": tenant_id,
            "automation_name": automation["name"],
            "version_number": loaded.version,
            "created_at": subject.start,
            "trigger_event": subject.trigger_event,
            "identity": {"type": "contact_id", "value": contact_id} if contact_id else None,
            "identity_value": contact_id,
            "contact_id": contact_id,
            "root_run_id": None,
            "resend": False,
            "dry_run": True,
        }
        self.rows: dict[str, dict[str, Any]] = {
            s.key: {
                "id": new_id(),
                "tenant_id": tenant_id,
                "run_id": self.run["id"],
                "step_key": s.key,
                "step_type": s.type,
                "position": i,
                "status": StepStatus.PENDING,
                "branch_taken": None,
                "halted": False,
                "output": None,
                "error": None,
                "skip_reason": None,
                "started_at": None,
                "completed_at": None,
            }
            for i, s in enumerate(loaded.definition.steps)
        }
        self.states: dict[str, StepState] = {}
        self.entries: dict[str, dict[str, Any]] = {}
        self.stopped: dict[str, Any] | None = None  # the first step the range's end stopped
        # Each branch keeps its own time: a step starts when its dependencies
        # ended, not when the step walked before it (perhaps a day-long delay on
        # another branch) ended. ``done_at`` is when each finished step ended.
        self.done_at: dict[str, datetime] = {}
        self.beyond: set[str] = set()  # steps the range's end cut off, and their dependents

    # -- recording ---------------------------------------------------------
    def _entry(self, key: str, **values: Any) -> None:
        entry = self.entries.setdefault(key, {"key": key, "type": self.defs[key].type})
        entry.update(values)

    def _skip(self, key: str, reason: str) -> None:
        self.rows[key].update(status=StepStatus.SKIPPED, skip_reason=reason)
        self.states[key] = StepState(status=StepStatus.SKIPPED)
        self.done_at[key] = self.now
        self._entry(key, status="skipped", skip_reason=reason, at=iso(self.now))

    def _fail(self, key: str, started: datetime, error: StepError) -> None:
        step = self.defs[key]
        self.rows[key].update(
            status=StepStatus.FAILED,
            error=error.to_json(),
            started_at=started,
            completed_at=self.now,
        )
        self.states[key] = StepState(
            status=StepStatus.FAILED, continue_on_error=step.continue_on_error, failure="error"
        )
        self.done_at[key] = self.now
        self._entry(
            key, status="failed", at=iso(started), error=error.to_json(), reason=error.message
        )

    def _complete(self, key: str, started: datetime, result: ActionResult) -> None:
        self.rows[key].update(
            status=StepStatus.COMPLETED,
            output=result.output,
            branch_taken=result.branch,
            halted=result.halt,
            started_at=started,
            completed_at=self.now,
        )
        self.states[key] = StepState(
            status=StepStatus.COMPLETED, branch=result.branch, halted=result.halt
        )
        self.done_at[key] = self.now
        self._entry(
            key,
            status="completed",
            at=iso(started),
            ended_at=iso(self.now),
            would=result.output,
            branch=result.branch,
            halted=result.halt or None,
        )

    def _stop(self, key: str, started: datetime, until: datetime | None, what: str) -> None:
        """The step would end after the range (or never): report it; its branch ends here."""
        if self.stopped is None:
            self.stopped = {"step": key, "at": iso(started), "until": iso(until), "reason": what}
        self.beyond.add(key)
        self._skip(key, f"{what}: {BEYOND_RANGE} ends {iso(self.range_end)}")
        self.entries[key].update(at=iso(started), until=iso(until))

    # -- the walk ------------------------------------------------------------
    def walk(self) -> Simulation:
        """Run the graph to its end, or to the range's end."""
        graph = self.loaded.graph
        while True:
            ev = evaluate(graph, self.states)
            for key, reason in ev.skipped.items():  # in order, so cut-offs cascade
                self.now = self._start_of(key)
                if any(d.step in self.beyond for d in graph.deps[key]):
                    self.beyond.add(key)
                    reason = BEYOND_RANGE
                self._skip(key, reason)
            for key in ev.cancel:  # never happens here: nothing is left parked
                self._skip(key, "cancelled")
            if ev.finished or not ev.ready:
                break
            # The earliest first: a step's scope then holds what had ended by its time.
            key = min(ev.ready, key=self._start_of)
            self.now = self._start_of(key)
            self._step(key)
        for key in graph.order:  # nothing is left, but never leave a step pending
            if self.rows[key]["status"] == StepStatus.PENDING:
                self._skip(key, BEYOND_RANGE if self.stopped else "not reached")
        self.now = max(self.done_at.values(), default=self.subject.start)
        result = outcome(self.states)
        if any(r["status"] == StepStatus.FAILED for r in self.rows.values()):
            status = FAILED
        elif any(r["halted"] for r in self.rows.values()):
            status = SKIPPED  # a filter said this contact would not go on
        else:
            status = SUCCESS
        return Simulation(
            run_id=self.run["id"],
            status=status,
            outcome=result,
            steps=[self.entries[k] for k in graph.order if k in self.entries],
            rows=[self.rows[k] for k in graph.order],
            started_at=self.subject.start,
            ended_at=self.now,
            stopped=self.stopped,
        )

    def _start_of(self, key: str) -> datetime:
        """When a step starts: when the last of its dependencies ended (or the run started)."""
        deps = self.loaded.graph.deps[key]
        return max(
            (self.done_at[d.step] for d in deps if d.step in self.done_at),
            default=self.subject.start,
        )

    def _step(self, key: str) -> None:
        step = self.defs[key]
        started = self.now
        scope = build_scope(
            self.run,
            self.loaded.definition,
            self.loaded.graph,
            self.rows,
            self.now,
            self.subject.contact,
        )
        try:
            # One budget per simulated attempt, as the engine gives a real one.
            with sandbox.using(sandbox.Budget()):
                prepared = prepare(step, scope, self.now, attempt=1)
                ctx = prepared.ctx
                ctx.run = self.run
                ctx.conn = self.conn  # templates are read through it; simulate writes nothing
                ctx.extra["template_cache"] = self.template_cache
                if step.type == "wait_for_event":
                    result = self._wait(key, ctx)
                else:
                    result = self._simulate(key, prepared.action.simulate, ctx)
        except StepError as exc:
            self._fail(key, started, exc)
            return
        except (ExpressionTimeout, ExpressionTooLarge) as exc:
            self._fail(key, started, StepError(exc.detail, retryable=False, code=exc.code))
            return
        except Exception as exc:  # an action bug fails this contact's result, not the day
            self._fail(key, started, StepError(f"{type(exc).__name__}: {exc}", code="action_error"))
            return
        if result is not None:
            self._complete(key, started, result)

    def _simulate(self, key: str, simulate: Any, ctx: ActionContext) -> ActionResult | None:
        result: ActionResult = simulate(ctx)
        if result.park:
            self._stop(key, self.now, None, "would wait with no end")
            return None
        if result.park_until is not None:
            if result.park_until > self.range_end:
                self._stop(key, self.now, result.park_until, "would wait past the range")
                return None
            # The virtual clock jumps to the wake-up, then the action finishes as if woken.
            self.now = max(self.now, result.park_until)
            ctx.now, ctx.resumed, ctx.wake_at = self.now, True, result.park_until
            result = simulate(ctx)
        return result

    def _wait(self, key: str, ctx: ActionContext) -> ActionResult | None:
        """Look in stored history for the awaited event, from the virtual time to the timeout."""
        settings = ctx.settings
        assert isinstance(settings, WaitForEventSettings)
        timeout = ctx.step.timeout
        deadline = self.now + timeout if timeout is not None else None
        look_until = min(deadline, self.range_end) if deadline is not None else self.range_end
        since = self.now - (settings.lookback or timedelta(0))
        contact_id = self.run["contact_id"]
        found = None
        if contact_id is not None:  # history is per contact: no contact, nothing to find
            for event in self.history.events(settings.event, contact_id, since, look_until):
                if self._matches(settings.match, ctx.scope, event):
                    found = event
                    break
        if found is not None:
            self.now = max(self.now, found["occurred_at"])
            return ActionResult(output=event_output(found), branch=RECEIVED)
        if deadline is None or deadline > self.range_end:
            self._stop(key, self.now, deadline, "no matching event before the range's end")
            return None
        self.now = deadline
        return ActionResult(
            output={"timed_out_at": iso(deadline), "timeout_at": iso(deadline)}, branch=TIMED_OUT
        )

    @staticmethod
    def _matches(match: str | None, scope: Mapping[str, Any], event: Mapping[Any, Any]) -> bool:
        if not match:
            return True
        try:
            return evaluate_bool(match, {**scope, "event": event_output(event)})
        except (ExpressionTimeout, ExpressionTooLarge):
            raise  # as the engine: a breach of the step's budget fails it
        except ExpressionError:  # as the engine: an event the match cannot judge is not it
            return False


def simulate_run(
    conn: Connection,
    *,
    tenant_id: str,
    automation: Mapping[str, Any],
    loaded: LoadedDefinition,
    subject: Subject,
    range_end: datetime,
    template_cache: dict[Any, Any] | None = None,
    history: EventHistory | None = None,
) -> tuple[Simulation, dict[str, Any]]:
    """Simulate one run; return it and the (partial) run row the scope saw.

    ``template_cache`` is shared by the simulations of one day, so each
    template is looked up once per day rather than once per contact; so is
    ``history``, which reads the day's stored events in bulk for the waits.
    """
    if history is None:
        contact = subject.contact
        history = EventHistory(tenant_id, [str(contact["id"])] if contact else [], conn)
    walk = _Walk(conn, tenant_id, automation, loaded, subject, range_end, history)
    walk.template_cache = template_cache if template_cache is not None else {}
    return walk.walk(), walk.run
