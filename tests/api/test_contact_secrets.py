"""Contacts' push targets over HTTP: written by contacts:write, never read back by anyone."""

from __future__ import annotations

from typing import Any

from conveyor.store.db import Database
from conveyor.store.messaging_tables import contacts
from tests.api.conftest import NewKey
from tests.api.helpers import TestClient, assert_problem, count, make_client
from tests.support.dump import dump_text

BASE = "/api/v1/contacts"
SECRET = "s3cr3t-token"
TARGET = f"json://bot:{SECRET}@push.example.com/hook"


def test_a_target_with_credentials_is_shown_masked_to_every_key(
    db: Database, client: TestClient, tenant: dict[str, Any], new_key: NewKey, auth: dict[str, str]
) -> None:
    writer = {"Authorization": f"Bearer {new_key(tenant['id'], scopes=['contacts:write'])}"}
    reader = {"Authorization": f"Bearer {new_key(tenant['id'], scopes=['contacts:read'])}"}
    body = {"email": "ann@example.com", "push_targets": [TARGET, "device-a"]}
    created = client.post(BASE, json=body, headers=writer)
    assert created.status_code == 201, created.text
    masked = created.json()["push_targets"]
    assert masked[0].startswith("json://bot:****@push.example.com/hook")
    assert masked[1] == "device-a"
    contact_id = created.json()["id"]
    for headers in (reader, auth):
        assert client.get(f"{BASE}/{contact_id}", headers=headers).json()["push_targets"] == masked
        assert client.get(BASE, headers=headers).json()["items"][0]["push_targets"] == masked
    assert SECRET not in dump_text(db)


def test_writing_back_what_was_read_keeps_the_target_and_a_new_one_replaces_it(
    db: Database, client: TestClient, auth: dict[str, str]
) -> None:
    created = client.post(
        BASE, json={"email": "ann@example.com", "push_targets": [TARGET]}, headers=auth
    )
    contact = created.json()
    with db.read() as conn:
        (stored_before,) = conn.execute(contacts.select()).mappings().all()
    # A read-modify-write sends the masked form: the sealed target is kept as it was.
    again = client.put(
        f"{BASE}/{contact['id']}",
        json={**{k: contact[k] for k in ("email", "push_targets")}, "attributes": {"vip": True}},
        headers=auth,
    )
    assert again.status_code == 200, again.text
    with db.read() as conn:
        (stored_after,) = conn.execute(contacts.select()).mappings().all()
    assert stored_after["push_targets"] == stored_before["push_targets"]
    assert stored_after["attributes"] == {"vip": True}
    # A new target replaces it (contacts:write may replace, never read back).
    other = "json://bot:another-token@push.example.com/hook"
    patched = client.patch(f"{BASE}/{contact['id']}", json={"push_targets": [other]}, headers=auth)
    assert patched.status_code == 200
    with db.read() as conn:
        (stored_last,) = conn.execute(contacts.select()).mappings().all()
    assert stored_last["push_targets"] != stored_before["push_targets"]
    dump = dump_text(db)
    assert SECRET not in dump
    assert "another-token" not in dump


def test_a_server_without_a_secret_key_refuses_to_store_credentials(
    db: Database, auth: dict[str, str]
) -> None:
    client = make_client(db, secret_key=None)
    body = {"email": "ann@example.com", "push_targets": [TARGET]}
    problem = assert_problem(client.post(BASE, json=body, headers=auth), 422, "secret_key_missing")
    assert "CONVEYOR_SECRET_KEY" in problem["detail"]
    assert count(db, contacts) == 0
    # Device tokens are no secret: they are stored without a key.
    body["push_targets"] = ["device-a"]
    assert client.post(BASE, json=body, headers=auth).status_code == 201
