"""``GET /runs/{id}/steps`` and ``GET /runs/{id}/steps/{key}/output``; scopes and tenants."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from conveyor.engine.worker import Worker
from conveyor.settings import Settings
from conveyor.store.db import Database
from conveyor.testing.factories import make_automation, trigger
from tests.api.helpers import TestClient, assert_problem

BLOB = "x" * 70_000  # over the 64 KiB inline limit of run views

DEFINITION: dict[str, Any] = {
    "name": "branchy",
    "steps": [
        {"key": "big", "type": "set", "vars": {"blob": BLOB}},
        {"key": "check", "type": "condition", "expression": "true"},
        {"key": "yes", "type": "set", "vars": {"said": "yes"}, "depends_on": ["check.true"]},
        {"key": "no", "type": "set", "vars": {"said": "no"}, "depends_on": ["check.false"]},
    ],
}


def _work(db: Database) -> None:
    settings = Settings(database_url=db.url.render_as_string(hide_password=False))
    asyncio.run(Worker(db, settings).run_until_idle())


@pytest.fixture
def automation(db: Database, tenant: dict[str, Any]) -> str:
    """``branchy`` in ``acme``."""
    return make_automation(db, tenant["id"], DEFINITION)


@pytest.fixture
def finished(db: Database, tenant: dict[str, Any], automation: str) -> str:
    """A run of ``branchy`` executed to the end."""
    run_id = trigger(db, tenant["id"], "branchy")
    _work(db)
    return run_id


@pytest.fixture
def queued(db: Database, tenant: dict[str, Any], automation: str, finished: str) -> str:
    """A run of ``branchy`` that no worker has touched yet (made after ``finished`` ran)."""
    return trigger(db, tenant["id"], "branchy")


def test_steps_with_counts(client: TestClient, auth: dict[str, str], finished: str) -> None:
    response = client.get(f"/api/v1/runs/{finished}/steps", headers=auth)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["run_id"] == finished
    assert body["run_status"] == "completed"
    by_key = {s["key"]: s for s in body["steps"]}
    assert list(by_key) == ["big", "check", "yes", "no"]
    assert [by_key[k]["status"] for k in by_key] == [
        "completed",
        "completed",
        "completed",
        "skipped",
    ]
    assert by_key["check"]["branch_taken"] == "true"
    assert by_key["check"]["depends_on"] == ["big"]
    assert by_key["no"]["depends_on"] == ["check.false"]
    assert by_key["yes"]["result"] == {"said": "yes"}
    assert by_key["yes"]["duration_seconds"] is not None
    assert by_key["yes"]["attempts"][0]["status"] == "succeeded"
    expected = {
        "pending": 0,
        "running": 0,
        "waiting": 0,
        "completed": 3,
        "failed": 0,
        "skipped": 1,
        "cancelled": 0,
    }
    assert body["counts"] == expected
    assert {k: body[f"{k}_count"] for k in expected} == expected


def test_steps_of_a_queued_run(client: TestClient, auth: dict[str, str], queued: str) -> None:
    body = client.get(f"/api/v1/runs/{queued}/steps", headers=auth).json()
    assert body["run_status"] == "pending"
    assert body["pending_count"] == 4
    assert body["completed_count"] == 0


def test_a_large_output_is_whole_at_its_own_route_and_cut_in_views(
    client: TestClient, auth: dict[str, str], finished: str
) -> None:
    output = client.get(f"/api/v1/runs/{finished}/steps/big/output", headers=auth)
    assert output.status_code == 200, output.text
    body = output.json()
    assert body["result"] == {"blob": BLOB}
    assert body["result_size"] > 65_536
    assert (body["run_id"], body["step_key"], body["status"]) == (finished, "big", "completed")

    for path in (f"/api/v1/runs/{finished}", f"/api/v1/runs/{finished}/steps"):
        big = next(s for s in client.get(path, headers=auth).json()["steps"] if s["key"] == "big")
        assert big["result"] is None
        assert big["result_truncated"] is True
        assert big["result_size"] == body["result_size"]

    small = client.get(f"/api/v1/runs/{finished}/steps/check/output", headers=auth).json()
    assert small["result"] == {"result": True}


def test_output_errors(
    client: TestClient, auth: dict[str, str], finished: str, queued: str
) -> None:
    not_yet = client.get(f"/api/v1/runs/{queued}/steps/big/output", headers=auth)
    assert_problem(not_yet, 404, "output_not_available")
    skipped = client.get(f"/api/v1/runs/{finished}/steps/no/output", headers=auth)
    assert_problem(skipped, 404, "output_not_available")
    missing = client.get(f"/api/v1/runs/{finished}/steps/nope/output", headers=auth)
    assert_problem(missing, 404, "step_not_found")
    for run_id in ("01934a5e-0000-7000-8000-000000000000", "not-an-id"):
        no_run = client.get(f"/api/v1/runs/{run_id}/steps/big/output", headers=auth)
        assert_problem(no_run, 404, "run_not_found")
        assert_problem(
            client.get(f"/api/v1/runs/{run_id}/steps", headers=auth), 404, "run_not_found"
        )


def _run_routes(run_id: str, automation: str) -> list[str]:
    return [
        "/api/v1/runs",
        f"/api/v1/automations/{automation}/runs",
        f"/api/v1/runs/{run_id}",
        f"/api/v1/runs/{run_id}/steps",
        f"/api/v1/runs/{run_id}/steps/big/output",
    ]


def test_every_run_route_needs_runs_read(
    client: TestClient, new_key: Any, tenant: dict[str, Any], finished: str
) -> None:
    others = [s for s in ("automations:read", "runs:write", "keys:admin")]
    no_scope = {"Authorization": f"Bearer {new_key(tenant['id'], scopes=others)}"}
    reader = {"Authorization": f"Bearer {new_key(tenant['id'], scopes=['runs:read'])}"}
    for path in _run_routes(finished, "branchy"):
        body = assert_problem(client.get(path, headers=no_scope), 403, "forbidden")
        assert "runs:read" in body["detail"]
        assert_problem(client.get(path), 401, "unauthenticated")
        assert client.get(path, headers=reader).status_code == 200, path


def test_another_tenants_run_is_404_on_every_route(
    client: TestClient,
    new_tenant: Any,
    new_key: Any,
    finished: str,
) -> None:
    other = new_tenant("globex")
    outsider = {"Authorization": f"Bearer {new_key(other['id'])}"}
    list_, automation_runs, *by_id = _run_routes(finished, "branchy")
    assert client.get(list_, headers=outsider).json()["items"] == []
    assert_problem(client.get(automation_runs, headers=outsider), 404, "automation_not_found")
    for path in by_id:
        assert_problem(client.get(path, headers=outsider), 404, "run_not_found")
