"""Seed 003 (Sovrium's automation runs API) driven as its document does, on both databases.

The document gives requests (a filtered list, a replay) but no example
responses; the shapes checked here are those docs/seeds/003.md writes down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from conveyor.engine.worker import Worker
from conveyor.settings import Settings
from conveyor.store.db import Database
from tests.api.conftest import NewKey
from tests.api.helpers import BODY_LIMIT, TestClient, make_client
from tests.api.run_data import make_data, set_run
from tests.support.http_server import LOCAL, HitServer, running_server

RUNS = "/api/automations/runs"

RUN_KEYS = {
    "id": str,
    "automationId": str,
    "automationName": str,
    "automationVersion": int,
    "status": str,
    "conveyorStatus": str,
    "triggerType": str,
    "dryRun": bool,
    "createdAt": str,
}
STEP_KEYS = {
    "id": str,
    "key": str,
    "type": str,
    "status": str,
    "conveyorStatus": str,
    "outputTruncated": bool,
    "attempts": int,
}
SEED_RUN_STATUSES = {
    "pending",
    "running",
    "completed",
    "completed-with-errors",
    "failed",
    "timed-out",
    "exhausted",
    "cancelled",
}
SEED_STEP_STATUSES = {"running", "completed", "failed", "skipped"}


@pytest.fixture
def client(db: Database) -> TestClient:
    """The app, allowing its definitions to call the local test server."""
    return make_client(db, egress_allow=LOCAL)


@pytest.fixture
def http_server() -> Iterator[HitServer]:
    """A real HTTP server that counts hits per path."""
    with running_server() as server:
        yield server


def _work(db: Database) -> None:
    settings = Settings(
        database_url=db.url.render_as_string(hide_password=False),
        worker_id="seed003-worker",
        egress_allow=LOCAL,
    )
    asyncio.run(Worker(db, settings).run_until_idle())


def _error(response: Any, status: int, code: str) -> dict[str, Any]:
    """Check Sovrium's error object; return it."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert error["code"] == code, error
    assert error["status"] == status
    assert isinstance(error["message"], str)
    assert error["message"]
    return error


def _typed(obj: dict[str, Any], keys: dict[str, type]) -> None:
    for key, kind in keys.items():
        assert isinstance(obj[key], kind), (key, obj)


def _calls(server: HitServer, name: str) -> dict[str, Any]:
    """a -> b -> c over HTTP; b fails its first call and has no retries."""
    return {
        "name": name,
        "steps": [
            {"key": "a", "type": "http_request", "url": f"{server.url}/ok/{name}/a"},
            {"key": "b", "type": "http_request", "url": f"{server.url}/fail/1/{name}/b"},
            {"key": "c", "type": "http_request", "url": f"{server.url}/ok/{name}/c"},
        ],
    }


def _trigger(client: TestClient, auth: dict[str, str], definition: dict[str, Any]) -> str:
    created = client.post("/api/v1/automations", json=definition, headers=auth)
    assert created.status_code == 201, created.text
    name = definition["name"]
    run = client.post(
        f"/api/v1/automations/{name}/trigger", json={"payload": {"n": 1}}, headers=auth
    )
    assert run.status_code == 202, run.text
    return str(run.json()["id"])


