"""Cancel, retry, replay and bulk operations over HTTP, on both databases.

HTTP steps call a real local server that counts hits, so "re-executed" and
"reused" are measured, not assumed.
"""

from __future__ import annotations

import asyncio
import faulthandler
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from conveyor.engine.worker import Worker
from conveyor.settings import Settings
from conveyor.store.db import Database
from conveyor.store.tables import runs
from tests.api.conftest import NewKey, NewTenant
from tests.api.helpers import TestClient, assert_problem, count, make_client
from tests.support.http_server import LOCAL, HitServer, running_server


@pytest.fixture
def client(db: Database) -> TestClient:
    """The app, allowing its definitions to call the local test server."""
    return make_client(db, egress_allow=LOCAL)


@pytest.fixture
def http_server() -> Iterator[HitServer]:
    """A real HTTP server that counts hits per path."""
    with running_server() as server:
        yield server


class Api:
    """A tenant's view of the API plus a worker to run what it triggers."""

    def __init__(self, db: Database, client: TestClient, auth: dict[str, str]) -> None:
        self.db = db
        self.client = client
        self.auth = auth
        self.settings = Settings(
            database_url=db.url.render_as_string(hide_password=False),
            worker_id="api-test-worker",
            egress_allow=LOCAL,
        )

    def post(self, path: str, body: Any = None, status: int | None = None) -> Any:
        kw = {} if body is None else {"json": body}
        response = self.client.post(f"/api/v1{path}", headers=self.auth, **kw)
        if status is not None:
            assert response.status_code == status, response.text
        return response

    def get(self, path: str) -> Any:
        response = self.client.get(f"/api/v1{path}", headers=self.auth)
        assert response.status_code == 200, response.text
        return response.json()

    def automation(self, definition: dict[str, Any]) -> str:
        return str(self.post("/automations", definition, 201).json()["name"])

    def trigger(self, name: str, payload: dict[str, Any] | None = None) -> str:
        return str(
            self.post(f"/automations/{name}/trigger", {"payload": payload or {}}, 202).json()["id"]
        )

    def work(self) -> None:
        asyncio.run(Worker(self.db, self.settings).run_until_idle())

    def run(self, run_id: str) -> dict[str, Any]:
        return self.get(f"/runs/{run_id}")  # type: ignore[no-any-return]

    def history(self, run_id: str) -> list[dict[str, Any]]:
        return self.get(f"/runs/{run_id}/events")["items"]  # type: ignore[no-any-return]


@pytest.fixture
def api(db: Database, client: TestClient, auth: dict[str, str]) -> Api:
    """The API as tenant ``acme`` with every scope."""
    return Api(db, client, auth)


def _calls(server: HitServer, name: str, *, fail_b: int = 1) -> dict[str, Any]:
    """a -> b -> c over HTTP; b fails its first ``fail_b`` calls and has no retries."""
    return {
        "name": name,
        "steps": [
            {"key": "a", "type": "http_request", "url": f"{server.url}/ok/{name}/a"},
            {"key": "b", "type": "http_request", "url": f"{server.url}/fail/{fail_b}/{name}/b"},
            {"key": "c", "type": "http_request", "url": f"{server.url}/ok/{name}/c"},
        ],
    }


def _hits(server: HitServer, name: str) -> list[int]:
    return [
        server.hits[f"/ok/{name}/a"],
        server.hits[f"/fail/1/{name}/b"],
        server.hits[f"/ok/{name}/c"],
    ]


def _failed_run(api: Api, server: HitServer, name: str) -> str:
    run_id = api.trigger(api.automation(_calls(server, name)))
    api.work()
    assert api.run(run_id)["status"] == "failed"
    assert _hits(server, name) == [1, 1, 0]
    return run_id


def test_from_failed_reuses_completed_steps_and_reruns_the_rest(
    api: Api, http_server: HitServer
) -> None:
    original = _failed_run(api, http_server, "ff")
    new = api.post(
        f"/runs/{original}/retry", {"mode": "from_failed", "reason": "fixed b"}, 202
    ).json()
    assert new["retry_of"] == original
    assert new["trigger_type"] == "retry"
    api.work()
    assert _hits(http_server, "ff") == [1, 2, 1]  # a reused, b re-hit, c run once
    detail = api.run(new["id"])
    assert detail["status"] == "completed"
    steps = {s["key"]: s for s in detail["steps"]}
    assert steps["a"]["reused_from"] is not None
    assert steps["a"]["attempts"] == []
    assert steps["b"]["reused_from"] is None
    old = api.run(original)
    assert old["status"] == "failed"  # never mutated
    assert old["retried_by"] == [new["id"]]
    retried = [e for e in api.history(original) if e["type"] == "run.retried"]
    assert retried[0]["data"]["retry_run_id"] == new["id"]
    assert retried[0]["data"]["reason"] == "fixed b"
    assert retried[0]["data"]["actor_type"] == "api_key"
    created = api.history(new["id"])[0]
    assert created["type"] == "run.created"
    assert created["data"]["retry_of"] == original
    assert created["data"]["reason"] == "fixed b"


