"""Contacts over HTTP: upsert, read, replace, patch, delete, list filters, clashes, tenants."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor.store.db import Database
from conveyor.store.messaging_tables import contacts
from tests.api.conftest import NewKey, NewTenant
from tests.api.helpers import TestClient, assert_problem, count

BASE = "/api/v1/contacts"
MISSING = "01934a5e-0000-7000-8000-000000000000"


def _upsert(client: TestClient, auth: dict[str, str], **body: Any) -> Any:
    return client.post(BASE, json=body, headers=auth)


def _made(client: TestClient, auth: dict[str, str], **body: Any) -> dict[str, Any]:
    response = _upsert(client, auth, **body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def test_upsert_creates_then_updates_the_same_contact(
    db: Database, client: TestClient, auth: dict[str, str]
) -> None:
    created = _upsert(
        client,
        auth,
        email=" Olivia@Example.com ",
        push_targets=["tok-1", "tok-2", "tok-1"],
        attributes={"plan": "pro", "age": 30, "tags": {"a": 1}},
    )
    assert created.status_code == 201, created.text
    contact = created.json()
    assert created.headers["location"] == f"{BASE}/{contact['id']}"
    assert contact["email"] == "olivia@example.com"
    assert contact["external_id"] is None
    assert contact["push_targets"] == ["tok-1", "tok-2"]

    again = _upsert(
        client,
        auth,
        email="OLIVIA@example.com",
        external_id="crm-7",
        push_targets=["tok-3"],
        attributes={"age": None, "tags": {"b": 2}, "vip": True},
    )
    assert again.status_code == 200, again.text
    updated = again.json()
    assert updated["id"] == contact["id"]
    assert updated["external_id"] == "crm-7"
    assert updated["push_targets"] == ["tok-3"]  # replaced
    # Merged key by key; null removed `age`.
    assert updated["attributes"] == {"plan": "pro", "tags": {"a": 1, "b": 2}, "vip": True}
    assert updated["updated_at"] >= contact["updated_at"]

    # The external id finds it too, and it wins: the contact takes a new email.
    moved = _upsert(client, auth, external_id="crm-7", email="olivia@new.example")
    assert moved.status_code == 200
    assert moved.json()["id"] == contact["id"]
    assert moved.json()["email"] == "olivia@new.example"
    assert count(db, contacts) == 1


def test_upsert_refuses_keys_naming_two_contacts(
    db: Database, client: TestClient, auth: dict[str, str]
) -> None:
    ada = _made(client, auth, email="ada@example.com")
    bob = _made(client, auth, external_id="bob")
    clash = _upsert(client, auth, email="ada@example.com", external_id="bob")
    assert "ada@example.com" in assert_problem(clash, 409, "contact_conflict")["detail"]

    _upsert(client, auth, email="ada@example.com", external_id="ada-1")
    other_person = _upsert(client, auth, email="ada@example.com", external_id="ada-2")
    assert_problem(other_person, 409, "contact_conflict")

    assert client.get(f"{BASE}/{ada['id']}", headers=auth).json()["external_id"] == "ada-1"
    assert client.get(f"{BASE}/{bob['id']}", headers=auth).json()["email"] is None
    assert count(db, contacts) == 2


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({}, ["body"]),
        ({"attributes": {"a": 1}}, ["body"]),
        ({"email": "not-an-email"}, ["body", "email"]),
        ({"email": "a@b.c", "push_targets": "tok"}, ["body", "push_targets"]),
        ({"email": "a@b.c", "attributes": [1]}, ["body", "attributes"]),
        ({"email": "a@b.c", "id": MISSING}, ["body", "id"]),
        ({"external_id": "x" * 256}, ["body", "external_id"]),
    ],
    ids=["empty", "no-key", "bad-email", "targets-not-list", "attrs-not-object", "id", "long"],
)
def test_upsert_validation(
    db: Database, client: TestClient, auth: dict[str, str], body: dict[str, Any], loc: list[Any]
) -> None:
    problem = assert_problem(client.post(BASE, json=body, headers=auth), 422, "validation_error")
    assert problem["errors"][0]["loc"] == loc
    assert count(db, contacts) == 0


def test_get_replace_patch_delete(client: TestClient, auth: dict[str, str]) -> None:
    contact = _made(
        client, auth, email="ada@example.com", push_targets=["t"], attributes={"plan": "pro"}
    )
    url = f"{BASE}/{contact['id']}"
    assert client.get(url, headers=auth).json() == contact

    replaced = client.put(url, json={"external_id": "ada", "attributes": {"x": 1}}, headers=auth)
    assert replaced.status_code == 200, replaced.text
    body = replaced.json()
    assert (body["email"], body["external_id"], body["push_targets"], body["attributes"]) == (
        None,
        "ada",
        [],
        {"x": 1},
    )

    patched = client.patch(
        url,
        content=b'{"email": "Ada@Example.com", "attributes": {"x": null, "y": {"z": 1}}}',
        headers={**auth, "Content-Type": "application/merge-patch+json"},
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert body["email"] == "ada@example.com"
    assert body["external_id"] == "ada"  # left out: unchanged
    assert body["attributes"] == {"y": {"z": 1}}

    cleared = client.patch(url, json={"external_id": None, "attributes": None}, headers=auth)
    assert (cleared.json()["external_id"], cleared.json()["attributes"]) == (None, {})
    assert client.patch(url, json={}, headers=auth).json() == cleared.json()

    assert client.delete(url, headers=auth).status_code == 204
    assert_problem(client.get(url, headers=auth), 404, "contact_not_found")
    assert_problem(client.delete(url, headers=auth), 404, "contact_not_found")
    assert_problem(client.put(url, json={}, headers=auth), 404, "contact_not_found")
    assert_problem(client.patch(url, json={}, headers=auth), 404, "contact_not_found")
    assert_problem(client.get(f"{BASE}/not-an-id", headers=auth), 404, "contact_not_found")


def test_replace_or_patch_onto_another_contacts_keys_is_409(
    client: TestClient, auth: dict[str, str]
) -> None:
    _made(client, auth, email="ada@example.com", external_id="ada")
    bob = _made(client, auth, email="bob@example.com", external_id="bob")
    url = f"{BASE}/{bob['id']}"
    taken_email = client.put(url, json={"email": "ADA@example.com"}, headers=auth)
    assert "ada@example.com" in assert_problem(taken_email, 409, "contact_email_taken")["detail"]
    assert_problem(
        client.patch(url, json={"external_id": "ada"}, headers=auth),
        409,
        "contact_external_id_taken",
    )
    assert client.get(url, headers=auth).json() == bob  # unchanged
    # Its own values are no clash.
    assert client.put(url, json={"email": "bob@example.com"}, headers=auth).status_code == 200


def test_list_filters_and_pages(client: TestClient, auth: dict[str, str]) -> None:
    made = [
        _made(client, auth, email="a@x.com", attributes={"plan": "pro", "age": 30, "vip": True}),
        _made(client, auth, external_id="b", attributes={"plan": "pro", "age": "30"}),
        _made(client, auth, email="c@x.com", attributes={"plan": "free", "vip": False}),
        _made(client, auth, external_id="d"),
    ]
    ids = [c["id"] for c in made]

    def listed(query: str) -> list[str]:
        response = client.get(f"{BASE}?{query}", headers=auth)
        assert response.status_code == 200, response.text
        page = response.json()
        assert page["total"] == len(page["items"])
        return [c["id"] for c in page["items"]]

    assert listed("") == ids[::-1]  # newest first
    assert listed("email=A@X.COM") == [ids[0]]
    assert listed("external_id=b") == [ids[1]]
    assert listed("attribute=plan:pro") == [ids[1], ids[0]]
    assert listed("attribute=plan:pro&attribute=vip:true") == [ids[0]]
    # A number (or boolean) matches its JSON text, as does the same string.
    assert listed("attribute=age:30") == [ids[1], ids[0]]
    assert listed("attribute=vip:false") == [ids[2]]
    assert listed("filter[attribute]=plan:free&filter[email]=c@x.com") == [ids[2]]
    assert listed("attribute=plan:") == []
    assert listed("attribute=nothing:here") == []

    first = client.get(f"{BASE}?limit=3", headers=auth).json()
    assert [c["id"] for c in first["items"]] == ids[::-1][:3]
    assert (first["total"], first["total_exact"], first["limit"]) == (4, True, 3)
    rest = client.get(f"{BASE}?limit=3&cursor={first['next_cursor']}", headers=auth).json()
    assert [c["id"] for c in rest["items"]] == [ids[0]]
    assert rest["next_cursor"] is None
    assert [c["id"] for c in client.get(f"{BASE}?offset=3", headers=auth).json()["items"]] == [
        ids[0]
    ]


@pytest.mark.parametrize(
    "query",
    [
        "attribute=plan",
        "attribute=:pro",
        'attribute=a"b:1',
        "filter[nope]=1",
        "email=a@x.com&filter[email]=b@x.com",
        "limit=0",
    ],
)
def test_bad_list_queries_are_422(client: TestClient, auth: dict[str, str], query: str) -> None:
    assert_problem(client.get(f"{BASE}?{query}", headers=auth), 422, "validation_error")
    assert_problem(client.get(f"{BASE}?cursor=nonsense", headers=auth), 422, "invalid_cursor")


def test_another_tenants_contacts_are_invisible(
    db: Database,
    client: TestClient,
    auth: dict[str, str],
    new_tenant: NewTenant,
    new_key: NewKey,
) -> None:
    mine = _made(client, auth, email="ada@example.com", external_id="ada")
    other = {"Authorization": f"Bearer {new_key(new_tenant('intruder')['id'])}"}
    url = f"{BASE}/{mine['id']}"
    assert_problem(client.get(url, headers=other), 404, "contact_not_found")
    assert_problem(client.put(url, json={}, headers=other), 404, "contact_not_found")
    assert_problem(client.patch(url, json={}, headers=other), 404, "contact_not_found")
    assert_problem(client.delete(url, headers=other), 404, "contact_not_found")
    assert client.get(BASE, headers=other).json()["total"] == 0
    assert client.get(f"{BASE}?email=ada@example.com", headers=other).json()["items"] == []

    # Emails and external ids are unique per tenant only.
    theirs = _upsert(client, other, email="ada@example.com", external_id="ada")
    assert theirs.status_code == 201
    assert theirs.json()["id"] != mine["id"]
    assert client.get(url, headers=auth).json() == mine
    assert count(db, contacts) == 2
