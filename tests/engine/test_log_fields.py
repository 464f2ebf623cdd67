"""What the engine's log lines say: the tenant, run, step and attempt they are about; each run
that ends other than completed leaves one line with its status and error code."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from conveyor.actions.base import ActionContext, ActionResult
from conveyor.actions.registry import get_action
from conveyor.engine.control import Actor, cancel_run
from conveyor.logs import JsonFormatter
from tests.engine.conftest import Harness
from tests.support.http_server import HitServer


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """The JSON lines of every ``conveyor.*`` logger while the test runs."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("conveyor")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield out
    logger.removeHandler(handler)
    logger.setLevel(level)


def _lines(out: io.StringIO, logger: str) -> list[dict[str, Any]]:
    parsed = [json.loads(line) for line in out.getvalue().splitlines()]
    return [line for line in parsed if line["logger"] == logger]


def test_a_line_logged_during_an_attempt_names_its_tenant_run_step_and_attempt(
    harness: Harness, captured: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(ctx: ActionContext) -> ActionResult:
        raise RuntimeError("an action bug")

    # An action with a bug: the worker logs it from inside the attempt.
    monkeypatch.setattr(get_action("http_request"), "execute", broken)
    a = harness.automation(
        {"name": "buggy", "steps": [{"key": "call", "type": "http_request", "url": "http://x"}]}
    )
    run_id = harness.trigger(a)
    harness.work()
    assert harness.detail(run_id)["status"] == "failed"
    (raised,) = _lines(captured, "conveyor.worker")
    assert raised["msg"] == "step call raised"
    assert "RuntimeError: an action bug" in raised["exc"]
    assert raised["tenant_id"] == harness.tenant
    assert raised["run_id"] == run_id
    assert raised["step_key"] == "call"
    assert raised["attempt"] == 1
    (ended,) = _lines(captured, "conveyor.runs")
    assert ended["run_id"] == run_id
    assert ended["status"] == "failed"
    assert ended["error_code"] == "action_error"
    assert ended["level"] == "WARNING"
    assert "an action bug" not in ended["msg"]  # the error's message stays out of the line


def test_each_end_other_than_completed_has_one_line(
    harness: Harness, http_server: HitServer, captured: io.StringIO
) -> None:
    ok = harness.automation({"name": "ok", "steps": [{"key": "s", "type": "set", "vars": {}}]})
    retried = {
        "key": "call",
        "type": "http_request",
        "url": f"{http_server.url}/status/503/x",
        "retry": {"max_attempts": 2, "initial_delay": "PT1S", "jitter": 0},
    }
    doomed = harness.automation({"name": "doomed", "steps": [retried]})
    parked = harness.automation(
        {"name": "parked", "steps": [{"key": "d", "type": "delay", "duration": "PT1H"}]}
    )
    harness.trigger(ok)
    exhausted = harness.trigger(doomed)
    cancelled = harness.trigger(parked)
    harness.work()
    harness.advance(1)
    with harness.db.transaction() as conn:
        cancel_run(
            conn,
            harness.tenant,
            cancelled,
            actor=Actor("api_key", None),
            reason=None,
            now=datetime.now(UTC),
        )
    ended = {line["run_id"]: line for line in _lines(captured, "conveyor.runs")}
    assert set(ended) == {exhausted, cancelled}  # the completed run has none
    assert ended[exhausted]["status"] == "exhausted"
    assert ended[exhausted]["error_code"] == "unexpected_status"
    assert ended[cancelled]["status"] == "cancelled"
    assert ended[cancelled]["level"] == "INFO"
    assert all(line["tenant_id"] == harness.tenant for line in ended.values())
