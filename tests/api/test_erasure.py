"""``DELETE /api/v1/contacts/{id}?erase=true``: a person erased from every table.

A contact with finished and unfinished runs (a wait pending, a concurrency
slot held), step outputs, a sent email, events, a dry run with results and
idempotency records is erased; then every text and JSON column of every
table (sealed values opened) is scanned for its values.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import JSON, String, null, select

from conveyor.crypto import Vault, is_sealed
from conveyor.domain.scopes import ALL_SCOPES
from conveyor.engine.worker import Worker
from conveyor.services import erasure as erasure_service
from conveyor.services import events as event_service
from conveyor.services.events import NewEvent
from conveyor.settings import Settings
from conveyor.store.db import Database
from conveyor.store.messaging_tables import events
from conveyor.store.tables import metadata
from tests.api.conftest import NewKey, NewTenant
from tests.api.helpers import TestClient, assert_problem, make_client

SECRET_KEY = "erasure-test-secret-key-0123456789abcdef"
ALICE = {"email": "alice.erased@example.com", "external_id": "cust-alice-7781"}
# How events named her: another case of her email (identity values are matched in any case).
ALICE_IDENTITY = "Alice.Erased@Example.com"
ALICE_TOKEN = "device-alice-55031"
BOB = {"email": "bob.kept@example.com", "external_id": "cust-bob-4410"}
BOB_PASSWORD = "bobs-push-password-9911"
BOB_TARGET = f"json://bot:{BOB_PASSWORD}@push.example.com/hook"
TODAY = datetime.now(UTC).date().isoformat()

FOLLOW: dict[str, Any] = {
    "name": "follow",
    "trigger": {"type": "event", "event": "order.completed"},
    "concurrency": {"key": "identity.value", "limit": 5},
    "steps": [
        {
            "key": "note",
            "type": "set",
            "vars": {
                "who": "{{ identity.value }}",
                "mail": "{{ contact.email }}",
                "ext": "{{ contact.external_id }}",
                "line": "order for {{ trigger.payload.customer }}",
            },
        },
        {"key": "mail", "type": "send_email_template", "template": "receipt"},
        {"key": "opened", "type": "wait_for_event", "event": "mail.open", "timeout": "PT1H"},
    ],
}
WELCOME: dict[str, Any] = {
    "name": "welcome",
    "trigger": {"type": "manual"},
    "steps": [
        {"key": "greet", "type": "set", "vars": {"greeting": "hello {{ contact.email }}"}},
        {"key": "mail", "type": "send_email_template", "template": "receipt"},
    ],
}

# A run that fails, and the run its failure starts (it carries the failed run's identity
# and trigger event, but no contact), left waiting.
FRAGILE: dict[str, Any] = {
    "name": "fragile",
    "trigger": {"type": "manual"},
    "steps": [{"key": "boom", "type": "condition", "expression": "trigger.payload.nope.deeper"}],
}
WATCH: dict[str, Any] = {
    "name": "watch",
    "trigger": {"type": "automation_failure", "automations": ["fragile"]},
    "steps": [
        {"key": "seen", "type": "set", "vars": {"who": "{{ identity.value }}"}},
        {"key": "later", "type": "delay", "duration": "PT1H"},
    ],
}


def _work(db: Database) -> None:
    settings = Settings(
        database_url=db.url.render_as_string(hide_password=False), secret_key=SECRET_KEY
    )
    asyncio.run(Worker(db, settings).run_until_idle())


def _ok(response: Any, *codes: int) -> Any:
    assert response.status_code in codes, response.text
    return response.json() if response.content else None


def _person(
    client: TestClient, auth: dict[str, str], person: dict[str, str], key: str, *push: str
) -> dict[str, Any]:
    """The person's contact, runs, events and a dry run; what was made."""
    headers = {**auth, "Idempotency-Key": f"contact-{key}"}
    contact = _ok(
        client.post(
            "/api/v1/contacts", json={**person, "push_targets": list(push)}, headers=headers
        ),
        201,
    )
    identity = {"type": "email", "value": person["email"].title()}
    events = [
        {
            "id": f"order-{person['email']}",
            "name": "order.completed",
            "identity": identity,
            "payload": {"customer": person["external_id"], "email": person["email"]},
        },
        {
            "id": f"view-{key}",
            "name": "page.view",
            "identity": {"type": "external_id", "value": person["external_id"]},
            "payload": {"who": person["email"]},
        },
    ]
    _ok(
        client.post(
            "/api/v1/events",
            json={"events": events},
            headers={**auth, "Idempotency-Key": f"events-{key}"},
        ),
        200,
    )
    _ok(
        client.post(
            "/api/v1/automations/fragile/trigger",
            json={"identity": identity, "payload": {"note": f"for {person['email']}"}},
            headers=auth,
        ),
        202,
    )
    manual = _ok(
        client.post(
            "/api/v1/automations/welcome/trigger",
            json={"identity": identity, "payload": {"note": f"for {person['email']}"}},
            headers={**auth, "Idempotency-Key": f"trigger-{person['external_id']}"},
        ),
        202,
    )
    dry = _ok(
        client.post(
            "/api/v1/automations/welcome/trigger",
            json={
                "dry_run": True,
                "start_date": TODAY,
                "end_date": TODAY,
                "profile_ids": [contact["id"]],
            },
            headers=auth,
        ),
        202,
    )
    return {"contact": contact, "manual_run": manual["id"], "dry_run": dry["id"]}


