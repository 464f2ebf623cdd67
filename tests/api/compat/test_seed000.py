"""Seed 000 (Omneo): dry runs triggered and their results read as its document does.

A dry run is requested with ``POST /v3/automations/{automation}/trigger``, the
real worker simulates it, and the results are browsed, filtered, read and
deleted under ``/v3/automation-dry-run-results``, with keys granted the
document's scopes (``read-reactions``, ``delete-reactions``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from conveyor.domain.scopes import parse_scopes
from conveyor.engine.worker import Worker
from conveyor.settings import Settings
from conveyor.store.db import Database
from conveyor.store.dryrun_tables import dry_run_results
from tests.api.conftest import NewKey
from tests.api.helpers import TestClient, count

URL = "/v3/automation-dry-run-results"

# The document's table of a result's attributes, with the JSON type each has
# here: its integer ids are UUID strings (docs/seeds/000.md).
ATTRIBUTES: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "automation_id": str,
    "run_at": str,
    "profile_id": str,
    "result_type": str,
    "result_id": str,
    "status": str,
    "result": dict,
    "arguments": dict,
    "requested_by": str,
    "created_at": str,
    "updated_at": str,
}

DEFINITION: dict[str, Any] = {
    "name": "welcome",
    "trigger": {"type": "manual"},
    "steps": [
        {"key": "greet", "type": "set", "vars": {"greeting": "hello {{ contact.email }}"}},
        {"key": "only_pro", "type": "filter", "expression": "contact.attributes.plan == 'pro'"},
    ],
}


def _work(db: Database) -> None:
    settings = Settings(database_url=db.url.render_as_string(hide_password=False))
    asyncio.run(Worker(db, settings).run_until_idle())


def _contact(client: TestClient, auth: dict[str, str], email: str, plan: str) -> str:
    body = {"email": email, "attributes": {"plan": plan}}
    response = client.post("/api/v1/contacts", json=body, headers=auth)
    assert response.status_code in (200, 201), response.text
    return str(response.json()["id"])


class World:
    """One tenant's automation, two contacts, and keys with the document's scopes."""

    def __init__(self, client: TestClient, auth: dict[str, str], new_key: NewKey, tenant: str):
        self.client = client
        self.auth = auth
        response = client.post("/api/v1/automations", json=DEFINITION, headers=auth)
        assert response.status_code == 201, response.text
        self.automation = str(response.json()["id"])
        self.pro = _contact(client, auth, "ann@example.com", "pro")
        self.free = _contact(client, auth, "bob@example.com", "free")
        self.reader = {"Authorization": f"Bearer {new_key(tenant, ['read-reactions'])}"}
        self.deleter = {"Authorization": f"Bearer {new_key(tenant, ['delete-reactions'])}"}
        self.trigger_only = {
            "Authorization": f"Bearer {new_key(tenant, ['automations:trigger'], label='ops')}"
        }

    def trigger(self, body: Any, headers: dict[str, str] | None = None) -> Any:
        return self.client.post(
            f"/v3/automations/{self.automation}/trigger",
            json=body,
            headers=headers or self.trigger_only,
        )


@pytest.fixture
def world(
    client: TestClient, auth: dict[str, str], new_key: NewKey, tenant: dict[str, Any]
) -> World:
    return World(client, auth, new_key, tenant["id"])


@pytest.fixture
def simulated(world: World, db: Database) -> World:
    """Two days (1-2 June 2026) simulated for both contacts: four results."""
    body = {
        "dry_run": True,
        "start_date": "2026-06-01",
        "end_date": "2026-06-02",
        "profile_ids": [world.pro, world.free],
    }
    response = world.trigger(body)
    assert response.status_code == 202, response.text
    _work(db)
    return world


def _assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    """The seed's error shape: ``{message, code}``, plus ``errors`` on a validation error."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    assert isinstance(body["message"], str)
    assert body["message"]
    if code == "validation_error":
        assert all(isinstance(v, list) and v for v in body["errors"].values())
    return body