def test_list_filters_and_statuses(
    db: Database, client: TestClient, tenant: dict[str, Any], auth: dict[str, str]
) -> None:
    data = make_data(db, tenant["id"])
    # The document's example request, verbatim (no such automation: an empty page).
    example = client.get(f"{RUNS}?status=failed&automationName=welcome-email", headers=auth)
    assert example.status_code == 200, example.text
    assert example.json() == {
        "runs": [],
        "pagination": {
            "total": 0,
            "totalExact": True,
            "limit": 100,
            "offset": 0,
            "hasMore": False,
            "nextCursor": None,
        },
    }

    every = client.get(RUNS, headers=auth).json()
    assert [r["id"] for r in every["runs"]] == data.ids()
    for run in every["runs"]:
        _typed(run, RUN_KEYS)
        assert run["status"] in SEED_RUN_STATUSES
        assert "steps" not in run
    by_id = {r["id"]: r for r in every["runs"]}
    waiting = next(r for r in data.runs if r.status == "waiting")
    assert by_id[waiting.id]["status"] == "running"
    assert by_id[waiting.id]["conveyorStatus"] == "waiting"

    failed = client.get(RUNS, params={"status": "failed", "automationName": "beta"}, headers=auth)
    assert [r["id"] for r in failed.json()["runs"]] == data.ids(
        lambda r: r.status == "failed" and r.automation == "beta"
    )
    assert failed.json()["runs"][0]["automationName"] == "beta"
    # `running` covers Conveyor's `waiting`; repeated statuses add up.
    running = client.get(
        RUNS, params=[("status", "running"), ("status", "exhausted")], headers=auth
    )
    assert {r["id"] for r in running.json()["runs"]} == set(
        data.ids(lambda r: r.status in ("running", "waiting", "exhausted"))
    )
    by_automation = client.get(RUNS, params={"automationId": data.alpha}, headers=auth).json()
    assert [r["id"] for r in by_automation["runs"]] == data.ids(lambda r: r.automation == "alpha")
    assert {r["automationId"] for r in by_automation["runs"]} == {data.alpha}

    first = client.get(RUNS, params={"limit": 3}, headers=auth).json()
    assert first["pagination"]["hasMore"] is True
    assert first["pagination"]["total"] == len(data.ids())
    rest = client.get(
        RUNS, params={"limit": 10, "cursor": first["pagination"]["nextCursor"]}, headers=auth
    ).json()
    second = client.get(RUNS, params={"limit": 3, "offset": 3}, headers=auth).json()
    assert [r["id"] for r in first["runs"] + rest["runs"]] == data.ids()
    assert [r["id"] for r in second["runs"]] == data.ids()[3:6]
    assert rest["pagination"]["hasMore"] is False


def test_list_refusals_in_the_seed_error_shape(
    client: TestClient, auth: dict[str, str], tenant: dict[str, Any], new_key: NewKey
) -> None:
    unknown = client.get(RUNS, params={"automation_name": "x"}, headers=auth)
    details = _error(unknown, 422, "validation_error")["details"]
    assert details == [
        {
            "field": "query.automation_name",
            "message": details[0]["message"],
            "type": "unknown_parameter",
        }
    ]
    assert "automationName" in details[0]["message"]
    assert _error(
        client.get(RUNS, params={"filter[status]": "failed"}, headers=auth), 422, "validation_error"
    )
    bad = _error(
        client.get(RUNS, params={"status": "waiting"}, headers=auth), 422, "validation_error"
    )
    assert bad["details"][0]["field"].startswith("query.status")
    assert _error(
        client.get(RUNS, params={"automationId": "nope"}, headers=auth), 422, "validation_error"
    )
    assert _error(client.get(RUNS, params={"limit": 0}, headers=auth), 422, "validation_error")
    _error(client.get(RUNS, params={"cursor": "garbage"}, headers=auth), 422, "invalid_cursor")

    anonymous = client.get(RUNS)
    _error(anonymous, 401, "unauthenticated")
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    no_scope = {"Authorization": f"Bearer {new_key(tenant['id'], scopes=['automations:read'])}"}
    _error(client.get(RUNS, headers=no_scope), 403, "forbidden")
    missing = "01934a5e-0000-7000-8000-000000000000"
    _error(client.get(f"{RUNS}/{missing}", headers=auth), 404, "run_not_found")
    _error(client.get(f"{RUNS}/not-a-uuid", headers=auth), 404, "run_not_found")
    _error(client.get(f"{RUNS}/{missing}", params={"x": 1}, headers=auth), 422, "validation_error")