@pytest.fixture
def world(db: Database, new_tenant: NewTenant, new_key: NewKey) -> dict[str, Any]:
    """Alice and Bob in tenant acme, Alice's namesake in tenant globex, all worked."""
    client = make_client(db, secret_key=SECRET_KEY, max_body_bytes=65536)
    acme, globex = new_tenant("acme"), new_tenant("globex")
    auth = {"Authorization": f"Bearer {new_key(acme['id'])}"}
    other = {"Authorization": f"Bearer {new_key(globex['id'])}"}
    for headers in (auth, other):
        template = {
            "channel": "email",
            "subject": "Receipt for {{ contact.email }}",
            "text": "Hi {{ contact.external_id }}, see you, {{ identity.value }}",
        }
        _ok(client.put("/api/v1/templates/receipt", json=template, headers=headers), 200, 201)
        for definition in (FOLLOW, WELCOME, FRAGILE, WATCH):
            _ok(client.post("/api/v1/automations", json=definition, headers=headers), 201)
    alice = _person(client, auth, ALICE, "alice", ALICE_TOKEN)
    # Two event ids that name her in two cases: erased, both would be `signup-[erased]`.
    twins = [
        {"id": f"signup-{v}", "name": "signed.up", "identity": {"type": "email", "value": v}}
        for v in (ALICE["email"], ALICE["email"].upper())
    ]
    _ok(client.post("/api/v1/events", json={"events": twins}, headers=auth), 200)
    bob = _person(client, auth, BOB, "bob", BOB_TARGET)
    namesake = _person(client, other, ALICE, "alice")
    _work(db)
    return {
        "client": client,
        "acme": acme,
        "globex": globex,
        "auth": auth,
        "other": other,
        "alice": alice,
        "bob": bob,
        "namesake": namesake,
    }


def _follow_run(client: TestClient, auth: dict[str, str], contact_id: str) -> dict[str, Any]:
    page = _ok(
        client.get(
            "/api/v1/runs",
            params={"contact_id": contact_id, "automation_name": "follow"},
            headers=auth,
        ),
        200,
    )
    assert len(page["items"]) == 1, page
    return dict(page["items"][0])


def _opened(vault: Vault, tenant_id: str, value: Any) -> list[str]:
    """The plain text of every sealed string inside ``value`` (the scan fails on one it cannot
    open: a sealed value it cannot read could hide anything)."""
    found: list[str] = []
    if isinstance(value, str) and is_sealed(value):
        found.append(vault.open(value, f"{tenant_id}:contact.push_target"))
    elif isinstance(value, dict):
        for item in value.values():
            found += _opened(vault, tenant_id, item)
    elif isinstance(value, list):
        for item in value:
            found += _opened(vault, tenant_id, item)
    return found