def test_a_dry_run_is_triggered_and_its_results_listed(simulated: World, db: Database) -> None:
    listed = simulated.client.get(URL, headers=simulated.reader)
    assert listed.status_code == 200, listed.text
    body = listed.json()
    assert body["meta"]["total"] == 4
    assert len(body["data"]) == 4
    for result in body["data"]:
        for name, kind in ATTRIBUTES.items():
            assert isinstance(result[name], kind), (name, result)
        assert result["automation_id"] == simulated.automation
        assert result["requested_by"] == "ops"
        assert result["result_type"] == "run"
    outcomes = {(r["profile_id"], r["run_at"]): r["status"] for r in body["data"]}
    assert outcomes == {
        (simulated.pro, "2026-06-01"): "success",
        (simulated.pro, "2026-06-02"): "success",
        (simulated.free, "2026-06-01"): "skipped",
        (simulated.free, "2026-06-02"): "skipped",
    }
    # Show answers the same result, under `data`.
    first = body["data"][0]
    shown = simulated.client.get(f"{URL}/{first['id']}", headers=simulated.reader)
    assert shown.status_code == 200, shown.text
    assert shown.json()["data"] == first


def test_the_trigger_answers_202_and_refuses_anything_but_a_dry_run(world: World) -> None:
    response = world.trigger(
        {"dry_run": True, "start_date": "2026-06-01", "profile_ids": [world.pro]}
    )
    assert response.status_code == 202, response.text
    data = response.json()["data"]
    assert data["automation_id"] == world.automation
    assert (data["start_date"], data["end_date"]) == ("2026-06-01", "2026-06-01")
    assert response.headers["Location"] == f"/api/v1/dry-runs/{data['id']}"
    # By name too, as /api/v1 addresses automations.
    by_name = world.client.post(
        "/v3/automations/welcome/trigger",
        json={"dry_run": True, "profile_ids": [world.pro]},
        headers=world.trigger_only,
    )
    assert by_name.status_code == 202, by_name.text

    refused = _assert_error(world.trigger({"start_date": "2026-06-01"}), 422, "validation_error")
    assert "dry_run" in refused["errors"]
    refused = _assert_error(world.trigger({"dry_run": False}), 422, "validation_error")
    assert "dry_run" in refused["errors"]
    refused = _assert_error(
        world.trigger({"dry_run": True, "profile_ids": [world.pro], "start_date": "June"}),
        422,
        "validation_error",
    )
    assert list(refused["errors"]) == ["start_date"]
    _assert_error(
        world.trigger(
            {
                "dry_run": True,
                "start_date": "2026-06-02",
                "end_date": "2026-06-01",
                "profile_ids": [world.pro],
            }
        ),
        422,
        "invalid_dry_run",
    )
    _assert_error(world.trigger({"dry_run": True}), 422, "invalid_dry_run")  # manual: profiles
    missing = world.client.post(
        "/v3/automations/nope/trigger", json={"dry_run": True}, headers=world.trigger_only
    )
    _assert_error(missing, 404, "automation_not_found")
    _assert_error(world.trigger({"dry_run": True}, headers=world.reader), 403, "forbidden")
    response = world.client.post(
        f"/v3/automations/{world.automation}/trigger",
        content=b"{",
        headers={**world.trigger_only, "Content-Type": "application/json"},
    )
    _assert_error(response, 400, "malformed_json")


def test_the_nine_filters(simulated: World) -> None:
    def ids(**filters: str) -> set[tuple[str, str]]:
        params = {f"filter[{k}]": v for k, v in filters.items()}
        response = simulated.client.get(URL, params=params, headers=simulated.reader)
        assert response.status_code == 200, response.text
        return {(r["profile_id"], r["run_at"]) for r in response.json()["data"]}

    pro, free = simulated.pro, simulated.free
    everything = ids()
    assert len(everything) == 4
    assert ids(automation_id=simulated.automation) == everything
    assert ids(automation_id="01934a5e-0000-7000-8000-00000000dead") == set()
    assert ids(run_at="2026-06-02") == {(pro, "2026-06-02"), (free, "2026-06-02")}
    assert ids(profile_id=free) == {(free, "2026-06-01"), (free, "2026-06-02")}
    assert ids(status="success") == {(pro, "2026-06-01"), (pro, "2026-06-02")}
    assert ids(result_type="run") == everything
    assert ids(result_type="order") == set()
    assert ids(requested_by="ops") == everything
    assert ids(requested_by="someone else") == set()
    assert ids(created_at="2020-01-01..") == everything
    assert ids(updated_at="..2020-01-01") == set()
    one = simulated.client.get(URL, headers=simulated.reader).json()["data"][0]
    assert ids(result_id=one["result_id"]) == {(one["profile_id"], one["run_at"])}
    assert ids(profile_id=pro, run_at="2026-06-01", status="success") == {(pro, "2026-06-01")}

    for params, field in (
        ({"filter[status]": "done"}, "filter.status"),
        ({"filter[run_at]": "June"}, "filter.run_at"),
        ({"filter[profile_id]": "7"}, "filter.profile_id"),
        ({"filter[dry_run_id]": "x"}, "filter.dry_run_id"),  # not one of the nine
        ({"sort": "id"}, "sort"),
        ({"per_page": "0"}, "per_page"),
    ):
        response = simulated.client.get(URL, params=params, headers=simulated.reader)
        assert field in _assert_error(response, 422, "validation_error")["errors"], params