def test_detail_replay_resumes_from_the_failed_step(
    db: Database, client: TestClient, auth: dict[str, str], http_server: HitServer
) -> None:
    original = _trigger(client, auth, _calls(http_server, "welcome-email"))
    pending = client.get(f"{RUNS}/{original}", headers=auth).json()
    assert pending["status"] == "pending"
    assert pending["steps"] == []
    assert pending["pendingStepKeys"] == ["a", "b", "c"]
    _work(db)

    detail = client.get(f"{RUNS}/{original}", headers=auth)
    assert detail.status_code == 200, detail.text
    run = detail.json()
    _typed(run, RUN_KEYS)
    assert run["status"] == "failed"
    assert run["triggerPayload"] == {"n": 1}
    assert run["pendingStepKeys"] == []
    statuses = {s["key"]: (s["status"], s["conveyorStatus"]) for s in run["steps"]}
    assert statuses["a"] == ("completed", "completed")
    assert statuses["b"] == ("failed", "failed")
    for step in run["steps"]:
        _typed(step, STEP_KEYS)
        assert step["status"] in SEED_STEP_STATUSES
    assert run["steps"][0]["output"] is not None

    listed = client.get(
        RUNS, params={"status": "failed", "automationName": "welcome-email"}, headers=auth
    ).json()
    assert [r["id"] for r in listed["runs"]] == [original]

    # A bodiless POST, as the document sends it.
    replay = client.post(f"{RUNS}/{original}/replay", headers=auth)
    assert replay.status_code == 202, replay.text
    new = replay.json()
    _typed(new, RUN_KEYS)
    assert new["replayOf"] == original
    assert new["id"] != original
    _work(db)
    done = client.get(f"{RUNS}/{new['id']}", headers=auth).json()
    assert done["status"] == "completed"
    reused = {s["key"]: s["reusedFrom"] for s in done["steps"]}
    assert reused["a"] is not None
    assert reused["b"] is None
    name = "welcome-email"
    assert [
        http_server.hits[f"/ok/{name}/a"],
        http_server.hits[f"/fail/1/{name}/b"],
        http_server.hits[f"/ok/{name}/c"],
    ] == [1, 2, 1]
    # The original is not changed, and knows its replay.
    after = client.get(f"{RUNS}/{original}", headers=auth).json()
    assert after["status"] == "failed"
    assert new["id"] in after["replayedBy"]


def test_cancel_and_control_refusals(
    db: Database,
    client: TestClient,
    auth: dict[str, str],
    tenant: dict[str, Any],
    new_key: NewKey,
    http_server: HitServer,
) -> None:
    run_id = _trigger(client, auth, _calls(http_server, "cancel-me"))
    reader = {"Authorization": f"Bearer {new_key(tenant['id'], scopes=['runs:read'])}"}
    _error(client.post(f"{RUNS}/{run_id}/cancel", headers=reader), 403, "forbidden")
    # Live (pending or running) runs cannot be replayed.
    _error(client.post(f"{RUNS}/{run_id}/replay", headers=auth), 409, "run_not_retryable")

    cancelled = client.post(f"{RUNS}/{run_id}/cancel", headers=auth)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    detail = client.get(f"{RUNS}/{run_id}", headers=auth).json()
    assert detail["pendingStepKeys"] == []
    assert {(s["status"], s["conveyorStatus"]) for s in detail["steps"]} == {
        ("skipped", "cancelled")
    }
    _error(client.post(f"{RUNS}/{run_id}/cancel", headers=auth), 409, "run_not_cancellable")

    # A JSON body is optional; when given it is checked, in the seed's shape.
    other = _trigger(client, auth, _calls(http_server, "cancel-me-too"))
    bad = client.post(f"{RUNS}/{other}/cancel", json={"why": "x"}, headers=auth)
    assert _error(bad, 422, "validation_error")["details"][0]["field"] == "body.why"
    form = client.post(
        f"{RUNS}/{other}/cancel",
        content=b"reason=x",
        headers={**auth, "Content-Type": "application/x-www-form-urlencoded"},
    )
    _error(form, 415, "unsupported_media_type")
    with_reason = client.post(f"{RUNS}/{other}/cancel", json={"reason": "not needed"}, headers=auth)
    assert with_reason.status_code == 200, with_reason.text
    _error(
        client.post(f"{RUNS}/{other}/cancel", params={"force": 1}, headers=auth),
        422,
        "validation_error",
    )

    # A waiting run shows as running and can be cancelled.
    third = _trigger(client, auth, _calls(http_server, "parked"))
    set_run(db, third, status="waiting")
    assert client.get(f"{RUNS}/{third}", headers=auth).json()["status"] == "running"
    assert (
        client.post(f"{RUNS}/{third}/cancel", headers=auth).json()["conveyorStatus"] == "cancelled"
    )


