"""Events over HTTP: ingestion item by item, idempotency, identity resolution, event triggers."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from conveyor.api.app import create_app
from conveyor.clock import SystemClock
from conveyor.services import events as event_service
from conveyor.services.events import NewEvent, ingest_events
from conveyor.services.identity import resolve_identities
from conveyor.settings import Settings
from conveyor.store.db import Database
from conveyor.store.messaging_tables import contacts, events
from conveyor.store.tables import runs
from tests.api.conftest import NewKey, NewTenant
from tests.api.helpers import TestClient, assert_problem, count

URL = "/api/v1/events"
MISSING = "01934a5e-0000-7000-8000-000000000000"


def _automation(name: str, event: str, filter_: str | None = None, **extra: Any) -> dict[str, Any]:
    trigger: dict[str, Any] = {"type": "event", "event": event}
    if filter_ is not None:
        trigger["filter"] = filter_
    return {
        "name": name,
        "trigger": trigger,
        "steps": [{"key": "note", "type": "set", "vars": {"x": 1}}],
        **extra,
    }


def _event(event_id: str, name: str = "order.completed", **extra: Any) -> dict[str, Any]:
    return {"id": event_id, "name": name, **extra}


def _email(value: str) -> dict[str, str]:
    return {"type": "email", "value": value}


def _send(client: TestClient, auth: dict[str, str], *items: dict[str, Any]) -> Any:
    return client.post(URL, json={"events": list(items)}, headers=auth)


def _runs(db: Database) -> list[Any]:
    with db.read() as conn:
        return list(conn.execute(select(runs).order_by(runs.c.automation_name)).mappings())


@pytest.fixture
def delivered(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The events handed to ``deliver`` (the wait engine's entry point), once they are stored."""
    seen: list[dict[str, Any]] = []
    real = event_service.deliver

    def spy(conn: Any, offer: Any, events: list[dict[str, Any]], now: datetime) -> int:
        seen.extend(events)
        return real(conn, offer, events, now)

    monkeypatch.setattr(event_service, "deliver", spy)
    return seen


def test_one_event_is_stored_with_its_contact(
    db: Database, client: TestClient, auth: dict[str, str], delivered: list[dict[str, Any]]
) -> None:
    body = _event(
        "evt-1",
        identity=_email("Olivia@Example.com"),
        payload={"total": 120},
        occurred_at="2026-03-01T14:00:00+02:00",
    )
    response = client.post(URL, json=body, headers=auth)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["accepted"], answer["duplicates"], answer["rejected"]) == (1, 0, 0)
    (result,) = answer["results"]
    assert result["status"] == "accepted"
    assert result["runs_started"] == []

    contact = client.get(f"/api/v1/contacts/{result['contact_id']}", headers=auth).json()
    assert contact["email"] == "olivia@example.com"
    stored = client.get(f"{URL}/evt-1", headers=auth).json()
    assert stored["identity"] == _email("olivia@example.com")
    assert stored["contact_id"] == contact["id"]
    assert stored["payload"] == {"total": 120}
    assert stored["occurred_at"] == "2026-03-01T12:00:00Z"
    assert [e["id"] for e in delivered] == ["evt-1"]
    assert delivered[0]["contact_id"] == contact["id"]
    assert delivered[0]["occurred_at"] == datetime(2026, 3, 1, 12, tzinfo=UTC)