def test_replay_is_from_failed_and_never_reexecutes_a_completed_step(
    api: Api, http_server: HitServer
) -> None:
    original = _failed_run(api, http_server, "rp")
    new = api.post(f"/runs/{original}/replay", {"reason": "again"}, 202).json()
    api.work()
    assert _hits(http_server, "rp") == [1, 2, 1]
    assert api.run(new["id"])["status"] == "completed"
    # replaying the replay's parent again still never re-runs `a`
    api.post(f"/runs/{original}/replay", None, 202)
    api.work()
    assert http_server.hits["/ok/rp/a"] == 1


def test_from_step_reruns_that_step_and_what_depends_on_it(
    api: Api, http_server: HitServer
) -> None:
    original = _failed_run(api, http_server, "fs")
    api.post(f"/runs/{original}/retry", {"mode": "from_step", "step_key": "b"}, 202)
    api.work()
    assert _hits(http_server, "fs") == [1, 2, 1]
    api.post(f"/runs/{original}/retry", {"mode": "from_step", "step_key": "a"}, 202)
    api.work()
    assert _hits(http_server, "fs") == [2, 3, 2]


def test_full_reruns_everything_with_a_new_payload(api: Api, http_server: HitServer) -> None:
    original = _failed_run(api, http_server, "fu")
    new = api.post(f"/runs/{original}/retry", {"mode": "full", "payload": {"v": 2}}, 202).json()
    api.work()
    assert _hits(http_server, "fu") == [2, 2, 1]
    detail = api.run(new["id"])
    assert detail["trigger_event"]["payload"] == {"v": 2}
    assert all(s["reused_from"] is None for s in detail["steps"])


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"mode": "from_step"}, "invalid_retry"),
        ({"mode": "from_step", "step_key": "nope"}, "invalid_retry"),
        ({"mode": "from_failed", "payload": {"x": 1}}, "invalid_retry"),
        ({"mode": "sideways"}, "validation_error"),
    ],
)
def test_bad_retry_requests_are_422_and_create_nothing(
    db: Database, api: Api, http_server: HitServer, body: dict[str, Any], code: str
) -> None:
    original = _failed_run(api, http_server, "bad")
    before = count(db, runs)
    assert_problem(api.post(f"/runs/{original}/retry", body), 422, code)
    assert count(db, runs) == before


def test_retry_of_an_unfinished_or_completed_run_is_409(api: Api) -> None:
    name = api.automation({"name": "quick", "steps": [{"key": "a", "type": "set", "vars": {}}]})
    run_id = api.trigger(name)
    assert_problem(api.post(f"/runs/{run_id}/retry", {}), 409, "run_not_retryable")
    api.work()
    assert_problem(api.post(f"/runs/{run_id}/replay"), 409, "run_not_retryable")
    assert api.post(f"/runs/{run_id}/retry", {"mode": "full"}, 202).json()["retry_of"] == run_id


def test_version_latest_uses_the_current_definition(api: Api, http_server: HitServer) -> None:
    original = _failed_run(api, http_server, "ver")
    definition = _calls(http_server, "ver", fail_b=0)
    definition["steps"].append({"key": "d", "type": "set", "vars": {"new": True}})
    response = api.client.put("/api/v1/automations/ver", json=definition, headers=api.auth)
    assert response.status_code == 200, response.text
    old = api.post(f"/runs/{original}/retry", {"version": "original"}, 202).json()
    new = api.post(f"/runs/{original}/retry", {"version": "latest"}, 202).json()
    api.work()
    assert [s["key"] for s in api.run(old["id"])["steps"]] == ["a", "b", "c"]
    latest = api.run(new["id"])
    assert [s["key"] for s in latest["steps"]] == ["a", "b", "c", "d"]
    assert latest["version_number"] == 2
    assert latest["status"] == "completed"


