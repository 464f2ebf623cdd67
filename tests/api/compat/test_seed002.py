"""Seed 002's `/api/v1/automation-runs`, driven as its document does, on both databases.

The document's example responses are the golden data: every key path of
each exists in the adapter's answer with the same JSON type (or null, for
the fields the document marks optional and Conveyor has no value for).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fastapi.routing import APIRoute

from conveyor.api.app import ROUTERS
from conveyor.engine.worker import Worker
from conveyor.settings import Settings
from conveyor.store.db import Database
from tests.api.conftest import NewKey
from tests.api.helpers import DEFINITION, TestClient, assert_problem, make_client

BASE = "/api/v1/automation-runs"

RUN_EXAMPLE: dict[str, Any] = {
    "automationId": "string",
    "automationVersionId": "string",
    "completedAt": "2019-08-24T14:15:22Z",
    "concurrencyKey": "string",
    "createdAt": "2019-08-24T14:15:22Z",
    "durationSeconds": 0,
    "error": {},
    "externalJobId": "string",
    "id": "string",
    "orchestratorType": "local",
    "startedAt": "2019-08-24T14:15:22Z",
    "status": "pending",
    "tenantId": "string",
    "triggerSourceId": "string",
    "triggerSourceType": "user",
    "triggerType": "manual",
    "updatedAt": "2019-08-24T14:15:22Z",
    "versionNumber": 0,
}
LIST_EXAMPLE: dict[str, Any] = {"items": [RUN_EXAMPLE], "total": 0}
STEPS_EXAMPLE: dict[str, Any] = {
    "automationRunId": "string",
    "completedCount": 0,
    "failedCount": 0,
    "pendingCount": 0,
    "runningCount": 0,
    "steps": [
        {
            "actionRunId": "string",
            "completedAt": "2019-08-24T14:15:22Z",
            "decisionId": "string",
            "dependsOn": ["string"],
            "durationSeconds": 0,
            "error": {},
            "key": "string",
            "name": "string",
            "result": {},
            "resultTruncated": False,
            "startedAt": "2019-08-24T14:15:22Z",
            "status": "string",
        }
    ],
}
# Optional in the document, and null here when Conveyor has no value for them.
NULLABLE = {
    "concurrencyKey",
    "error",
    "externalJobId",
    "decisionId",
    "name",
    "startedAt",
    "completedAt",
    "durationSeconds",
    "triggerSourceId",
}


def _type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def assert_fits(example: Any, answer: Any, path: str = "$") -> None:
    """Every key path of ``example`` is in ``answer``, with the same JSON type."""
    if isinstance(example, dict):
        assert isinstance(answer, dict), path
        for key, value in example.items():
            assert key in answer, f"{path}.{key} missing"
            if answer[key] is None and key in NULLABLE:
                continue
            if key == "result":  # any JSON: a step's output
                continue
            assert_fits(value, answer[key], f"{path}.{key}")
    elif isinstance(example, list):
        assert isinstance(answer, list), path
        # The examples' lists of runs and steps must have something to check.
        assert answer or path.endswith("dependsOn"), f"{path} is empty"
        for item in answer:
            assert_fits(example[0], item, f"{path}[]")
    else:
        assert _type(answer) == _type(example), f"{path}: {answer!r}"


class Vai:
    """A client of the document, plus Conveyor's own API to set things up."""

    def __init__(self, db: Database, client: TestClient, token: str) -> None:
        self.db = db
        self.client = client
        self.auth = {"Authorization": f"Bearer {token}"}
        client.post("/api/v1/automations", json=DEFINITION, headers=self.auth).raise_for_status()
        failing = {
            "name": "breaks",
            "trigger": {"type": "manual"},
            "steps": [
                {"key": "greet", "type": "set", "vars": {"greeting": "hello"}},
                {"key": "boom", "type": "condition", "expression": "vars.nope.deeper > 1"},
            ],
        }
        client.post("/api/v1/automations", json=failing, headers=self.auth).raise_for_status()

    def trigger(self, name: str = "order-follow-up") -> str:
        response = self.client.post(
            f"/api/v1/automations/{name}/trigger", json={"payload": {}}, headers=self.auth
        )
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    def work(self) -> None:
        settings = Settings(
            database_url=self.db.url.render_as_string(hide_password=False), worker_id="vai"
        )
        asyncio.run(Worker(self.db, settings).run_until_idle())

    def get(self, path: str, headers: dict[str, str] | None = None, **kw: Any) -> Any:
        return self.client.get(BASE + path, headers={**self.auth, **(headers or {})}, **kw)

    def post(self, path: str, headers: dict[str, str] | None = None, **kw: Any) -> Any:
        return self.client.post(BASE + path, headers={**self.auth, **(headers or {})}, **kw)


