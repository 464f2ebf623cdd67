"""A request body must be JSON: anything else is 415, and a request without a body passes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from conveyor.store.db import Database
from conveyor.store.tables import automations, idempotency_records, runs
from tests.api.helpers import DEFINITION, TestClient, assert_problem, count

BODY = json.dumps(DEFINITION).encode()


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonp",
        "text/json",
    ],
    ids=["none", "text", "form", "multipart", "jsonp", "text-json"],
)
def test_a_body_that_is_not_json_is_415_and_stores_nothing(
    db: Database, client: TestClient, auth: dict[str, str], content_type: str | None
) -> None:
    headers = dict(auth)
    if content_type is not None:
        headers["Content-Type"] = content_type
    response = client.post("/api/v1/automations", content=BODY, headers=headers)
    problem = assert_problem(response, 415, "unsupported_media_type")
    assert "application/json" in problem["detail"]
    assert count(db, automations) == 0


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/x+json",
    ],
    ids=["json", "charset", "upper-case", "plus-json"],
)
def test_json_types_are_accepted(
    client: TestClient, auth: dict[str, str], content_type: str
) -> None:
    response = client.post(
        "/api/v1/automations", content=BODY, headers={**auth, "Content-Type": content_type}
    )
    assert response.status_code == 201, response.text


def test_no_body_is_accepted_where_the_body_is_optional(
    db: Database, client: TestClient, auth: dict[str, str]
) -> None:
    automation = client.post("/api/v1/automations", json=DEFINITION, headers=auth).json()
    trigger = f"/api/v1/automations/{automation['id']}/trigger"
    assert client.post(trigger, headers=auth).status_code == 202
    # A type but an empty body (an empty HTML form) is still no body.
    empty_form = {**auth, "Content-Type": "application/x-www-form-urlencoded"}
    assert client.post(trigger, content=b"", headers=empty_form).status_code == 202

    def nothing() -> Iterator[bytes]:
        yield from ()

    chunked = client.post(
        trigger, content=nothing(), headers={**auth, "Content-Type": "text/plain"}
    )
    assert chunked.status_code == 202, chunked.text
    assert count(db, runs) == 3


def test_a_chunked_body_that_is_not_json_is_415(
    db: Database, client: TestClient, auth: dict[str, str]
) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"payload="
        yield b"x"

    response = client.post(
        "/api/v1/automations", content=chunks(), headers={**auth, "Content-Type": "text/plain"}
    )
    assert_problem(response, 415, "unsupported_media_type")
    assert count(db, automations) == 0


def test_any_method_with_a_body_is_checked(
    db: Database, client: TestClient, auth: dict[str, str]
) -> None:
    automation = client.post("/api/v1/automations", json=DEFINITION, headers=auth).json()
    response = client.request(
        "DELETE",
        f"/api/v1/automations/{automation['id']}",
        content=b"confirm=yes",
        headers={**auth, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_problem(response, 415, "unsupported_media_type")
    assert client.get(f"/api/v1/automations/{automation['id']}", headers=auth).status_code == 200


def test_a_415_is_not_kept_for_its_idempotency_key(
    db: Database, client: TestClient, auth: dict[str, str]
) -> None:
    headers: dict[str, Any] = {**auth, "Idempotency-Key": "k-415"}
    refused = client.post(
        "/api/v1/automations", content=BODY, headers={**headers, "Content-Type": "text/plain"}
    )
    assert_problem(refused, 415, "unsupported_media_type")
    assert count(db, idempotency_records) == 0
    fixed = client.post(
        "/api/v1/automations", content=BODY, headers={**headers, "Content-Type": "application/json"}
    )
    assert fixed.status_code == 201, fixed.text
