"""Run and step statuses, and the transitions allowed between them.

The tables here are the single written form of the state machine; the engine
checks every change against them, and ``docs/state-machine.md`` draws them.
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    """Status of a run."""

    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    COMPLETED = "completed"
    COMPLETED_WITH_ERRORS = "completed-with-errors"
    FAILED = "failed"
    EXHAUSTED = "exhausted"
    TIMED_OUT = "timed-out"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """True for the six statuses a run never leaves."""
        return self in TERMINAL_RUN_STATUSES


class StepStatus(StrEnum):
    """Status of one step inside a run."""

    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """True once the step will not change again."""
        return self in TERMINAL_STEP_STATUSES


class AttemptStatus(StrEnum):
    """Outcome of one attempt at executing a step."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    LOST = "lost"  # the worker holding it died or lost its lease
    CANCELLED = "cancelled"


TERMINAL_RUN_STATUSES = frozenset(
    {
        RunStatus.COMPLETED,
        RunStatus.COMPLETED_WITH_ERRORS,
        RunStatus.FAILED,
        RunStatus.EXHAUSTED,
        RunStatus.TIMED_OUT,
        RunStatus.CANCELLED,
    }
)
TERMINAL_STEP_STATUSES = frozenset(
    {StepStatus.COMPLETED, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELLED}
)
CANCELLABLE_RUN_STATUSES = frozenset({RunStatus.PENDING, RunStatus.RUNNING, RunStatus.WAITING})

_R = RunStatus
RUN_TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    # pending -> failed: its concurrency key cannot be evaluated, so it can never start
    _R.PENDING: frozenset({_R.RUNNING, _R.CANCELLED, _R.TIMED_OUT, _R.FAILED}),
    _R.RUNNING: frozenset({_R.WAITING, *TERMINAL_RUN_STATUSES}),
    _R.WAITING: frozenset({_R.RUNNING, *TERMINAL_RUN_STATUSES}),
    **{s: frozenset() for s in TERMINAL_RUN_STATUSES},
}

_S = StepStatus
STEP_TRANSITIONS: dict[StepStatus, frozenset[StepStatus]] = {
    _S.PENDING: frozenset({_S.RUNNING, _S.WAITING, _S.SKIPPED, _S.CANCELLED, _S.COMPLETED}),
    # running -> pending: an attempt failed and the step waits for its retry
    _S.RUNNING: frozenset({_S.COMPLETED, _S.FAILED, _S.PENDING, _S.WAITING, _S.CANCELLED}),
    _S.WAITING: frozenset({_S.RUNNING, _S.COMPLETED, _S.FAILED, _S.CANCELLED}),
    **{s: frozenset() for s in TERMINAL_STEP_STATUSES},
}


class InvalidTransition(ValueError):
    """A status change that the state machine does not allow."""


def check_run_transition(old: RunStatus, new: RunStatus) -> None:
    """Raise ``InvalidTransition`` unless a run may go from ``old`` to ``new``."""
    if old != new and new not in RUN_TRANSITIONS[old]:
        raise InvalidTransition(f"run cannot go from {old} to {new}")


def check_step_transition(old: StepStatus, new: StepStatus) -> None:
    """Raise ``InvalidTransition`` unless a step may go from ``old`` to ``new``."""
    if old != new and new not in STEP_TRANSITIONS[old]:
        raise InvalidTransition(f"step cannot go from {old} to {new}")
