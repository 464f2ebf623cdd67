"""``/api/v1/dry-run-results``: list with every filter, paging, read one, delete one, scopes.

The simulator is built elsewhere, so these tests write what it would write
directly with SQL (see ``_Results.add``): a ``dry_runs`` row, result rows, and
for each result a simulated run (a run triggered by the factory, then marked
``dry_run=true`` with SQL) that the result names by ``result_id``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from conveyor.domain.ids import new_id
from conveyor.store.db import Database
from conveyor.store.dryrun_tables import dry_run_results, dry_runs
from conveyor.store.tables import runs, step_runs
from conveyor.testing.factories import make_automation, trigger
from tests.api.conftest import NewKey, NewTenant
from tests.api.helpers import TestClient, assert_problem
from tests.api.run_data import set_run, steps

URL = "/api/v1/dry-run-results"
BASE = datetime(2026, 6, 10, 9, 0, tzinfo=UTC)
P1 = "01934a5e-0000-7000-8000-00000000c001"
P2 = "01934a5e-0000-7000-8000-00000000c002"


class _Results:
    """Writes dry-run results for one tenant, as the simulator would, with SQL."""

    def __init__(self, db: Database, tenant_id: str) -> None:
        self.db = db
        self.tenant_id = tenant_id
        self.alpha = make_automation(db, tenant_id, {"name": "alpha", "steps": steps()}, now=BASE)
        self.beta = make_automation(db, tenant_id, {"name": "beta", "steps": steps()}, now=BASE)
        self.dry_run_ids: dict[str, str] = {}

    def _dry_run(self, automation_id: str) -> str:
        if automation_id not in self.dry_run_ids:
            dry_run_id = new_id()
            with self.db.transaction() as conn:
                conn.execute(
                    insert(dry_runs).values(
                        id=dry_run_id,
                        tenant_id=self.tenant_id,
                        automation_id=automation_id,
                        version_id=new_id(),
                        status="completed",
                        start_date="2026-06-01",
                        end_date="2026-06-07",
                        timezone="UTC",
                        arguments={},
                        requested_by="ops",
                        days_total=7,
                        days_done=7,
                        contacts_total=0,
                        contacts_done=0,
                        counts={},
                        created_at=BASE,
                        updated_at=BASE,
                    )
                )
            self.dry_run_ids[automation_id] = dry_run_id
        return self.dry_run_ids[automation_id]

    def simulated_run(self, name: str = "alpha") -> str:
        """A run record marked as a dry run (with the step rows the trigger wrote)."""
        run_id = trigger(self.db, self.tenant_id, name, now=BASE)
        set_run(self.db, run_id, dry_run=True)
        return run_id

    def add(
        self,
        *,
        automation: str = "alpha",
        run_at: str = "2026-06-01",
        profile_id: str | None = P1,
        status: str = "success",
        result_type: str = "run",
        result_id: str | None = None,
        requested_by: str | None = "ops",
        created_at: datetime = BASE,
        updated_at: datetime | None = None,
    ) -> dict[str, Any]:
        """One result (with its own simulated run unless ``result_id`` is given)."""
        automation_id = self.alpha if automation == "alpha" else self.beta
        row = {
            "id": new_id(),
            "tenant_id": self.tenant_id,
            "dry_run_id": self._dry_run(automation_id),
            "automation_id": automation_id,
            "run_at": run_at,
            "profile_id": profile_id,
            "result_type": result_type,
            "result_id": result_id if result_id is not None else self.simulated_run(automation),
            "status": status,
            "result": {"steps": [{"key": "s0", "would": "set"}]},
            "arguments": {"start_date": "2026-06-01"},
            "requested_by": requested_by,
            "real_run_id": None,
            "agrees": None,
            "created_at": created_at,
            "updated_at": updated_at or created_at,
        }
        with self.db.transaction() as conn:
            conn.execute(insert(dry_run_results).values(**row))
        return row


@pytest.fixture
def results(db: Database, tenant: dict[str, Any]) -> _Results:
    return _Results(db, tenant["id"])


@pytest.fixture
def data(results: _Results) -> list[dict[str, Any]]:
    """Eight results, one a minute, varied on every filtered column."""
    minute = timedelta(minutes=1)
    specs: list[dict[str, Any]] = [
        {},
        {"run_at": "2026-06-02", "status": "failed"},
        {"automation": "beta", "run_at": "2026-06-03", "profile_id": P2},
        {"run_at": "2026-06-05", "status": "skipped", "requested_by": "alice"},
        {"automation": "beta", "run_at": "2026-06-07", "status": "failed", "profile_id": None},
        {"run_at": "2026-06-07", "result_type": "other", "requested_by": None},
        {"run_at": "2026-06-08", "profile_id": P2, "updated_at": BASE + timedelta(days=2)},
        {"automation": "beta", "run_at": "2026-06-01", "status": "skipped"},
    ]
    made = []
    for i, spec in enumerate(specs):
        # Two results a day apart at the end, for the day filters on created_at.
        created = BASE + i * minute + (timedelta(days=1) if i >= 6 else timedelta())
        made.append(results.add(created_at=created, **spec))
    return made


def _ids(rows: list[dict[str, Any]]) -> list[str]:
    """Ids newest first, the list order."""
    ordered = sorted(rows, key=lambda r: (r["created_at"], r["id"]), reverse=True)
    return [r["id"] for r in ordered]


def _list(client: TestClient, auth: dict[str, str], **params: Any) -> dict[str, Any]:
    response = client.get(URL, params=params, headers=auth)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _count(db: Database, table: Any, *where: Any) -> int:
    with db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())


# (filter, value, predicate over the rows written)
_FILTERS: list[tuple[str, Any, Any]] = [
    ("dry_run_id", "beta-dry-run", lambda r, d: r["dry_run_id"] == d.beta_dry_run),
    ("automation_id", "beta", lambda r, d: r["automation_id"] == d.beta),
    ("run_at", "2026-06-07", lambda r, d: r["run_at"] == "2026-06-07"),
    ("profile_id", P2, lambda r, d: r["profile_id"] == P2),
    ("status", "failed", lambda r, d: r["status"] == "failed"),
    ("result_type", "other", lambda r, d: r["result_type"] == "other"),
    ("result_id", "first", lambda r, d: r["result_id"] == d.first),
    ("requested_by", "alice", lambda r, d: r["requested_by"] == "alice"),
    ("created_at", "2026-06-11", lambda r, d: r["created_at"].date().isoformat() == "2026-06-11"),
    ("updated_at", "2026-06-12", lambda r, d: r["updated_at"].date().isoformat() == "2026-06-12"),
]


@pytest.mark.parametrize("spelling", ["plain", "bracket"])
@pytest.mark.parametrize(("name", "value", "pred"), _FILTERS, ids=[f[0] for f in _FILTERS])
def test_each_filter_alone(
    client: TestClient,
    auth: dict[str, str],
    results: _Results,
    data: list[dict[str, Any]],
    name: str,
    value: Any,
    pred: Any,
    spelling: str,
) -> None:
    class Known:
        beta = results.beta
        beta_dry_run = results.dry_run_ids[results.beta]
        first = data[0]["result_id"]

    if value == "beta":
        value = results.beta
    elif value == "beta-dry-run":
        value = Known.beta_dry_run
    elif value == "first":
        value = Known.first
    expected = _ids([r for r in data if pred(r, Known)])
    assert expected, "each filter must match something"
    assert len(expected) < len(data), "and leave something out"
    key = name if spelling == "plain" else f"filter[{name}]"
    body = _list(client, auth, **{key: value})
    assert [item["id"] for item in body["items"]] == expected
    assert body["total"] == len(expected)


@pytest.mark.parametrize(
    ("value", "days"),
    [
        ("2026-06-02..2026-06-05", {"2026-06-02", "2026-06-03", "2026-06-05"}),
        ("2026-06-07..", {"2026-06-07", "2026-06-08"}),
        ("..2026-06-01", {"2026-06-01"}),
        ("2026-06-04..2026-06-04", set()),
    ],
)
def test_run_at_ranges_include_both_ends(
    client: TestClient, auth: dict[str, str], data: list[dict[str, Any]], value: str, days: set[str]
) -> None:
    expected = _ids([r for r in data if r["run_at"] in days])
    for key in ("run_at", "filter[run_at]"):
        body = _list(client, auth, **{key: value})
        assert [item["id"] for item in body["items"]] == expected


def test_created_at_ranges_of_days_and_times(
    client: TestClient, auth: dict[str, str], data: list[dict[str, Any]]
) -> None:
    def ids(value: str) -> list[str]:
        return [item["id"] for item in _list(client, auth, created_at=value)["items"]]

    first_day = _ids(data[:6])
    assert ids("2026-06-10") == first_day
    assert ids("2026-06-10..2026-06-11") == _ids(data)
    assert ids("2026-06-11..") == _ids(data[6:])
    # An end time is excluded, a start time included.
    assert ids("2026-06-10T09:01:00Z..2026-06-10T09:03:00Z") == _ids(data[1:3])
    assert ids("2026-06-10T11:01:00+02:00..2026-06-10") == _ids(data[1:6])
    assert ids("..2026-06-10T09:02:00Z") == _ids(data[:2])


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"run_at": "2026-6-1"}, "run_at"),
        ({"run_at": "2026-06-07..2026-06-01"}, "run_at"),
        ({"run_at": "2026-06-01T00:00:00Z"}, "run_at"),
        ({"filter[run_at]": ".."}, "filter[run_at]"),
        ({"created_at": "2026-06-01T00:00:00"}, "created_at"),
        ({"created_at": "2026-06-01T00:00:00..2026-06-02"}, "created_at"),
        ({"filter[updated_at]": "2026-06-01T00:00Z"}, "filter[updated_at]"),
        ({"dry_run_id": "nope"}, "dry_run_id"),
        ({"filter[dry_run_id]": "nope"}, "filter[dry_run_id]"),
        ({"updated_at": "2026-06-02..2026-06-01"}, "updated_at"),
        ({"status": "done"}, "status"),
        ({"filter[automation_id]": "alpha"}, "filter[automation_id]"),
        ({"filter[nope]": "x"}, "filter[nope]"),
        ({"status": "failed", "filter[status]": "success"}, "filter[status]"),
    ],
)
def test_bad_filters_are_422(
    client: TestClient, auth: dict[str, str], params: dict[str, str], field: str
) -> None:
    body = assert_problem(client.get(URL, params=params, headers=auth), 422, "validation_error")
    assert any(field in e["loc"] for e in body["errors"]), body


def test_a_time_alone_is_the_span_of_its_precision(
    client: TestClient, auth: dict[str, str], results: _Results
) -> None:
    at = datetime(2026, 7, 1, 8, 30, 15, 123456, tzinfo=UTC)
    micro = timedelta(microseconds=1)
    rows = [
        results.add(created_at=at, updated_at=at + timedelta(hours=1)),
        results.add(created_at=at + micro),  # the same millisecond
        results.add(created_at=at.replace(microsecond=900_000)),  # the same second
        results.add(created_at=at + timedelta(seconds=1)),  # the next second
    ]

    def ids(**params: str) -> list[str]:
        return [item["id"] for item in _list(client, auth, **params)["items"]]

    # An item's own `created_at`, pasted back, finds it.
    (first,) = _list(client, auth, result_id=rows[0]["result_id"])["items"]
    assert first["created_at"] == "2026-07-01T08:30:15.123456Z"
    assert ids(created_at=first["created_at"]) == [rows[0]["id"]]
    assert ids(created_at="2026-07-01T08:30:15.123Z") == _ids(rows[:2])
    assert ids(created_at="2026-07-01T08:30:15Z") == _ids(rows[:3])
    assert ids(**{"filter[created_at]": "2026-07-01T10:30:15+02:00"}) == _ids(rows[:3])
    assert ids(created_at="2026-07-01T08:30:16Z") == _ids(rows[3:])
    assert ids(created_at="2026-07-01T08:30:16.000Z") == []
    assert ids(created_at="2026-07-01T08:30:15.5Z") == []
    assert ids(created_at="2026-07-01T08:30:15.1234561Z") == [rows[0]["id"]]  # past microseconds
    assert ids(updated_at="2026-07-01T09:30:15.123456Z") == [rows[0]["id"]]
    assert ids(created_at="2026-07-01") == _ids(rows)
    # As a range's start a time is an instant; as its end, where the range stops.
    assert ids(created_at="2026-07-01T08:30:15.123457Z..2026-07-01T08:30:16Z") == _ids(rows[1:3])


def test_filters_combine(
    client: TestClient, auth: dict[str, str], results: _Results, data: list[dict[str, Any]]
) -> None:
    params = {"automation_id": results.alpha, "filter[run_at]": "2026-06-01..2026-06-05"}
    expected = _ids(
        [r for r in data if r["automation_id"] == results.alpha and r["run_at"] <= "2026-06-05"]
    )
    assert [item["id"] for item in _list(client, auth, **params)["items"]] == expected


def test_offset_and_cursor_walk_the_same_rows(
    client: TestClient, auth: dict[str, str], data: list[dict[str, Any]]
) -> None:
    everything = _list(client, auth)
    assert [item["id"] for item in everything["items"]] == _ids(data)
    assert (everything["total"], everything["limit"], everything["next_cursor"]) == (8, 100, None)

    by_offset = []
    for offset in range(0, 8, 3):
        page = _list(client, auth, limit=3, offset=offset)
        assert (page["total"], page["offset"]) == (8, offset)
        by_offset += [item["id"] for item in page["items"]]

    by_cursor: list[str] = []
    params: dict[str, Any] = {"limit": 3}
    while True:
        page = _list(client, auth, **params)
        assert page["total"] == 8
        by_cursor += [item["id"] for item in page["items"]]
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert by_offset == by_cursor == _ids(data)


def test_paging_limits_and_bad_cursor(client: TestClient, auth: dict[str, str]) -> None:
    for params in ({"limit": 0}, {"limit": 1001}, {"cursor": "x", "offset": 1}):
        assert_problem(client.get(URL, params=params, headers=auth), 422, "validation_error")
    assert_problem(client.get(URL, params={"cursor": "nope"}, headers=auth), 422, "invalid_cursor")


def test_get_one(
    client: TestClient, auth: dict[str, str], results: _Results, data: list[dict[str, Any]]
) -> None:
    row = data[1]
    response = client.get(f"{URL}/{row['id']}", headers=auth)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "id": row["id"],
        "dry_run_id": row["dry_run_id"],
        "automation_id": results.alpha,
        "run_at": "2026-06-02",
        "profile_id": P1,
        "result_type": "run",
        "result_id": row["result_id"],
        "status": "failed",
        "result": row["result"],
        "arguments": row["arguments"],
        "requested_by": "ops",
        "real_run_id": None,
        "agrees": None,
        "created_at": "2026-06-10T09:01:00Z",
        "updated_at": "2026-06-10T09:01:00Z",
    }
    # The list shows the same item.
    listed = _list(client, auth, result_id=row["result_id"])["items"]
    assert listed == [response.json()]


@pytest.mark.parametrize("ref", ["01934a5e-0000-7000-8000-0000000000ff", "not-an-id"])
def test_unknown_result_is_404(client: TestClient, auth: dict[str, str], ref: str) -> None:
    assert_problem(client.get(f"{URL}/{ref}", headers=auth), 404, "dry_run_result_not_found")
    assert_problem(client.delete(f"{URL}/{ref}", headers=auth), 404, "dry_run_result_not_found")


def test_delete_removes_the_result_and_its_simulated_run(
    db: Database, client: TestClient, auth: dict[str, str], data: list[dict[str, Any]]
) -> None:
    doomed, kept = data[0], data[1]
    run_id = doomed["result_id"]
    assert _count(db, step_runs, step_runs.c.run_id == run_id) > 0

    response = client.delete(f"{URL}/{doomed['id']}", headers=auth)
    assert response.status_code == 204, response.text
    assert response.content == b""

    assert_problem(
        client.get(f"{URL}/{doomed['id']}", headers=auth), 404, "dry_run_result_not_found"
    )
    assert _count(db, runs, runs.c.id == run_id) == 0
    assert _count(db, step_runs, step_runs.c.run_id == run_id) == 0
    # Only that one: the others and their runs stay.
    assert client.get(f"{URL}/{kept['id']}", headers=auth).status_code == 200
    assert _count(db, runs, runs.c.id == kept["result_id"]) == 1
    assert _list(client, auth)["total"] == len(data) - 1
    # Deleting again finds nothing.
    assert_problem(
        client.delete(f"{URL}/{doomed['id']}", headers=auth), 404, "dry_run_result_not_found"
    )


def test_delete_never_touches_a_real_run(
    db: Database, client: TestClient, auth: dict[str, str], results: _Results
) -> None:
    real = trigger(db, results.tenant_id, "alpha", now=BASE)
    wrong = results.add(result_id=real)  # a result that (wrongly) names a real run
    assert client.delete(f"{URL}/{wrong['id']}", headers=auth).status_code == 204
    assert _count(db, dry_run_results, dry_run_results.c.id == wrong["id"]) == 0
    assert _count(db, runs, runs.c.id == real, runs.c.dry_run.is_(False)) == 1
    assert _count(db, step_runs, step_runs.c.run_id == real) > 0


def test_delete_leaves_a_run_of_another_result_type(
    db: Database, client: TestClient, auth: dict[str, str], results: _Results
) -> None:
    simulated = results.simulated_run()
    other = results.add(result_type="other", result_id=simulated)
    assert client.delete(f"{URL}/{other['id']}", headers=auth).status_code == 204
    assert _count(db, runs, runs.c.id == simulated) == 1


def test_there_is_no_bulk_delete(client: TestClient, auth: dict[str, str]) -> None:
    response = client.delete(URL, headers=auth)
    assert response.status_code == 405


def test_read_scope_cannot_delete_and_delete_scope_cannot_read(
    db: Database,
    client: TestClient,
    tenant: dict[str, Any],
    new_key: NewKey,
    data: list[dict[str, Any]],
) -> None:
    reader = {"Authorization": f"Bearer {new_key(tenant['id'], scopes=['dry-runs:read'])}"}
    deleter = {"Authorization": f"Bearer {new_key(tenant['id'], scopes=['dry-runs:delete'])}"}
    target = f"{URL}/{data[0]['id']}"

    assert client.get(URL, headers=reader).status_code == 200
    assert client.get(target, headers=reader).status_code == 200
    body = assert_problem(client.delete(target, headers=reader), 403, "forbidden")
    assert "dry-runs:delete" in body["detail"]

    for path in (URL, target):
        body = assert_problem(client.get(path, headers=deleter), 403, "forbidden")
        assert "dry-runs:read" in body["detail"]
    assert _count(db, dry_run_results) == len(data)

    assert client.delete(target, headers=deleter).status_code == 204


def test_another_tenants_results_are_invisible(
    db: Database,
    client: TestClient,
    auth: dict[str, str],
    new_tenant: NewTenant,
    new_key: NewKey,
    data: list[dict[str, Any]],
) -> None:
    other = new_tenant("globex")
    theirs = _Results(db, other["id"]).add()
    globex = {"Authorization": f"Bearer {new_key(other['id'])}"}

    # Each tenant lists only its own, whatever the filter.
    assert [i["id"] for i in _list(client, globex)["items"]] == [theirs["id"]]
    assert _list(client, auth, result_id=theirs["result_id"])["items"] == []
    assert theirs["id"] not in [i["id"] for i in _list(client, auth, limit=1000)["items"]]

    # Acme (with every scope) can neither read nor delete globex's result...
    path = f"{URL}/{theirs['id']}"
    assert_problem(client.get(path, headers=auth), 404, "dry_run_result_not_found")
    assert_problem(client.delete(path, headers=auth), 404, "dry_run_result_not_found")
    assert _count(db, runs, runs.c.id == theirs["result_id"]) == 1
    # ...and globex cannot touch acme's.
    mine = f"{URL}/{data[0]['id']}"
    assert_problem(client.get(mine, headers=globex), 404, "dry_run_result_not_found")
    assert_problem(client.delete(mine, headers=globex), 404, "dry_run_result_not_found")
    assert client.get(path, headers=globex).status_code == 200
