"""Automations over HTTP: CRUD, versions, pinning, paging, and refused input."""

from __future__ import annotations

import copy
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from conveyor.actions.registry import step_type_specs
from conveyor.domain.definition import parse_definition
from conveyor.store.db import Database
from conveyor.store.tables import automation_versions, automations
from tests.api.helpers import DEFINITION, TestClient, assert_problem, count, make_client

BASE = "/api/v1/automations"


def _named(name: str, **changes: Any) -> dict[str, Any]:
    return {**copy.deepcopy(DEFINITION), "name": name, **changes}


def test_create_get_list_update_delete(client: TestClient, auth: dict[str, str]) -> None:
    created = client.post(BASE, json=DEFINITION, headers=auth)
    assert created.status_code == 201, created.text
    body = created.json()
    assert created.headers["location"] == f"{BASE}/{body['id']}"
    assert (body["name"], body["version"], body["enabled"], body["trigger_type"]) == (
        "order-follow-up",
        1,
        True,
        "manual",
    )
    assert body["created_at"].endswith("Z")

    by_id = client.get(f"{BASE}/{body['id']}", headers=auth).json()
    by_name = client.get(f"{BASE}/order-follow-up", headers=auth).json()
    assert by_id == by_name == body

    listed = client.get(BASE, headers=auth).json()
    assert listed["total"] == 1
    assert listed["items"][0]["id"] == body["id"]
    assert "definition" not in listed["items"][0]

    changed = _named("order-follow-up", description="now with a description")
    updated = client.put(f"{BASE}/{body['id']}", json=changed, headers=auth)
    assert updated.status_code == 200, updated.text
    assert updated.json()["version"] == 2
    assert updated.json()["description"] == "now with a description"
    assert updated.json()["version_id"] != body["version_id"]

    versions = client.get(f"{BASE}/order-follow-up/versions", headers=auth).json()
    assert [v["version"] for v in versions["items"]] == [2, 1]
    assert versions["items"][1]["definition"] == body["definition"]
    assert versions["items"][0]["created_by"].startswith("api_key:")

    deleted = client.delete(f"{BASE}/order-follow-up", headers=auth)
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert_problem(client.get(f"{BASE}/{body['id']}", headers=auth), 404, "automation_not_found")
    assert client.get(BASE, headers=auth).json()["total"] == 0
    # The name is free again: a new automation, starting over at version 1.
    again = client.post(BASE, json=DEFINITION, headers=auth).json()
    assert again["id"] != body["id"]
    assert again["version"] == 1


def test_step_settings_survive_the_round_trip(client: TestClient, auth: dict[str, str]) -> None:
    definition = {
        "name": "settings",
        "timeout": "PT2H",
        "retry": {"max_attempts": 3, "initial_delay": "PT10S"},
        "steps": [
            {"key": "vars", "type": "set", "vars": {"a": None, "b": {"c": [1, None]}}},
            {
                "key": "call",
                "type": "http_request",
                "method": "POST",
                "url": "https://crm.example/hooks/{{ contact.external_id }}",
                "headers": {"X-Trace": "{{ run.id }}"},
                "json": {"order": "{{ trigger.payload.order_id }}"},
                "body": None,
                "timeout": "PT5S",
                "continue_on_error": True,
            },
        ],
    }
    stored = client.post(BASE, json=definition, headers=auth).json()["definition"]
    vars_step, call = stored["steps"]
    assert vars_step["vars"] == {"a": None, "b": {"c": [1, None]}}
    assert call["json"] == {"order": "{{ trigger.payload.order_id }}"}
    assert call["headers"] == {"X-Trace": "{{ run.id }}"}
    assert call["body"] is None
    assert call["timeout"] == "PT5S"
    assert call["continue_on_error"] is True
    assert stored["timeout"] == "PT2H"
    assert stored["retry"]["initial_delay"] == "PT10S"
    # What is stored is itself a valid definition, equal to the original.
    again = parse_definition(stored, step_type_specs())
    assert again == parse_definition(definition, step_type_specs())


def test_a_run_stays_pinned_to_its_version(client: TestClient, auth: dict[str, str]) -> None:
    v1 = client.post(BASE, json=DEFINITION, headers=auth).json()
    run = client.post(f"{BASE}/{v1['id']}/trigger", json={}, headers=auth).json()
    v2 = client.put(
        f"{BASE}/{v1['id']}", json=_named(v1["name"], description="v2"), headers=auth
    ).json()
    assert v2["version"] == 2

    detail = client.get(f"/api/v1/runs/{run['id']}", headers=auth).json()
    assert detail["version_number"] == 1
    assert detail["automation_version_id"] == v1["version_id"]
    later = client.post(f"{BASE}/{v1['id']}/trigger", json={}, headers=auth).json()
    assert later["version_number"] == 2
    assert later["automation_version_id"] == v2["version_id"]


