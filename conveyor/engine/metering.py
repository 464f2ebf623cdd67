"""The engine's metrics, counted from what a batch of rounds committed.

Counted once per batch, after its transaction committed, from the rounds'
own writes (``Round.w``): a round whose commit failed or was left out
(its lease lost, its run changed) counts nothing, and the same label set is
incremented once per batch however many runs share it. Nothing here runs
per step but one tally of a dict already built.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import RowMapping

from conveyor import metrics
from conveyor.domain.status import AttemptStatus, RunStatus

if TYPE_CHECKING:  # conveyor.engine.batch counts through this module
    from conveyor.engine.batch import Evaluated
    from conveyor.engine.round_state import Plan, Round

_TERMINAL = frozenset(s.value for s in RunStatus if s.terminal)


def committed(results: Sequence[tuple[Evaluated, Plan | None]]) -> None:
    """Count what the committed rounds of one batch did (a plan of None: its lease was lost)."""
    lost = 0
    started: Counter[str] = Counter()
    finished: Counter[tuple[str, str]] = Counter()
    attempts: Counter[tuple[str, str]] = Counter()
    for ev, plan in results:
        if plan is None:
            lost += 1
            continue
        rnd = ev.rnd
        if rnd is None or not rnd.w.runs or ev.read is None:
            continue  # nothing of this run was written by this round
        _run(rnd, ev.read, rnd.w.runs[-1], started, finished)
        _attempts(rnd, ev, attempts)
    if lost:
        metrics.LEASE_LOSSES.inc(lost)
    for name, n in started.items():
        metrics.RUNS_STARTED.labels(name).inc(n)
    for (status, name), n in finished.items():
        metrics.RUNS_FINISHED.labels(status, name).inc(n)
    for (step_type, outcome), n in attempts.items():
        metrics.STEP_ATTEMPTS.labels(step_type, outcome).inc(n)


def _run(
    rnd: Round,
    read: RowMapping,
    written: Mapping[str, Any],
    started: Counter[str],
    finished: Counter[tuple[str, str]],
) -> None:
    """A run that started or ended in this round."""
    name = metrics.automation(rnd.loaded.definition.name)
    began: datetime | None = written["started_at"]
    if read["started_at"] is None and began is not None:
        started[name] += 1
        metrics.TRIGGER_TO_START.labels(name).observe(
            max(0.0, (began - read["created_at"]).total_seconds())
        )
    status = str(written["status"])
    if status in _TERMINAL and read["status"] not in _TERMINAL:
        ended(status, name, began, written["completed_at"], written["error"])
        finished[(status, name)] += 1


def ended(
    status: str,
    name: str,
    started_at: datetime | None,
    completed_at: datetime | None,
    error: Mapping[str, Any] | None,
) -> None:
    """A run ended: its duration (if it started) and whether it was poisoned.

    The caller counts ``conveyor_runs_finished_total`` (a batch counts its runs at once).
    """
    if started_at is not None and completed_at is not None:
        seconds = max(0.0, (completed_at - started_at).total_seconds())
        metrics.RUN_DURATION.labels(status, name).observe(seconds)
    if error and error.get("code") == "poisoned":
        metrics.TASKS_POISONED.inc()


def run_cancelled(run: Mapping[str, Any], automation_name: str) -> None:
    """A run was cancelled through the API (outside any worker round)."""
    name = metrics.automation(automation_name)
    status = str(run["status"])
    ended(status, name, run["started_at"], run["completed_at"], run["error"])
    metrics.RUNS_FINISHED.labels(status, name).inc()


def _attempts(rnd: Round, ev: Evaluated, attempts: Counter[tuple[str, str]]) -> None:
    """The attempts this round ended: inline ones it started, external ones it recorded."""
    for a in rnd.w.new_attempts:
        if a["status"] != AttemptStatus.RUNNING:
            step_type = rnd.steps[a["step_key"]]["step_type"]
            attempts[(step_type, str(a["status"]))] += 1
            _duration(step_type, a["started_at"], a["ended_at"])
    if not rnd.w.attempt_changes:
        return
    began = {(o.key, o.attempt): o.started_at for o in ev.item.outcomes}
    for _, key, number, values in rnd.w.attempt_changes:
        step_type = rnd.steps[key]["step_type"]
        attempts[(step_type, str(values["status"]))] += 1
        start = began.get((key, number))  # none for a lost or cancelled attempt
        if start is not None:
            _duration(step_type, start, values["ended_at"])


def _duration(step_type: str, started: datetime | None, ended_at: datetime | None) -> None:
    if started is not None and ended_at is not None:
        seconds = max(0.0, (ended_at - started).total_seconds())
        metrics.ATTEMPT_DURATION.labels(step_type).observe(seconds)
