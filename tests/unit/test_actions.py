"""The built-in actions, called the way the engine calls them: ``execute`` and ``simulate``."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from conveyor.actions.base import ActionContext, ActionResult, RetryableError, StepError
from conveyor.actions.registry import get_action, registry, step_type_specs
from conveyor.domain.definition import StepDef
from conveyor.domain.egress import EgressPolicy
from conveyor.net.http import EgressClient, HttpLimits

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SCOPE: dict[str, Any] = {
    "trigger": {"payload": {"total": 120}},
    "vars": {"plan": "pro"},
}


def _ctx(step_type: str, scope: dict[str, Any] | None = None, **settings: Any) -> ActionContext:
    step = StepDef.model_validate({"key": "s", "type": step_type, **settings})
    model = get_action(step_type).settings_model.model_validate(step.settings)
    return ActionContext(step=step, settings=model, scope=scope or SCOPE, now=NOW)


def _both(step_type: str, ctx: ActionContext) -> ActionResult:
    """Execute for real and simulate; for these actions the two must agree."""
    action = get_action(step_type)
    executed = asyncio.run(action.execute(ctx))
    assert action.simulate(ctx) == executed
    return executed


def test_the_registry_holds_the_built_in_step_types() -> None:
    assert set(registry()) >= {"set", "condition", "filter", "delay", "http_request"}
    specs = step_type_specs()
    assert specs["condition"].branches == frozenset({"true", "false"})
    assert specs["filter"].branches == frozenset()
    assert specs["set"].settings_model is get_action("set").settings_model
    with pytest.raises(KeyError):
        get_action("send_fax")


def test_set_outputs_its_vars() -> None:
    result = _both("set", _ctx("set", vars={"plan": "pro", "n": 2, "nested": {"a": [1]}}))
    assert result == ActionResult(output={"plan": "pro", "n": 2, "nested": {"a": [1]}})


@pytest.mark.parametrize(
    ("expression", "branch"),
    [
        ("trigger.payload.total > 100", "true"),
        ("trigger.payload.total > 500", "false"),
        ("vars.plan == 'pro'", "true"),
        ("[]", "false"),
    ],
)
def test_condition_takes_a_branch(expression: str, branch: str) -> None:
    result = _both("condition", _ctx("condition", expression=expression))
    assert result.branch == branch
    assert result.output == {"result": branch == "true"}
    assert result.halt is False


@pytest.mark.parametrize(("expression", "passed"), [("vars.plan == 'pro'", True), ("false", False)])
def test_filter_halts_when_false(expression: str, passed: bool) -> None:
    result = _both("filter", _ctx("filter", expression=expression))
    assert result.output == {"passed": passed}
    assert result.halt is (not passed)
    assert result.branch is None


@pytest.mark.parametrize("step_type", ["condition", "filter"])
def test_an_expression_that_fails_is_a_non_retryable_step_error(step_type: str) -> None:
    ctx = _ctx(step_type, expression="1 / 0")
    with pytest.raises(StepError) as info:
        asyncio.run(get_action(step_type).execute(ctx))
    assert info.value.code == "expression_error"
    assert info.value.retryable is False
    assert "ZeroDivisionError" in info.value.message


def test_a_condition_on_an_undefined_variable_is_a_step_error() -> None:
    ctx = _ctx("condition", expression="trigger.payload.missing")
    with pytest.raises(StepError) as info:
        asyncio.run(get_action("condition").execute(ctx))
    assert info.value.code == "expression_error"


def test_delay_parks_until_the_duration_has_passed() -> None:
    result = _both("delay", _ctx("delay", duration="PT90M"))
    assert result == ActionResult(park_until=NOW + timedelta(minutes=90))


def test_delay_parks_until_a_time() -> None:
    until = NOW + timedelta(days=1)
    result = _both("delay", _ctx("delay", until=until.isoformat()))
    assert result.park_until == until


@pytest.mark.parametrize("settings", [{"duration": "PT0S"}, {"until": "2026-01-01T00:00:00Z"}])
def test_a_delay_already_over_completes_at_once(settings: dict[str, Any]) -> None:
    result = _both("delay", _ctx("delay", **settings))
    assert result.park_until is None
    assert "waited_until" in result.output


def test_a_resumed_delay_completes() -> None:
    ctx = _ctx("delay", duration="PT1H")
    wake = NOW + timedelta(hours=1)
    ctx.resumed, ctx.wake_at, ctx.now = True, wake, wake + timedelta(seconds=3)
    result = _both("delay", ctx)
    assert result == ActionResult(output={"waited_until": wake.isoformat().replace("+00:00", "Z")})


def _http(handler: Any, **settings: Any) -> ActionContext:
    def streamed(request: httpx.Request) -> httpx.Response:
        # As a network answer comes: a stream not yet read (the client reads it under its cap).
        answer = handler(request)
        return httpx.Response(
            answer.status_code, headers=answer.headers, stream=httpx.ByteStream(answer.content)
        )

    ctx = _ctx("http_request", **settings)
    limits = HttpLimits(timeout=30, max_timeout=300, max_bytes=1 << 20)
    ctx.http = EgressClient(EgressPolicy(), limits, transport=httpx.MockTransport(streamed))
    return ctx


async def _execute_http(ctx: ActionContext) -> ActionResult:
    assert ctx.http is not None
    async with ctx.http:
        return await get_action("http_request").execute(ctx)


def test_http_request_sends_json_and_decodes_the_answer() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"ok": True})

    ctx = _http(
        handler,
        method="POST",
        url="https://crm.example/hooks/c-9",
        headers={"X-Token": "t"},
        json={"order": "o-1", "total": 120},
    )
    result = asyncio.run(_execute_http(ctx))
    assert result.output["status"] == 201
    assert result.output["json"] == {"ok": True}
    (request,) = seen
    assert (request.method, str(request.url)) == ("POST", "https://crm.example/hooks/c-9")
    assert request.headers["x-token"] == "t"
    assert json.loads(request.content) == {"order": "o-1", "total": 120}


def test_http_request_keeps_a_text_body() -> None:
    ctx = _http(lambda r: httpx.Response(200, text="pong"), url="https://x.example/ping")
    assert asyncio.run(_execute_http(ctx)).output["text"] == "pong"


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(500, True), (503, True), (429, True), (408, True), (404, False), (400, False)],
)
def test_http_request_unexpected_status_fails_the_attempt(status: int, retryable: bool) -> None:
    ctx = _http(lambda r: httpx.Response(status, text="nope"), url="https://x.example/")
    with pytest.raises(StepError) as info:
        asyncio.run(_execute_http(ctx))
    assert info.value.code == "unexpected_status"
    assert info.value.retryable is retryable
    assert info.value.details == {"status": status, "body": "nope"}


def test_http_request_expect_status_overrides_2xx() -> None:
    ok = _http(lambda r: httpx.Response(404), url="https://x.example/", expect_status=[404])
    assert asyncio.run(_execute_http(ok)).output["status"] == 404
    bad = _http(lambda r: httpx.Response(200), url="https://x.example/", expect_status=[204])
    with pytest.raises(StepError):
        asyncio.run(_execute_http(bad))


def test_http_request_transport_errors_are_retryable() -> None:
    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    for handler, code in ((timeout, "http_timeout"), (refused, "http_error")):
        with pytest.raises(StepError) as info:
            asyncio.run(_execute_http(_http(handler, url="https://x.example/")))
        assert (info.value.code, info.value.retryable) == (code, True)


def test_http_request_without_a_client_is_a_final_error() -> None:
    ctx = _ctx("http_request", url="https://x.example/")
    with pytest.raises(StepError) as info:
        asyncio.run(get_action("http_request").execute(ctx))
    assert info.value.retryable is False


def test_http_request_simulate_describes_and_sends_nothing() -> None:
    ctx = _ctx("http_request", method="PUT", url="https://x.example/a", body="raw")
    result = get_action("http_request").simulate(ctx)
    assert result.output == {
        "would_request": {
            "method": "PUT",
            "url": "https://x.example/a",
            "headers": {},
            "body": "raw",
        }
    }


def test_step_errors_serialise_with_their_code() -> None:
    error = StepError("boom", code="custom", retryable=False, details={"a": 1})
    assert error.to_json() == {"code": "custom", "message": "boom", "details": {"a": 1}}
    assert StepError("plain").to_json() == {"code": "step_error", "message": "plain"}
    retry = RetryableError("later", delay=timedelta(seconds=5))
    assert (retry.code, retry.retryable, retry.delay) == (
        "retry_requested",
        True,
        timedelta(seconds=5),
    )