def test_duplicate_name_is_409_and_stores_nothing(
    db: Database, client: TestClient, auth: dict[str, str]
) -> None:
    client.post(BASE, json=DEFINITION, headers=auth)
    other = client.post(BASE, json=_named("other"), headers=auth).json()
    before = count(db, automations), count(db, automation_versions)

    assert_problem(client.post(BASE, json=DEFINITION, headers=auth), 409, "automation_name_taken")
    # Renaming onto a live name is refused the same way.
    rename = client.put(f"{BASE}/{other['id']}", json=DEFINITION, headers=auth)
    assert_problem(rename, 409, "automation_name_taken")

    assert (count(db, automations), count(db, automation_versions)) == before
    assert client.get(f"{BASE}/{other['id']}", headers=auth).json()["version"] == 1


@pytest.mark.parametrize(
    ("definition", "loc", "kind"),
    [
        (
            _named("x", steps=[{"key": "a", "type": "nope"}]),
            ["steps", 0, "type"],
            "unknown_step_type",
        ),
        (
            _named("x", steps=[{"key": "a", "type": "set", "vars": {}}] * 2),
            ["steps", 1, "key"],
            "duplicate_key",
        ),
        (
            _named("x", steps=[{"key": "a", "type": "set", "vars": {}, "depends_on": ["b"]}]),
            ["steps", 0, "depends_on", 0],
            "unknown_dependency",
        ),
        (
            _named("x", steps=[{"key": "a", "type": "condition", "expression": "1 +"}]),
            ["steps", 0, "expression"],
            "bad_expression",
        ),
        (_named("x", steps=[]), ["steps"], "too_short"),
        (_named("Not A Slug"), ["name"], "string_pattern_mismatch"),
        (_named("01934a5e-0000-7000-8000-000000000000"), ["name"], "name_is_id"),
        (["not", "an", "object"], [], "dict_type"),
    ],
    ids=[
        "unknown-type",
        "duplicate-key",
        "unknown-dependency",
        "bad-expression",
        "no-steps",
        "bad-name",
        "name-like-an-id",
        "not-an-object",
    ],
)
def test_invalid_definition_is_422_with_errors_and_stores_nothing(
    db: Database,
    client: TestClient,
    auth: dict[str, str],
    definition: Any,
    loc: list[Any],
    kind: str,
) -> None:
    existing = client.post(BASE, json=DEFINITION, headers=auth).json()
    before = count(db, automations), count(db, automation_versions)

    for response in (
        client.post(BASE, json=definition, headers=auth),
        client.put(f"{BASE}/{existing['id']}", json=definition, headers=auth),
    ):
        body = assert_problem(response, 422, "invalid_definition")
        assert {"loc": loc, "type": kind} in [
            {"loc": e["loc"], "type": e["type"]} for e in body["errors"]
        ], body["errors"]
        assert all(e["msg"] for e in body["errors"])

    assert (count(db, automations), count(db, automation_versions)) == before


def test_malformed_json_is_400_and_stores_nothing(
    db: Database, client: TestClient, auth: dict[str, str]
) -> None:
    headers = {**auth, "Content-Type": "application/json"}
    response = client.post(BASE, content=b'{"name": "x", "steps": [', headers=headers)
    assert_problem(response, 400, "malformed_json")
    assert count(db, automations) == 0


def test_body_over_the_limit_is_413_and_stores_nothing(
    db: Database, client: TestClient, auth: dict[str, str]
) -> None:
    big = _named("big", description="x" * 5000)
    assert_problem(client.post(BASE, json=big, headers=auth), 413, "payload_too_large")

    def chunks() -> Any:  # no Content-Length: the body is counted as it streams in
        yield b'{"name": "big", "description": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'", "steps": [{"key": "a", "type": "set", "vars": {}}]}'

    chunked = client.post(
        BASE, content=chunks(), headers={**auth, "Content-Type": "application/json"}
    )
    assert "content-length" not in chunked.request.headers
    assert_problem(chunked, 413, "payload_too_large")
    assert count(db, automations) == 0


def test_unknown_automation_is_404(client: TestClient, auth: dict[str, str]) -> None:
    for ref in ("no-such-thing", "01934a5e-0000-7000-8000-000000000000"):
        url = f"{BASE}/{ref}"
        assert_problem(client.get(url, headers=auth), 404, "automation_not_found")
        assert_problem(
            client.put(url, json=_named("x"), headers=auth),
            404,
            "automation_not_found",
        )
        assert_problem(client.delete(url, headers=auth), 404, "automation_not_found")
        assert_problem(client.get(f"{url}/versions", headers=auth), 404, "automation_not_found")