def _scan(db: Database) -> dict[str, str]:
    """Every text and JSON value of every table, sealed ones opened, lowercased, per tenant."""
    vault = Vault(SECRET_KEY)
    texts: dict[str, list[str]] = {}
    with db.read() as conn:
        for table in metadata.sorted_tables:
            columns = [c for c in table.columns if isinstance(c.type, JSON | String)]
            if not columns:
                continue
            # The operator's tables (`maintenance`: the last prune) have neither: no tenant's rows.
            tenant = table.c.get("tenant_id", table.c.get("id"))
            if tenant is None:
                tenant = null()
            for row in conn.execute(select(tenant.label("tenant_of_row"), *columns)).mappings():
                into = texts.setdefault(str(row["tenant_of_row"]), [])
                for column in columns:
                    value = row[column.name]
                    if value is None:
                        continue
                    into.append(f"{table.name}.{column.name}: {json.dumps(value)}")
                    into += _opened(vault, str(row["tenant_of_row"]), value)
    return {tenant: "\n".join(lines).lower() for tenant, lines in texts.items()}


def _traces(text: str, person: dict[str, str], *more: str) -> list[str]:
    return [v for v in (*person.values(), *more) if v.lower() in text]


def test_erasure_leaves_no_trace(db: Database, world: dict[str, Any]) -> None:
    client, auth = world["client"], world["auth"]
    alice, bob = world["alice"]["contact"], world["bob"]["contact"]
    acme, globex = world["acme"]["id"], world["globex"]["id"]
    before = _scan(db)
    # The scan sees what erasure must remove, and opens sealed values.
    assert _traces(before[acme], ALICE, ALICE_TOKEN) == [*ALICE.values(), ALICE_TOKEN]
    assert BOB_PASSWORD in before[acme]
    follow = _follow_run(client, auth, alice["id"])
    assert follow["status"] == "waiting"
    bob_follow = _follow_run(client, auth, bob["id"])
    dry_results = _ok(
        client.get("/api/v1/dry-run-results", params={"profile_id": alice["id"]}, headers=auth),
        200,
    )
    assert dry_results["items"], "the dry run left results to erase"

    answer = _ok(client.delete(f"/api/v1/contacts/{alice['id']}?erase=true", headers=auth), 200)

    assert answer["contact_id"] == alice["id"]
    assert answer["erased"] is True
    assert answer["runs_cancelled"] == 2  # follow, and watch (started by her failed run)
    # follow, welcome, the dry run's simulated run, fragile and watch
    assert answer["runs"] == 5
    assert answer["removed"] == {"contacts": 1, "run_tags": 0, "concurrency_slots": 1}
    redacted = answer["redacted"]
    assert redacted["events"] == 4
    assert redacted["messages"] == 2
    assert redacted["waits"] == 1
    assert redacted["dry_run_results"] == 1
    assert redacted["idempotency_records"] == 3  # her contact, events and trigger requests
    assert redacted["step_runs"] >= 2

    after = _scan(db)
    assert _traces(after[acme], ALICE, ALICE_IDENTITY, ALICE_TOKEN) == []
    assert "[erased]" in after[acme]
    # Bob, and the other tenant's Alice, are untouched.
    assert _traces(after[acme], BOB) == list(BOB.values())
    assert BOB_PASSWORD in after[acme]
    assert _traces(after[globex], ALICE) == list(ALICE.values())
    assert after[globex] == before[globex]
    with db.read() as conn:
        ids = conn.execute(select(events.c.id).where(events.c.id.like("signup-%"))).scalars()
        signups = sorted(i.partition("~")[0] for i in ids)
    assert signups == ["signup-[erased]", "signup-[erased]"]  # one with a ~suffix: unique

    # Her unfinished run was cancelled for erasure; every run of hers says it was erased.
    run = _ok(client.get(f"/api/v1/runs/{follow['id']}", headers=auth), 200)
    assert run["status"] == "cancelled"
    history = _ok(client.get(f"/api/v1/runs/{follow['id']}/events", headers=auth), 200)["items"]
    cancelled = [e for e in history if e["type"] == "run.cancelled"]
    assert cancelled[0]["data"]["reason"] == "erasure"
    assert history[-1]["type"] == "run.erased"
    assert "reason" not in history[-1]["data"]
    manual = _ok(
        client.get(f"/api/v1/runs/{world['alice']['manual_run']}/events", headers=auth), 200
    )
    assert manual["items"][-1]["type"] == "run.erased"
    assert _ok(client.get(f"/api/v1/runs/{bob_follow['id']}", headers=auth), 200)["status"] == (
        "waiting"
    )
    watch = _ok(client.get("/api/v1/runs", params={"automation_name": "watch"}, headers=auth), 200)
    assert sorted(r["status"] for r in watch["items"]) == ["cancelled", "waiting"]
    assert_problem(
        client.get(f"/api/v1/contacts/{alice['id']}", headers=auth), 404, "contact_not_found"
    )
    assert (
        _ok(client.get(f"/api/v1/contacts/{bob['id']}", headers=auth), 200)["email"] == BOB["email"]
    )
    # The worker has nothing left of hers to do, and a second erasure finds no contact.
    _work(db)
    assert_problem(
        client.delete(f"/api/v1/contacts/{alice['id']}?erase=true", headers=auth),
        404,
        "contact_not_found",
    )


