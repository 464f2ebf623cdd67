"""``POST /api/v1/automations/{id}/trigger/batch``: many runs, one result each."""

from __future__ import annotations

import asyncio
import json
import math
import threading
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event, select

from conveyor.domain.scopes import ALL_SCOPES
from conveyor.engine.launch import Launch, NewRun, create_runs
from conveyor.engine.worker import Worker
from conveyor.services import keys as key_service
from conveyor.settings import Settings
from conveyor.store import automations as automation_store
from conveyor.store import definitions
from conveyor.store.db import Database
from conveyor.store.tables import run_events, run_tags, runs, step_runs, tasks
from conveyor.testing.factories import make_automation, make_tenant
from tests.api.conftest import NewKey, NewTenant
from tests.api.helpers import DEFINITION, TestClient, assert_problem, count, make_client

URL = f"/api/v1/automations/{DEFINITION['name']}/trigger/batch"


def _create(client: TestClient, auth: dict[str, str], definition: dict[str, Any]) -> None:
    response = client.post("/api/v1/automations", json=definition, headers=auth)
    assert response.status_code == 201, response.text


def _work(db: Database) -> None:
    settings = Settings(database_url=db.url.render_as_string(hide_password=False))
    asyncio.run(Worker(db, settings).run_until_idle())


def _statuses(response: Any) -> list[str]:
    return [r["status"] for r in response.json()["results"]]


def test_a_batch_of_three_creates_three_runs_that_complete(
    db: Database, client: TestClient, auth: dict[str, str]
) -> None:
    _create(client, auth, {**DEFINITION, "tags": ["orders", "batch"]})
    batch = {
        "runs": [
            {"payload": {"order": 1}, "identity": {"type": "email", "value": "Ada@Example.com"}},
            {"payload": {"order": 2}, "idempotency_key": "order-2"},
            {},
        ]
    }
    response = client.post(URL, json=batch, headers=auth)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (3, 0, 0)
    results = body["results"]
    assert [r["index"] for r in results] == [0, 1, 2]
    assert _statuses(response) == ["accepted"] * 3
    assert [r["idempotency_key"] for r in results] == [None, "order-2", None]
    assert results[0]["contact_id"] is not None
    assert results[1]["contact_id"] is None
    ids = [r["run_id"] for r in results]
    assert len(set(ids)) == 3
    assert count(db, runs) == 3
    assert count(db, step_runs) == 6
    assert count(db, tasks) == 3
    assert count(db, run_tags) == 6
    assert count(db, run_events) == 3

    first = client.get(f"/api/v1/runs/{ids[0]}", headers=auth).json()
    assert first["status"] == "pending"
    assert first["trigger_type"] == "manual"
    assert first["trigger_source_type"] == "api_key"
    assert first["trigger_event"]["payload"] == {"order": 1}
    assert first["identity"] == {"type": "email", "value": "ada@example.com"}
    assert first["contact_id"] == results[0]["contact_id"]
    assert client.get(f"/api/v1/runs/{ids[1]}", headers=auth).json()["idempotency_key"] == (
        "order-2"
    )

    _work(db)
    for run_id in ids:
        detail = client.get(f"/api/v1/runs/{run_id}", headers=auth).json()
        assert detail["status"] == "completed", detail
        assert [s["status"] for s in detail["steps"]] == ["completed", "completed"]
    tagged = client.get("/api/v1/runs", params={"tag": "batch"}, headers=auth).json()
    assert sorted(r["id"] for r in tagged["items"]) == sorted(ids)


