"""Graph evaluation: a pure function from step states to what happens next.

Shared by the engine and the dry-run simulator. A step is *ready* when it is
pending and every dependency is met; it is *skipped* when a dependency can no
longer be met (the dependency was skipped or cancelled, took another branch,
or failed without ``continue_on_error``) or a filter halted the run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from conveyor.domain.definition import Dependency, Graph
from conveyor.domain.status import RunStatus, StepStatus


@dataclass(frozen=True)
class StepState:
    """What graph evaluation needs to know of one step run."""

    status: StepStatus = StepStatus.PENDING
    branch: str | None = None
    halted: bool = False  # a filter that evaluated false
    continue_on_error: bool = False
    failure: str | None = None  # "error", "exhausted" or "timeout" once failed


# The state of a step with no state yet; shared, since building a frozen
# dataclass per lookup was a measurable part of every evaluation.
_PENDING = StepState()


@dataclass(frozen=True)
class Evaluation:
    """The outcome of one evaluation."""

    ready: tuple[str, ...]
    skipped: Mapping[str, str] = field(default_factory=dict)  # key -> reason
    cancel: tuple[str, ...] = ()  # parked steps to cancel because the run failed
    finished: bool = False
    outcome: RunStatus | None = None  # set when finished


def _dep_state(dep: Dependency, states: Mapping[str, StepState]) -> bool | None:
    """True if met, False if it can never be met, None if not yet decided."""
    st = states.get(dep.step, _PENDING)
    if st.status == StepStatus.COMPLETED:
        return dep.branch is None or st.branch == dep.branch
    if st.status == StepStatus.FAILED:
        return st.continue_on_error and dep.branch is None
    if st.status in (StepStatus.SKIPPED, StepStatus.CANCELLED):
        return False
    return None


def _skip_reason(dep: Dependency, states: Mapping[str, StepState]) -> str:
    st = states.get(dep.step, _PENDING)
    if st.status == StepStatus.COMPLETED and dep.branch is not None:
        return f"{dep.step} took branch {st.branch!r}, not {dep.branch!r}"
    return f"dependency {dep.step} is {st.status}"


def evaluate(graph: Graph, states: Mapping[str, StepState]) -> Evaluation:
    """Decide which steps are ready, which must be skipped, and whether the run is done."""
    current = dict(states)
    skipped: dict[str, str] = {}
    halter = next((k for k in graph.order if current.get(k, _PENDING).halted), None)
    fatal = next(
        (
            k
            for k in graph.order
            if current.get(k, _PENDING).status == StepStatus.FAILED
            and not current[k].continue_on_error
        ),
        None,
    )
    ready: list[str] = []
    for key in graph.order:  # topological, so skips cascade in one pass
        st = current.get(key, _PENDING)
        if st.status != StepStatus.PENDING:
            continue
        reason: str | None = None
        if halter is not None:
            reason = f"run halted by filter {halter}"
        elif fatal is not None:
            reason = f"run failed at {fatal}"
        else:
            verdicts = [(d, _dep_state(d, current)) for d in graph.deps[key]]
            unmet = next((d for d, v in verdicts if v is False), None)
            if unmet is not None:
                reason = _skip_reason(unmet, current)
            elif all(v for _, v in verdicts):
                ready.append(key)
        if reason is not None:
            skipped[key] = reason
            current[key] = StepState(status=StepStatus.SKIPPED)
    cancel: tuple[str, ...] = ()
    if fatal is not None or halter is not None:
        # A fatal failure or a halting filter ends the run: parked steps (delays,
        # waits) are cancelled rather than left to hold it open until their timers fire.
        cancel = tuple(
            k for k in graph.order if current.get(k, _PENDING).status == StepStatus.WAITING
        )
        for k in cancel:
            current[k] = StepState(status=StepStatus.CANCELLED)
    live = [k for k in graph.order if not current.get(k, _PENDING).status.terminal]
    if live or ready:
        return Evaluation(ready=tuple(ready), skipped=skipped, cancel=cancel)
    return Evaluation(
        ready=(), skipped=skipped, cancel=cancel, finished=True, outcome=outcome(current)
    )


def outcome(states: Mapping[str, StepState]) -> RunStatus:
    """The terminal run status implied by a set of finished step states."""
    failures = [s for s in states.values() if s.status == StepStatus.FAILED]
    fatal = [s for s in failures if not s.continue_on_error]
    if fatal:
        kind = fatal[0].failure
        if kind == "timeout":
            return RunStatus.TIMED_OUT
        if kind == "exhausted":
            return RunStatus.EXHAUSTED
        return RunStatus.FAILED
    if failures:
        return RunStatus.COMPLETED_WITH_ERRORS
    return RunStatus.COMPLETED
