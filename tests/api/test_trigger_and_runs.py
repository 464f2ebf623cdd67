"""Triggering runs and reading them over HTTP."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor.api.schemas.run_lists import RunSummary
from conveyor.store.db import Database
from conveyor.store.tables import runs, step_runs, tasks
from tests.api.helpers import DEFINITION, TestClient, assert_problem, count


@pytest.fixture
def automation(client: TestClient, auth: dict[str, str]) -> dict[str, Any]:
    """An automation of ``acme``."""
    response = client.post("/api/v1/automations", json=DEFINITION, headers=auth)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def _trigger(client: TestClient, auth: dict[str, str], ref: str, **kw: Any) -> Any:
    headers = {**auth, **kw.pop("headers", {})}
    return client.post(f"/api/v1/automations/{ref}/trigger", headers=headers, **kw)


def test_trigger_starts_a_pending_run(
    db: Database, client: TestClient, auth: dict[str, str], automation: dict[str, Any]
) -> None:
    body = {"payload": {"order_id": 42}, "identity": {"type": "email", "value": "a@example.com"}}
    response = _trigger(client, auth, automation["name"], json=body)
    assert response.status_code == 202, response.text
    assert "idempotent-replayed" not in response.headers
    run = response.json()
    assert run["status"] == "pending"
    assert run["automation_id"] == automation["id"]
    assert run["trigger_source_type"] == "api_key"
    assert run["identity"] == {"type": "email", "value": "a@example.com"}

    detail = client.get(f"/api/v1/runs/{run['id']}", headers=auth)
    assert detail.status_code == 200, detail.text
    assert detail.json()["trigger_event"]["payload"] == {"order_id": 42}
    assert [s["key"] for s in detail.json()["steps"]] == ["greet", "check"]
    assert count(db, runs) == 1


@pytest.mark.parametrize("keyed", [False, True], ids=["new", "replayed"])
def test_a_triggered_run_is_what_its_documented_model_writes(
    client: TestClient, auth: dict[str, str], automation: dict[str, Any], keyed: bool
) -> None:
    """Contract: the trigger's 202 skips runtime validation, so check here that it needs none.

    The bytes are exactly what ``RunSummary`` validates and writes back (every
    field, times as RFC 3339 with a ``Z``), for a new run with an identity and
    a contact and for a replay of an idempotency key.
    """
    body = {"identity": {"type": "external_id", "value": "u-1"}, "idempotency_key": "k"}
    if keyed:
        _trigger(client, auth, automation["name"], json=body)
    response = _trigger(client, auth, automation["name"], json=body)
    assert response.status_code == 202, response.text
    assert response.headers["content-type"] == "application/json"
    assert (response.headers.get("idempotent-replayed") == "true") is keyed
    run = RunSummary.model_validate_json(response.content)
    assert response.content == run.model_dump_json(by_alias=True).encode()
    assert set(response.json()) == set(RunSummary.model_fields)
    assert run.contact_id is not None
    assert response.json()["created_at"].endswith("Z")


def test_trigger_without_a_body_uses_an_empty_payload(
    client: TestClient, auth: dict[str, str], automation: dict[str, Any]
) -> None:
    response = _trigger(client, auth, automation["id"])
    assert response.status_code == 202, response.text


def test_idempotent_repeat_returns_the_first_run(
    db: Database, client: TestClient, auth: dict[str, str], automation: dict[str, Any]
) -> None:
    first = _trigger(client, auth, automation["id"], json={"idempotency_key": "order-42"})
    again = _trigger(client, auth, automation["id"], json={"idempotency_key": "order-42"})
    by_header = _trigger(
        client, auth, automation["id"], json={}, headers={"Idempotency-Key": "order-42"}
    )
    assert first.status_code == again.status_code == by_header.status_code == 202
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert by_header.headers["idempotent-replayed"] == "true"
    assert first.json()["id"] == again.json()["id"] == by_header.json()["id"]
    assert count(db, runs) == 1


@pytest.mark.parametrize(
    ("kw", "loc"),
    [
        ({"json": {"payload": ["not", "an", "object"]}}, ["body", "payload"]),
        ({"json": {"identity": {"type": "phone", "value": "1"}}}, ["body", "identity", "type"]),
        ({"json": {"identity": {"type": "email"}}}, ["body", "identity", "value"]),
        ({"json": {"dryrun": True}}, ["body", "dryrun"]),  # a misspelt `dry_run`
        ({"json": {"idempotency_key": ""}}, ["body", "idempotency_key"]),
        (
            {"json": {"idempotency_key": "a"}, "headers": {"Idempotency-Key": "b"}},
            ["header", "Idempotency-Key"],
        ),
    ],
    ids=[
        "payload-list",
        "identity-type",
        "identity-value",
        "unknown-field",
        "empty-key",
        "key-mismatch",
    ],
)
def test_bad_trigger_input_is_422_and_stores_nothing(
    db: Database,
    client: TestClient,
    auth: dict[str, str],
    automation: dict[str, Any],
    kw: dict[str, Any],
    loc: list[Any],
) -> None:
    kw = {**kw, "headers": {**auth, **kw.get("headers", {})}}
    response = client.post(f"/api/v1/automations/{automation['id']}/trigger", **kw)
    body = assert_problem(response, 422, "validation_error")
    assert loc in [e["loc"] for e in body["errors"]], body["errors"]
    assert all(set(e) == {"loc", "msg", "type"} for e in body["errors"])
    assert (count(db, runs), count(db, step_runs), count(db, tasks)) == (0, 0, 0)


def test_malformed_trigger_json_is_400_and_stores_nothing(
    db: Database, client: TestClient, auth: dict[str, str], automation: dict[str, Any]
) -> None:
    response = _trigger(
        client,
        auth,
        automation["id"],
        content=b"{payload:",
        headers={"Content-Type": "application/json"},
    )
    assert_problem(response, 400, "malformed_json")
    assert count(db, runs) == 0


def test_trigger_over_the_body_limit_is_413_and_stores_nothing(
    db: Database, client: TestClient, auth: dict[str, str], automation: dict[str, Any]
) -> None:
    response = _trigger(client, auth, automation["id"], json={"payload": {"x": "y" * 10_000}})
    assert_problem(response, 413, "payload_too_large")
    assert count(db, runs) == 0


def test_trigger_unknown_or_deleted_automation_is_404(
    db: Database, client: TestClient, auth: dict[str, str], automation: dict[str, Any]
) -> None:
    assert_problem(_trigger(client, auth, "nothing-here", json={}), 404, "automation_not_found")
    client.delete(f"/api/v1/automations/{automation['id']}", headers=auth)
    assert_problem(_trigger(client, auth, automation["id"], json={}), 404, "automation_not_found")
    assert count(db, runs) == 0


def test_trigger_disabled_automation_is_409(
    db: Database, client: TestClient, auth: dict[str, str]
) -> None:
    client.post("/api/v1/automations", json={**DEFINITION, "enabled": False}, headers=auth)
    response = _trigger(client, auth, DEFINITION["name"], json={})
    assert_problem(response, 409, "automation_disabled")
    assert count(db, runs) == 0


@pytest.mark.parametrize("run_id", ["01934a5e-0000-7000-8000-000000000000", "not-an-id"])
def test_unknown_run_is_404(client: TestClient, auth: dict[str, str], run_id: str) -> None:
    assert_problem(client.get(f"/api/v1/runs/{run_id}", headers=auth), 404, "run_not_found")