def test_a_partly_bad_batch_stores_the_good_events(
    db: Database, client: TestClient, auth: dict[str, str]
) -> None:
    response = _send(
        client,
        auth,
        _event("good-1", identity=_email("a@example.com")),
        {"name": "no.id"},
        _event("naive", occurred_at="2026-03-01T12:00:00"),
        _event("bad-payload", payload=[1, 2]),
        _event("typo", occured_at="2026-03-01T12:00:00Z"),
        _event("ghost", identity={"type": "contact_id", "value": MISSING}),
        _event("bad-email", identity=_email("nobody")),
        _event("x" * 201),
        "not an object",  # type: ignore[arg-type]
        _event("good-2", identity={"type": "external_id", "value": "crm-1"}),
    )
    assert response.status_code == 207, response.text
    answer = response.json()
    assert (answer["accepted"], answer["duplicates"], answer["rejected"]) == (2, 0, 8)
    results = answer["results"]
    assert [r["index"] for r in results] == list(range(10))
    assert [r["status"] for r in results] == ["accepted"] + ["rejected"] * 8 + ["accepted"]
    by_index = {r["index"]: r for r in results}
    assert by_index[1]["code"] == "validation_error"
    assert by_index[1]["id"] is None
    assert by_index[1]["errors"] == [{"loc": ["id"], "msg": "Field required", "type": "missing"}]
    assert by_index[2]["id"] == "naive"
    assert "time zone" in by_index[2]["reason"]
    assert by_index[3]["errors"][0]["loc"] == ["payload"]
    assert by_index[4]["errors"][0]["loc"] == ["occured_at"]
    assert (by_index[5]["code"], by_index[5]["id"]) == ("unknown_contact", "ghost")
    assert MISSING in by_index[5]["reason"]
    assert by_index[6]["code"] == "invalid_identity"
    assert by_index[7]["id"] is None
    assert by_index[7]["errors"][0]["loc"] == ["id"]
    assert by_index[8]["errors"][0]["type"] == "model_type"

    with db.read() as conn:
        assert set(conn.execute(select(events.c.id)).scalars()) == {"good-1", "good-2"}
    assert count(db, contacts) == 2  # nothing was created for the rejected items


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ([_event("a")], ["body"]),
        ("text", ["body"]),
        ({"events": {"id": "a"}}, ["body", "events"]),
        ({"events": [], "extra": 1}, ["body", "extra"]),
    ],
    ids=["list", "string", "events-not-list", "extra-key"],
)
def test_a_malformed_request_stores_nothing(
    db: Database, client: TestClient, auth: dict[str, str], body: Any, loc: list[str]
) -> None:
    response = client.post(URL, json=body, headers=auth)
    assert assert_problem(response, 422, "validation_error")["errors"][0]["loc"] == loc
    assert count(db, events) == 0


def test_one_event_alone_that_is_no_event_is_422(
    db: Database, client: TestClient, auth: dict[str, str]
) -> None:
    """Sent alone, an invalid event fails the request; in a batch it only rejects its item."""
    for body in ({}, {"name": "no.id"}, {"id": "x" * 201, "name": "n"}):
        problem = assert_problem(client.post(URL, json=body, headers=auth), 422, "validation_error")
        assert problem["errors"][0]["loc"][0] == "body", problem
    extra = client.post(URL, json={"events": [], "source": "crm"}, headers=auth)
    assert assert_problem(extra, 422, "validation_error")["errors"][0]["loc"] == ["body", "source"]
    assert count(db, events) == 0


def test_more_than_1000_events_is_422(db: Database, token: str) -> None:
    settings = Settings(
        database_url=db.url.render_as_string(hide_password=False), max_body_bytes=1_048_576
    )
    client = TestClient(create_app(settings, db=db, clock=SystemClock()))
    body = {"events": [_event(f"e{i}") for i in range(1001)]}
    response = client.post(URL, json=body, headers={"Authorization": f"Bearer {token}"})
    problem = assert_problem(response, 422, "validation_error")
    assert problem["errors"][0]["loc"] == ["body", "events"]
    assert "at most 1000" in problem["detail"]
    assert count(db, events) == 0


def test_an_empty_batch_is_an_empty_answer(client: TestClient, auth: dict[str, str]) -> None:
    response = _send(client, auth)
    assert response.status_code == 200
    assert response.json() == {"accepted": 0, "duplicates": 0, "rejected": 0, "results": []}


def test_a_resent_event_is_a_duplicate_and_starts_nothing(
    db: Database,
    client: TestClient,
    auth: dict[str, str],
    delivered: list[dict[str, Any]],
) -> None:
    client.post("/api/v1/automations", json=_automation("thanks", "order.completed"), headers=auth)
    batch = [_event(f"order-{i}", identity=_email(f"u{i}@example.com")) for i in range(3)]
    first = _send(client, auth, *batch, batch[0])
    assert first.status_code == 200, first.text
    statuses = [r["status"] for r in first.json()["results"]]
    assert statuses == ["accepted", "accepted", "accepted", "duplicate"]  # repeated in the batch
    assert all(len(r["runs_started"]) == 1 for r in first.json()["results"][:3])
    assert first.json()["results"][3]["runs_started"] == []
    before = (count(db, events), count(db, runs), count(db, contacts))
    assert before == (3, 3, 3)

    changed = {**batch[1], "payload": {"different": True}}
    again = _send(client, auth, batch[0], changed, batch[2])
    assert again.status_code == 200
    assert again.json()["duplicates"] == 3
    for result in again.json()["results"]:
        assert result == {
            "index": result["index"],
            "id": result["id"],
            "status": "duplicate",
            "runs_started": [],
        }
    assert (count(db, events), count(db, runs), count(db, contacts)) == before
    # The first version is kept; only new events reach the waits.
    assert client.get(f"{URL}/order-1", headers=auth).json()["payload"] == {}
    assert [e["id"] for e in delivered] == ["order-0", "order-1", "order-2"]