def test_one_bad_item_does_not_fail_the_others(
    db: Database, client: TestClient, auth: dict[str, str]
) -> None:
    _create(client, auth, DEFINITION)
    batch = {
        "runs": [
            {"payload": {"n": 0}},
            {"identity": {"type": "email", "value": "not an email"}, "idempotency_key": "bad-1"},
            {"payload": ["not", "an", "object"]},
            {"identity": {"type": "contact_id", "value": "01934a5e-0000-7000-8000-000000000000"}},
            {"dry_run": True},
            "not an object",
            {"payload": {"n": 6}, "identity": {"type": "external_id", "value": "u-6"}},
        ]
    }
    response = client.post(URL, json=batch, headers=auth)
    assert response.status_code == 207, response.text
    body = response.json()
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (2, 0, 5)
    results = body["results"]
    assert _statuses(response) == [
        "accepted",
        "rejected",
        "rejected",
        "rejected",
        "rejected",
        "rejected",
        "accepted",
    ]
    assert [r.get("code") for r in results[1:6]] == [
        "invalid_identity",
        "validation_error",
        "unknown_contact",
        "validation_error",
        "validation_error",
    ]
    assert results[1]["idempotency_key"] == "bad-1"
    assert results[2]["errors"][0]["loc"] == ["payload"]
    assert results[4]["errors"][0]["loc"] == ["dry_run"]
    assert all(r["reason"] for r in results[1:6])
    assert "run_id" not in results[1]
    assert count(db, runs) == 2
    with db.read() as conn:
        payloads = conn.execute(select(runs.c.trigger_event)).scalars().all()
    assert sorted(p["payload"]["n"] for p in payloads) == [0, 6]


def test_a_bad_json_item_is_rejected_alone(
    db: Database, client: TestClient, auth: dict[str, str]
) -> None:
    _create(client, auth, DEFINITION)
    # json.dumps writes NaN and lone surrogates, as a careless client would.
    runs_sent = [
        {"payload": {"x": 1}},
        {"payload": {"x": math.nan}, "idempotency_key": "nan"},
        {"payload": {"x": "\ud800"}},
        {"payload": {"x": 2}},
    ]
    response = client.post(
        URL,
        content=json.dumps({"runs": runs_sent}),
        headers={**auth, "Content-Type": "application/json"},
    )
    assert response.status_code == 207, response.text
    results = response.json()["results"]
    assert _statuses(response) == ["accepted", "rejected", "rejected", "accepted"]
    assert {r["code"] for r in results[1:3]} == {"malformed_json"}
    assert results[1]["reason"].startswith("/payload/x")
    assert results[1]["idempotency_key"] == "nan"
    assert count(db, runs) == 2


def test_repeated_keys_give_the_first_run(
    db: Database, client: TestClient, auth: dict[str, str]
) -> None:
    _create(client, auth, DEFINITION)
    first = client.post(
        URL,
        json={
            "runs": [
                {"idempotency_key": "a", "payload": {"n": 1}},
                {"idempotency_key": "b"},
                {"idempotency_key": "a", "payload": {"n": 2}},  # within the batch
                # The first item with `c` is rejected: the key is the next one's.
                {"idempotency_key": "c", "identity": {"type": "email", "value": "nope"}},
                {"idempotency_key": "c"},
            ]
        },
        headers=auth,
    )
    assert first.status_code == 207, first.text
    assert _statuses(first) == ["accepted", "accepted", "duplicate", "rejected", "accepted"]
    results = first.json()["results"]
    run_a, run_b, run_c = results[0]["run_id"], results[1]["run_id"], results[4]["run_id"]
    assert results[2]["run_id"] == run_a
    assert first.json()["duplicates"] == 1

    again = client.post(
        URL,
        json={
            "runs": [{"idempotency_key": "a"}, {"idempotency_key": "d"}, {"idempotency_key": "c"}]
        },
        headers=auth,
    )
    assert again.status_code == 200, again.text  # duplicates are no rejection
    assert _statuses(again) == ["duplicate", "accepted", "duplicate"]
    results = again.json()["results"]
    assert (results[0]["run_id"], results[2]["run_id"]) == (run_a, run_c)
    assert "contact_id" not in results[0]
    # The single trigger shares the run keys, both ways.
    single = client.post(
        f"/api/v1/automations/{DEFINITION['name']}/trigger",
        json={"idempotency_key": "b"},
        headers=auth,
    )
    assert single.status_code == 202
    assert single.json()["id"] == run_b
    assert single.headers["idempotent-replayed"] == "true"
    single = client.post(
        f"/api/v1/automations/{DEFINITION['name']}/trigger",
        json={"idempotency_key": "e"},
        headers=auth,
    )
    batch = client.post(URL, json={"runs": [{"idempotency_key": "e"}]}, headers=auth)
    assert batch.json()["results"][0] == {
        "index": 0,
        "status": "duplicate",
        "idempotency_key": "e",
        "run_id": single.json()["id"],
    }
    assert count(db, runs) == 5  # a, b, c, d, e
    with db.read() as conn:
        kept = conn.execute(select(runs.c.trigger_event).where(runs.c.id == run_a)).scalar_one()
    assert kept["payload"] == {"n": 1}