def test_schema_of_seed_003(client: TestClient) -> None:
    schema = client.get("/seeds/003/openapi.json").json()
    assert set(schema["paths"]) == {
        RUNS,
        RUNS + "/{run_id}",
        RUNS + "/{run_id}/replay",
        RUNS + "/{run_id}/cancel",
    }
    names = {p["name"] for p in schema["paths"][RUNS]["get"]["parameters"]}
    assert {"status", "automationName", "automationId", "limit", "offset", "cursor"} <= names
    components = schema["components"]["schemas"]
    assert "ErrorResponse" in components
    assert set(components["SeedRun"]["properties"]["status"]["enum"]) == SEED_RUN_STATUSES
    assert set(components["SeedStep"]["properties"]["status"]["enum"]) == SEED_STEP_STATUSES
    assert set(components["SeedRunDetail"]["properties"]) >= {"steps", "triggerPayload"}
    main = client.get("/openapi.json").json()
    assert not any(p.startswith(RUNS) for p in main["paths"])


def test_wrong_paths_and_methods_in_the_seed_error_shape(
    client: TestClient, auth: dict[str, str]
) -> None:
    run = "01934a5e-0000-7000-8000-000000000000"
    wrong = client.delete(f"{RUNS}/{run}", headers=auth)
    _error(wrong, 405, "method_not_allowed")
    assert wrong.headers["allow"] == "GET"
    assert client.post(RUNS, headers=auth).headers["allow"] == "GET"
    _error(client.get(f"{RUNS}/{run}/cancel", headers=auth), 405, "method_not_allowed")
    _error(client.get(f"{RUNS}/{run}/steps", params={"x": 1}, headers=auth), 404, "not_found")
    slash = client.get(
        f"{RUNS}/", params={"status": "failed"}, headers=auth, follow_redirects=False
    )
    assert slash.status_code == 307
    assert slash.headers["location"].endswith(f"{RUNS}?status=failed")


def test_carriers_and_body_limits(
    client: TestClient, auth: dict[str, str], token: str, http_server: HitServer
) -> None:
    run_id = _trigger(client, auth, _calls(http_server, "limits"))
    header = client.get(f"{RUNS}/{run_id}", headers={"X-API-Key": token})
    assert header.status_code == 200, header.text
    assert header.json()["id"] == run_id

    def chunks() -> Iterator[bytes]:
        yield b'{"reason": "'
        yield b"x" * (BODY_LIMIT + 10)
        yield b'"}'

    streamed = client.post(
        f"{RUNS}/{run_id}/cancel",
        content=chunks(),
        headers={**auth, "Content-Type": "application/json"},
    )
    _error(streamed, 413, "payload_too_large")
    # A declared length over the limit is refused by middleware, before any route:
    # compat.SeedErrors gives that answer the seed's shape too.
    declared = client.post(
        f"{RUNS}/{run_id}/cancel", json={"reason": "x" * (BODY_LIMIT + 10)}, headers=auth
    )
    _error(declared, 413, "payload_too_large")
    assert client.get(f"{RUNS}/{run_id}", headers=auth).json()["status"] == "pending"
