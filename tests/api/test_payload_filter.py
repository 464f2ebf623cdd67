"""The payload filter ``payload.<path>=<value>`` on run lists and bulk operations."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest

from conveyor.clock import SystemClock
from conveyor.store.db import Database
from conveyor.testing.factories import make_automation, trigger
from tests.api.conftest import NewKey, NewTenant
from tests.api.helpers import TestClient, assert_problem
from tests.api.test_run_control import Api

NOW = SystemClock().now().replace(microsecond=0)
HOUR_AGO = (NOW - timedelta(hours=1)).isoformat().replace("+00:00", "Z")
# Runs that wait an hour once worked, so a bulk cancel still finds them going.
NAPPER: dict[str, Any] = {"steps": [{"key": "nap", "type": "delay", "duration": "PT1H"}]}
HOSTILE = "<script>alert(1)</script>' OR '1'='1"

# name -> the run's payload
PAYLOADS: dict[str, dict[str, Any]] = {
    "int": {"order": {"id": 123}},
    "text": {"order": {"id": "123"}},
    "float": {"order": {"id": 123.0}},
    "array": {"order": {"id": [123]}},
    "other": {"order": {"id": 1234}},
    "true": {"order": {"id": True}},
    "null": {"order": {"id": None}},
    "text-true": {"order": {"id": "true"}},
    "deeper": {"order": {"ref": {"id": 123}}},
    "scalar": {"order": 123},
    "quotes": {"a-b": {"c_d": "x'y\"z"}},
    "hostile": {"order": {"id": HOSTILE}},
    "deep": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": "bottom"}}}}}}}},
    "empty": {"order": {"id": ""}},
}

# (path, value, names of the runs that match)
MATCHES: list[tuple[str, str, set[str]]] = [
    ("order.id", "123", {"int", "text", "float"}),
    ("order.id", "1.23e2", {"int", "float"}),  # a number matches by value
    ("order.id", "1234", {"other"}),
    ("order.id", "true", {"true", "text-true"}),
    ("order.id", "null", {"null"}),
    ("order.id", "", {"empty"}),
    ("order.ref.id", "123", {"deeper"}),
    ("order", "123", {"scalar"}),
    ("a-b.c_d", "x'y\"z", {"quotes"}),
    ("order.id", HOSTILE, {"hostile"}),
    ("order.id", "' OR '1'='1", set()),
    ("a.b.c.d.e.f.g.h", "bottom", {"deep"}),
    ("order.id.x", "123", set()),
    ("nothing", "123", set()),
]


@pytest.fixture
def runs(db: Database, tenant: dict[str, Any], new_tenant: NewTenant) -> dict[str, str]:
    """One run of ``orders`` per payload in ``acme``, and one of another tenant's."""
    make_automation(db, tenant["id"], NAPPER | {"name": "orders"})
    make_automation(db, tenant["id"], NAPPER | {"name": "others"})
    ids = {
        name: trigger(db, tenant["id"], "orders", payload, now=NOW - timedelta(minutes=i))
        for i, (name, payload) in enumerate(PAYLOADS.items())
    }
    ids["other-automation"] = trigger(db, tenant["id"], "others", PAYLOADS["int"], now=NOW)
    # The same payloads in another tenant never match.
    umbrella = new_tenant("umbrella")
    make_automation(db, umbrella["id"], NAPPER | {"name": "orders"})
    for payload in PAYLOADS.values():
        trigger(db, umbrella["id"], "orders", payload, now=NOW)
    return ids


def _get(client: TestClient, auth: dict[str, str], query: list[tuple[str, str]], path: str) -> Any:
    return client.get(f"{path}?{urlencode(query)}", headers=auth)


@pytest.mark.parametrize(("path", "value", "names"), MATCHES)
def test_payload_filter_matches_exactly_one_path(
    client: TestClient,
    auth: dict[str, str],
    runs: dict[str, str],
    path: str,
    value: str,
    names: set[str],
) -> None:
    query = [(f"payload.{path}", value), ("created_after", HOUR_AGO)]
    response = _get(client, auth, query, "/api/v1/runs")
    assert response.status_code == 200, response.text
    body = response.json()
    found = {item["id"] for item in body["items"]}
    other = {runs["other-automation"]} if "int" in names else set()
    assert found == {runs[n] for n in names} | other
    assert body["total"] == len(found)
    # The same on one automation's list, and in the bracket spelling.
    response = _get(
        client,
        auth,
        [(f"filter[payload.{path}]", value), ("created_after", HOUR_AGO)],
        "/api/v1/automations/orders/runs",
    )
    assert response.status_code == 200, response.text
    assert {item["id"] for item in response.json()["items"]} == {runs[n] for n in names}


def test_payload_filter_combines_with_the_others_and_pages(
    client: TestClient, auth: dict[str, str], runs: dict[str, str]
) -> None:
    base = [("payload.order.id", "123"), ("created_after", HOUR_AGO)]
    response = _get(client, auth, [*base, ("automation_name", "others")], "/api/v1/runs")
    assert [i["id"] for i in response.json()["items"]] == [runs["other-automation"]]
    first = _get(client, auth, [*base, ("limit", "2")], "/api/v1/runs").json()
    assert len(first["items"]) == 2
    assert first["next_cursor"]
    rest = _get(client, auth, [*base, ("cursor", first["next_cursor"])], "/api/v1/runs").json()
    seen = [i["id"] for i in first["items"] + rest["items"]]
    assert sorted(seen) == sorted(
        [runs["int"], runs["text"], runs["float"], runs["other-automation"]]
    )
    # A window that ends before the runs leaves none.
    old = (NOW - timedelta(days=2)).isoformat().replace("+00:00", "Z")
    query = [("payload.order.id", "123"), ("created_at", f"{old}..{HOUR_AGO}")]
    assert _get(client, auth, query, "/api/v1/runs").json()["items"] == []