def test_cancel_pending_and_waiting_runs_and_409_after(api: Api) -> None:
    name = api.automation(
        {
            "name": "sleepy",
            "steps": [
                {"key": "a", "type": "set", "vars": {}},
                {"key": "nap", "type": "delay", "duration": "PT1H"},
                {"key": "b", "type": "set", "vars": {}},
            ],
        }
    )
    pending = api.trigger(name)
    cancelled = api.post(f"/runs/{pending}/cancel", {"reason": "not needed"}, 200).json()
    assert cancelled["status"] == "cancelled"
    waiting = api.trigger(name)
    api.work()
    assert api.run(waiting)["status"] == "waiting"
    api.post(f"/runs/{waiting}/cancel", None, 200)
    detail = api.run(waiting)
    assert detail["status"] == "cancelled"
    assert [s["status"] for s in detail["steps"]] == ["completed", "cancelled", "cancelled"]
    history = api.history(waiting)
    assert history[-1]["type"] == "run.cancelled"
    assert history[-1]["data"]["actor_type"] == "api_key"
    assert [s["status"] for s in api.run(pending)["steps"]] == ["cancelled"] * 3
    for run_id in (pending, waiting):
        assert_problem(api.post(f"/runs/{run_id}/cancel"), 409, "run_not_cancellable")
    api.work()  # nothing revives a cancelled run
    assert api.run(waiting)["status"] == "cancelled"


