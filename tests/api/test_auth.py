"""Authentication, scopes and tenant isolation, over every route."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.routing import APIRoute

from conveyor.api.app import ROUTERS
from conveyor.api.auth import ScopeRequirement
from conveyor.clock import SystemClock
from conveyor.domain.scopes import ALL_SCOPES
from conveyor.services import keys as key_service
from conveyor.store.db import Database
from tests.api.conftest import NewKey, NewTenant
from tests.api.helpers import DEFINITION, TestClient, assert_problem, make_client

SOME_ID = "01934a5e-0000-7000-8000-000000000000"

# Every authenticated route and the one scope it needs.
ROUTES: list[tuple[str, str, str]] = [
    ("GET", "/api/v1/automations", "automations:read"),
    ("POST", "/api/v1/automations", "automations:write"),
    ("GET", "/api/v1/automations/{automation_id}", "automations:read"),
    ("PUT", "/api/v1/automations/{automation_id}", "automations:write"),
    ("DELETE", "/api/v1/automations/{automation_id}", "automations:write"),
    ("GET", "/api/v1/automations/{automation_id}/versions", "automations:read"),
    ("POST", "/api/v1/automations/{automation_id}/trigger", "automations:trigger"),
    ("POST", "/api/v1/automations/{automation_id}/trigger/batch", "automations:trigger"),
    ("GET", "/api/v1/runs", "runs:read"),
    ("GET", "/api/v1/automations/{automation_id}/runs", "runs:read"),
    ("GET", "/api/v1/runs/{run_id}", "runs:read"),
    ("GET", "/api/v1/runs/{run_id}/steps", "runs:read"),
    ("GET", "/api/v1/runs/{run_id}/steps/{step_key}/output", "runs:read"),
    ("GET", "/api/v1/runs/{run_id}/events", "runs:read"),
    ("GET", "/api/v1/runs/stream", "runs:read"),
    ("POST", "/api/v1/runs/{run_id}/cancel", "runs:write"),
    ("POST", "/api/v1/runs/{run_id}/retry", "runs:write"),
    ("POST", "/api/v1/runs/{run_id}/replay", "runs:write"),
    ("POST", "/api/v1/runs/bulk/cancel", "runs:write"),
    ("POST", "/api/v1/runs/bulk/replay", "runs:write"),
    ("GET", "/api/v1/bulk-operations/{operation_id}", "runs:read"),
    ("GET", "/api/v1/keys", "keys:admin"),
    ("POST", "/api/v1/keys", "keys:admin"),
    ("DELETE", "/api/v1/keys/{key_id}", "keys:admin"),
    ("GET", "/api/v1/audit", "keys:admin"),
    ("GET", "/api/v1/contacts", "contacts:read"),
    ("POST", "/api/v1/contacts", "contacts:write"),
    ("GET", "/api/v1/contacts/{contact_id}", "contacts:read"),
    ("PUT", "/api/v1/contacts/{contact_id}", "contacts:write"),
    ("PATCH", "/api/v1/contacts/{contact_id}", "contacts:write"),
    ("DELETE", "/api/v1/contacts/{contact_id}", "contacts:write"),
    ("POST", "/api/v1/events", "events:write"),
    ("GET", "/api/v1/events", "events:read"),
    ("GET", "/api/v1/events/{event_id}", "events:read"),
    ("GET", "/api/v1/templates", "templates:read"),
    ("PUT", "/api/v1/templates/{name}", "templates:write"),
    ("GET", "/api/v1/templates/{name}", "templates:read"),
    ("DELETE", "/api/v1/templates/{name}", "templates:write"),
    ("GET", "/api/v1/templates/{name}/versions", "templates:read"),
    ("GET", "/api/v1/messages", "runs:read"),
    ("GET", "/api/v1/messages/{message_id}", "runs:read"),
    ("GET", "/api/v1/settings/channels", "settings:read"),
    ("PUT", "/api/v1/settings/channels", "settings:write"),
    ("GET", "/api/v1/dry-run-results", "dry-runs:read"),
    ("GET", "/api/v1/dry-run-results/{result_id}", "dry-runs:read"),
    ("DELETE", "/api/v1/dry-run-results/{result_id}", "dry-runs:delete"),
    ("GET", "/api/v1/dry-runs/{dry_run_id}", "dry-runs:read"),
    ("POST", "/api/v1/dry-runs/{dry_run_id}/cancel", "automations:trigger"),
]
ROUTE_IDS = [f"{m} {p}" for m, p, _ in ROUTES]
# The /api routes that take no key: signing in gives one, signing out needs none.
UNSCOPED_ROUTES = {("POST", "/api/v1/session"), ("DELETE", "/api/v1/session")}


def _scopes_of(route: APIRoute) -> set[str]:
    found: set[str] = set()
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        if isinstance(dep.call, ScopeRequirement):
            found.add(dep.call.scope.value)
        stack.extend(dep.dependencies)
    return found


def _request(client: TestClient, method: str, path: str, **kw: Any) -> Any:
    url = path.format(
        automation_id=SOME_ID,
        run_id=SOME_ID,
        key_id=SOME_ID,
        operation_id=SOME_ID,
        step_key="a",
        contact_id=SOME_ID,
        event_id="an-event",
        name="receipt",
        message_id=SOME_ID,
        result_id=SOME_ID,
        dry_run_id=SOME_ID,
    )
    if method in ("POST", "PUT"):
        kw.setdefault("json", {})
    return client.request(method, url, **kw)


def test_route_table_lists_every_route_with_its_scope() -> None:
    actual = set()
    unscoped = set()
    for route in (r for router in ROUTERS for r in router.routes):
        if isinstance(route, APIRoute) and route.path.startswith("/api/"):
            scopes = _scopes_of(route)
            assert route.methods is not None
            assert len(route.methods) == 1, f"{route.path}: one method per route"
            method = next(iter(route.methods))
            if (method, route.path) in UNSCOPED_ROUTES:
                assert not scopes, route.path
                unscoped.add((method, route.path))
                continue
            assert len(scopes) == 1, f"{route.path} must need exactly one scope, has {scopes}"
            actual.add((method, route.path, scopes.pop()))
    assert actual == set(ROUTES)
    assert unscoped == UNSCOPED_ROUTES


@pytest.mark.parametrize(("method", "path", "scope"), ROUTES, ids=ROUTE_IDS)
def test_missing_key_is_401_on_every_route(
    client: TestClient, method: str, path: str, scope: str
) -> None:
    response = _request(client, method, path)
    assert_problem(response, 401, "unauthenticated")
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("method", "path", "scope"), ROUTES, ids=ROUTE_IDS)
def test_missing_scope_is_403_on_every_route(
    client: TestClient,
    tenant: dict[str, Any],
    new_key: NewKey,
    method: str,
    path: str,
    scope: str,
) -> None:
    others = new_key(tenant["id"], scopes=[s for s in ALL_SCOPES if s != scope])
    response = _request(client, method, path, headers={"Authorization": f"Bearer {others}"})
    body = assert_problem(response, 403, "forbidden")
    assert scope in body["detail"]


@pytest.mark.parametrize(
    "carrier",
    [
        lambda t: {"headers": {"Authorization": f"Bearer {t}"}},
        lambda t: {"headers": {"X-API-Key": t}},
        lambda t: {"cookies": {"conveyor_token": t}},
    ],
    ids=["bearer", "x-api-key", "cookie"],
)
def test_each_carrier_authenticates(db: Database, token: str, carrier: Any) -> None:
    kw = carrier(token)
    client = make_client(db)
    client.cookies.update(kw.pop("cookies", {}))
    response = client.get("/api/v1/automations", **kw)
    assert response.status_code == 200, response.text
    assert response.json()["items"] == []


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer cvk_not-a-real-token"},
        {"Authorization": "Bearer something-else"},
        {"X-API-Key": "cvk_nope"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
    ],
    ids=["unknown-bearer", "not-ours", "unknown-header", "basic-scheme"],
)
def test_invalid_key_is_401(client: TestClient, token: str, headers: dict[str, str]) -> None:
    assert_problem(client.get("/api/v1/automations", headers=headers), 401, "unauthenticated")


def test_revoked_key_is_401(
    db: Database, client: TestClient, tenant: dict[str, Any], new_key: NewKey
) -> None:
    doomed = new_key(tenant["id"])
    headers = {"Authorization": f"Bearer {doomed}"}
    assert client.get("/api/v1/automations", headers=headers).status_code == 200
    with db.read() as conn:
        principal = key_service.authenticate(conn, doomed, SystemClock().now())
    assert principal is not None
    # Revoked through this server (another process's revocation: tests/api/test_auth_cache.py).
    revoked = client.delete(f"/api/v1/keys/{principal.key_id}", headers=headers)
    assert revoked.status_code == 204
    assert_problem(client.get("/api/v1/automations", headers=headers), 401, "unauthenticated")


def test_another_tenants_objects_are_404_everywhere(
    client: TestClient,
    auth: dict[str, str],
    new_tenant: NewTenant,
    new_key: NewKey,
) -> None:
    mine = client.post("/api/v1/automations", json=DEFINITION, headers=auth).json()
    run = client.post(f"/api/v1/automations/{mine['id']}/trigger", json={}, headers=auth).json()
    my_key = client.post(
        "/api/v1/keys", json={"label": "mine", "scopes": ["runs:read"]}, headers=auth
    ).json()
    other = {"Authorization": f"Bearer {new_key(new_tenant('intruder')['id'])}"}

    for ref in (mine["id"], mine["name"]):
        base = f"/api/v1/automations/{ref}"
        assert_problem(client.get(base, headers=other), 404, "automation_not_found")
        assert_problem(
            client.put(base, json=DEFINITION, headers=other), 404, "automation_not_found"
        )
        assert_problem(client.delete(base, headers=other), 404, "automation_not_found")
        assert_problem(client.get(f"{base}/versions", headers=other), 404, "automation_not_found")
        assert_problem(
            client.post(f"{base}/trigger", json={}, headers=other), 404, "automation_not_found"
        )
        batch = {"runs": [{}, {"idempotency_key": "k"}]}
        assert_problem(
            client.post(f"{base}/trigger/batch", json=batch, headers=other),
            404,
            "automation_not_found",
        )
    assert_problem(client.get(f"/api/v1/runs/{run['id']}", headers=other), 404, "run_not_found")
    assert_problem(
        client.delete(f"/api/v1/keys/{my_key['id']}", headers=other), 404, "api_key_not_found"
    )
    assert client.get("/api/v1/automations", headers=other).json()["total"] == 0
    assert [k["label"] for k in client.get("/api/v1/keys", headers=other).json()["items"]] == [
        "test"
    ]
    # The key created above is in its own tenant's audit log only.
    assert client.get("/api/v1/audit", headers=other).json()["total"] == 0
    assert [e["target_id"] for e in client.get("/api/v1/audit", headers=auth).json()["items"]] == [
        my_key["id"]
    ]

    # Nothing of the first tenant changed, and names are per tenant.
    assert client.get(f"/api/v1/automations/{mine['id']}", headers=auth).json()["version"] == 1
    assert client.get(f"/api/v1/runs/{run['id']}", headers=auth).status_code == 200
    assert client.get("/api/v1/keys", headers=auth).json()["items"][-1]["revoked_at"] is None
    assert client.post("/api/v1/automations", json=DEFINITION, headers=other).status_code == 201