def test_scopes_and_tenants(
    db: Database, client: TestClient, new_tenant: NewTenant, new_key: NewKey
) -> None:
    acme, globex = new_tenant("acme"), new_tenant("globex")

    def key(tenant: dict[str, Any], *scopes: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {new_key(tenant['id'], scopes)}"}

    everything = key(acme, *ALL_SCOPES)
    contact = _ok(client.post("/api/v1/contacts", json=ALICE, headers=everything), 201)
    url = f"/api/v1/contacts/{contact['id']}"
    # Erasure cancels and rewrites runs: contacts:write alone is not enough.
    for scopes in (("contacts:write",), ("runs:write", "contacts:read"), ("runs:read",)):
        assert_problem(
            client.delete(f"{url}?erase=true", headers=key(acme, *scopes)), 403, "forbidden"
        )
    # Another tenant's key, even with every scope, does not find it.
    assert_problem(
        client.delete(f"{url}?erase=true", headers=key(globex, *ALL_SCOPES)),
        404,
        "contact_not_found",
    )
    assert_problem(client.delete(url, headers=key(globex, *ALL_SCOPES)), 404, "contact_not_found")
    assert_problem(client.delete(f"{url}?erase=maybe", headers=everything), 422, "validation_error")
    assert _ok(client.get(url, headers=everything), 200)["email"] == ALICE["email"]
    answer = _ok(
        client.delete(f"{url}?erase=true", headers=key(acme, "contacts:write", "runs:write")), 200
    )
    assert answer["removed"]["contacts"] == 1
    assert answer["runs"] == 0
    assert_problem(client.get(url, headers=everything), 404, "contact_not_found")
    # A plain delete still answers 204 with contacts:write alone.
    other = _ok(client.post("/api/v1/contacts", json=BOB, headers=everything), 201)
    deleted = client.delete(
        f"/api/v1/contacts/{other['id']}?erase=false", headers=key(acme, "contacts:write")
    )
    assert deleted.status_code == 204, deleted.text


def test_an_event_that_comes_during_the_erasure_is_erased_too(
    db: Database,
    client: TestClient,
    auth: dict[str, str],
    tenant: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    note = {
        "name": "note",
        "trigger": {"type": "event", "event": "signed.up"},
        "steps": [{"key": "who", "type": "set", "vars": {"who": "{{ identity.value }}"}}],
    }
    _ok(client.post("/api/v1/automations", json=note, headers=auth), 201)
    alice = _ok(client.post("/api/v1/contacts", json=ALICE, headers=auth), 201)
    real = erasure_service._remove_idle_slots

    def meanwhile(*args: Any, **kw: Any) -> None:
        # After the first pass went over her runs and events: an event about her comes in.
        late = NewEvent(
            0, "late-1", "signed.up", {"type": "email", "value": ALICE_IDENTITY}, ALICE, None
        )
        event_service.ingest_events(db, tenant["id"], [late], datetime.now(UTC))
        real(*args, **kw)

    monkeypatch.setattr(erasure_service, "_remove_idle_slots", meanwhile)
    answer = _ok(client.delete(f"/api/v1/contacts/{alice['id']}?erase=true", headers=auth), 200)
    assert (answer["runs"], answer["redacted"]["events"]) == (1, 1)
    assert answer["removed"]["contacts"] == 1
    assert _traces(_scan(db)[tenant["id"]], ALICE, ALICE_IDENTITY) == []
