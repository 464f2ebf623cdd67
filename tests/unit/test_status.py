"""The run and step state machines, checked pair by pair against the contract (DESIGN §3).

The allowed transitions are written out here by hand rather than read from
``conveyor.domain.status``, so a change to the tables has to be made twice, on
purpose.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import pytest

from conveyor.domain.status import (
    CANCELLABLE_RUN_STATUSES,
    RUN_TRANSITIONS,
    STEP_TRANSITIONS,
    TERMINAL_RUN_STATUSES,
    TERMINAL_STEP_STATUSES,
    InvalidTransition,
    RunStatus,
    StepStatus,
    check_run_transition,
    check_step_transition,
)

R = RunStatus
S = StepStatus
RUN_TERMINALS = {
    R.COMPLETED,
    R.COMPLETED_WITH_ERRORS,
    R.FAILED,
    R.EXHAUSTED,
    R.TIMED_OUT,
    R.CANCELLED,
}
ALLOWED_RUN = {
    (R.PENDING, R.RUNNING),
    (R.PENDING, R.CANCELLED),
    (R.PENDING, R.TIMED_OUT),  # the run timeout passes while it waits for a concurrency slot
    (R.PENDING, R.FAILED),  # its concurrency key cannot be evaluated, so it can never start
    (R.RUNNING, R.WAITING),
    (R.WAITING, R.RUNNING),
    *((R.RUNNING, t) for t in RUN_TERMINALS),
    *((R.WAITING, t) for t in RUN_TERMINALS),
}
ALLOWED_STEP = {
    (S.PENDING, S.RUNNING),
    (S.PENDING, S.WAITING),
    (S.PENDING, S.SKIPPED),
    (S.PENDING, S.CANCELLED),
    (S.PENDING, S.COMPLETED),  # reused from an earlier run (retry / replay)
    (S.RUNNING, S.COMPLETED),
    (S.RUNNING, S.FAILED),
    (S.RUNNING, S.PENDING),  # the attempt failed; the step waits for its retry
    (S.RUNNING, S.WAITING),
    (S.RUNNING, S.CANCELLED),
    (S.WAITING, S.RUNNING),
    (S.WAITING, S.COMPLETED),
    (S.WAITING, S.FAILED),
    (S.WAITING, S.CANCELLED),
}

RUN_PAIRS = [(a, b) for a, b in itertools.product(RunStatus, RunStatus) if a != b]
STEP_PAIRS = [(a, b) for a, b in itertools.product(StepStatus, StepStatus) if a != b]


def test_status_values_are_the_wire_names() -> None:
    assert [s.value for s in RunStatus] == [
        "pending",
        "running",
        "waiting",
        "completed",
        "completed-with-errors",
        "failed",
        "exhausted",
        "timed-out",
        "cancelled",
    ]
    assert [s.value for s in StepStatus] == [
        "pending",
        "running",
        "waiting",
        "completed",
        "failed",
        "skipped",
        "cancelled",
    ]


@pytest.mark.parametrize(("old", "new"), RUN_PAIRS, ids=[f"{a}->{b}" for a, b in RUN_PAIRS])
def test_run_transition(old: RunStatus, new: RunStatus) -> None:
    if (old, new) in ALLOWED_RUN:
        check_run_transition(old, new)
    else:
        with pytest.raises(InvalidTransition, match=f"run cannot go from {old} to {new}"):
            check_run_transition(old, new)


@pytest.mark.parametrize(("old", "new"), STEP_PAIRS, ids=[f"{a}->{b}" for a, b in STEP_PAIRS])
def test_step_transition(old: StepStatus, new: StepStatus) -> None:
    if (old, new) in ALLOWED_STEP:
        check_step_transition(old, new)
    else:
        with pytest.raises(InvalidTransition, match=f"step cannot go from {old} to {new}"):
            check_step_transition(old, new)


@pytest.mark.parametrize("status", list(RunStatus))
def test_staying_in_the_same_run_status_is_allowed(status: RunStatus) -> None:
    check_run_transition(status, status)


@pytest.mark.parametrize("status", list(StepStatus))
def test_staying_in_the_same_step_status_is_allowed(status: StepStatus) -> None:
    check_step_transition(status, status)


def test_the_tables_hold_exactly_the_contract() -> None:
    assert {(a, b) for a, targets in RUN_TRANSITIONS.items() for b in targets} == ALLOWED_RUN
    assert {(a, b) for a, targets in STEP_TRANSITIONS.items() for b in targets} == ALLOWED_STEP
    assert set(RUN_TRANSITIONS) == set(RunStatus)
    assert set(STEP_TRANSITIONS) == set(StepStatus)


def test_terminal_statuses() -> None:
    assert TERMINAL_RUN_STATUSES == RUN_TERMINALS
    assert {s for s in RunStatus if s.terminal} == RUN_TERMINALS
    assert TERMINAL_STEP_STATUSES == {S.COMPLETED, S.FAILED, S.SKIPPED, S.CANCELLED}
    assert {s for s in StepStatus if s.terminal} == TERMINAL_STEP_STATUSES
    for status in RUN_TERMINALS:
        assert RUN_TRANSITIONS[status] == frozenset()
    for step_status in TERMINAL_STEP_STATUSES:
        assert STEP_TRANSITIONS[step_status] == frozenset()


def test_exactly_the_live_runs_can_be_cancelled() -> None:
    live = set(RunStatus) - RUN_TERMINALS
    assert CANCELLABLE_RUN_STATUSES == live == {R.PENDING, R.RUNNING, R.WAITING}
    for status in live:
        check_run_transition(status, R.CANCELLED)


def _reachable(start: Any, table: Mapping[Any, frozenset[Any]]) -> set[Any]:
    seen = {start}
    frontier = [start]
    while frontier:
        for nxt in table[frontier.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    return seen


def test_every_status_is_reachable_from_pending() -> None:
    assert _reachable(R.PENDING, RUN_TRANSITIONS) == set(RunStatus)
    assert _reachable(S.PENDING, STEP_TRANSITIONS) == set(StepStatus)
