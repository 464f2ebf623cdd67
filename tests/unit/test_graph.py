"""Graph evaluation: from step states to ready steps, skips, cancellations and the outcome."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from conveyor.actions.registry import step_type_specs
from conveyor.domain.definition import Graph, build_graph, parse_definition
from conveyor.domain.graph import StepState, evaluate, outcome
from conveyor.domain.status import RunStatus, StepStatus

PENDING = StepState()
RUNNING = StepState(status=StepStatus.RUNNING)
WAITING = StepState(status=StepStatus.WAITING)
DONE = StepState(status=StepStatus.COMPLETED)
SKIPPED = StepState(status=StepStatus.SKIPPED)
CANCELLED = StepState(status=StepStatus.CANCELLED)
HALTED = StepState(status=StepStatus.COMPLETED, halted=True)
FAILED = StepState(status=StepStatus.FAILED, failure="error")
EXHAUSTED = StepState(status=StepStatus.FAILED, failure="exhausted")
TIMED_OUT = StepState(status=StepStatus.FAILED, failure="timeout")
FAILED_OK = StepState(status=StepStatus.FAILED, failure="error", continue_on_error=True)


def took(branch: str) -> StepState:
    return StepState(status=StepStatus.COMPLETED, branch=branch)


def _s(key: str, *deps: str, kind: str = "set") -> dict[str, Any]:
    step: dict[str, Any] = {"key": key, "type": kind, "depends_on": list(deps)}
    if kind == "set":
        step["vars"] = {}
    elif kind in ("condition", "filter"):
        step["expression"] = "true"
    elif kind == "delay":
        step["duration"] = "PT1M"
    return step


def _graph(*steps: dict[str, Any]) -> Graph:
    return build_graph(parse_definition({"name": "g", "steps": list(steps)}, step_type_specs()))


LINEAR = _graph(_s("a"), _s("b", "a"), _s("c", "b"))
#        cond --true--> yes -> yes2
#             --false-> no  -> no2
#        cond --------> always (either branch)
BRANCHES = _graph(
    _s("cond", kind="condition"),
    _s("yes", "cond.true"),
    _s("yes2", "yes"),
    _s("no", "cond.false"),
    _s("no2", "no"),
    _s("always", "cond"),
)
#        a -> b -> d ;  a -> c -> d
DIAMOND = _graph(_s("a"), _s("b", "a"), _s("c", "a"), _s("d", "b", "c"))
#        a -> gate(filter) -> b -> c
FILTERED = _graph(_s("a"), _s("gate", "a", kind="filter"), _s("b", "gate"), _s("c", "b"))
#        a -> (slow: delay) and (work) ; after(slow, work)
HALT_PARALLEL = _graph(
    _s("a"), _s("slow", "a", kind="delay"), _s("gate", "a", kind="filter"), _s("after", "gate")
)
PARALLEL = _graph(
    _s("a"), _s("slow", "a", kind="delay"), _s("work", "a"), _s("after", "slow", "work")
)


@dataclass(frozen=True)
class Case:
    id: str
    graph: Graph
    states: dict[str, StepState]
    ready: tuple[str, ...] = ()
    skipped: frozenset[str] = frozenset()
    cancel: tuple[str, ...] = ()
    outcome: RunStatus | None = None  # None: the run is not finished
    reasons: dict[str, str] = field(default_factory=dict)  # substrings of skip reasons


CASES = [
    Case("linear: nothing done, the root is ready", LINEAR, {}, ready=("a",)),
    Case("linear: explicit pending states", LINEAR, {"a": PENDING, "b": PENDING}, ready=("a",)),
    Case("linear: first running, nothing else ready", LINEAR, {"a": RUNNING}),
    Case("linear: first done, second ready", LINEAR, {"a": DONE}, ready=("b",)),
    Case("linear: parked step keeps the run open", LINEAR, {"a": DONE, "b": WAITING}),
    Case(
        "linear: all done",
        LINEAR,
        {"a": DONE, "b": DONE, "c": DONE},
        outcome=RunStatus.COMPLETED,
    ),
    Case(
        "branch true: the false side is skipped, cascading",
        BRANCHES,
        {"cond": took("true")},
        ready=("yes", "always"),
        skipped=frozenset({"no", "no2"}),
        reasons={"no": "cond took branch 'true', not 'false'", "no2": "dependency no is skipped"},
    ),
    Case(
        "branch false: the true side is skipped, cascading",
        BRANCHES,
        {"cond": took("false")},
        ready=("no", "always"),
        skipped=frozenset({"yes", "yes2"}),
    ),
    Case(
        "branch true, finished: skipped steps count as done",
        BRANCHES,
        {"cond": took("true"), "yes": DONE, "yes2": DONE, "always": DONE},
        skipped=frozenset({"no", "no2"}),
        outcome=RunStatus.COMPLETED,
    ),
    Case(
        "branch already skipped earlier: finishes without re-skipping",
        BRANCHES,
        {
            "cond": took("false"),
            "yes": SKIPPED,
            "yes2": SKIPPED,
            "no": DONE,
            "no2": DONE,
            "always": DONE,
        },
        outcome=RunStatus.COMPLETED,
    ),
    Case("diamond: root done, both sides ready", DIAMOND, {"a": DONE}, ready=("b", "c")),
    Case(
        "diamond: the join waits for both sides",
        DIAMOND,
        {"a": DONE, "b": DONE, "c": RUNNING},
    ),
    Case(
        "diamond: both sides done, the join is ready",
        DIAMOND,
        {"a": DONE, "b": DONE, "c": DONE},
        ready=("d",),
    ),
    Case(
        "diamond: one side skipped skips the join",
        DIAMOND,
        {"a": DONE, "b": SKIPPED, "c": DONE},
        skipped=frozenset({"d"}),
        outcome=RunStatus.COMPLETED,
    ),
    Case(
        "filter halts: the rest is skipped and the run completes",
        FILTERED,
        {"a": DONE, "gate": HALTED},
        skipped=frozenset({"b", "c"}),
        outcome=RunStatus.COMPLETED,
        reasons={"b": "run halted by filter gate", "c": "run halted by filter gate"},
    ),
    Case(
        "filter halts: a parked sibling is cancelled, not left to hold the run open",
        HALT_PARALLEL,
        {"a": DONE, "slow": WAITING, "gate": HALTED},
        skipped=frozenset({"after"}),
        cancel=("slow",),
        outcome=RunStatus.COMPLETED,
    ),
    Case(
        "filter passes: the run goes on",
        FILTERED,
        {"a": DONE, "gate": DONE},
        ready=("b",),
    ),
    Case(
        "continue_on_error: downstream still runs",
        LINEAR,
        {"a": FAILED_OK},
        ready=("b",),
    ),
    Case(
        "continue_on_error: the run ends completed-with-errors",
        LINEAR,
        {"a": FAILED_OK, "b": DONE, "c": DONE},
        outcome=RunStatus.COMPLETED_WITH_ERRORS,
    ),
    Case(
        "continue_on_error does not satisfy a branch dependency",
        BRANCHES,
        {"cond": StepState(status=StepStatus.FAILED, continue_on_error=True, failure="error")},
        ready=("always",),
        skipped=frozenset({"yes", "yes2", "no", "no2"}),
    ),
    Case(
        "fatal failure: pending steps are skipped and the run fails",
        LINEAR,
        {"a": FAILED},
        skipped=frozenset({"b", "c"}),
        outcome=RunStatus.FAILED,
        reasons={"b": "run failed at a", "c": "run failed at a"},
    ),
    Case(
        "fatal failure: parked steps are cancelled",
        PARALLEL,
        {"a": DONE, "slow": WAITING, "work": FAILED},
        skipped=frozenset({"after"}),
        cancel=("slow",),
        outcome=RunStatus.FAILED,
    ),
    Case(
        "fatal failure: a running sibling keeps the run open",
        PARALLEL,
        {"a": DONE, "slow": RUNNING, "work": FAILED},
        skipped=frozenset({"after"}),
    ),
    Case(
        "fatal failure skips even steps whose dependencies are met",
        PARALLEL,
        {"a": DONE, "work": FAILED},
        skipped=frozenset({"slow", "after"}),
        outcome=RunStatus.FAILED,
    ),
    Case(
        "exhausted: the run is exhausted",
        LINEAR,
        {"a": DONE, "b": EXHAUSTED},
        skipped=frozenset({"c"}),
        outcome=RunStatus.EXHAUSTED,
    ),
    Case(
        "step timeout: the run is timed-out",
        LINEAR,
        {"a": DONE, "b": TIMED_OUT},
        skipped=frozenset({"c"}),
        outcome=RunStatus.TIMED_OUT,
    ),
    Case(
        "cancelled dependency: dependants are skipped",
        LINEAR,
        {"a": CANCELLED},
        skipped=frozenset({"b", "c"}),
        outcome=RunStatus.COMPLETED,
        reasons={"b": "dependency a is cancelled"},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_evaluate(case: Case) -> None:
    result = evaluate(case.graph, case.states)
    assert result.ready == case.ready
    assert set(result.skipped) == case.skipped
    assert result.cancel == case.cancel
    assert result.finished is (case.outcome is not None)
    assert result.outcome == case.outcome
    for key, fragment in case.reasons.items():
        assert fragment in result.skipped[key]


def test_evaluate_does_not_mutate_its_input() -> None:
    states = {"a": FAILED}
    evaluate(LINEAR, states)
    assert states == {"a": FAILED}


def test_evaluating_the_result_again_converges() -> None:
    """Applying skips and cancels, then evaluating again, changes nothing more."""
    states: dict[str, StepState] = {"a": DONE, "slow": WAITING, "work": FAILED}
    first = evaluate(PARALLEL, states)
    states.update({k: SKIPPED for k in first.skipped})
    states.update({k: CANCELLED for k in first.cancel})
    second = evaluate(PARALLEL, states)
    assert (second.ready, dict(second.skipped), second.cancel) == ((), {}, ())
    assert second.outcome == first.outcome == RunStatus.FAILED


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ({}, RunStatus.COMPLETED),
        ({"a": DONE, "b": SKIPPED, "c": CANCELLED}, RunStatus.COMPLETED),
        ({"a": DONE, "b": FAILED_OK}, RunStatus.COMPLETED_WITH_ERRORS),
        ({"a": FAILED}, RunStatus.FAILED),
        ({"a": StepState(status=StepStatus.FAILED)}, RunStatus.FAILED),
        ({"a": EXHAUSTED}, RunStatus.EXHAUSTED),
        ({"a": TIMED_OUT}, RunStatus.TIMED_OUT),
        ({"a": FAILED_OK, "b": TIMED_OUT}, RunStatus.TIMED_OUT),
        (
            {"a": StepState(status=StepStatus.FAILED, failure="timeout", continue_on_error=True)},
            RunStatus.COMPLETED_WITH_ERRORS,
        ),
    ],
)
def test_outcome(states: dict[str, StepState], expected: RunStatus) -> None:
    assert outcome(states) == expected