@pytest.fixture
def vai(db: Database, client: TestClient, token: str) -> Vai:
    """Tenant ``acme``'s client, with two automations: one that completes, one that fails."""
    return Vai(db, client, token)


def _detail_422(response: Any) -> list[dict[str, Any]]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"detail"}
    for item in body["detail"]:
        assert set(item) == {"loc", "msg", "type"}
        assert isinstance(item["loc"], list)
        assert isinstance(item["msg"], str)
    return body["detail"]  # type: ignore[no-any-return]


def test_list_get_and_steps_fit_the_examples(vai: Vai) -> None:
    done = vai.trigger()
    vai.work()
    pending = vai.trigger()

    page = vai.get("").json()
    assert_fits(LIST_EXAMPLE, page)
    assert [r["id"] for r in page["items"]] == [pending, done]
    assert page["total"] == 2
    assert page["items"][0]["status"] == "pending"
    assert page["items"][0]["externalJobId"] is None

    run = vai.get(f"/{done}").json()
    assert_fits(RUN_EXAMPLE, run)
    assert run["status"] == "completed"
    assert run["triggerType"] == "manual"
    assert run["automationName"] == "order-follow-up"  # Conveyor's other fields, camelCase

    steps = vai.get(f"/{done}/steps").json()
    assert_fits(STEPS_EXAMPLE, steps)
    assert steps["automationRunId"] == done
    assert (steps["completedCount"], steps["failedCount"], steps["pendingCount"]) == (2, 0, 0)
    greet, check = steps["steps"]
    assert (greet["key"], check["key"]) == ("greet", "check")
    assert check["dependsOn"] == ["greet"]
    assert greet["resultTruncated"] is False
    assert greet["actionRunId"] != check["actionRunId"]
    assert "attempts" not in greet
    assert "depends_on" not in greet


def test_list_filters_and_pages(vai: Vai) -> None:
    first, second, third = vai.trigger(), vai.trigger(), vai.trigger()
    vai.post(f"/{second}/cancel").raise_for_status()

    cancelled = vai.get("", params={"status": "cancelled"}).json()
    assert [r["id"] for r in cancelled["items"]] == [second]
    assert cancelled["total"] == 1
    paged = vai.get("", params={"limit": 1, "offset": 1}).json()
    assert [r["id"] for r in paged["items"]] == [second]
    assert paged["total"] == 3
    assert [r["id"] for r in vai.get("", params={"limit": 1000}).json()["items"]] == [
        third,
        second,
        first,
    ]

    [too_many] = _detail_422(vai.get("", params={"limit": 1001}))
    assert too_many["loc"] == ["query", "limit"]
    [bad_status] = _detail_422(vai.get("", params={"status": "done"}))
    assert bad_status["loc"] == ["query", "status"]
    [unknown] = _detail_422(vai.get("", params={"statuss": "failed"}))
    assert unknown == {
        "loc": ["query", "statuss"],
        "msg": unknown["msg"],
        "type": "unknown_parameter",
    }
    _detail_422(vai.get("", params={"offset": -1}))


