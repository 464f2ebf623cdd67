"""Input hygiene at the door: NaN, Infinity, lone surrogates, NUL, deep nesting, huge integers.

Every route that takes a JSON body parses it strictly before the endpoint runs:
400 ``malformed_json`` with the JSON pointer of a non-finite number, a lone
surrogate or a U+0000 (NUL, which PostgreSQL cannot store), 422
``validation_error`` with the ``loc`` of the first container nested past 64
levels; nothing is stored. Event ingestion sorts the flaws out per event
instead. Integer paging parameters past 2^63-1 are 422, not 500. (NUL in query
and path parameters: tests/api/test_nul_characters.py.)
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.routing import APIRoute
from sqlalchemy import select

from conveyor.api.app import ROUTERS
from conveyor.api.pagination import encode_cursor
from conveyor.api.routing import HygienicRoute
from conveyor.store.db import Database
from conveyor.store.messaging_tables import events
from conveyor.store.tables import metadata
from tests.api.helpers import DEFINITION, TestClient, assert_problem, count

BIG = 2**64
MAX_DEPTH = 64


def nest(levels: int) -> dict[str, Any]:
    """``levels`` objects, each the value of ``a`` in the one around it."""
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


@dataclass(frozen=True)
class Case:
    """A poisoned value, and where its flaw is, relative to the value."""

    make: Callable[[], Any]
    status: int
    place: tuple[str | int, ...]


CASES: dict[str, Case] = {
    "surrogate-in-key": Case(lambda: {"ok": 1, "k\ud800": 1}, 400, ("k\ufffd",)),
    "surrogate-in-value": Case(
        lambda: {"items": [0, 1, 2, {"name": "x\udc00"}]}, 400, ("items", 3, "name")
    ),
    # PostgreSQL keeps U+0000 neither in text nor in jsonb.
    "nul-in-value": Case(lambda: {"note": "a\x00b"}, 400, ("note",)),
    "nul-in-key": Case(lambda: {"ok": 1, "k\x00": 1}, 400, ("k\ufffd",)),
    "nan": Case(lambda: {"x": math.nan}, 400, ("x",)),
    "infinity": Case(lambda: [1, math.inf], 400, (1,)),
    "depth-65": Case(lambda: nest(65), 422, ()),
    "depth-300": Case(lambda: nest(300), 422, ()),
}


@dataclass(frozen=True)
class Route:
    """A write route, and where in its body the poisoned value goes."""

    method: str
    path: str
    body: Callable[[Any], Any]
    at: tuple[str | int, ...]
    content_type: str = "application/json"

    @property
    def id(self) -> str:
        return f"{self.method} {self.path}"


def _definition(name: str, value: Any) -> dict[str, Any]:
    return {"name": name, "steps": [{"key": "s", "type": "set", "vars": {"data": value}}]}


ROUTES = [
    Route(
        "POST",
        "/api/v1/automations/{automation}/trigger",
        lambda v: {"payload": {"data": v}},
        ("payload", "data"),
    ),
    Route(
        "POST", "/api/v1/automations", lambda v: _definition("new", v), ("steps", 0, "vars", "data")
    ),
    Route(
        "PUT",
        "/api/v1/automations/{automation}",
        lambda v: _definition(DEFINITION["name"], v),
        ("steps", 0, "vars", "data"),
    ),
    Route(
        "POST",
        "/api/v1/contacts",
        lambda v: {"email": "new@x.org", "attributes": {"data": v}},
        ("attributes", "data"),
    ),
    Route(
        "PUT",
        "/api/v1/contacts/{contact}",
        lambda v: {"email": "ada@x.org", "attributes": {"data": v}},
        ("attributes", "data"),
    ),
    Route(
        "PATCH",
        "/api/v1/contacts/{contact}",
        lambda v: {"attributes": {"data": v}},
        ("attributes", "data"),
        content_type="application/merge-patch+json",
    ),
    Route(
        "PUT",
        "/api/v1/templates/ping",
        lambda v: {"channel": "push", "body": "b", "data": {"data": v}},
        ("data", "data"),
    ),
    Route("PUT", "/api/v1/settings/channels", lambda v: {"email": {"from": v}}, ("email", "from")),
    Route(
        "POST",
        "/api/v1/runs/{run}/retry",
        lambda v: {"mode": "full", "payload": {"data": v}},
        ("payload", "data"),
    ),
    Route("POST", "/api/v1/runs/{run}/replay", lambda v: {"reason": v}, ("reason",)),
    Route("POST", "/api/v1/runs/{run}/cancel", lambda v: {"reason": v}, ("reason",)),
    Route("POST", "/api/v1/runs/bulk/cancel", lambda v: {"filters": {"x": v}}, ("filters", "x")),
    Route("POST", "/api/v1/runs/bulk/replay", lambda v: {"reason": v}, ("reason",)),
    Route("POST", "/api/v1/keys", lambda v: {"label": v, "scopes": ["runs:read"]}, ("label",)),
]

LISTS = [
    "/api/v1/automations",
    "/api/v1/runs",
    "/api/v1/events",
    "/api/v1/contacts",
    "/api/v1/templates",
    "/api/v1/messages",
    "/api/v1/dry-run-results",
    "/api/v1/keys",
]


@dataclass
class World:
    """A tenant with an automation, a run and a contact."""

    automation: str
    run: str
    contact: str

    def path(self, template: str) -> str:
        return template.format(automation=self.automation, run=self.run, contact=self.contact)


@pytest.fixture
def world(client: TestClient, auth: dict[str, str]) -> World:
    automation = client.post("/api/v1/automations", json=DEFINITION, headers=auth)
    assert automation.status_code == 201, automation.text
    automation_id = automation.json()["id"]
    run = client.post(f"/api/v1/automations/{automation_id}/trigger", json={}, headers=auth)
    assert run.status_code == 202, run.text
    contact = client.post("/api/v1/contacts", json={"email": "ada@x.org"}, headers=auth)
    assert contact.status_code == 201, contact.text
    return World(automation_id, run.json()["id"], contact.json()["id"])


def snapshot(db: Database) -> dict[str, list[Any]]:
    """Every row of every table (to show that a refused request changed nothing)."""
    with db.read() as conn:
        return {
            table.name: sorted(map(repr, conn.execute(select(table)).all()))
            for table in metadata.sorted_tables
        }


def send(client: TestClient, route: Route, path: str, body: Any, auth: dict[str, str]) -> Any:
    # json.dumps writes NaN, Infinity and "\ud800" escapes, as a careless client would.
    return client.request(
        route.method,
        path,
        content=json.dumps(body),
        headers={**auth, "Content-Type": route.content_type},
    )


def test_every_route_parses_its_body_strictly() -> None:
    routes = [r for router in ROUTERS for r in router.routes if isinstance(r, APIRoute)]
    assert routes
    assert all(isinstance(r, HygienicRoute) for r in routes)
    # ... and every route taking a body is in the table below (or has its own test).
    with_body = {f"{m} {r.path}" for r in routes if r.body_field is not None for m in r.methods}
    named = {"{automation}": "{automation_id}", "{run}": "{run_id}", "{contact}": "{contact_id}"}
    covered = {
        "PUT /api/v1/templates/{name}",
        "POST /api/v1/events",
        # Per item, like events: tests/api/test_batch_triggers.py
        "POST /api/v1/automations/{automation_id}/trigger/batch",
    }
    for route in ROUTES:
        path = route.id
        for short, full in named.items():
            path = path.replace(short, full)
        covered.add(path)
    assert with_body <= covered, with_body - covered


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.id)
def test_bad_json_bodies_are_refused_and_store_nothing(
    db: Database, client: TestClient, auth: dict[str, str], world: World, route: Route
) -> None:
    path = world.path(route.path)
    before = snapshot(db)
    for name, case in CASES.items():
        response = send(client, route, path, route.body(case.make()), auth)
        if case.status == 400:
            problem = assert_problem(response, 400, "malformed_json")
            pointer = "".join(f"/{p}" for p in (*route.at, *case.place))
            assert problem["pointer"] == pointer, name
            assert pointer in problem["detail"], name
        else:
            problem = assert_problem(response, 422, "validation_error")
            # The first container past 64: the body is depth 1, the poisoned value
            # depth len(at) + 1, and each `a` one more.
            first = ["a"] * (MAX_DEPTH - len(route.at))
            [error] = problem["errors"]
            assert error["loc"] == ["body", *route.at, *first], name
            assert error["type"] == "json_too_deep"
            assert "64" in error["msg"]
        assert snapshot(db) == before, f"{name}: something was stored"
    for listing in LISTS:
        assert client.get(listing, headers=auth).status_code == 200, listing


def test_a_body_nested_exactly_64_deep_is_accepted(
    client: TestClient, auth: dict[str, str], world: World
) -> None:
    # body 1, payload 2, then 62 more: 64 in all
    body = {"payload": nest(63)}
    ok = client.post(f"/api/v1/automations/{world.automation}/trigger", json=body, headers=auth)
    assert ok.status_code == 202, ok.text
    body = {"payload": nest(64)}
    refused = client.post(
        f"/api/v1/automations/{world.automation}/trigger", json=body, headers=auth
    )
    assert_problem(refused, 422, "validation_error")


@pytest.mark.parametrize("with_key", [False, True], ids=["plain", "idempotency-key"])
def test_a_body_too_deep_for_the_json_parser_is_a_422_with_its_place(
    db: Database, client: TestClient, auth: dict[str, str], world: World, with_key: bool
) -> None:
    body = '{"payload": ' + "[" * 2000 + "]" * 2000 + "}"
    headers = {**auth, "Content-Type": "application/json"}
    if with_key:
        headers["Idempotency-Key"] = "deep-1"
    runs_before = snapshot(db)["runs"]
    path = f"/api/v1/automations/{world.automation}/trigger"
    problem = assert_problem(
        client.post(path, content=body, headers=headers), 422, "validation_error"
    )
    assert problem["errors"][0]["loc"] == ["body", "payload", *[0] * (MAX_DEPTH - 1)]
    assert snapshot(db)["runs"] == runs_before


def test_a_body_that_is_not_utf8_is_malformed(
    client: TestClient, auth: dict[str, str], world: World
) -> None:
    response = client.post(
        f"/api/v1/automations/{world.automation}/trigger",
        content=b'{"payload": {"x": "\xff\xfe"}}',
        headers={**auth, "Content-Type": "application/json"},
    )
    assert_problem(response, 400, "malformed_json")


def test_event_batches_reject_events_with_bad_json_one_by_one(
    db: Database, client: TestClient, auth: dict[str, str]
) -> None:
    good = {"id": "good", "name": "order.completed", "payload": {"total": 1.5, "note": "é 😀"}}
    poisoned = [
        {"id": f"bad-{name}", "name": "order.completed", "payload": {"data": case.make()}}
        for name, case in CASES.items()
    ]
    poisoned.append({"id": "bad\ud800id", "name": "order.completed"})
    response = client.post(
        "/api/v1/events",
        content=json.dumps({"events": [good, *poisoned]}),
        headers={**auth, "Content-Type": "application/json"},
    )
    assert response.status_code == 207, response.text
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (1, len(poisoned))
    results = body["results"]
    assert results[0]["status"] == "accepted"
    for result, (name, case) in zip(results[1:], CASES.items(), strict=False):
        assert result["status"] == "rejected", name
        assert result["id"] == f"bad-{name}"
        if case.status == 400:
            pointer = "".join(f"/{p}" for p in ("payload", "data", *case.place))
            assert result["code"] == "malformed_json", name
            assert result["reason"].startswith(f"{pointer}: "), name
        else:
            # Depth counts from the event: event 1, payload 2, data 3, ...
            assert result["code"] == "validation_error", name
            assert result["errors"][0]["loc"] == ["payload", "data", *["a"] * (MAX_DEPTH - 2)]
    # An id that cannot be sent back is not echoed.
    assert results[-1] == {**results[-1], "id": None, "code": "malformed_json"}
    assert results[-1]["reason"].startswith("/id: ")
    with db.read() as conn:
        assert conn.execute(select(events.c.id)).scalars().all() == ["good"]


def test_one_event_with_bad_json_is_rejected_like_any_invalid_event(
    db: Database, client: TestClient, auth: dict[str, str]
) -> None:
    response = client.post(
        "/api/v1/events",
        content=json.dumps({"id": "e1", "name": "n", "payload": {"x": math.nan}}),
        headers={**auth, "Content-Type": "application/json"},
    )
    assert response.status_code == 207, response.text
    [result] = response.json()["results"]
    assert (result["status"], result["code"]) == ("rejected", "malformed_json")
    assert result["reason"].startswith("/payload/x: ")
    assert count(db, events) == 0


def test_a_flaw_outside_any_event_refuses_the_batch(
    db: Database, client: TestClient, auth: dict[str, str]
) -> None:
    body = {"events": [{"id": "e1", "name": "n"}], "k\ud800": 1}
    response = client.post(
        "/api/v1/events",
        content=json.dumps(body),
        headers={**auth, "Content-Type": "application/json"},
    )
    problem = assert_problem(response, 400, "malformed_json")
    assert problem["pointer"] == "/k\ufffd"
    assert count(db, events) == 0


HUGE = [
    *[(f"{p}?offset={BIG}", {}, ["query", "offset"]) for p in LISTS],
    (f"/api/v1/automations/{{automation}}/runs?offset={BIG}", {}, ["query", "offset"]),
    (f"/api/v1/automations/{{automation}}/versions?offset={BIG}", {}, ["query", "offset"]),
    (f"/api/v1/runs/{{run}}/events?after={BIG}", {}, ["query", "after"]),
    (
        "/api/v1/runs/{run}/events",
        {"Accept": "text/event-stream", "Last-Event-ID": str(BIG)},
        ["header", "Last-Event-ID"],
    ),
    # Cursors are ours, but a client can forge one.
    (
        "/api/v1/automations/{automation}/versions?cursor=" + encode_cursor(BIG),
        {},
        ["query", "cursor"],
    ),
    ("/api/v1/templates/ping/versions?cursor=" + encode_cursor(-BIG), {}, ["query", "cursor"]),
    ("/api/v1/keys?cursor=" + encode_cursor("k\ud800"), {}, ["query", "cursor"]),
]


def test_integers_past_64_bits_are_422(
    client: TestClient, auth: dict[str, str], world: World
) -> None:
    client.put(
        "/api/v1/templates/ping", json={"channel": "push", "body": "b"}, headers=auth
    ).raise_for_status()
    for path, headers, loc in HUGE:
        response = client.get(world.path(path), headers={**auth, **headers})
        code = "invalid_cursor" if loc == ["query", "cursor"] else "validation_error"
        problem = assert_problem(response, 422, code)
        assert problem["errors"][0]["loc"] == loc, path
