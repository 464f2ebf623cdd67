"""``GET /api/v1/runs`` and ``GET /api/v1/automations/{id}/runs``: filters, paging, totals."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest

from conveyor.api.schemas.run_lists import RunPage, RunSummary
from conveyor.store.db import Database
from conveyor.testing.factories import make_automation, trigger
from tests.api.helpers import TestClient, assert_problem
from tests.api.run_data import BASE, CONTACT_1, CONTACT_2, Data, make_data, set_run, steps

Query = list[tuple[str, str]]


@pytest.fixture
def data(db: Database, tenant: dict[str, Any]) -> Data:
    """Ten runs of two automations in ``acme``."""
    return make_data(db, tenant["id"])


def _list(
    client: TestClient, auth: dict[str, str], query: Query, path: str = "/api/v1/runs"
) -> Any:
    return client.get(f"{path}?{urlencode(query)}", headers=auth)


def _ids(client: TestClient, auth: dict[str, str], query: Query, **kw: Any) -> list[str]:
    response = _list(client, auth, query, **kw)
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


def _time(minutes: float) -> Any:
    return BASE + timedelta(minutes=minutes)


def _at(minutes: float) -> str:
    return _time(minutes).isoformat().replace("+00:00", "Z")


# (query, which runs match)
FILTERS: list[tuple[Query, Any]] = [
    ([], lambda r: True),
    ([("status", "failed")], lambda r: r.status == "failed"),
    ([("automation_name", "beta")], lambda r: r.automation == "beta"),
    ([("trigger_type", "event")], lambda r: r.trigger_type == "event"),
    ([("trigger_source_type", "schedule")], lambda r: r.trigger_source_type == "schedule"),
    ([("contact_id", CONTACT_1)], lambda r: r.contact_id == CONTACT_1),
    ([("contact_id", CONTACT_2.upper())], lambda r: r.contact_id == CONTACT_2),
    ([("identity", "bob@x.org")], lambda r: r.identity_value == "bob@x.org"),
    ([("concurrency_key", "k1")], lambda r: r.concurrency_key == "k1"),
    ([("tag", "blue")], lambda r: "blue" in r.tags),
    ([("tag", "green")], lambda r: "green" in r.tags),
    ([("tag", "red")], lambda r: False),
    ([("created_after", _at(3))], lambda r: r.created_at >= BASE + timedelta(minutes=3)),
    ([("created_before", _at(3))], lambda r: r.created_at < BASE + timedelta(minutes=3)),
    (
        [("created_after", "2026-03-01T14:02:00+02:00")],
        lambda r: r.created_at >= BASE + timedelta(minutes=2),
    ),
    # A time alone is the span of its precision: here, one second.
    ([("created_at", _at(3))], lambda r: r.created_at == BASE + timedelta(minutes=3)),
    ([("created_at", "2026-03-01T14:03:00.000+02:00")], lambda r: r.created_at == _time(3)),
    ([("created_at", _at(3.5))], lambda r: False),
    ([("created_at", f"{_at(2)}..{_at(5)}")], lambda r: _time(2) <= r.created_at < _time(5)),
    ([("created_at", f"{_at(7)}..")], lambda r: r.created_at >= _time(7)),
    ([("created_at", "2026-03-01")], lambda r: True),
    ([("created_at", "2026-02-28..2026-02-28")], lambda r: False),
    ([("created_at", "..2026-03-01")], lambda r: True),
]
FILTER_IDS = [
    "none",
    "status",
    "automation_name",
    "trigger_type",
    "trigger_source_type",
    "contact_id",
    "contact_id-uppercase",
    "identity",
    "concurrency_key",
    "tag",
    "tag-shared",
    "tag-unknown",
    "created_after",
    "created_before",
    "created_after-offset",
    "created_at-time",
    "created_at-time-millis-offset",
    "created_at-time-between",
    "created_at-range-of-times",
    "created_at-open-range",
    "created_at-day",
    "created_at-other-day",
    "created_at-until-day",
]


@pytest.mark.parametrize(("query", "pred"), FILTERS, ids=FILTER_IDS)
def test_each_filter_alone_in_both_spellings(
    client: TestClient, auth: dict[str, str], data: Data, query: Query, pred: Any
) -> None:
    expected = data.ids(pred)
    assert _ids(client, auth, query) == expected
    bracket = [(f"filter[{name}]", value) for name, value in query]
    assert _ids(client, auth, bracket) == expected


def test_filters_by_id(client: TestClient, auth: dict[str, str], data: Data) -> None:
    assert _ids(client, auth, [("automation_id", data.alpha)]) == data.ids(
        lambda r: r.automation == "alpha"
    )
    original = data.runs[2].id
    assert _ids(client, auth, [("filter[retry_of]", original)]) == [data.runs[5].id]


def test_filters_combine(client: TestClient, auth: dict[str, str], data: Data) -> None:
    query = [
        ("tag", "green"),
        ("status", "completed"),
        ("status", "failed"),
        ("filter[status]", "failed"),
        ("filter[status]", "completed"),
        ("created_before", _at(8)),
        ("automation_id", data.alpha),
    ]
    expected = data.ids(
        lambda r: (
            r.automation == "alpha"
            and r.status in ("completed", "failed")
            and r.created_at < BASE + timedelta(minutes=8)
        )
    )
    assert expected == [data.runs[3].id]
    assert _ids(client, auth, query) == expected
    # an automation and a filter of another automation's runs: nothing
    assert _ids(client, auth, [("automation_id", data.alpha), ("concurrency_key", "k1")]) == []


def test_status_is_repeatable(client: TestClient, auth: dict[str, str], data: Data) -> None:
    wanted = ("failed", "exhausted", "timed-out", "pending")
    expected = data.ids(lambda r: r.status in wanted)
    assert len(expected) == 4
    assert _ids(client, auth, [("status", s) for s in wanted]) == expected
    assert _ids(client, auth, [("filter[status]", s) for s in wanted]) == expected
    every = [
        "pending",
        "running",
        "waiting",
        "completed",
        "completed-with-errors",
        "failed",
        "exhausted",
        "timed-out",
        "cancelled",
    ]
    assert _ids(client, auth, [("status", s) for s in every]) == data.ids()


@pytest.mark.parametrize(
    ("query", "loc"),
    [
        ([("status", "done")], ["query", "status", 0]),
        (
            [("filter[status]", "failed"), ("filter[status]", "nope")],
            ["query", "filter[status]", 1],
        ),
        ([("trigger_type", "cron")], ["query", "trigger_type"]),
        ([("filter[trigger_source_type]", "robot")], ["query", "filter[trigger_source_type]"]),
        ([("automation_id", "alpha")], ["query", "automation_id"]),
        ([("filter[contact_id]", "12")], ["query", "filter[contact_id]"]),
        ([("dry_run", "maybe")], ["query", "dry_run"]),
        ([("filter[colour]", "blue")], ["query", "filter[colour]"]),
        ([("status", "failed"), ("filter[status]", "pending")], ["query", "filter[status]"]),
        ([("tag", "a"), ("filter[tag]", "b")], ["query", "filter[tag]"]),
        ([("identity", "x" * 501)], ["query", "identity"]),
    ],
    ids=[
        "unknown-status",
        "unknown-status-bracket",
        "trigger-type",
        "source-type",
        "automation-id-not-an-id",
        "contact-id-not-an-id",
        "dry-run-not-bool",
        "unknown-filter",
        "spellings-differ",
        "spellings-differ-tag",
        "too-long",
    ],
)
def test_bad_filters_are_422(
    client: TestClient, auth: dict[str, str], query: Query, loc: list[Any]
) -> None:
    body = assert_problem(_list(client, auth, query), 422, "validation_error")
    assert loc in [e["loc"] for e in body["errors"]], body["errors"]


def test_same_value_in_both_spellings_is_fine(
    client: TestClient, auth: dict[str, str], data: Data
) -> None:
    query = [("tag", "blue"), ("filter[tag]", "blue"), ("status", "running")]
    query += [("filter[status]", "running")]
    assert _ids(client, auth, query) == [data.runs[1].id]


@pytest.mark.parametrize(
    "value",
    [
        "2026-03-01",
        "2026-03-01T12:00:00",
        "2026-03-01T12:00",
        "1772366400",
        "2026-03-01 12:00:00Z",
        "2026-03-01T12:00:00 01:00",
        "2026-02-30T12:00:00Z",
        "yesterday",
        "",
    ],
    ids=[
        "date-only",
        "naive",
        "no-seconds",
        "number",
        "space",
        "unencoded-plus",
        "no-such-day",
        "word",
        "empty",
    ],
)
@pytest.mark.parametrize("name", ["created_after", "filter[created_before]"])
def test_times_must_be_rfc3339_with_a_zone(
    client: TestClient, auth: dict[str, str], name: str, value: str
) -> None:
    body = assert_problem(_list(client, auth, [(name, value)]), 422, "validation_error")
    assert ["query", name] in [e["loc"] for e in body["errors"]]


@pytest.mark.parametrize(
    "value",
    [
        "2026-3-1",
        "2026-03-01T12:00:00",
        "2026-03-01T12:00",
        "2026-03-01 12:00:00Z",
        "2026-02-30",
        "..",
        "",
        "2026-03-02..2026-03-01",
        "2026-03-01T12:00:00Z..2026-03-01T12:00:00Z",
        "yesterday",
    ],
    ids=[
        "short-day",
        "naive",
        "no-seconds",
        "space",
        "no-such-day",
        "no-ends",
        "empty",
        "backwards",
        "empty-range",
        "word",
    ],
)
@pytest.mark.parametrize("name", ["created_at", "filter[created_at]"])
def test_a_bad_created_at_is_422(
    client: TestClient, auth: dict[str, str], name: str, value: str
) -> None:
    body = assert_problem(_list(client, auth, [(name, value)]), 422, "validation_error")
    assert ["query", name] in [e["loc"] for e in body["errors"]]
    if value == "2026-03-01 12:00:00Z":
        assert "%2B" in body["errors"][0]["msg"]


def test_created_at_narrows_created_after_and_before(
    client: TestClient, auth: dict[str, str], data: Data
) -> None:
    span = f"{_at(2)}..{_at(7)}"

    def between(low: float, high: float) -> list[str]:
        return data.ids(lambda r: _time(low) <= r.created_at < _time(high))

    assert _ids(client, auth, [("created_at", span), ("created_after", _at(4))]) == between(4, 7)
    assert _ids(client, auth, [("created_at", span), ("created_before", _at(3))]) == between(2, 3)
    assert _ids(client, auth, [("created_at", span), ("created_after", _at(0))]) == between(2, 7)
    # Both must hold, so bounds that do not meet leave nothing.
    assert _ids(client, auth, [("created_at", _at(1)), ("created_after", _at(2))]) == []
    path = f"/api/v1/automations/{data.alpha}/runs"
    alpha = data.ids(lambda r: r.automation == "alpha" and _time(2) <= r.created_at < _time(7))
    assert _ids(client, auth, [("filter[created_at]", span)], path=path) == alpha


def test_dry_run_records_are_listed_only_when_asked(
    client: TestClient, auth: dict[str, str], data: Data
) -> None:
    real = data.ids()
    assert len(real) == 8
    assert _ids(client, auth, []) == real
    assert _ids(client, auth, [("dry_run", "false")]) == real
    simulated = data.ids(dry_run=True)
    assert len(simulated) == 2
    assert _ids(client, auth, [("dry_run", "true")]) == simulated
    assert _ids(client, auth, [("filter[dry_run]", "1")]) == simulated


def test_page_shape(client: TestClient, auth: dict[str, str], data: Data) -> None:
    body = _list(client, auth, [("limit", "3")]).json()
    assert set(body) == {"items", "total", "total_exact", "limit", "offset", "next_cursor"}
    assert (body["total"], body["total_exact"], body["limit"], body["offset"]) == (8, True, 3, 0)
    assert body["next_cursor"]
    item = body["items"][0]
    assert item["id"] == data.ids()[0]
    assert item["automation_name"] == "beta"
    assert item["status"] == "completed-with-errors"
    assert item["created_at"] == _at(8)
    # lists carry no trigger event and no step data
    for absent in ("trigger_event", "steps", "result", "last_error"):
        assert absent not in item
    last = _list(client, auth, [("limit", "3"), ("offset", "6")]).json()
    assert (len(last["items"]), last["total"], last["next_cursor"]) == (2, 8, None)
    # the total counts every match, whichever page this is
    assert _list(client, auth, [("status", "completed")]).json()["total"] == 1


@pytest.mark.parametrize("path", ["/api/v1/runs", "/api/v1/automations/alpha/runs"])
def test_a_page_is_what_its_documented_model_writes(
    client: TestClient, auth: dict[str, str], data: Data, db: Database, path: str
) -> None:
    """Contract: run pages skip runtime validation, so check here that they need none.

    The served bytes are exactly what ``RunPage`` validates and writes back:
    every field of the model, its types and formats (RFC 3339 times with a
    ``Z``, statuses of the enum), nothing missing, nothing reformatted. The
    data set has runs in several statuses, with and without errors,
    identities, contacts, retries, concurrency and idempotency keys.
    """
    finished = data.runs[0].id
    set_run(
        db,
        finished,
        started_at=BASE + timedelta(seconds=1, microseconds=250),
        completed_at=BASE + timedelta(seconds=3),  # no fraction: written without one
        error={"step_key": "s0", "code": "boom", "message": "it broke", "details": [1, None]},
    )
    response = _list(client, auth, [("limit", "1000")], path=path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    page = RunPage.model_validate_json(response.content)
    assert page.items
    assert len(page.items) == page.total
    assert response.content == page.model_dump_json(by_alias=True).encode()
    assert set(response.json()["items"][0]) == set(RunSummary.model_fields)
    if path == "/api/v1/runs":
        item = next(i for i in response.json()["items"] if i["id"] == finished)
        assert (item["started_at"], item["completed_at"]) == (
            "2026-03-01T12:00:01.000250Z",
            "2026-03-01T12:00:03Z",
        )
        assert item["duration_seconds"] == 1.99975


@pytest.fixture
def many(db: Database, tenant: dict[str, Any]) -> list[str]:
    """25 runs, newest first; some share a creation time, so the id breaks the tie."""
    make_automation(db, tenant["id"], {"name": "many", "tags": ["t"], "steps": steps(1)})
    created = []
    for i in range(25):
        at = BASE + timedelta(seconds=i // 3)
        created.append((at, trigger(db, tenant["id"], "many", now=at)))
    for i, (_, run_id) in enumerate(created):
        if i % 2:
            set_run(db, run_id, status="failed")
    return [run_id for _, run_id in sorted(created, reverse=True)]


def _walk_cursor(client: TestClient, auth: dict[str, str], query: Query) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor = None
    while True:
        params = [*query, ("cursor", cursor)] if cursor else query
        body = _list(client, auth, params).json()
        pages.append([i["id"] for i in body["items"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 10


def _walk_offset(client: TestClient, auth: dict[str, str], query: Query) -> list[list[str]]:
    pages: list[list[str]] = []
    offset = 0
    while True:
        body = _list(client, auth, [*query, ("offset", str(offset))]).json()
        pages.append([i["id"] for i in body["items"]])
        offset += body["limit"]
        if offset >= body["total"]:
            return pages


@pytest.mark.parametrize(
    "query",
    [
        [],
        [("status", "failed"), ("status", "pending")],
        [("tag", "t"), ("status", "failed"), ("status", "pending")],
    ],
    ids=["all", "two-statuses", "tag-and-status"],
)
def test_offset_and_cursor_pages_walk_the_same_runs(
    client: TestClient, auth: dict[str, str], many: list[str], query: Query
) -> None:
    query = [*query, ("limit", "7")]
    by_cursor = _walk_cursor(client, auth, query)
    by_offset = _walk_offset(client, auth, query)
    assert by_cursor == by_offset
    assert [len(p) for p in by_cursor] == [7, 7, 7, 4]
    assert [i for page in by_cursor for i in page] == many


def test_a_cursor_page_is_stable_while_runs_are_added(
    db: Database, client: TestClient, auth: dict[str, str], tenant: dict[str, Any], many: list[str]
) -> None:
    first = _list(client, auth, [("limit", "10")]).json()
    trigger(db, tenant["id"], "many", now=BASE + timedelta(hours=1))
    second = _list(client, auth, [("limit", "10"), ("cursor", first["next_cursor"])]).json()
    assert [i["id"] for i in second["items"]] == many[10:20]
    assert second["total"] == 26


@pytest.mark.parametrize(
    ("query", "loc"),
    [
        ([("limit", "0")], ["query", "limit"]),
        ([("limit", "1001")], ["query", "limit"]),
        ([("limit", "ten")], ["query", "limit"]),
        ([("offset", "-1")], ["query", "offset"]),
        ([("offset", "7"), ("cursor", "abc")], ["query", "offset"]),
    ],
    ids=["limit-0", "limit-1001", "limit-word", "offset-negative", "offset-and-cursor"],
)
def test_paging_bounds(
    client: TestClient, auth: dict[str, str], query: Query, loc: list[Any]
) -> None:
    body = assert_problem(_list(client, auth, query), 422, "validation_error")
    assert loc in [e["loc"] for e in body["errors"]]


def test_limit_bounds_that_are_allowed(
    client: TestClient, auth: dict[str, str], data: Data
) -> None:
    assert len(_ids(client, auth, [("limit", "1")])) == 1
    assert len(_ids(client, auth, [("limit", "1000")])) == 8
    assert _list(client, auth, []).json()["limit"] == 100


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "abc",
        "!!!",
        _b64('{"k": 1}'),  # another list's cursor
        _b64('{"t": "2026-03-01T12:00:00", "i": "01934a5e-0000-7000-8000-000000000001"}'),
        _b64('{"t": "2026-03-01T12:00:00Z", "i": "x"}'),
        _b64('{"t": 5, "i": "01934a5e-0000-7000-8000-000000000001"}'),
        _b64("[1, 2]"),
    ],
    ids=["short", "not-base64", "other-list", "naive-time", "bad-id", "number-time", "list"],
)
def test_a_bad_cursor_is_422_invalid_cursor(
    client: TestClient, auth: dict[str, str], data: Data, cursor: str
) -> None:
    body = assert_problem(_list(client, auth, [("cursor", cursor)]), 422, "invalid_cursor")
    assert body["errors"][0]["loc"] == ["query", "cursor"]
    path = f"/api/v1/automations/{data.alpha}/runs"
    assert_problem(_list(client, auth, [("cursor", cursor)], path=path), 422, "invalid_cursor")


def test_automation_runs_by_id_or_name(
    db: Database, client: TestClient, auth: dict[str, str], data: Data
) -> None:
    expected = data.ids(lambda r: r.automation == "beta")
    assert _ids(client, auth, [], path=f"/api/v1/automations/{data.beta}/runs") == expected
    assert _ids(client, auth, [], path="/api/v1/automations/beta/runs") == expected
    failed = [("filter[status]", "failed")]
    assert _ids(client, auth, failed, path="/api/v1/automations/beta/runs") == [data.runs[2].id]
    body = _list(client, auth, [("limit", "1")], path="/api/v1/automations/alpha/runs").json()
    assert body["total"] == 5
    # the path names the automation: filtering on another one is not a filter here
    bad = _list(
        client, auth, [("filter[automation_name]", "x")], path="/api/v1/automations/beta/runs"
    )
    assert_problem(bad, 422, "validation_error")


@pytest.mark.parametrize("ref", ["nothing-here", "01934a5e-0000-7000-8000-000000000000"])
def test_runs_of_an_unknown_automation_are_404(
    client: TestClient, auth: dict[str, str], ref: str
) -> None:
    response = client.get(f"/api/v1/automations/{ref}/runs", headers=auth)
    assert_problem(response, 404, "automation_not_found")


def test_total_past_the_cap_is_a_lower_bound(
    client: TestClient,
    auth: dict[str, str],
    data: Data,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from conveyor.services import run_lists

    monkeypatch.setattr(run_lists, "TOTAL_CAP", 3)
    first = _list(client, auth, [("limit", "2")]).json()
    assert (first["total"], first["total_exact"]) == (3, False)
    middle = _list(client, auth, [("limit", "2"), ("offset", "4")]).json()
    assert (middle["total"], middle["total_exact"]) == (7, False)
    # the last page knows how many there are
    last = _list(client, auth, [("limit", "2"), ("offset", "6")]).json()
    assert (last["total"], last["total_exact"]) == (8, True)
    by_cursor = _list(client, auth, [("limit", "2"), ("cursor", first["next_cursor"])]).json()
    assert (by_cursor["total"], by_cursor["total_exact"]) == (3, False)
    few = _list(client, auth, [("status", "completed")]).json()
    assert (few["total"], few["total_exact"]) == (1, True)


def test_lists_need_runs_read(
    client: TestClient, new_key: Any, tenant: dict[str, Any], data: Data
) -> None:
    token = new_key(tenant["id"], scopes=["automations:read", "runs:write"])
    headers = {"Authorization": f"Bearer {token}"}
    for path in ("/api/v1/runs", f"/api/v1/automations/{data.alpha}/runs"):
        assert_problem(client.get(path, headers=headers), 403, "forbidden")
        assert_problem(client.get(path), 401, "unauthenticated")
    reader = new_key(tenant["id"], scopes=["runs:read"])
    response = client.get("/api/v1/runs", headers={"X-API-Key": reader})
    assert response.status_code == 200


def test_another_tenants_runs_are_not_listed(
    db: Database,
    client: TestClient,
    auth: dict[str, str],
    new_tenant: Any,
    new_key: Any,
    data: Data,
) -> None:
    other = new_tenant("globex")
    make_automation(db, other["id"], {"name": "alpha", "tags": ["blue"], "steps": steps(1)})
    theirs = trigger(db, other["id"], "alpha", now=BASE + timedelta(hours=1))
    assert theirs not in _ids(client, auth, [("limit", "1000")])
    assert _ids(client, auth, [("tag", "blue")]) == data.ids(lambda r: "blue" in r.tags)
    assert _ids(client, auth, [], path="/api/v1/automations/alpha/runs") == data.ids(
        lambda r: r.automation == "alpha"
    )
    their_auth = {"Authorization": f"Bearer {new_key(other['id'])}"}
    assert _ids(client, their_auth, []) == [theirs]
    response = client.get(f"/api/v1/automations/{data.alpha}/runs", headers=their_auth)
    assert_problem(response, 404, "automation_not_found")