def test_cancel_aborts_an_in_flight_http_call(api: Api, http_server: HitServer) -> None:
    name = api.automation(
        {
            "name": "slowcall",
            "steps": [
                {
                    "key": "call",
                    "type": "http_request",
                    # Far longer than the test: a stall of the host (seen here for
                    # seconds) must not let the call end before the cancel arrives.
                    "url": f"{http_server.url}/sleep/60/slowcall",
                },
                {"key": "after", "type": "set", "vars": {}},
            ],
        }
    )
    run_id = api.trigger(name)
    worker = Worker(api.db, api.settings)
    thread = threading.Thread(target=asyncio.run, args=(worker.serve(5.0),), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while http_server.hits["/sleep/60/slowcall"] == 0:
            assert time.monotonic() < deadline, "the call never started"
            time.sleep(0.02)
        started = time.monotonic()
        # A cancel that waits for the call is a bug. CI once saw this cancel
        # answer 409 after 5.5 s on SQLite, the 5 s call over (not reproduced in
        # ~100 runs since, loaded or not; a stall of the host would explain it).
        # If it waits again, every thread's stack is printed.
        faulthandler.dump_traceback_later(2.0, file=sys.stderr)
        try:
            api.post(f"/runs/{run_id}/cancel", {"reason": "too slow"}, 200)
        finally:
            faulthandler.cancel_dump_traceback_later()
        # the worker drops the call at once instead of waiting for it
        while worker._calls:
            assert time.monotonic() - started < 2.0, "the call was not aborted"
            time.sleep(0.02)
    finally:
        worker.stop()
        thread.join(10)
    detail = api.run(run_id)
    assert detail["status"] == "cancelled"
    step = detail["steps"][0]
    assert step["status"] == "cancelled"
    assert step["attempts"][0]["status"] == "cancelled"


def _wait_bulk(api: Api, op_id: str) -> dict[str, Any]:
    api.work()
    op = api.get(f"/bulk-operations/{op_id}")
    assert op["status"] == "completed", op
    return op  # type: ignore[no-any-return]


def test_bulk_cancel_cancels_what_the_filters_match(api: Api) -> None:
    napper = api.automation(
        {"name": "napper", "steps": [{"key": "nap", "type": "delay", "duration": "PT1H"}]}
    )
    other = api.automation(
        {"name": "other", "steps": [{"key": "nap", "type": "delay", "duration": "PT1H"}]}
    )
    mine = [api.trigger(napper) for _ in range(4)]
    api.work()  # all four waiting
    keep = api.trigger(other)
    extra = api.trigger(napper)  # pending: also cancellable
    op = api.post(
        "/runs/bulk/cancel", {"filters": {"automation_name": "napper"}, "reason": "cleanup"}, 202
    ).json()
    assert op["status"] == "queued"
    op = _wait_bulk(api, op["id"])
    assert (op["matched"], op["done"], op["failed"]) == (5, 5, 0)
    assert {api.run(r)["status"] for r in [*mine, extra]} == {"cancelled"}
    assert api.run(keep)["status"] == "waiting"


def test_bulk_replay_makes_a_new_run_per_failed_run(api: Api, http_server: HitServer) -> None:
    name = api.automation(_calls(http_server, "bulk", fail_b=3))
    failed = [api.trigger(name) for _ in range(3)]
    api.work()
    ok = api.automation({"name": "fine", "steps": [{"key": "a", "type": "set", "vars": {}}]})
    api.trigger(ok)
    api.work()
    op = api.post("/runs/bulk/replay", {"filters": {}}, 202).json()
    op = _wait_bulk(api, op["id"])
    assert (op["matched"], op["done"], op["failed"]) == (3, 3, 0)
    retries = api.get("/runs?trigger_type=retry&limit=10")["items"]
    assert sorted(r["retry_of"] for r in retries) == sorted(failed)
    assert http_server.hits["/ok/bulk/a"] == 3  # the completed step `a` was reused, not re-run


def test_bulk_status_filters_naming_no_actionable_status_are_refused(api: Api) -> None:
    """`status: ["pending"]` on a replay once meant "every failed run": it must act on none."""
    broken = api.automation(
        {"name": "broken", "steps": [{"key": "x", "type": "set", "vars": {"v": "{{ 1 // 0 }}"}}]}
    )
    failed = api.trigger(broken)
    api.work()
    assert api.run(failed)["status"] == "failed"
    refused = api.post("/runs/bulk/replay", {"filters": {"status": ["pending"]}}, 422).json()
    assert refused["code"] == "invalid_bulk_filters"
    assert refused["errors"][0]["type"] == "invalid_bulk_filters"
    refused = api.post("/runs/bulk/cancel", {"filters": {"status": ["completed"]}}, 422).json()
    assert refused["code"] == "invalid_bulk_filters"
    api.work()
    assert api.get("/runs?trigger_type=retry&limit=10")["items"] == []
    # A mix keeps the statuses the operation can act on.
    op = api.post("/runs/bulk/replay", {"filters": {"status": ["pending", "failed"]}}, 202).json()
    assert _wait_bulk(api, op["id"])["matched"] == 1


def test_bulk_operation_of_another_tenant_is_404(
    api: Api, client: TestClient, new_tenant: NewTenant, new_key: NewKey
) -> None:
    op = api.post("/runs/bulk/cancel", {"filters": {}}, 202).json()
    other = {"Authorization": f"Bearer {new_key(new_tenant('globex')['id'])}"}
    assert_problem(
        client.get(f"/api/v1/bulk-operations/{op['id']}", headers=other),
        404,
        "bulk_operation_not_found",
    )


CONTROL_ROUTES = [
    ("POST", "/runs/{run}/cancel"),
    ("POST", "/runs/{run}/retry"),
    ("POST", "/runs/{run}/replay"),
]


@pytest.mark.parametrize(("method", "path"), CONTROL_ROUTES)
def test_control_routes_need_runs_write_and_hide_other_tenants(
    api: Api,
    client: TestClient,
    tenant: dict[str, Any],
    new_tenant: NewTenant,
    new_key: NewKey,
    method: str,
    path: str,
) -> None:
    name = api.automation(
        {"name": "guarded", "steps": [{"key": "nap", "type": "delay", "duration": "PT1H"}]}
    )
    run_id = api.trigger(name)
    url = "/api/v1" + path.format(run=run_id)
    reader = {"Authorization": f"Bearer {new_key(tenant['id'], ['runs:read'])}"}
    assert_problem(client.request(method, url, headers=reader, json={}), 403, "forbidden")
    outsider = {"Authorization": f"Bearer {new_key(new_tenant('globex')['id'])}"}
    assert_problem(client.request(method, url, headers=outsider, json={}), 404, "run_not_found")
    assert api.run(run_id)["status"] == "pending"


def test_bulk_routes_need_their_scopes(
    client: TestClient, tenant: dict[str, Any], new_key: NewKey
) -> None:
    reader = {"Authorization": f"Bearer {new_key(tenant['id'], ['runs:read'])}"}
    for kind in ("cancel", "replay"):
        assert_problem(
            client.post(f"/api/v1/runs/bulk/{kind}", headers=reader, json={}), 403, "forbidden"
        )
    writer = {"Authorization": f"Bearer {new_key(tenant['id'], ['runs:write'])}"}
    op = client.post("/api/v1/runs/bulk/cancel", headers=writer, json={}).json()
    assert_problem(
        client.get(f"/api/v1/bulk-operations/{op['id']}", headers=writer), 403, "forbidden"
    )
