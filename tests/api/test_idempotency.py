"""The ``Idempotency-Key`` header on POST requests."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse

from conveyor.api.app import create_app
from conveyor.api.auth import require
from conveyor.clock import SystemClock
from conveyor.domain.scopes import Scope
from conveyor.services import idempotency as service
from conveyor.services.keys import authenticate
from conveyor.settings import Settings
from conveyor.store import idempotency as store
from conveyor.store.db import Database
from conveyor.store.tables import (
    api_keys,
    automation_versions,
    automations,
    idempotency_records,
    runs,
)
from tests.api.conftest import NewKey, NewTenant
from tests.api.helpers import BODY_LIMIT, DEFINITION, TestClient, assert_problem, count
from tests.api.live import live_server

KEY = {"Idempotency-Key": "create-order-follow-up"}
SMALL = (
    b'{"name": "n", "trigger": {"type": "manual"}, '
    b'"steps": [{"key": "a", "type": "set", "vars": {}}]}'
)
SMALL_RESPELLED = (
    b'{"steps":[{"vars":{},"type":"set","key":"a"}],"trigger":{"type":"manual"},"name":"n"}'
)


def _app(db: Database) -> FastAPI:
    settings = Settings(
        database_url=db.url.render_as_string(hide_password=False), max_body_bytes=BODY_LIMIT
    )
    return create_app(settings, db=db, clock=SystemClock())


class Calls:
    """Counts calls of the test routes; the slow one waits for ``release``."""

    def __init__(self) -> None:
        self.count = 0
        self.entered = threading.Event()
        self.release = threading.Event()


@pytest.fixture
def calls() -> Calls:
    """The test routes' counters."""
    return Calls()


@pytest.fixture
def app(db: Database, calls: Calls) -> FastAPI:
    """The app, plus test routes that fail or take their time."""
    app = _app(db)
    write = require(Scope.RUNS_WRITE)

    @app.post("/api/v1/test/boom", dependencies=[Depends(write)])
    def boom() -> None:
        calls.count += 1
        raise RuntimeError("boom")

    @app.post("/api/v1/test/unavailable", dependencies=[Depends(write)])
    def unavailable() -> JSONResponse:
        calls.count += 1
        return JSONResponse({"detail": "later"}, status_code=503)

    @app.post("/api/v1/test/slow", dependencies=[Depends(write)])
    def slow(body: dict[str, Any]) -> dict[str, Any]:
        calls.count += 1
        calls.entered.set()
        assert calls.release.wait(5), "the test never released the slow request"
        return {"n": calls.count}

    return app


@pytest.fixture
def api(app: FastAPI) -> TestClient:
    """An in-process client whose server errors come back as responses."""
    return TestClient(app, raise_server_exceptions=False)


def _create(api: TestClient, headers: dict[str, str], body: Any = DEFINITION) -> Any:
    return api.post("/api/v1/automations", json=body, headers=headers)


def test_repeat_returns_the_first_response_and_creates_nothing(
    db: Database, api: TestClient, auth: dict[str, str]
) -> None:
    first = _create(api, {**auth, **KEY})
    again = _create(api, {**auth, **KEY})
    assert first.status_code == again.status_code == 201
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert again.content == first.content
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["content-type"] == first.headers["content-type"]
    assert (count(db, automations), count(db, automation_versions)) == (1, 1)
    assert count(db, idempotency_records) == 1


def test_json_spelled_differently_is_the_same_request(
    db: Database, api: TestClient, auth: dict[str, str]
) -> None:
    first = api.post(
        "/api/v1/automations",
        content=SMALL,
        headers={**auth, **KEY, "Content-Type": "application/json"},
    )
    again = api.post(
        "/api/v1/automations",
        content=SMALL_RESPELLED,
        headers={**auth, **KEY, "Content-Type": "application/json"},
    )
    assert first.status_code == 201, first.text
    assert again.headers["idempotent-replayed"] == "true"
    assert count(db, automations) == 1


def test_a_4xx_answer_is_kept_too(db: Database, api: TestClient, auth: dict[str, str]) -> None:
    bad = {**DEFINITION, "steps": [{"key": "x", "type": "nope"}]}
    first = _create(api, {**auth, **KEY}, bad)
    assert_problem(first, 422, "invalid_definition")
    again = _create(api, {**auth, **KEY}, bad)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert again.headers["content-type"].startswith("application/problem+json")


