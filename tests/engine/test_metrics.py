"""The engine's metrics move with what the rounds commit: ends, attempts, lost leases, poison."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from prometheus_client import REGISTRY

from conveyor import metrics
from conveyor.domain.ids import new_id
from conveyor.engine.batch import advance_batch
from conveyor.engine.control import Actor, cancel_run
from conveyor.engine.round_state import Limits
from conveyor.engine.rounds import Item
from conveyor.store import tasks as task_store
from tests.engine.conftest import Harness

CALL = {"key": "call", "type": "http_request", "url": "http://127.0.0.1:9/never"}


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Moves:
    """Samples before and after, to assert by how much each moved."""

    def __init__(self, *series: tuple[str, dict[str, str]]) -> None:
        self.series = series
        self.before = [sample(n, **labels) for n, labels in series]

    def __call__(self) -> list[float]:
        return [
            sample(n, **labels) - b for (n, labels), b in zip(self.series, self.before, strict=True)
        ]


def _claim(harness: Harness, owner: str) -> tuple[str, dict[str, object]]:
    token, now = new_id(), harness.clock.now()
    with harness.db.transaction() as conn:
        (row,) = task_store.claim(
            conn,
            owner=owner,
            token=token,
            now=now,
            lease_until=now + timedelta(seconds=30),
            limit=1,
        )
    return token, dict(row)


def _limits(owner: str, poison_after: int = 100) -> Limits:
    return Limits(owner, timedelta(seconds=30), 1 << 20, poison_after=poison_after)


@pytest.fixture
def automation_label() -> Iterator[None]:
    metrics.configure(automation_label=True)
    yield
    metrics.configure(automation_label=False)


def test_ends_and_attempts_are_counted_with_the_automation_label(
    harness: Harness, automation_label: None
) -> None:
    harness.automation({"name": "labelled", "steps": [{"key": "a", "type": "set", "vars": {}}]})
    moves = Moves(
        ("conveyor_runs_started_total", {"automation": "labelled"}),
        ("conveyor_runs_finished_total", {"status": "completed", "automation": "labelled"}),
        ("conveyor_run_duration_seconds_count", {"status": "completed", "automation": "labelled"}),
        ("conveyor_trigger_to_start_seconds_count", {"automation": "labelled"}),
        ("conveyor_step_attempts_total", {"step_type": "set", "outcome": "succeeded"}),
        ("conveyor_runs_finished_total", {"status": "completed", "automation": ""}),
    )
    harness.trigger("labelled")
    harness.trigger("labelled")
    harness.work()
    assert moves() == [2, 2, 2, 2, 2, 0]


def test_a_stale_commit_counts_a_lost_lease(harness: Harness) -> None:
    harness.automation({"name": "fenced", "steps": [CALL]})
    harness.trigger("fenced")
    token, task = _claim(harness, "worker-a")
    harness.clock.advance(31)  # worker A stalls past its lease; B takes the task
    _claim(harness, "worker-b")
    moves = Moves(("conveyor_lease_losses_total", {}))
    plans = advance_batch(harness.db, [Item(task, token)], harness.clock.now, _limits("worker-a"))  # type: ignore[arg-type]
    assert plans == {}
    assert moves() == [1]


def test_a_poisoned_run_is_counted(harness: Harness) -> None:
    harness.automation({"name": "crashy", "steps": [CALL]})
    harness.trigger("crashy")
    token, task = _claim(harness, "doomed")
    advance_batch(harness.db, [Item(task, token)], harness.clock.now, _limits("doomed", 1))  # type: ignore[arg-type]
    harness.clock.advance(31)  # the worker "died" during the call
    moves = Moves(
        ("conveyor_tasks_poisoned_total", {}),
        ("conveyor_runs_finished_total", {"status": "failed", "automation": ""}),
        ("conveyor_step_attempts_total", {"step_type": "http_request", "outcome": "lost"}),
    )
    token, task = _claim(harness, "next")
    advance_batch(harness.db, [Item(task, token)], harness.clock.now, _limits("next", 1))  # type: ignore[arg-type]
    assert harness.detail(str(task["run_id"]))["last_error"]["code"] == "poisoned"
    assert moves() == [1, 1, 1]


def test_a_cancel_is_counted_without_a_duration_when_the_run_never_started(
    harness: Harness,
) -> None:
    harness.automation({"name": "idle", "steps": [CALL]})
    run_id = harness.trigger("idle")
    moves = Moves(
        ("conveyor_runs_finished_total", {"status": "cancelled", "automation": ""}),
        ("conveyor_run_duration_seconds_count", {"status": "cancelled", "automation": ""}),
    )
    with harness.db.transaction() as conn:
        cancel_run(
            conn,
            harness.tenant,
            run_id,
            actor=Actor("api_key", None),
            reason=None,
            now=harness.clock.now(),
        )
    assert moves() == [1, 0]
