"""Rate limits: a key over its share gets 429 with Retry-After; bogus keys cost no database read."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import event

from conveyor.store.db import Database
from tests.api.conftest import NewKey
from tests.api.helpers import assert_problem, make_client

LIMITS = {"rate_limit": "50/second", "rate_limit_burst": 100, "auth_failure_limit": "20/second"}


def test_a_burst_from_one_key_is_cut_at_its_limit(
    db: Database, new_key: NewKey, tenant: dict[str, Any]
) -> None:
    # A slow refill: on a loaded host one request can take over 20 ms, and at 50/second
    # the bucket would refill as fast as a sequential client drains it.
    client = make_client(db, **{**LIMITS, "rate_limit": "5/second"})
    greedy = {"Authorization": f"Bearer {new_key(tenant['id'])}"}
    other = {"Authorization": f"Bearer {new_key(tenant['id'])}"}
    started = time.monotonic()
    answers = [client.get("/api/v1/automations", headers=greedy) for _ in range(300)]
    elapsed = time.monotonic() - started
    statuses = [r.status_code for r in answers]
    assert statuses[:100] == [200] * 100  # the burst
    # then no more than the rate refills, however long the 300 took here
    assert statuses.count(200) <= 100 + 5 * (elapsed + 1)
    assert set(statuses) == {200, 429}
    refused = next(r for r in answers if r.status_code == 429)
    body = assert_problem(refused, 429, "rate_limited")
    assert "rate limit" in body["detail"]
    # At most the window the burst spans (100 at 5/second: 20 s), rounded up.
    assert 1 <= int(refused.headers["Retry-After"]) <= 21
    # Another key of the same tenant still gets through: the limit is per key.
    assert client.get("/api/v1/automations", headers=other).status_code == 200
    # Health checks are not limited.
    assert client.get("/healthz").status_code == 200


def test_a_batch_costs_one_request_per_hundred_events(
    db: Database, new_key: NewKey, tenant: dict[str, Any]
) -> None:
    client = make_client(db, rate_limit="1/second", rate_limit_burst=10, max_body_bytes=1 << 20)
    auth = {"Authorization": f"Bearer {new_key(tenant['id'])}"}
    batch = {"events": [{"id": f"e{i}", "name": "x"} for i in range(1000)]}
    assert client.post("/api/v1/events", json=batch, headers=auth).status_code == 200
    assert_problem(client.get("/api/v1/automations", headers=auth), 429, "rate_limited")


def test_failed_authentications_are_limited_before_any_lookup(db: Database) -> None:
    # Per minute: the same burst of 40, but a slow machine refills nothing meanwhile.
    client = make_client(db, **{**LIMITS, "auth_failure_limit": "20/minute"})
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        answers = [
            client.get("/api/v1/automations", headers={"Authorization": f"Bearer cvk_bogus{i}"})
            for i in range(300)
        ]
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    statuses = [r.status_code for r in answers]
    assert statuses[:40] == [401] * 40
    assert statuses.count(429) > 200
    assert_problem(answers[-1], 429, "rate_limited")
    lookups = [s for s in statements if "api_keys" in s]
    assert len(lookups) <= 45  # one per request let through, none for those refused


def test_openapi_declares_429_on_every_api_operation(db: Database) -> None:
    schema = make_client(db).get("/openapi.json").json()
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if path.startswith("/api/"):
                assert "429" in operation["responses"], (method, path)
            assert "503" in operation["responses"], (method, path)
