"""The run page's waterfall: where each attempt's bars go, queue delay apart from running."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from conveyor.web.waterfall import rows

T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)


def at(seconds: float | None) -> str | None:
    return None if seconds is None else (T0 + timedelta(seconds=seconds)).isoformat()


def step(key: str, status: str, attempts: list[tuple[float, float | None, str]], **kw: Any) -> Any:
    return {
        "key": key,
        "status": status,
        "depends_on": kw.get("depends_on", []),
        "reused_from": kw.get("reused_from"),
        "started_at": at(attempts[0][0]) if attempts else at(kw.get("started")),
        "completed_at": at(kw.get("completed")),
        "attempts": [
            {"attempt": i + 1, "started_at": at(s), "ended_at": at(e), "status": st}
            for i, (s, e, st) in enumerate(attempts)
        ],
    }


def run(*steps: Any, completed: float | None = 10.0) -> dict[str, Any]:
    return {"created_at": at(0), "started_at": at(1), "completed_at": at(completed), "steps": steps}


def test_queue_delay_and_retry_backoff_are_apart_from_running() -> None:
    detail = run(
        step("a", "completed", [(1, 2, "completed")], completed=2),
        step(
            "b",
            "completed",
            [(3, 4, "failed"), (6, 10, "completed")],
            depends_on=["a"],
            completed=10,
        ),
    )
    a, b = rows(detail, T0 + timedelta(seconds=20))
    # The run waited 1 s for a worker: queue delay of its first step.
    assert [(x.kind, x.x, x.width) for x in a.bars] == [("queue", 0.0, 10.0), ("run", 10.0, 10.0)]
    assert (a.queue_seconds, a.run_seconds) == (1.0, 1.0)
    # b could start when a ended (2 s), started at 3; its retry waited 2 s after the failure.
    assert [(x.kind, x.x, x.width) for x in b.bars] == [
        ("queue", 20.0, 10.0),
        ("failed", 30.0, 10.0),
        ("queue", 40.0, 20.0),
        ("run", 60.0, 40.0),
    ]
    assert (b.queue_seconds, b.run_seconds) == (3.0, 5.0)


def test_an_unfinished_run_spans_until_now_and_a_parked_step_is_waiting() -> None:
    detail = run(step("pause", "waiting", [(0, None, "running")]), completed=None)
    (pause,) = rows(detail, T0 + timedelta(seconds=4))
    assert [(x.kind, x.x, x.width) for x in pause.bars] == [("wait", 0.0, 100.0)]


def test_reused_steps_are_a_mark_and_untouched_steps_have_no_bar() -> None:
    detail = run(
        step("old", "completed", [], reused_from="0193", started=-50, completed=-40),
        step("later", "pending", []),
    )
    old, later = rows(detail, T0 + timedelta(seconds=20))
    assert [x.kind for x in old.bars] == ["reused"]
    assert old.bars[0].x == 0.0
    assert later.bars == []
    assert (later.queue_seconds, later.run_seconds) == (None, None)