def test_same_key_with_another_body_is_422(
    db: Database, api: TestClient, auth: dict[str, str]
) -> None:
    assert _create(api, {**auth, **KEY}).status_code == 201
    other = {**DEFINITION, "name": "something-else"}
    assert_problem(_create(api, {**auth, **KEY}, other), 422, "idempotency_key_reused")
    # Another route, same key: also another request.
    response = api.post("/api/v1/keys", json={"scopes": []}, headers={**auth, **KEY})
    assert_problem(response, 422, "idempotency_key_reused")
    assert (count(db, automations), count(db, api_keys)) == (1, 1)


def _insert_in_flight(db: Database, token: str, key: str, body_hash: str, age: float) -> None:
    now = SystemClock().now() - timedelta(seconds=age)
    with db.transaction() as conn:
        principal = authenticate(conn, token, now)
        assert principal is not None
        store.try_insert(
            conn,
            tenant_id=principal.tenant_id,
            key_id=principal.key_id,
            key=key,
            method="POST",
            path="/api/v1/automations",
            body_hash=body_hash,
            now=now,
            expires_at=now + service.TTL,
        )


def _hash_of(body: bytes) -> str:
    return service.fingerprint("POST", "/api/v1/automations", "", "application/json", body)


def test_repeat_while_in_flight_is_409(
    db: Database, api: TestClient, token: str, auth: dict[str, str]
) -> None:
    body = SMALL
    _insert_in_flight(db, token, KEY["Idempotency-Key"], _hash_of(body), age=1)
    headers = {**auth, **KEY, "Content-Type": "application/json"}
    response = api.post("/api/v1/automations", content=body, headers=headers)
    assert_problem(response, 409, "idempotency_key_in_flight")
    assert response.headers["retry-after"]
    # A different body is refused as a different request, in flight or not.
    other = api.post("/api/v1/automations", content=body.replace(b'"n"', b'"m"'), headers=headers)
    assert_problem(other, 422, "idempotency_key_reused")
    assert count(db, automations) == 0


def test_an_abandoned_in_flight_record_is_taken_over(
    db: Database, api: TestClient, token: str, auth: dict[str, str]
) -> None:
    body = SMALL
    age = service.ABANDONED_AFTER.total_seconds() + 60  # its process died long ago
    _insert_in_flight(db, token, KEY["Idempotency-Key"], _hash_of(body), age=age)
    headers = {**auth, **KEY, "Content-Type": "application/json"}
    response = api.post("/api/v1/automations", content=body, headers=headers)
    assert response.status_code == 201, response.text
    assert api.post("/api/v1/automations", content=body, headers=headers).headers[
        "idempotent-replayed"
    ]


def test_an_expired_record_is_forgotten(
    db: Database, api: TestClient, tenant: dict[str, Any], auth: dict[str, str]
) -> None:
    first = _create(api, {**auth, **KEY})
    with db.transaction() as conn:
        conn.execute(
            idempotency_records.update().values(expires_at=SystemClock().now() - timedelta(1))
        )
    # Past its day the key is free again: the request runs (and meets the name taken).
    again = _create(api, {**auth, **KEY})
    assert first.status_code == 201
    assert_problem(again, 409, "automation_name_taken")
    assert "idempotent-replayed" not in again.headers
    with db.transaction() as conn:
        assert service.prune(conn, SystemClock().now() + service.TTL * 2) == 1


def test_concurrent_repeat_gets_409_while_the_first_is_running(
    db: Database, app: FastAPI, auth: dict[str, str], calls: Calls
) -> None:
    results: list[httpx.Response] = []
    headers = {**auth, **KEY}
    with live_server(app) as url, httpx.Client(base_url=url, timeout=10) as http:
        first = threading.Thread(
            target=lambda: results.append(
                http.post("/api/v1/test/slow", json={"a": 1}, headers=headers)
            )
        )
        first.start()
        assert calls.entered.wait(5)
        repeat = http.post("/api/v1/test/slow", json={"a": 1}, headers=headers)
        calls.release.set()
        first.join(10)
        replay = http.post("/api/v1/test/slow", json={"a": 1}, headers=headers)
    assert_problem(repeat, 409, "idempotency_key_in_flight")
    assert results[0].status_code == 200
    assert replay.json() == results[0].json() == {"n": 1}
    assert replay.headers["idempotent-replayed"] == "true"
    assert calls.count == 1


@pytest.mark.parametrize("route", ["boom", "unavailable"])
def test_a_5xx_answer_is_not_kept(
    db: Database, api: TestClient, auth: dict[str, str], calls: Calls, route: str
) -> None:
    for _ in range(2):
        response = api.post(f"/api/v1/test/{route}", json={}, headers={**auth, **KEY})
        assert response.status_code >= 500
        assert "idempotent-replayed" not in response.headers
    assert calls.count == 2  # the repeat ran again
    assert count(db, idempotency_records) == 0