def test_within_a_request_the_first_event_with_an_id_counts(
    db: Database, client: TestClient, auth: dict[str, str]
) -> None:
    response = _send(
        client,
        auth,
        _event("a", identity=_email("nobody")),
        _event("a", identity=_email("ada@example.com")),
        _event("b", payload={"first": True}),
        _event("b", payload={"first": False}),
    )
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["rejected", "rejected", "accepted", "duplicate"]
    assert results[1]["code"] == "invalid_identity"
    assert "same id as event 0" in results[1]["reason"]
    assert client.get(f"{URL}/b", headers=auth).json()["payload"] == {"first": True}
    assert count(db, events) == 1


def test_event_triggers_start_one_run_per_matching_automation(
    db: Database, client: TestClient, auth: dict[str, str]
) -> None:
    definitions = [
        _automation("big-orders", "order.completed", "event.payload.total > 50"),
        _automation("every-order", "order.completed"),
        _automation("pro-only", "order.completed", "contact.attributes.get('plan') == 'pro'"),
        _automation("broken-filter", "order.completed", "event.payload.missing.deep"),
        _automation("switched-off", "order.completed", enabled=False),
        _automation("other-event", "cart.abandoned"),
        {**_automation("manual", "x"), "trigger": {"type": "manual"}},
    ]
    ids = {}
    for definition in definitions:
        response = client.post("/api/v1/automations", json=definition, headers=auth)
        assert response.status_code == 201, response.text
        ids[definition["name"]] = response.json()["id"]
    pro = client.post(
        "/api/v1/contacts",
        json={"email": "pro@example.com", "attributes": {"plan": "pro"}},
        headers=auth,
    ).json()

    response = _send(
        client,
        auth,
        _event(
            "big",
            identity=_email("pro@example.com"),
            payload={"total": 120},
            occurred_at="2026-03-01T12:00:00Z",
        ),
        _event("small", identity=_email("new@example.com"), payload={"total": 10}),
    )
    assert response.status_code == 200, response.text
    big, small = response.json()["results"]
    assert sorted(r["automation_name"] for r in big["runs_started"]) == [
        "big-orders",
        "every-order",
        "pro-only",
    ]
    assert [r["automation_name"] for r in small["runs_started"]] == ["every-order"]
    for result in (big, small):
        (error,) = result["trigger_errors"]
        assert error["automation_id"] == ids["broken-filter"]
        assert error["code"] == "expression_error"
        assert "missing" in error["detail"]

    started = _runs(db)
    assert len(started) == 4
    by_event: dict[str, list[Any]] = {}
    for run in started:
        by_event.setdefault(run["trigger_source_id"], []).append(run)
    for run in by_event["big"]:
        assert run["trigger_type"] == "event"
        assert run["trigger_source_type"] == "event"
        assert run["idempotency_key"] == "big"
        assert run["contact_id"] == pro["id"]
        assert run["identity"] == _email("pro@example.com")
        assert run["trigger_event"] == {
            "id": "big",
            "name": "order.completed",
            "payload": {"total": 120},
            "occurred_at": "2026-03-01T12:00:00Z",
            "identity": _email("pro@example.com"),
        }
    (small_run,) = by_event["small"]
    assert small_run["contact_id"] == small["contact_id"]
    detail = client.get(f"/api/v1/runs/{small_run['id']}", headers=auth).json()
    assert detail["trigger_event"]["payload"] == {"total": 10}
    assert detail["contact_id"] == small["contact_id"]