def test_pages_follow_the_laravel_paginator(simulated: World) -> None:
    client, reader = simulated.client, simulated.reader
    first = client.get(
        URL, params={"per_page": 3, "filter[automation_id]": simulated.automation}, headers=reader
    ).json()
    assert len(first["data"]) == 3
    assert first["meta"] == {
        "current_page": 1,
        "from": 1,
        "last_page": 2,
        "path": f"http://testserver{URL}",
        "per_page": 3,
        "to": 3,
        "total": 4,
    }
    assert first["links"]["prev"] is None
    assert first["links"]["next"] is not None
    second = client.get(first["links"]["next"], headers=reader).json()
    assert second["meta"]["current_page"] == 2
    assert (second["meta"]["from"], second["meta"]["to"]) == (4, 4)
    assert second["links"]["next"] is None
    assert second["links"]["last"] == first["links"]["last"]
    seen = {r["id"] for r in first["data"]} | {r["id"] for r in second["data"]}
    assert len(seen) == 4
    beyond = client.get(URL, params={"page": 9}, headers=reader).json()
    assert beyond["data"] == []
    assert (beyond["meta"]["from"], beyond["meta"]["to"]) == (None, None)


def test_delete_one_with_delete_reactions(simulated: World, db: Database) -> None:
    client = simulated.client
    result = client.get(URL, headers=simulated.reader).json()["data"][0]
    _assert_error(
        client.delete(f"{URL}/{result['id']}", headers=simulated.reader), 403, "forbidden"
    )
    assert client.delete(f"{URL}/{result['id']}", headers=simulated.deleter).status_code == 204
    assert count(db, dry_run_results) == 3
    _assert_error(
        client.get(f"{URL}/{result['id']}", headers=simulated.reader),
        404,
        "dry_run_result_not_found",
    )
    _assert_error(
        client.delete(f"{URL}/{result['id']}", headers=simulated.deleter),
        404,
        "dry_run_result_not_found",
    )
    # No bulk delete.
    assert client.delete(URL, headers=simulated.deleter).status_code == 405
    assert count(db, dry_run_results) == 3


def test_scope_synonyms_are_granted_as_the_dry_run_scopes(world: World) -> None:
    client, auth = world.client, world.auth
    response = client.post(
        "/api/v1/keys",
        json={"label": "omneo", "scopes": ["read-reactions", "delete-reactions"]},
        headers=auth,
    )
    assert response.status_code == 201, response.text
    assert response.json()["scopes"] == ["dry-runs:read", "dry-runs:delete"]
    token = {"Authorization": f"Bearer {response.json()['token']}"}
    assert client.get(URL, headers=token).status_code == 200
    assert client.get("/api/v1/dry-run-results", headers=token).status_code == 200
    # The synonyms grant nothing else.
    _assert_error(client.get(URL, headers=world.trigger_only), 403, "forbidden")
    _assert_error(client.get(URL, headers=world.deleter), 403, "forbidden")
    _assert_error(client.get(URL), 401, "unauthenticated")
    bad = client.post("/api/v1/keys", json={"scopes": ["write-reactions"]}, headers=auth)
    assert bad.status_code == 422
    # Where the CLI grants scopes.
    assert parse_scopes(["read-reactions", "dry-runs:read"]) == {"dry-runs:read"}


def test_the_seed_schema_lists_its_routes(client: TestClient) -> None:
    schema = client.get("/seeds/000/openapi.json").json()
    paths = schema["paths"]
    assert set(paths) == {
        "/v3/automations/{automation}/trigger",
        "/v3/automation-dry-run-results",
        "/v3/automation-dry-run-results/{result}",
    }
    names = {p["name"] for p in paths["/v3/automation-dry-run-results"]["get"]["parameters"]}
    assert {f"filter[{n}]" for n in ATTRIBUTES if n not in ("id", "result", "arguments")} <= names
    assert "/v3/automation-dry-run-results" not in client.get("/openapi.json").json()["paths"]
