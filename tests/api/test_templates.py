"""``/api/v1/templates``: versioned email and push templates."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.helpers import TestClient, assert_problem

EMAIL = {"channel": "email", "subject": "Your receipt", "text": "Hi {{ contact.email }}"}
PUSH = {"channel": "push", "title": "Hey", "body": "Need anything?", "data": {"k": "{{ 1 }}"}}


def test_first_put_creates_later_puts_make_versions(
    client: TestClient, auth: dict[str, str]
) -> None:
    created = client.put("/api/v1/templates/receipt", json=EMAIL, headers=auth)
    assert created.status_code == 201, created.text
    assert created.headers["location"] == "/api/v1/templates/receipt"
    body = created.json()
    assert body["name"] == "receipt"
    assert body["channel"] == "email"
    assert body["version"] == 1
    assert body["content"] == {
        "subject": "Your receipt",
        "text": "Hi {{ contact.email }}",
        "html": None,
    }

    changed = client.put(
        "/api/v1/templates/receipt", json={**EMAIL, "html": "<p>hi</p>"}, headers=auth
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["version"] == 2
    assert changed.json()["id"] == body["id"]
    assert changed.json()["version_id"] != body["version_id"]

    current = client.get("/api/v1/templates/receipt", headers=auth).json()
    assert current["version"] == 2
    assert current["content"]["html"] == "<p>hi</p>"
    versions = client.get("/api/v1/templates/receipt/versions", headers=auth).json()
    assert [v["version"] for v in versions["items"]] == [2, 1]
    assert versions["items"][1]["content"]["html"] is None
    assert versions["total"] == 2


def test_push_templates(client: TestClient, auth: dict[str, str]) -> None:
    response = client.put("/api/v1/templates/need-anything", json=PUSH, headers=auth)
    assert response.status_code == 201, response.text
    assert response.json()["content"] == {
        "title": "Hey",
        "body": "Need anything?",
        "data": {"k": "{{ 1 }}"},
    }


def test_list_by_name_with_channel_filter_and_cursor(
    client: TestClient, auth: dict[str, str]
) -> None:
    for name in ("c", "a", "b"):
        client.put(f"/api/v1/templates/{name}", json=EMAIL, headers=auth)
    client.put("/api/v1/templates/p", json=PUSH, headers=auth)
    page = client.get("/api/v1/templates", params={"limit": 2}, headers=auth).json()
    assert [t["name"] for t in page["items"]] == ["a", "b"]
    assert page["total"] == 4
    rest = client.get(
        "/api/v1/templates", params={"limit": 2, "cursor": page["next_cursor"]}, headers=auth
    ).json()
    assert [t["name"] for t in rest["items"]] == ["c", "p"]
    assert rest["next_cursor"] is None
    push = client.get("/api/v1/templates", params={"filter[channel]": "push"}, headers=auth).json()
    assert [t["name"] for t in push["items"]] == ["p"]


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({**EMAIL, "subject": "{{ oops"}, ["body", "subject"]),
        ({**EMAIL, "html": "{% for x in %}"}, ["body", "html"]),
        ({**PUSH, "data": {"deep": ["{{ }}"]}}, ["body", "data", "deep", 0]),
    ],
    ids=["subject", "html", "push-data"],
)
def test_a_template_that_does_not_compile_is_422_naming_the_field(
    client: TestClient, auth: dict[str, str], body: dict[str, Any], loc: list[Any]
) -> None:
    response = client.put("/api/v1/templates/bad", json=body, headers=auth)
    problem = assert_problem(response, 422, "invalid_template")
    assert [e["loc"] for e in problem["errors"]] == [loc]
    assert problem["errors"][0]["type"] == "bad_template"
    assert_problem(client.get("/api/v1/templates/bad", headers=auth), 404, "template_not_found")


@pytest.mark.parametrize(
    "body",
    [
        {"channel": "email", "subject": "s"},  # no body at all
        {"channel": "email", "text": "t"},  # no subject
        {"channel": "push", "title": "t"},  # no body
        {"channel": "sms", "body": "b"},
        {**EMAIL, "title": "push field on email"},
    ],
    ids=["no-body", "no-subject", "push-no-body", "unknown-channel", "foreign-field"],
)
def test_malformed_bodies_are_422(
    client: TestClient, auth: dict[str, str], body: dict[str, Any]
) -> None:
    response = client.put("/api/v1/templates/x", json=body, headers=auth)
    assert_problem(response, 422, "validation_error")


def test_a_template_keeps_its_channel(client: TestClient, auth: dict[str, str]) -> None:
    client.put("/api/v1/templates/receipt", json=EMAIL, headers=auth)
    response = client.put("/api/v1/templates/receipt", json=PUSH, headers=auth)
    assert_problem(response, 409, "template_channel_changed")


def test_a_name_must_be_a_slug(client: TestClient, auth: dict[str, str]) -> None:
    assert_problem(
        client.put("/api/v1/templates/Not%20OK", json=EMAIL, headers=auth), 422, "validation_error"
    )


def test_delete_frees_the_name_and_keeps_versions(client: TestClient, auth: dict[str, str]) -> None:
    first = client.put("/api/v1/templates/receipt", json=EMAIL, headers=auth).json()
    assert client.delete("/api/v1/templates/receipt", headers=auth).status_code == 204
    assert_problem(client.get("/api/v1/templates/receipt", headers=auth), 404, "template_not_found")
    assert_problem(
        client.delete("/api/v1/templates/receipt", headers=auth), 404, "template_not_found"
    )
    assert_problem(
        client.get("/api/v1/templates/receipt/versions", headers=auth), 404, "template_not_found"
    )
    assert client.get("/api/v1/templates", headers=auth).json()["total"] == 0
    again = client.put("/api/v1/templates/receipt", json=PUSH, headers=auth)
    assert again.status_code == 201
    assert again.json()["id"] != first["id"]
    assert again.json()["version"] == 1


def test_another_tenants_template_is_404(
    client: TestClient, auth: dict[str, str], new_tenant: Any, new_key: Any
) -> None:
    client.put("/api/v1/templates/receipt", json=EMAIL, headers=auth)
    other = {"Authorization": f"Bearer {new_key(new_tenant('intruder')['id'])}"}
    base = "/api/v1/templates/receipt"
    assert_problem(client.get(base, headers=other), 404, "template_not_found")
    assert_problem(client.get(f"{base}/versions", headers=other), 404, "template_not_found")
    assert_problem(client.delete(base, headers=other), 404, "template_not_found")
    assert client.get("/api/v1/templates", headers=other).json()["total"] == 0
    # Names are per tenant: the intruder's PUT makes its own template.
    assert client.put(base, json=PUSH, headers=other).status_code == 201
    assert client.get(base, headers=auth).json()["channel"] == "email"
