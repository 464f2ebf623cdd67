"""Key lifecycle: expiry, last use, who may revoke whom, the audit log, idempotency per key."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from conveyor.api.app import create_app
from conveyor.clock import FakeClock
from conveyor.engine.worker import Worker
from conveyor.settings import Settings
from conveyor.store.db import Database
from conveyor.store.tables import api_keys, audit_log, idempotency_records, runs
from conveyor.testing.factories import make_automation, trigger
from tests.api.conftest import NewKey
from tests.api.helpers import DEFINITION, TestClient, assert_problem, count

BASE = "/api/v1/keys"
# Rendering an unknown name fails the step: a failed run without a network.
BROKEN = {
    "name": "broken",
    "steps": [{"key": "a", "type": "set", "vars": {"y": "{{ nothing.here }}"}}],
}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _settings(db: Database) -> Settings:
    return Settings(database_url=db.url.render_as_string(hide_password=False))


def _last_used(db: Database, key_id: str) -> Any:
    with db.read() as conn:
        return conn.execute(
            select(api_keys.c.last_used_at).where(api_keys.c.id == key_id)
        ).scalar_one()


def test_a_key_past_its_expiry_is_401(db: Database, auth: dict[str, str]) -> None:
    clock = FakeClock()
    client = TestClient(create_app(_settings(db), db=db, clock=clock))
    expires = clock.now() + timedelta(hours=1)
    created = client.post(
        BASE, json={"scopes": ["runs:read"], "expires_at": expires.isoformat()}, headers=auth
    )
    assert created.status_code == 201, created.text
    assert created.json()["expires_at"].startswith(expires.strftime("%Y-%m-%dT%H:%M:%S"))
    token = created.json()["token"]
    assert client.get("/api/v1/runs", headers=_bearer(token)).status_code == 200
    clock.advance(timedelta(hours=1))
    body = assert_problem(
        client.get("/api/v1/runs", headers=_bearer(token)), 401, "unauthenticated"
    )
    assert "expired" in body["detail"]
    # Keys without an expiry are untouched by time.
    clock.advance(timedelta(days=3650))
    assert client.get("/api/v1/runs", headers=auth).status_code == 200


def test_an_expiry_in_the_past_or_without_a_zone_is_422(
    db: Database, client: TestClient, auth: dict[str, str]
) -> None:
    before = count(db, api_keys)
    for when in ("2001-01-01T00:00:00Z", "2999-01-01T00:00:00"):
        response = client.post(
            BASE, json={"scopes": ["runs:read"], "expires_at": when}, headers=auth
        )
        body = assert_problem(response, 422, "validation_error")
        assert body["errors"][0]["loc"] == ["body", "expires_at"], body
    assert count(db, api_keys) == before
    assert count(db, audit_log) == 0


def test_a_narrower_admin_key_cannot_revoke_a_broader_one(
    db: Database, client: TestClient, tenant: dict[str, Any], new_key: NewKey, auth: dict[str, str]
) -> None:
    narrow = _bearer(new_key(tenant["id"], scopes=["keys:admin", "runs:read"]))
    keys = client.get(BASE, headers=auth).json()["items"]
    broad_id = next(k["id"] for k in keys if len(k["scopes"]) > 2)
    body = assert_problem(client.delete(f"{BASE}/{broad_id}", headers=narrow), 403, "forbidden")
    assert "automations:write" in body["detail"]
    assert client.get(BASE, headers=auth).status_code == 200  # the broad key still works
    assert count(db, audit_log) == 0
    # A key within its own scopes it may revoke.
    mine = client.post(BASE, json={"scopes": ["runs:read"]}, headers=narrow).json()
    assert client.delete(f"{BASE}/{mine['id']}", headers=narrow).status_code == 204
    assert_problem(
        client.get("/api/v1/runs", headers=_bearer(mine["token"])), 401, "unauthenticated"
    )


def test_last_use_is_written_after_the_request_once_a_minute(
    db: Database, tenant: dict[str, Any], new_key: NewKey
) -> None:
    clock = FakeClock()
    app = create_app(_settings(db), db=db, clock=clock)
    token = new_key(tenant["id"], scopes=["runs:read", "keys:admin"])
    usage = app.state.key_usage
    usage.flush_seconds = 3600  # only the flushes the test makes, and the one at shutdown
    with TestClient(app) as client:
        key_id = client.get(BASE, headers=_bearer(token)).json()["items"][0]["id"]
        # Not on the request path: the row is unchanged until a flush.
        assert _last_used(db, key_id) is None
        assert usage.flush() == 1
        first = _last_used(db, key_id)
        assert first == clock.now()
        # Within the minute, further requests note nothing.
        clock.advance(30)
        client.get("/api/v1/runs", headers=_bearer(token))
        assert usage.flush() == 0
        # A minute later the next request is noted, and written at shutdown.
        clock.advance(31)
        client.get("/api/v1/runs", headers=_bearer(token))
    assert _last_used(db, key_id) == clock.now() > first
    listed = TestClient(app).get(BASE, headers=_bearer(token)).json()["items"][0]
    assert listed["last_used_at"] is not None


def test_an_idempotent_replay_is_never_given_to_another_key(
    db: Database, client: TestClient, tenant: dict[str, Any], new_key: NewKey, auth: dict[str, str]
) -> None:
    client.post("/api/v1/automations", json=DEFINITION, headers=auth)
    url = f"/api/v1/automations/{DEFINITION['name']}/trigger"
    header = {"Idempotency-Key": "order-7"}
    first = client.post(url, json={"payload": {"n": 1}}, headers={**auth, **header})
    assert first.status_code == 202
    reader = {**_bearer(new_key(tenant["id"], scopes=["runs:read"])), **header}
    # Same body, or another (once an oracle: 422 said "another body was used"): 403 both.
    assert_problem(client.post(url, json={"payload": {"n": 1}}, headers=reader), 403, "forbidden")
    assert_problem(client.post(url, json={"payload": {"n": 2}}, headers=reader), 403, "forbidden")
    # A key that may trigger gets its own processing: the run's own key finds the first run.
    trigger_key = {**_bearer(new_key(tenant["id"], scopes=["automations:trigger"])), **header}
    again = client.post(url, json={"payload": {"n": 1}}, headers=trigger_key)
    assert again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert count(db, runs) == 1
    with db.read() as conn:
        owners = conn.execute(select(idempotency_records.c.key_id)).scalars().all()
    assert len(set(owners)) == 2  # one record per key that was let through


def test_retry_with_new_input_needs_the_trigger_scope(
    db: Database, client: TestClient, tenant: dict[str, Any], new_key: NewKey
) -> None:
    make_automation(db, tenant["id"], BROKEN)
    run_id = trigger(db, tenant["id"], "broken")
    asyncio.run(Worker(db, _settings(db)).run_until_idle())
    url = f"/api/v1/runs/{run_id}/retry"
    writer = _bearer(new_key(tenant["id"], scopes=["runs:write"]))
    before = count(db, runs)
    for body in ({"mode": "full", "payload": {"x": 1}}, {"mode": "full", "version": "latest"}):
        problem = assert_problem(client.post(url, json=body, headers=writer), 403, "forbidden")
        assert "automations:trigger" in problem["detail"]
    assert count(db, runs) == before
    # A plain retry re-runs what already ran: runs:write is enough.
    assert client.post(url, json={"mode": "full"}, headers=writer).status_code == 202
    both = _bearer(new_key(tenant["id"], scopes=["runs:write", "automations:trigger"]))
    assert (
        client.post(url, json={"mode": "full", "payload": {"x": 1}}, headers=both).status_code
        == 202
    )


def test_key_changes_are_audited_with_who_when_and_where(
    db: Database, client: TestClient, tenant: dict[str, Any], token: str, auth: dict[str, str]
) -> None:
    created = client.post(BASE, json={"label": "ci", "scopes": ["runs:read"]}, headers=auth).json()
    assert client.delete(f"{BASE}/{created['id']}", headers=auth).status_code == 204
    assert client.delete(f"{BASE}/{created['id']}", headers=auth).status_code == 204  # no-op
    me = next(k for k in client.get(BASE, headers=auth).json()["items"] if k["label"] == "test")
    log = client.get("/api/v1/audit", headers=auth).json()
    assert log["total"] == 2
    revoked, made = log["items"]  # newest first
    assert (made["action"], revoked["action"]) == ("key.created", "key.revoked")
    for entry in (made, revoked):
        assert entry["key_id"] == me["id"]
        assert entry["target_type"] == "api_key"
        assert entry["target_id"] == created["id"]
        assert entry["client_address"] == "testclient"
        assert entry["created_at"]
    assert made["details"] == {"label": "ci", "scopes": ["runs:read"], "expires_at": None}
    assert created["token"] not in str(log)
    only = client.get("/api/v1/audit", params={"action": "key.revoked"}, headers=auth).json()
    assert [e["id"] for e in only["items"]] == [revoked["id"]]
    paged = client.get("/api/v1/audit", params={"limit": 1}, headers=auth).json()
    rest = client.get(
        "/api/v1/audit", params={"limit": 1, "cursor": paged["next_cursor"]}, headers=auth
    ).json()
    assert [paged["items"][0]["id"], rest["items"][0]["id"]] == [revoked["id"], made["id"]]
    assert rest["next_cursor"] is None
    assert_problem(
        client.get("/api/v1/audit", params={"action": "key.stolen"}, headers=auth),
        422,
        "validation_error",
    )
