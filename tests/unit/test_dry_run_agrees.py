"""`agrees`: a dry-run result against the real run of that day and contact."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from conveyor.domain.status import RunStatus
from conveyor.dryrun.days import agrees
from conveyor.dryrun.simulate import Simulation

T = datetime(2026, 6, 1, tzinfo=UTC)

Steps = dict[str, tuple[str, str | None]]  # step key -> (status, branch)


def _rows(steps: Steps) -> list[dict[str, Any]]:
    return [
        {"step_key": key, "status": status, "branch_taken": branch}
        for key, (status, branch) in steps.items()
    ]


def _sim(outcome: str, steps: Steps) -> Simulation:
    return Simulation(
        run_id="sim",
        status="success",
        outcome=RunStatus(outcome),
        steps=[],
        rows=_rows(steps),
        started_at=T,
        ended_at=T,
    )


SENT: Steps = {
    "greet": ("completed", None),
    "vip": ("completed", "true"),
    "mail": ("completed", None),
}
PAUSED: Steps = {"greet": ("completed", None), "pause": ("skipped", None)}


@pytest.mark.parametrize(
    ("sim", "real_status", "real_steps", "expected"),
    [
        pytest.param(("completed", SENT), "completed", SENT, True, id="same-everything"),
        pytest.param(("completed", SENT), "running", SENT, None, id="real-run-not-finished"),
        pytest.param(("completed", SENT), "waiting", SENT, None, id="real-run-waiting"),
        pytest.param(
            ("completed", PAUSED),
            "cancelled",
            {"greet": ("completed", None), "pause": ("cancelled", None)},
            False,
            id="real-run-cancelled",
        ),
        pytest.param(
            ("completed", PAUSED),
            "completed",
            {"greet": ("completed", None), "pause": ("cancelled", None)},
            False,
            id="skipped-against-cancelled",
        ),
        pytest.param(
            ("completed", PAUSED),
            "completed",
            {"greet": ("completed", None), "pause": ("completed", None)},
            False,
            id="step-status-differs",
        ),
        pytest.param(
            ("completed", SENT),
            "completed",
            {**SENT, "vip": ("completed", "false"), "mail": ("skipped", None)},
            False,
            id="other-branch",
        ),
        pytest.param(
            ("failed", {"greet": ("completed", None), "mail": ("failed", None)}),
            "exhausted",
            {"greet": ("completed", None), "mail": ("failed", None)},
            False,
            id="failed-against-exhausted",
        ),
        pytest.param(
            ("completed", SENT),
            "timed-out",
            {**SENT, "mail": ("failed", None)},
            False,
            id="real-run-timed-out",
        ),
        pytest.param(
            ("completed", SENT),
            "completed",
            {**SENT, "extra": ("completed", None)},
            True,
            id="a-step-of-another-version-is-not-compared",
        ),
        pytest.param(
            ("completed", {**SENT, "mail": ("skipped", None)}),
            "completed",
            {**SENT, "mail": ("skipped", None)},
            True,
            id="same-skips",
        ),
    ],
)
def test_agrees_only_when_outcome_and_every_step_match(
    sim: tuple[str, Steps], real_status: str, real_steps: Steps, expected: bool | None
) -> None:
    real = {"id": "real", "status": real_status}
    assert agrees(_sim(*sim), real, _rows(real_steps)) is expected  # type: ignore[arg-type]
