"""API keys over HTTP."""

from __future__ import annotations

from typing import Any

from conveyor.store.db import Database
from conveyor.store.tables import api_keys
from tests.api.conftest import NewKey
from tests.api.helpers import TestClient, assert_problem, count

BASE = "/api/v1/keys"


def test_create_use_list_and_revoke(db: Database, client: TestClient, auth: dict[str, str]) -> None:
    created = client.post(
        BASE, json={"label": "ci", "scopes": ["runs:read", "automations:read"]}, headers=auth
    )
    assert created.status_code == 201, created.text
    assert created.headers["cache-control"] == "no-store"
    key = created.json()
    assert key["token"].startswith("cvk_")
    assert key["prefix"] == key["token"][:12]
    assert key["scopes"] == ["automations:read", "runs:read"]
    new_auth = {"Authorization": f"Bearer {key['token']}"}
    assert client.get("/api/v1/automations", headers=new_auth).status_code == 200
    # It holds exactly what it was given.
    assert_problem(client.get(BASE, headers=new_auth), 403, "forbidden")

    listed = client.get(BASE, headers=auth).json()
    assert listed["total"] == 2
    assert [k["label"] for k in listed["items"]] == ["test", "ci"]
    assert all("token" not in k and "token_hash" not in k for k in listed["items"])
    assert key["token"] not in str(listed)

    assert client.delete(f"{BASE}/{key['id']}", headers=auth).status_code == 204
    assert_problem(client.get("/api/v1/automations", headers=new_auth), 401, "unauthenticated")
    revoked = client.get(BASE, headers=auth).json()["items"][1]
    assert revoked["revoked_at"] is not None
    # Revoking again changes nothing.
    assert client.delete(f"{BASE}/{key['id']}", headers=auth).status_code == 204
    assert client.get(BASE, headers=auth).json()["items"][1] == revoked
    live = client.get(BASE, params={"include_revoked": "false"}, headers=auth).json()
    assert [k["label"] for k in live["items"]] == ["test"]
    assert count(db, api_keys) == 2


def test_a_key_cannot_grant_scopes_it_lacks(
    db: Database, client: TestClient, tenant: dict[str, Any], new_key: NewKey
) -> None:
    admin = new_key(tenant["id"], scopes=["keys:admin", "runs:read"])
    headers = {"Authorization": f"Bearer {admin}"}
    before = count(db, api_keys)
    response = client.post(BASE, json={"scopes": ["runs:read", "runs:write"]}, headers=headers)
    body = assert_problem(response, 403, "forbidden")
    assert "runs:write" in body["detail"]
    assert count(db, api_keys) == before
    assert client.post(BASE, json={"scopes": ["runs:read"]}, headers=headers).status_code == 201


def test_bad_key_requests(db: Database, client: TestClient, auth: dict[str, str]) -> None:
    before = count(db, api_keys)
    unknown = client.post(BASE, json={"scopes": ["runs:everything"]}, headers=auth)
    assert ["body", "scopes", 0] in [
        e["loc"] for e in assert_problem(unknown, 422, "validation_error")["errors"]
    ]
    assert_problem(client.post(BASE, json={"scopes": []}, headers=auth), 422, "validation_error")
    assert_problem(
        client.post(BASE, json={"scopes": ["runs:read"], "admin": True}, headers=auth),
        422,
        "validation_error",
    )
    assert count(db, api_keys) == before
    for key_id in ("01934a5e-0000-7000-8000-000000000000", "nope"):
        assert_problem(client.delete(f"{BASE}/{key_id}", headers=auth), 404, "api_key_not_found")


def test_keys_page_with_cursor(
    client: TestClient, tenant: dict[str, Any], auth: dict[str, str], new_key: NewKey
) -> None:
    for label in ("b", "c", "d"):
        new_key(tenant["id"], label=label)
    first = client.get(BASE, params={"limit": 2}, headers=auth).json()
    assert [k["label"] for k in first["items"]] == ["test", "b"]
    rest = client.get(BASE, params={"limit": 2, "cursor": first["next_cursor"]}, headers=auth)
    assert [k["label"] for k in rest.json()["items"]] == ["c", "d"]
    assert rest.json()["next_cursor"] is None
    assert_problem(
        client.get(BASE, params={"cursor": "eyJrIjogIngifQ"}, headers=auth),
        422,
        "invalid_cursor",
    )