def test_cancel_and_its_errors(vai: Vai) -> None:
    run_id = vai.trigger()
    cancelled = vai.post(f"/{run_id}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert_fits(RUN_EXAMPLE, cancelled.json())
    assert cancelled.json()["status"] == "cancelled"

    again = vai.post(f"/{run_id}/cancel")
    assert again.status_code == 409
    assert again.json() == {"detail": again.json()["detail"], "code": "run_not_cancellable"}

    missing = vai.get("/01934a5e-0000-7000-8000-000000000000")
    assert missing.status_code == 404
    assert missing.json()["code"] == "run_not_found"
    assert isinstance(missing.json()["detail"], str)
    [not_uuid] = _detail_422(vai.get("/not-a-uuid"))
    assert not_uuid["loc"] == ["path", "run_id"]


def test_retry_modes(vai: Vai) -> None:
    failed = vai.trigger("breaks")
    vai.work()
    assert vai.get(f"/{failed}").json()["status"] == "failed"

    retried = vai.post(f"/{failed}/retry", json={})
    assert retried.status_code == 200, retried.text
    new = retried.json()
    assert_fits({k: v for k, v in RUN_EXAMPLE.items() if k != "startedAt"}, new)
    assert new["id"] != failed
    assert (new["status"], new["triggerType"], new["retryOf"]) == ("pending", "retry", failed)

    bodiless = vai.post(f"/{failed}/retry")
    assert bodiless.status_code == 200, bodiless.text
    from_step = vai.post(f"/{failed}/retry", json={"mode": "from_step", "stepKey": "greet"})
    assert from_step.status_code == 200, from_step.text
    vai.work()
    steps = vai.get(f"/{from_step.json()['id']}/steps").json()
    assert steps["failedCount"] == 1

    [no_step] = _detail_422(vai.post(f"/{failed}/retry", json={"mode": "from_step"}))
    assert no_step["type"] == "invalid_retry"
    [bad_step] = _detail_422(
        vai.post(f"/{failed}/retry", json={"mode": "from_step", "stepKey": "nope"})
    )
    assert bad_step["loc"] == ["body", "stepKey"]
    [snake] = _detail_422(vai.post(f"/{failed}/retry", json={"step_key": "greet"}))
    assert snake["loc"] == ["body", "step_key"]
    [mode] = _detail_422(vai.post(f"/{failed}/retry", json={"mode": "sideways"}))
    assert mode["loc"] == ["body", "mode"]


def test_events_stream_by_default(vai: Vai) -> None:
    run_id = vai.trigger()
    vai.work()
    stream = vai.get(f"/{run_id}/events")
    assert stream.status_code == 200
    assert stream.headers["content-type"].startswith("text/event-stream")
    assert "event: run.completed" in stream.text
    assert "id: 1" in stream.text

    page = vai.get(f"/{run_id}/events", headers={"Accept": "application/json"})
    assert page.headers["content-type"] == "application/json"
    lines = page.json()["items"]
    assert lines[-1]["type"] == "run.completed"
    assert {"seq", "type", "stepKey", "data", "createdAt"} <= set(lines[0])

    missing = vai.get("/01934a5e-0000-7000-8000-000000000000/events")
    assert missing.status_code == 404
    assert missing.json()["code"] == "run_not_found"


def test_vai_token_cookie_under_the_csrf_rule(
    vai: Vai, db: Database, token: str, tenant: dict[str, Any], new_key: NewKey
) -> None:
    run_id = vai.trigger()
    browser = make_client(db)
    browser.cookies.set("vai_token", token)
    assert browser.get(f"{BASE}/{run_id}").json()["id"] == run_id

    forged = browser.post(f"{BASE}/{run_id}/cancel")
    assert forged.status_code == 403
    assert forged.json()["code"] == "csrf_failed"
    assert vai.get(f"/{run_id}").json()["status"] == "pending"

    browser.cookies.set("conveyor_csrf", "the-token")
    wrong_origin = browser.post(
        f"{BASE}/{run_id}/cancel",
        headers={"X-CSRF-Token": "the-token", "Origin": "https://evil.example"},
    )
    assert wrong_origin.json()["code"] == "csrf_failed"
    good = browser.post(
        f"{BASE}/{run_id}/cancel",
        headers={"X-CSRF-Token": "the-token", "Origin": "http://testserver"},
    )
    assert good.status_code == 200, good.text
    assert good.json()["status"] == "cancelled"

    anonymous = make_client(db).get(BASE)
    assert anonymous.status_code == 401
    assert anonymous.json()["code"] == "unauthenticated"
    reader = new_key(tenant["id"], scopes=["runs:read"])
    refused = make_client(db).post(f"{BASE}/{run_id}/retry", headers={"X-API-Key": reader})
    assert refused.status_code == 403
    assert refused.json() == {"detail": refused.json()["detail"], "code": "forbidden"}


def test_conveyor_api_v1_is_unchanged(client: TestClient, auth: dict[str, str]) -> None:
    # Conveyor's own /api/v1 still answers problem+json, and its schema leaves the seed out.
    assert_problem(
        client.get("/api/v1/runs", params={"x": "1"}, headers=auth), 422, "validation_error"
    )
    assert_problem(client.get("/api/v1/runs/nope", headers=auth), 404, "run_not_found")
    assert not [p for p in client.get("/openapi.json").json()["paths"] if "automation-runs" in p]

    schema = client.get("/seeds/002/openapi.json").json()
    assert set(schema["paths"]) == {
        BASE,
        BASE + "/{run_id}",
        BASE + "/{run_id}/cancel",
        BASE + "/{run_id}/retry",
        BASE + "/{run_id}/steps",
        BASE + "/{run_id}/events",
    }
    assert {"authorization", "X-API-Key", "vai_token"} <= set(
        schema["components"]["securitySchemes"]
    )
    cancel = schema["paths"][BASE + "/{run_id}/cancel"]["post"]["responses"]
    assert {"200", "401", "403", "404", "409", "422"} <= set(cancel)
    assert set(schema["components"]["schemas"]["Error"]["properties"]) == {"detail", "code"}
    body = schema["components"]["schemas"]["RetryRequest"]["properties"]
    assert set(body) == {"mode", "stepKey", "payload", "version", "resend", "reason"}


def test_a_large_output_is_truncated(db: Database, token: str) -> None:
    client = make_client(db, inline_output_bytes=1024)
    vai = Vai(db, client, token)
    big = {
        "name": "big",
        "trigger": {"type": "manual"},
        "steps": [{"key": "fill", "type": "set", "vars": {"blob": "x" * 2000}}],
    }
    client.post("/api/v1/automations", json=big, headers=vai.auth).raise_for_status()
    run_id = vai.trigger("big")
    vai.work()
    [fill] = vai.get(f"/{run_id}/steps").json()["steps"]
    assert fill["resultTruncated"] is True
    assert fill["result"] is None
    assert fill["resultSize"] > 2000


def test_malformed_json_is_a_422_list(vai: Vai) -> None:
    run_id = vai.trigger()
    response = vai.post(
        f"/{run_id}/retry", content=b'{"mode": ', headers={"Content-Type": "application/json"}
    )
    [error] = _detail_422(response)
    assert error["loc"][0] == "body"
    # JSON Conveyor refuses (NaN here) is a 422 too, where /api/v1 answers 400.
    nan = vai.post(
        f"/{run_id}/retry",
        content=b'{"payload": NaN}',
        headers={"Content-Type": "application/json"},
    )
    [error] = _detail_422(nan)
    assert error == {"loc": ["body"], "msg": error["msg"], "type": "malformed_json"}


def test_no_conveyor_route_takes_the_seed_paths() -> None:
    # Conveyor's routers come first: none of them may match a path of the adapter.
    run = "01934a5e-0000-7000-8000-000000000000"
    paths = [BASE, f"{BASE}/{run}", *(f"{BASE}/{run}/{s}" for s in ("cancel", "retry", "steps"))]
    paths.append(f"{BASE}/{run}/events")
    for router in ROUTERS:
        for route in router.routes:
            assert isinstance(route, APIRoute)
            assert not [p for p in paths if route.path_regex.match(p)], route.path