def test_keys_of_two_tenants_do_not_collide(
    db: Database, api: TestClient, auth: dict[str, str], new_tenant: NewTenant, new_key: NewKey
) -> None:
    other = {"Authorization": f"Bearer {new_key(new_tenant('globex')['id'])}"}
    mine = _create(api, {**auth, **KEY})
    theirs = _create(api, {**other, **KEY}, {**DEFINITION, "name": "theirs"})
    assert mine.status_code == theirs.status_code == 201
    assert "idempotent-replayed" not in theirs.headers
    assert mine.json()["id"] != theirs.json()["id"]
    assert count(db, automations) == 2
    assert count(db, idempotency_records) == 2


def test_unauthenticated_and_forbidden_requests_are_not_recorded(
    db: Database, api: TestClient, tenant: dict[str, Any], auth: dict[str, str], new_key: NewKey
) -> None:
    assert_problem(_create(api, KEY), 401, "unauthenticated")
    bad = {"Authorization": "Bearer cvk_nothing", **KEY}
    assert_problem(_create(api, bad), 401, "unauthenticated")
    weak = {"Authorization": f"Bearer {new_key(tenant['id'], ['runs:read'])}", **KEY}
    assert_problem(_create(api, weak), 403, "forbidden")
    assert count(db, idempotency_records) == 0
    # With the right key, the same idempotency key then works.
    assert _create(api, {**auth, **KEY}).status_code == 201


def test_body_over_the_limit_is_still_413(
    db: Database, api: TestClient, auth: dict[str, str]
) -> None:
    big = {**DEFINITION, "description": "x" * (BODY_LIMIT * 2)}
    assert_problem(_create(api, {**auth, **KEY}, big), 413, "payload_too_large")

    def chunks() -> Any:  # no Content-Length: counted as it streams in
        yield b'{"name": "'
        yield b"x" * (BODY_LIMIT * 2)
        yield b'"}'

    chunked = api.post(
        "/api/v1/automations",
        content=chunks(),
        headers={**auth, **KEY, "Content-Type": "application/json"},
    )
    assert_problem(chunked, 413, "payload_too_large")
    assert count(db, idempotency_records) == 0


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there"])
def test_bad_keys_are_422(api: TestClient, auth: dict[str, str], key: str) -> None:
    headers = {**auth, "Idempotency-Key": key}
    body = assert_problem(_create(api, headers), 422, "validation_error")
    assert body["errors"][0]["loc"] == ["header", "Idempotency-Key"]


def test_created_api_keys_are_not_kept(db: Database, api: TestClient, auth: dict[str, str]) -> None:
    # The response holds a token shown once: it must not be stored in plain
    # text for a day, so a repeat creates another key rather than replaying it.
    first = api.post("/api/v1/keys", json={"scopes": ["runs:read"]}, headers={**auth, **KEY})
    again = api.post("/api/v1/keys", json={"scopes": ["runs:read"]}, headers={**auth, **KEY})
    assert first.status_code == again.status_code == 201
    assert first.json()["token"] != again.json()["token"]
    assert count(db, idempotency_records) == 0
    with db.read() as conn:
        stored = conn.execute(idempotency_records.select()).all()
    assert all(first.json()["token"] not in str(row) for row in stored)


def test_trigger_header_is_both_request_and_run_key(
    db: Database, api: TestClient, auth: dict[str, str]
) -> None:
    _create(api, auth)
    url = f"/api/v1/automations/{DEFINITION['name']}/trigger"
    headers = {**auth, "Idempotency-Key": "order-42"}
    first = api.post(url, json={"payload": {"n": 1}}, headers=headers)
    again = api.post(url, json={"payload": {"n": 1}}, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert first.json()["idempotency_key"] == "order-42"
    # Another payload under the same header key is another request.
    assert_problem(
        api.post(url, json={"payload": {"n": 2}}, headers=headers), 422, "idempotency_key_reused"
    )
    # Once the request record is gone, the run's own key still finds the first run.
    with db.transaction() as conn:
        conn.execute(idempotency_records.delete())
    later = api.post(url, json={"payload": {"n": 1}}, headers=headers)
    assert later.status_code == 202
    assert later.json()["id"] == first.json()["id"]
    assert later.headers["idempotent-replayed"] == "true"
    assert count(db, runs) == 1


def test_other_methods_ignore_the_header(
    db: Database, api: TestClient, auth: dict[str, str]
) -> None:
    created = _create(api, auth).json()
    for _ in range(2):
        response = api.put(
            f"/api/v1/automations/{created['id']}", json=DEFINITION, headers={**auth, **KEY}
        )
        assert response.status_code == 200
        assert "idempotent-replayed" not in response.headers
    assert count(db, automation_versions) == 3
    assert count(db, idempotency_records) == 0