BAD: list[tuple[list[tuple[str, str]], str]] = [
    ([("payload.order..id", "1")], "keys separated by dots"),
    ([("payload.", "1")], "keys separated by dots"),
    ([("payload.order.id')--", "1")], "keys separated by dots"),
    ([('payload.a"b', "1")], "keys separated by dots"),
    ([("payload.$.a", "1")], "keys separated by dots"),
    ([("payload.a[0]", "1")], "keys separated by dots"),
    ([("payload." + ".".join("abcdefghi"), "1")], "at most 8 keys"),
    ([("payload." + "k" * 65, "1")], "keys separated by dots"),
    ([("payload.order.id", "x" * 501)], "at most 500 characters"),
    ([("payload.order.id", "a\x01b")], "no control characters"),
    ([("payload.order.id", "a\nb")], "no control characters"),
    ([("payload.order.id", "1"), ("payload.order.ref", "2")], "one payload filter at a time"),
    ([("payload.order.id", "1"), ("filter[payload.order.id]", "2")], "give one spelling"),
]


@pytest.mark.parametrize(("query", "message"), BAD)
@pytest.mark.parametrize("path", ["/api/v1/runs", "/api/v1/runs/stream"])
def test_bad_payload_filters_are_422(
    client: TestClient,
    auth: dict[str, str],
    query: list[tuple[str, str]],
    message: str,
    path: str,
) -> None:
    response = _get(client, auth, [*query, ("created_after", HOUR_AGO)], path)
    body = assert_problem(response, 422, "validation_error")
    assert message in body["detail"]


def test_payload_without_a_dot_is_an_unknown_parameter(
    client: TestClient, auth: dict[str, str]
) -> None:
    response = _get(client, auth, [("payload", "order.id:1")], "/api/v1/runs")
    body = assert_problem(response, 422, "validation_error")
    assert "unknown parameter 'payload'" in body["detail"]
    assert "payload.<path>" in body["detail"]


def test_sqlite_needs_a_window_postgresql_does_not(
    db: Database, client: TestClient, auth: dict[str, str], runs: dict[str, str]
) -> None:
    query = [("payload.order.id", "1234")]
    for path in ("/api/v1/runs", "/api/v1/automations/orders/runs"):
        response = _get(client, auth, query, path)
        if db.engine.dialect.name == "sqlite":
            body = assert_problem(response, 422, "payload_filter_needs_window")
            assert "created_after" in body["detail"]
        else:
            assert response.status_code == 200, response.text
            assert [i["id"] for i in response.json()["items"]] == [runs["other"]]
    if db.engine.dialect.name == "sqlite":
        response = _get(client, auth, query, "/api/v1/runs/stream")
        assert_problem(response, 422, "payload_filter_needs_window")
    # created_at with a start is a window too
    query = [("payload.order.id", "1234"), ("created_at", f"{HOUR_AGO}..")]
    response = _get(client, auth, query, "/api/v1/runs")
    assert [i["id"] for i in response.json()["items"]] == [runs["other"]]


def test_bulk_cancel_takes_the_payload_filter(
    db: Database, client: TestClient, auth: dict[str, str], runs: dict[str, str]
) -> None:
    api = Api(db, client, auth)
    filters = {"payload": {"path": "order.id", "value": "123"}, "created_after": HOUR_AGO}
    op = api.post("/runs/bulk/cancel", {"filters": filters}, 202).json()
    api.work()
    op = api.get(f"/bulk-operations/{op['id']}")
    assert op["status"] == "completed", op
    cancelled = {runs[n] for n in ("int", "text", "float", "other-automation")}
    assert op["matched"] == len(cancelled)
    for name, run_id in runs.items():
        status = api.run(run_id)["status"]
        assert (status == "cancelled") == (run_id in cancelled), name
    # bad payloads are refused like any body
    bad = {"payload": {"path": "order..id", "value": "1"}, "created_after": HOUR_AGO}
    response = client.post("/api/v1/runs/bulk/cancel", json={"filters": bad}, headers=auth)
    assert_problem(response, 422, "validation_error")
    unbounded = {"payload": {"path": "order.id", "value": "1"}}
    response = client.post("/api/v1/runs/bulk/replay", json={"filters": unbounded}, headers=auth)
    if db.engine.dialect.name == "sqlite":
        assert_problem(response, 422, "payload_filter_needs_window")
    else:
        assert response.status_code == 202, response.text


def test_another_tenants_key_sees_only_its_own_runs(
    client: TestClient, runs: dict[str, str], new_tenant: NewTenant, new_key: NewKey
) -> None:
    third = new_tenant("initech")
    auth = {"Authorization": f"Bearer {new_key(third['id'])}"}
    query = [("payload.order.id", "123"), ("created_after", HOUR_AGO)]
    response = _get(client, auth, query, "/api/v1/runs")
    assert response.status_code == 200, response.text
    assert response.json()["items"] == []
