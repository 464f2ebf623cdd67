"""The per-process principal cache: what a revocation or an expiry does, and when."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from sqlalchemy import update

from conveyor.api.app import create_app
from conveyor.settings import Settings
from conveyor.store.db import Database
from conveyor.store.tables import api_keys
from tests.api.conftest import NewKey
from tests.api.helpers import TestClient, assert_problem

RUNS = "/api/v1/runs"


def _client(db: Database, ttl: float) -> TestClient:
    settings = Settings(
        database_url=db.url.render_as_string(hide_password=False), auth_cache_seconds=ttl
    )
    return TestClient(create_app(settings, db=db))


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _revoke_elsewhere(db: Database, token_key_id: str) -> None:
    # What another server process or `conveyor keys revoke` does: the row changes,
    # this process is not told.
    with db.transaction() as conn:
        conn.execute(
            update(api_keys)
            .where(api_keys.c.id == token_key_id)
            .values(revoked_at=datetime.now(UTC))
        )


def _key_id(client: TestClient, token: str) -> str:
    me = client.get("/api/v1/keys", headers=_bearer(token)).json()["items"]
    return str(me[0]["id"])


def test_a_key_revoked_through_this_process_stops_at_once(
    db: Database, tenant: dict[str, object], new_key: NewKey
) -> None:
    client = _client(db, ttl=300)
    admin = new_key(str(tenant["id"]), label="admin")
    victim = new_key(str(tenant["id"]), scopes=["runs:read"], label="victim")
    assert client.get(RUNS, headers=_bearer(victim)).status_code == 200  # now cached
    keys = client.get("/api/v1/keys", headers=_bearer(admin)).json()["items"]
    victim_id = next(k["id"] for k in keys if k["label"] == "victim")
    assert client.delete(f"/api/v1/keys/{victim_id}", headers=_bearer(admin)).status_code == 204
    assert_problem(client.get(RUNS, headers=_bearer(victim)), 401, "unauthenticated")
    # The idempotency layer asks the same cache: a POST with the header is refused too.
    response = client.post(
        "/api/v1/events",
        json={"name": "x", "payload": {}},
        headers={**_bearer(victim), "Idempotency-Key": "k1"},
    )
    assert_problem(response, 401, "unauthenticated")


def test_a_key_revoked_elsewhere_stops_within_the_ttl(
    db: Database, tenant: dict[str, object], new_key: NewKey
) -> None:
    token = new_key(str(tenant["id"]), label="only")
    cached = _client(db, ttl=300)
    short = _client(db, ttl=0.2)
    uncached = _client(db, ttl=0)
    key_id = _key_id(uncached, token)
    for client in (cached, short, uncached):
        assert client.get(RUNS, headers=_bearer(token)).status_code == 200
    _revoke_elsewhere(db, key_id)
    # Read a moment ago: still accepted for up to the TTL (the documented bound).
    assert cached.get(RUNS, headers=_bearer(token)).status_code == 200
    # Without a cache: refused at once.
    assert_problem(uncached.get(RUNS, headers=_bearer(token)), 401, "unauthenticated")
    # Past the TTL: read again, refused.
    time.sleep(0.3)
    assert_problem(short.get(RUNS, headers=_bearer(token)), 401, "unauthenticated")
