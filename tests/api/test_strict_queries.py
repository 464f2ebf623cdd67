"""Strict query strings: every ``/api/v1`` route refuses a parameter it does not know.

The routes are walked from the application itself, so a new route is covered
without touching this file. The check runs before anything touches the
database, so one database will do (``db`` is SQLite here).
"""

from __future__ import annotations

from typing import Any

import pytest

from conveyor.store.db import Database
from tests.api.helpers import TestClient, assert_problem
from tests.api.operations import LISTS, OPERATIONS, Op, filled


@pytest.fixture
def db(sqlite_db: Database) -> Database:
    """SQLite only: nothing here reaches a query."""
    return sqlite_db


def test_the_walk_finds_the_api() -> None:
    # A walk that found nothing would make every test below pass vacuously.
    found = {str(op) for op in OPERATIONS}
    assert {
        "GET /api/v1/runs",
        "GET /api/v1/runs/stream",
        "GET /api/v1/runs/{run_id}/events",
        "POST /api/v1/automations/{automation_id}/trigger",
        "DELETE /api/v1/keys/{key_id}",
        "PATCH /api/v1/contacts/{contact_id}",
    } <= found
    assert len(OPERATIONS) > 45
    assert len(LISTS) >= 12


def _unknown(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in body["errors"] if e["type"] in ("unknown_parameter", "unknown_filter")]


@pytest.mark.parametrize("op", OPERATIONS, ids=str)
def test_an_unknown_parameter_is_422_everywhere(
    client: TestClient, auth: dict[str, str], op: Op
) -> None:
    response = client.request(op.method, filled(op.path), params={"statuss": "x"}, headers=auth)
    body = assert_problem(response, 422, "validation_error")
    assert body["errors"] == [
        {"loc": ["query", "statuss"], "msg": body["errors"][0]["msg"], "type": "unknown_parameter"}
    ]
    msg = body["errors"][0]["msg"]
    assert "'statuss'" in msg
    plain = sorted(n for n in op.names if not n.startswith("filter["))
    if plain:
        assert f"known: {', '.join(plain)}" in msg
    else:
        assert "takes no query parameters" in msg
    # Refused before the key is even looked at, and the same without one.
    anonymous = client.request(op.method, filled(op.path), params={"x": ""})
    assert_problem(anonymous, 422, "validation_error")


@pytest.mark.parametrize("op", [op for op in OPERATIONS if op.names], ids=str)
def test_every_declared_parameter_is_known(
    client: TestClient, auth: dict[str, str], op: Op
) -> None:
    # The unknown one makes sure the request stops before the endpoint (a stream
    # would not end); only it may be named.
    query = [(name, "1") for name in sorted(op.names)] + [("zz", "1")]
    response = client.request(op.method, filled(op.path), params=query, headers=auth)
    body = assert_problem(response, 422, "validation_error")
    assert [e["loc"] for e in _unknown(body)] == [["query", "zz"]]


FILTERED = {
    "/api/v1/runs": {"status", "automation_name", "tag", "created_after"},
    "/api/v1/automations/{automation_id}/runs": {"status", "tag"},
    "/api/v1/runs/stream": {"status", "automation_id"},
    "/api/v1/contacts": {"email", "attribute"},
    "/api/v1/events": {"name", "occurred_after"},
    "/api/v1/messages": {"channel", "template"},
    "/api/v1/dry-run-results": {"run_at", "requested_by", "created_at"},
    "/api/v1/automations": {"enabled", "trigger_type"},
    "/api/v1/templates": {"channel"},
}


@pytest.mark.parametrize("path", sorted(FILTERED))
def test_filter_spellings(client: TestClient, auth: dict[str, str], path: str) -> None:
    """Known `filter[name]`s pass the check; an unknown one is `unknown_filter`."""
    query = [(f"filter[{name}]", "1") for name in sorted(FILTERED[path])]
    query += [("filter[statuss]", "failed")]
    response = client.get(filled(path), params=query, headers=auth)
    body = assert_problem(response, 422, "validation_error")
    [error] = _unknown(body)
    assert error["loc"] == ["query", "filter[statuss]"]
    assert error["type"] == "unknown_filter"
    assert error["msg"].startswith("unknown filter 'statuss'; known: ")
    assert all(name in error["msg"] for name in FILTERED[path])


def test_a_route_without_filters_calls_filter_an_unknown_parameter(
    client: TestClient, auth: dict[str, str]
) -> None:
    body = assert_problem(
        client.get("/api/v1/keys", params={"filter[label]": "a"}, headers=auth),
        422,
        "validation_error",
    )
    assert [e["type"] for e in body["errors"]] == ["unknown_parameter"]


def test_each_typo_is_reported(client: TestClient, auth: dict[str, str]) -> None:
    query = [("statuss", "failed"), ("automation", "x"), ("automationName", "w"), ("limit", "2")]
    body = assert_problem(
        client.get("/api/v1/runs", params=query, headers=auth), 422, "validation_error"
    )
    assert [e["loc"][1] for e in body["errors"]] == ["statuss", "automation", "automationName"]
    assert "statuss" in body["detail"]


def test_health_probes_stay_lenient(client: TestClient) -> None:
    # Not part of the API: a load balancer may add a cache-busting parameter.
    assert client.get("/healthz", params={"t": "1"}).status_code == 200
