"""``simulate`` of the send steps: render what would be sent; send nothing, write nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from conveyor.actions.base import ActionContext, StepError
from conveyor.actions.registry import get_action
from conveyor.domain.definition import StepDef
from tests.channels.conftest import SendHarness


def _ctx(harness: SendHarness, step: dict[str, Any], conn: Any, contact: Any) -> ActionContext:
    action = get_action(step["type"])
    settings = {k: v for k, v in step.items() if k not in ("key", "type")}
    return ActionContext(
        step=StepDef.model_validate(step),
        settings=action.settings_model.model_validate(settings),
        scope={"trigger": {"payload": {"n": 7}}, "contact": contact, "vars": {"a": 1}},
        now=datetime(2026, 6, 8, tzinfo=UTC),
        run={"id": "01934a5e-0000-7000-8000-000000000000", "tenant_id": harness.tenant},
        conn=conn,
    )


def test_email_simulation_renders_and_writes_nothing(harness: SendHarness) -> None:
    harness.template("receipt", subject="N {{ trigger.payload.n }}", html="<i>{{ vars.b }}</i>")
    step = {"key": "s", "type": "send_email_template", "template": "receipt", "vars": {"b": "<&>"}}
    with harness.db.read() as conn:
        result = get_action("send_email_template").simulate(
            _ctx(harness, step, conn, {"email": "olivia@example.com"})
        )
    (would,) = result.output["would_send"]
    assert would == {
        "channel": "email",
        "to": "olivia@example.com",
        "subject": "N 7",
        "text": None,
        "html": "<i>&lt;&amp;&gt;</i>",
    }
    assert result.output["template_version"] == 1
    assert harness.messages() == []


def test_push_simulation_lists_every_target(harness: SendHarness) -> None:
    harness.template("p", "push", body="n={{ trigger.payload.n }}")
    step = {"key": "s", "type": "send_push_template", "template": "p"}
    with harness.db.read() as conn:
        result = get_action("send_push_template").simulate(
            _ctx(harness, step, conn, {"push_targets": ["t1", "t2"]})
        )
    assert [(w["to"], w["body"]) for w in result.output["would_send"]] == [
        ("t1", "n=7"),
        ("t2", "n=7"),
    ]
    assert harness.messages() == []


def test_simulation_reports_render_errors_like_execution(harness: SendHarness) -> None:
    harness.template("receipt", subject="{{ nope }}", text="t")
    step = {"key": "s", "type": "send_email_template", "template": "receipt", "to": "a@b.co"}
    with harness.db.read() as conn, pytest.raises(StepError) as info:
        get_action("send_email_template").simulate(_ctx(harness, step, conn, None))
    assert info.value.code == "template_error"
    assert "'nope' is undefined" in info.value.message
