"""Paging on every list, walked from the application, on both databases.

An empty ``cursor`` is the first page, a malformed one a 422 ``invalid_cursor``,
and no integer query value (at or past 64 bits) makes a 5xx.
"""

from __future__ import annotations

import base64

import pytest

from conveyor.api.pagination import MAX_INT, encode_cursor
from tests.api.helpers import DEFINITION, TestClient, assert_problem
from tests.api.operations import LISTS, OPERATIONS, Op, filled


@pytest.fixture
def objects(client: TestClient, auth: dict[str, str]) -> dict[str, str]:
    """Values for the path parameters of the list routes (and a few items to list)."""
    automation = client.post("/api/v1/automations", json=DEFINITION, headers=auth)
    assert automation.status_code == 201, automation.text
    automation_id = automation.json()["id"]
    for _ in range(2):
        trigger = client.post(f"/api/v1/automations/{automation_id}/trigger", json={}, headers=auth)
        assert trigger.status_code == 202, trigger.text
    template = client.put(
        "/api/v1/templates/ping", json={"channel": "push", "body": "b"}, headers=auth
    )
    assert template.status_code == 201, template.text
    contact = client.post("/api/v1/contacts", json={"email": "ada@x.org"}, headers=auth)
    assert contact.status_code == 201, contact.text
    return {"automation_id": automation_id, "name": "ping", "run_id": trigger.json()["id"]}


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


BAD_CURSORS = {
    "short": "abc",
    "not-base64": "!!!",
    "not-json": _b64("{"),
    "list": _b64("[1, 2]"),
    "empty-object": _b64("{}"),
    "big-number": encode_cursor(2**70),
    "lone-surrogate": encode_cursor("k\ud800"),
}


@pytest.mark.parametrize("op", LISTS, ids=str)
def test_an_empty_cursor_is_the_first_page(
    client: TestClient, auth: dict[str, str], objects: dict[str, str], op: Op
) -> None:
    url = filled(op.path, objects)
    first = client.get(url, headers=auth)
    assert first.status_code == 200, first.text
    empty = client.get(url, params={"cursor": ""}, headers=auth)
    assert empty.status_code == 200, empty.text
    assert empty.json() == first.json()
    assert empty.json()["offset"] == 0
    # Empty is no cursor at all, so an offset goes with it.
    skipped = client.get(url, params={"cursor": "", "offset": 1}, headers=auth)
    assert skipped.status_code == 200, skipped.text
    assert skipped.json()["items"] == first.json()["items"][1:]


@pytest.mark.parametrize("cursor", BAD_CURSORS.values(), ids=BAD_CURSORS.keys())
def test_a_malformed_cursor_is_422_invalid_cursor_on_every_list(
    client: TestClient, auth: dict[str, str], objects: dict[str, str], cursor: str
) -> None:
    for op in LISTS:
        response = client.get(filled(op.path, objects), params={"cursor": cursor}, headers=auth)
        body = assert_problem(response, 422, "invalid_cursor")
        assert body["errors"] == [
            {"loc": ["query", "cursor"], "msg": body["detail"], "type": "invalid_cursor"}
        ], str(op)


def test_another_lists_cursor_is_invalid(
    client: TestClient, auth: dict[str, str], objects: dict[str, str]
) -> None:
    """A version list's cursor (a number) is `invalid_cursor` on every other list."""
    versions = client.get(
        filled("/api/v1/automations/{automation_id}/versions", objects),
        params={"limit": 1},
        headers=auth,
    )
    assert versions.status_code == 200, versions.text
    cursor = encode_cursor(versions.json()["items"][0]["version"])
    for op in LISTS:
        response = client.get(filled(op.path, objects), params={"cursor": cursor}, headers=auth)
        if op.path.endswith("/versions"):
            assert response.status_code == 200, response.text
        else:
            assert_problem(response, 422, "invalid_cursor")


def _int_params(op: Op) -> list[str]:
    return sorted(f.alias for f in op.query if f.field_info.annotation is int)


INT_PARAMS = [(op, name) for op in OPERATIONS if op.method == "GET" for name in _int_params(op)]


def test_int_params_are_found() -> None:
    found = {(str(op), name) for op, name in INT_PARAMS}
    assert ("GET /api/v1/runs", "offset") in found
    assert ("GET /api/v1/runs/{run_id}/events", "after") in found


@pytest.mark.parametrize(("op", "name"), INT_PARAMS, ids=lambda v: str(v))
def test_integer_query_values_never_make_a_5xx(
    client: TestClient, auth: dict[str, str], objects: dict[str, str], op: Op, name: str
) -> None:
    url = filled(op.path, objects)
    for value in (2**63, 2**64, 10**40, -(2**63) - 1):
        body = assert_problem(
            client.get(url, params={name: str(value)}, headers=auth), 422, "validation_error"
        )
        assert body["errors"][0]["loc"] == ["query", name], value
    for value in (MAX_INT, MAX_INT - 1, 0):
        response = client.get(url, params={name: str(value)}, headers=auth)
        # The largest value is either served or refused as out of range, never a 5xx.
        assert response.status_code in (200, 422), (value, response.text)
        if response.status_code == 422:
            assert_problem(response, 422, "validation_error")
        elif "items" in response.json() and value:
            assert response.json()["items"] == []