def test_paging_with_offset_and_cursor(client: TestClient, auth: dict[str, str]) -> None:
    for name in ("c", "a", "e", "b", "d"):
        assert client.post(BASE, json=_named(name), headers=auth).status_code == 201

    first = client.get(BASE, params={"limit": 2}, headers=auth).json()
    assert [i["name"] for i in first["items"]] == ["a", "b"]
    assert (first["total"], first["limit"], first["offset"]) == (5, 2, 0)
    assert first["next_cursor"]

    # Inserting in between does not shift a cursor, as it would an offset.
    client.post(BASE, json=_named("aa"), headers=auth)
    second = client.get(BASE, params={"limit": 2, "cursor": first["next_cursor"]}, headers=auth)
    assert [i["name"] for i in second.json()["items"]] == ["c", "d"]
    third = client.get(
        BASE, params={"limit": 2, "cursor": second.json()["next_cursor"]}, headers=auth
    ).json()
    assert [i["name"] for i in third["items"]] == ["e"]
    assert third["next_cursor"] is None

    offset = client.get(BASE, params={"limit": 2, "offset": 4}, headers=auth).json()
    assert [i["name"] for i in offset["items"]] == ["d", "e"]
    assert offset["next_cursor"] is None


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({"limit": 0}, ["query", "limit"]),
        ({"limit": 1001}, ["query", "limit"]),
        ({"limit": "many"}, ["query", "limit"]),
        ({"offset": -1}, ["query", "offset"]),
        ({"cursor": "eyJrIjogMn0", "offset": 1}, ["query", "offset"]),
    ],
    ids=["limit-0", "limit-1001", "limit-text", "negative-offset", "both"],
)
def test_bad_paging_is_422(
    client: TestClient, auth: dict[str, str], params: dict[str, Any], loc: list[str]
) -> None:
    body = assert_problem(client.get(BASE, params=params, headers=auth), 422, "validation_error")
    assert loc in [e["loc"] for e in body["errors"]]


def test_versions_page_newest_first_with_cursor(client: TestClient, auth: dict[str, str]) -> None:
    created = client.post(BASE, json=DEFINITION, headers=auth).json()
    for i in range(3):
        client.put(
            f"{BASE}/{created['id']}", json=_named(created["name"], tags=[str(i)]), headers=auth
        )
    url = f"{BASE}/{created['id']}/versions"
    first = client.get(url, params={"limit": 3}, headers=auth).json()
    assert [v["version"] for v in first["items"]] == [4, 3, 2]
    assert first["total"] == 4
    rest = client.get(url, params={"limit": 3, "cursor": first["next_cursor"]}, headers=auth)
    assert [v["version"] for v in rest.json()["items"]] == [1]
    assert rest.json()["next_cursor"] is None


def test_filters_by_enabled_and_trigger_type(client: TestClient, auth: dict[str, str]) -> None:
    client.post(BASE, json=_named("on"), headers=auth)
    client.post(BASE, json=_named("off", enabled=False), headers=auth)
    client.post(
        BASE,
        json=_named("evented", trigger={"type": "event", "event": "order.completed"}),
        headers=auth,
    )

    def names(**params: Any) -> list[str]:
        return [i["name"] for i in client.get(BASE, params=params, headers=auth).json()["items"]]

    assert names(enabled="false") == ["off"]
    assert names(**{"filter[enabled]": "false"}) == ["off"]
    assert names(trigger_type="event") == ["evented"]
    assert names(**{"filter[trigger_type]": "manual"}) == ["off", "on"]


def test_concurrent_changes_get_distinct_versions_and_one_name(
    db: Database, auth: dict[str, str]
) -> None:
    clients = [make_client(db), make_client(db)]
    created = clients[0].post(BASE, json=DEFINITION, headers=auth).json()
    barrier = threading.Barrier(2)

    def put_many(client: TestClient) -> list[int]:
        barrier.wait()
        url = f"{BASE}/{created['id']}"
        return [client.put(url, json=DEFINITION, headers=auth).status_code for _ in range(5)]

    def create(client: TestClient) -> int:
        barrier.wait()
        return int(client.post(BASE, json=_named("racy"), headers=auth).status_code)

    with ThreadPoolExecutor(2) as pool:
        statuses = list(pool.map(put_many, clients))
        assert statuses == [[200] * 5, [200] * 5]
        assert sorted(pool.map(create, clients)) == [201, 409]

    versions = clients[0].get(f"{BASE}/{created['id']}/versions", headers=auth).json()
    assert [v["version"] for v in versions["items"]] == list(range(11, 0, -1))


def test_ids_match_in_any_case_and_without_dashes(client: TestClient, auth: dict[str, str]) -> None:
    created = client.post(BASE, json=DEFINITION, headers=auth).json()
    for ref in (created["id"].upper(), created["id"].replace("-", "")):
        response = client.get(f"{BASE}/{ref}", headers=auth)
        assert response.status_code == 200, response.text
        assert response.json()["id"] == created["id"]