def test_manual_trigger_resolves_its_identity(
    db: Database, client: TestClient, auth: dict[str, str]
) -> None:
    manual = {"name": "manual", "steps": [{"key": "a", "type": "set", "vars": {"x": 1}}]}
    client.post("/api/v1/automations", json=manual, headers=auth)
    url = "/api/v1/automations/manual/trigger"
    first = client.post(url, json={"identity": _email("Ada@Example.com")}, headers=auth)
    assert first.status_code == 202, first.text
    second = client.post(url, json={"identity": _email("ada@example.com")}, headers=auth)
    contact_id = first.json()["contact_id"]
    assert contact_id is not None
    assert second.json()["contact_id"] == contact_id
    assert first.json()["identity"] == _email("ada@example.com")
    by_id = client.post(
        url, json={"identity": {"type": "contact_id", "value": contact_id}}, headers=auth
    )
    assert by_id.json()["contact_id"] == contact_id

    ghost = {"identity": {"type": "contact_id", "value": MISSING}}
    assert_problem(client.post(url, json=ghost, headers=auth), 422, "unknown_contact")
    bad = {"identity": _email("nobody")}
    assert_problem(client.post(url, json=bad, headers=auth), 422, "invalid_identity")
    assert (count(db, contacts), count(db, runs)) == (1, 3)


def test_list_and_filter_events(client: TestClient, auth: dict[str, str]) -> None:
    sent = _send(
        client,
        auth,
        _event("e1", "a", identity=_email("x@example.com"), occurred_at="2026-03-01T10:00:00Z"),
        _event("e2", "b", identity=_email("x@example.com"), occurred_at="2026-03-01T11:00:00Z"),
        _event("e3", "a", occurred_at="2026-03-01T12:00:00Z"),
        _event("e4", "a", identity=_email("y@example.com"), occurred_at="2026-03-01T13:00:00Z"),
    ).json()
    contact = sent["results"][0]["contact_id"]

    def listed(query: str) -> list[str]:
        response = client.get(f"{URL}?{query}", headers=auth)
        assert response.status_code == 200, response.text
        return [e["id"] for e in response.json()["items"]]

    assert listed("") == ["e4", "e3", "e2", "e1"]  # latest first
    assert listed("name=a") == ["e4", "e3", "e1"]
    assert listed(f"contact_id={contact}") == ["e2", "e1"]
    assert listed(f"filter[contact_id]={contact}&name=a") == ["e1"]
    assert listed("occurred_after=2026-03-01T11:00:00Z&occurred_before=2026-03-01T13:00:00Z") == [
        "e3",
        "e2",
    ]
    assert listed("occurred_after=2026-03-01T13:00:00%2B02:00") == ["e4", "e3", "e2"]
    page = client.get(f"{URL}?limit=3", headers=auth).json()
    assert (page["total"], page["total_exact"]) == (4, True)
    assert listed(f"limit=3&cursor={page['next_cursor']}") == ["e1"]

    for query in ("occurred_after=2026-03-01", "contact_id=nope", "filter[nope]=1"):
        assert_problem(client.get(f"{URL}?{query}", headers=auth), 422, "validation_error")
    assert_problem(client.get(f"{URL}?cursor=x", headers=auth), 422, "invalid_cursor")
    assert_problem(client.get(f"{URL}/nope", headers=auth), 404, "event_not_found")


def test_another_tenants_events_are_invisible(
    db: Database,
    client: TestClient,
    auth: dict[str, str],
    new_tenant: NewTenant,
    new_key: NewKey,
) -> None:
    mine = _send(client, auth, _event("e1", identity=_email("ada@example.com"))).json()
    other = {"Authorization": f"Bearer {new_key(new_tenant('intruder')['id'])}"}
    assert_problem(client.get(f"{URL}/e1", headers=other), 404, "event_not_found")
    assert client.get(URL, headers=other).json()["items"] == []
    contact_id = mine["results"][0]["contact_id"]
    ghost = _send(client, other, _event("e2", identity={"type": "contact_id", "value": contact_id}))
    assert ghost.json()["results"][0]["code"] == "unknown_contact"

    # Ids are per tenant: the same id elsewhere is a new event with its own contact.
    theirs = _send(client, other, _event("e1", identity=_email("ada@example.com"))).json()
    assert theirs["accepted"] == 1
    assert theirs["results"][0]["contact_id"] != contact_id
    assert (count(db, events), count(db, contacts)) == (2, 2)