def test_the_request_header_covers_the_whole_batch(
    db: Database, client: TestClient, auth: dict[str, str]
) -> None:
    _create(client, auth, DEFINITION)
    headers = {**auth, "Idempotency-Key": "batch-1"}
    batch = {"runs": [{}, {}]}
    first = client.post(URL, json=batch, headers=headers)
    again = client.post(URL, json=batch, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert count(db, runs) == 2
    # The header is not a run key: items without theirs start new runs.
    other = client.post(URL, json=batch, headers={**auth, "Idempotency-Key": "batch-2"})
    assert _statuses(other) == ["accepted", "accepted"]
    assert count(db, runs) == 4


def test_the_body_must_be_a_batch_of_one_to_a_thousand(
    db: Database, new_key: NewKey, tenant: dict[str, Any]
) -> None:
    client = make_client(db, max_body_bytes=1 << 20)
    auth = {"Authorization": f"Bearer {new_key(tenant['id'])}"}
    _create(client, auth, DEFINITION)
    cases = [
        ({"runs": [{}] * 1001}, ["body", "runs"], "too_long"),
        ({"runs": []}, ["body", "runs"], "too_short"),
        ({}, ["body", "runs"], "missing"),
        ({"runs": {}}, ["body", "runs"], "list_type"),
        ({"runs": [{}], "dry_run": True}, ["body", "dry_run"], "extra_forbidden"),
        ([{}], ["body"], "dict_type"),
    ]
    for body, loc, kind in cases:
        problem = assert_problem(client.post(URL, json=body, headers=auth), 422, "validation_error")
        assert [(e["loc"], e["type"]) for e in problem["errors"]] == [(loc, kind)], body
    assert count(db, runs) == 0
    full = client.post(URL, json={"runs": [{}] * 1000}, headers=auth)
    assert full.status_code == 200, full.text
    assert count(db, runs) == 1000


def test_runs_past_the_request_cap_are_refused(
    db: Database, new_key: NewKey, tenant: dict[str, Any]
) -> None:
    client = make_client(db, max_runs_per_request=2)
    auth = {"Authorization": f"Bearer {new_key(tenant['id'])}"}
    _create(client, auth, DEFINITION)
    client.post(URL, json={"runs": [{"idempotency_key": "old"}]}, headers=auth)
    batch = {
        "runs": [
            {"idempotency_key": "old"},  # a duplicate starts nothing: not counted
            {"idempotency_key": "k1"},
            {"idempotency_key": "k2"},
            {"idempotency_key": "k3"},
            {"idempotency_key": "k3"},  # follows the item it repeats
        ]
    }
    response = client.post(URL, json=batch, headers=auth)
    assert response.status_code == 207, response.text
    assert _statuses(response) == ["duplicate", "accepted", "accepted", "rejected", "rejected"]
    results = response.json()["results"]
    assert {r["code"] for r in results[3:]} == {"too_many_runs"}
    assert count(db, runs) == 3
    resent = client.post(URL, json={"runs": batch["runs"][3:]}, headers=auth)
    assert _statuses(resent) == ["accepted", "duplicate"]


def test_concurrency_keys_are_evaluated_per_item(
    db: Database, client: TestClient, auth: dict[str, str]
) -> None:
    definition = {
        **DEFINITION,
        "concurrency": {"key": "trigger.payload.customer ~ '/' ~ (1 // trigger.payload.d)"},
    }
    _create(client, auth, definition)
    batch = {
        "runs": [
            {"payload": {"customer": "c1", "d": 1}},
            {"payload": {"customer": "c2", "d": 0}},  # the key fails to evaluate
            {"payload": {"customer": "c3", "d": 1}},
        ]
    }
    response = client.post(URL, json=batch, headers=auth)
    assert response.status_code == 207, response.text
    assert _statuses(response) == ["accepted", "rejected", "accepted"]
    results = response.json()["results"]
    assert results[1]["code"] == "invalid_concurrency_key"
    keys = [
        client.get(f"/api/v1/runs/{results[i]['run_id']}", headers=auth).json()["concurrency_key"]
        for i in (0, 2)
    ]
    assert keys == ["c1/1", "c3/1"]


def test_a_disabled_automation_is_409_unless_every_item_names_a_run(
    db: Database, client: TestClient, auth: dict[str, str]
) -> None:
    _create(client, auth, DEFINITION)
    started = client.post(URL, json={"runs": [{"idempotency_key": "a"}]}, headers=auth)
    run_id = started.json()["results"][0]["run_id"]
    response = client.put(
        f"/api/v1/automations/{DEFINITION['name']}",
        json={**DEFINITION, "enabled": False},
        headers=auth,
    )
    assert response.status_code == 200, response.text
    mixed = {"runs": [{"idempotency_key": "a"}, {"idempotency_key": "b"}]}
    assert_problem(client.post(URL, json=mixed, headers=auth), 409, "automation_disabled")
    assert count(db, runs) == 1
    repeat = client.post(URL, json={"runs": [{"idempotency_key": "a"}]}, headers=auth)
    assert repeat.status_code == 200, repeat.text
    assert repeat.json()["results"][0]["run_id"] == run_id


def test_scope_and_tenant(
    db: Database,
    client: TestClient,
    auth: dict[str, str],
    tenant: dict[str, Any],
    new_tenant: NewTenant,
    new_key: NewKey,
) -> None:
    _create(client, auth, DEFINITION)
    reader = {"Authorization": f"Bearer {new_key(tenant['id'], scopes=['automations:read'])}"}
    body = assert_problem(client.post(URL, json={"runs": [{}]}, headers=reader), 403, "forbidden")
    assert "automations:trigger" in body["detail"]
    intruder = {"Authorization": f"Bearer {new_key(new_tenant('intruder')['id'])}"}
    assert_problem(
        client.post(URL, json={"runs": [{}]}, headers=intruder), 404, "automation_not_found"
    )
    assert count(db, runs) == 0


def test_a_batch_costs_one_request_per_hundred_items(
    db: Database, new_key: NewKey, tenant: dict[str, Any]
) -> None:
    client = make_client(db, rate_limit="1/minute", rate_limit_burst=5, max_body_bytes=1 << 20)
    auth = {"Authorization": f"Bearer {new_key(tenant['id'])}"}
    _create(client, auth, DEFINITION)  # 1
    assert client.post(URL, json={"runs": [{}] * 300}, headers=auth).status_code == 200  # 3
    assert client.post(URL, json={"runs": [{}]}, headers=auth).status_code == 200  # 1
    assert_problem(client.post(URL, json={"runs": [{}]}, headers=auth), 429, "rate_limited")
    assert count(db, runs) == 301


def _statements(db: Database, send: Any) -> int:
    """How many statements ``send()`` makes the app run (COPY on PostgreSQL goes unseen)."""
    seen: list[str] = []

    def count(*args: Any) -> None:
        seen.append(args[2])

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        send()
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    return len(seen)


def test_the_statements_do_not_grow_with_the_batch(
    db: Database, new_key: NewKey, tenant: dict[str, Any]
) -> None:
    client = make_client(db, max_body_bytes=1 << 20)
    auth = {"Authorization": f"Bearer {new_key(tenant['id'])}"}
    _create(client, auth, {**DEFINITION, "tags": ["a", "b"]})
    listener = {
        **DEFINITION,
        "name": "listener",
        "trigger": {"type": "event", "event": "ping"},
        "tags": ["c"],
    }
    _create(client, auth, listener)
    client.post(URL, json={"runs": [{}] * 20}, headers=auth)  # warm caches

    def batch(n: int, keyed: bool) -> int:
        items = [{"idempotency_key": f"{n}-{keyed}-{i}"} if keyed else {} for i in range(n)]
        return _statements(
            db, lambda: client.post(URL, json={"runs": items}, headers=auth).raise_for_status()
        )

    def events(n: int) -> int:
        sent = [{"id": f"{n}-{i}", "name": "ping"} for i in range(n)]
        return _statements(
            db,
            lambda: client.post(
                "/api/v1/events", json={"events": sent}, headers=auth
            ).raise_for_status(),
        )

    assert batch(20, keyed=False) == batch(500, keyed=False)
    assert batch(20, keyed=True) == batch(500, keyed=True)
    events(1)  # warm caches
    assert events(20) == events(500)
    assert count(db, runs) == 20 + 2 * (20 + 500) + (1 + 20 + 500)


def test_many_keyed_runs_skip_the_keys_taken(
    db: Database, new_key: NewKey, tenant: dict[str, Any]
) -> None:
    client = make_client(db, max_body_bytes=1 << 20)
    auth = {"Authorization": f"Bearer {new_key(tenant['id'])}"}
    _create(client, auth, DEFINITION)
    old = client.post(
        URL, json={"runs": [{"idempotency_key": f"k{i}"} for i in range(20)]}, headers=auth
    )
    assert old.status_code == 200, old.text
    response = client.post(
        URL, json={"runs": [{"idempotency_key": f"k{i}"} for i in range(10, 50)]}, headers=auth
    )
    assert response.status_code == 200, response.text
    assert _statuses(response) == ["duplicate"] * 10 + ["accepted"] * 30
    first = {r["idempotency_key"]: r["run_id"] for r in old.json()["results"]}
    assert [r["run_id"] for r in response.json()["results"][:10]] == [
        first[f"k{i}"] for i in range(10, 20)
    ]
    assert count(db, runs) == 50


def test_create_runs_skips_keys_taken_since_the_caller_looked(
    db: Database, client: TestClient, auth: dict[str, str], tenant: dict[str, Any]
) -> None:
    # A concurrent request may take a key between the batch's read and its write:
    # the run is then not created, and the caller is told (None), whatever the batch size.
    _create(client, auth, DEFINITION)
    for size in (3, 40):
        taken = client.post(
            URL, json={"runs": [{"idempotency_key": f"{size}-taken"}]}, headers=auth
        )
        assert taken.status_code == 200, taken.text
        with db.transaction() as conn:
            automation = automation_store.get_automation(conn, tenant["id"], DEFINITION["name"])
            assert automation is not None
            loaded = definitions.load(conn, automation["current_version_id"])
            keys = [f"{size}-taken", *(f"{size}-{i}" for i in range(size - 2)), f"{size}-0"]
            made = create_runs(
                conn,
                tenant_id=tenant["id"],
                items=[
                    NewRun(
                        automation,
                        loaded,
                        Launch("manual", "api_key", None, {"payload": {}}, idempotency_key=k),
                    )
                    for k in keys
                ],
                now=datetime.now(UTC),
            )
        assert made[0] is None
        assert made[-1] is None  # an earlier item took its key
        assert all(run is not None for run in made[1:-1])
    assert count(db, runs) == 2 + 1 + 38


def test_concurrent_batches_sharing_keys_agree(pg_db: Database) -> None:
    """Batches at once, sharing run keys in opposite orders: no deadlock, no run twice."""
    tenant = make_tenant(pg_db, "acme")
    make_automation(pg_db, tenant, DEFINITION)
    with pg_db.transaction() as conn:
        _, token = key_service.create_key(
            conn, tenant_id=tenant, scopes=ALL_SCOPES, label="t", now=datetime.now(UTC)
        )
    auth = {"Authorization": f"Bearer {token}"}
    items = [{"idempotency_key": f"k{i}", "payload": {"i": i}} for i in range(30)]
    # Built (and first called) here, not in the threads (see test_events.py).
    clients = [make_client(pg_db) for _ in range(4)]
    for client in clients:
        assert client.get("/api/v1/automations", headers=auth).status_code == 200
    answers: list[Any] = []

    def send(order: int) -> None:
        runs_sent = items if order % 2 == 0 else items[::-1]
        answers.append(clients[order].post(URL, json={"runs": runs_sent}, headers=auth))

    threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [a.status_code for a in answers] == [200] * 4
    assert sum(a.json()["accepted"] for a in answers) == 30
    assert sum(a.json()["duplicates"] for a in answers) == 90
    by_key: dict[str, set[str]] = {}
    for answer in answers:
        for result in answer.json()["results"]:
            by_key.setdefault(result["idempotency_key"], set()).add(result["run_id"])
    assert all(len(ids) == 1 for ids in by_key.values())  # every answer names the same run
    assert count(pg_db, runs) == 30