def test_racing_batches_create_each_contact_once(pg_db: Database) -> None:
    """Two transactions see the same new emails; the second waits for the first's insert."""
    from conveyor.testing.factories import make_tenant

    tenant = make_tenant(pg_db, "acme")
    emails = [f"user{i}@example.com" for i in range(20)]
    now = datetime.now(UTC)
    first_inserted = threading.Event()
    results: dict[str, Any] = {}

    def first() -> None:
        with pg_db.transaction() as conn:
            identities = [_email(e) for e in emails]
            results["first"] = resolve_identities(conn, tenant, identities, now)
            first_inserted.set()
            # Hold the uncommitted rows while the other batch runs into them.
            time.sleep(0.3)

    def second() -> None:
        first_inserted.wait(10)
        items = [
            NewEvent(i, f"evt-{i}", "signed.up", _email(e.upper()), {}, None)
            for i, e in enumerate(reversed(emails))
        ]
        results["second"] = ingest_events(pg_db, tenant, items, now)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    contact_of = {r.identity.value: r.contact_id for r in results["first"] if r is not None}
    assert [r.status for r in results["second"]] == ["accepted"] * 20
    for result, email in zip(results["second"], reversed(emails), strict=True):
        assert result.contact_id == contact_of[email]
    assert count(pg_db, contacts) == 20


def test_concurrent_batches_over_http_agree(pg_db: Database) -> None:
    """Many batches at once, sharing contacts and events: no deadlock, nothing twice."""
    from conveyor.domain.scopes import ALL_SCOPES
    from conveyor.services import keys as key_service
    from conveyor.testing.factories import make_automation, make_tenant
    from tests.api.helpers import make_client

    tenant = make_tenant(pg_db, "acme")
    make_automation(pg_db, tenant, _automation("welcome", "signed.up"))
    with pg_db.transaction() as conn:
        _, token = key_service.create_key(
            conn, tenant_id=tenant, scopes=ALL_SCOPES, label="t", now=datetime.now(UTC)
        )
    auth = {"Authorization": f"Bearer {token}"}
    batch = [_event(f"e{i}", "signed.up", identity=_email(f"u{i}@example.com")) for i in range(30)]
    answers: list[Any] = []
    # Built (and first called) here: building apps in threads at once trips over
    # pydantic's lazily built validators, which is not what this test is about.
    clients = [make_client(pg_db) for _ in range(4)]
    for client in clients:
        assert client.get(URL, headers=auth).status_code == 200

    def send(order: int) -> None:
        items = batch if order % 2 == 0 else batch[::-1]
        answers.append(clients[order].post(URL, json={"events": items}, headers=auth))

    threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [a.status_code for a in answers] == [200] * 4
    assert sum(a.json()["accepted"] for a in answers) == 30
    assert sum(a.json()["duplicates"] for a in answers) == 90
    assert (count(pg_db, events), count(pg_db, contacts), count(pg_db, runs)) == (30, 30, 30)


def test_a_request_starts_at_most_its_share_of_runs(db: Database, token: str) -> None:
    """Events past CONVEYOR_MAX_RUNS_PER_REQUEST are rejected whole, to be sent again."""
    from tests.api.helpers import make_client

    client = make_client(db, max_runs_per_request=4)
    auth = {"Authorization": f"Bearer {token}"}
    for name in ("first", "second"):
        response = client.post(
            "/api/v1/automations", json=_automation(name, "signed.up"), headers=auth
        )
        assert response.status_code == 201, response.text
    batch = [_event(f"e{i}", "signed.up") for i in range(4)]  # 2 runs each
    response = client.post(URL, json={"events": batch}, headers=auth)
    assert response.status_code == 207, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["accepted", "accepted", "rejected", "rejected"]
    assert {r["code"] for r in results[2:]} == {"too_many_runs"}
    assert [len(r["runs_started"]) for r in results[:2]] == [2, 2]
    assert count(db, events) == 2  # the rejected ones were not stored
    response = client.post(URL, json={"events": batch[2:]}, headers=auth)
    assert [r["status"] for r in response.json()["results"]] == ["accepted", "accepted"]
    assert count(db, runs) == 8
