"""The run list SQL: keyset walks for bulk operations, capped counts, odd filter values."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from pydantic_core import to_json
from sqlalchemy import func, insert, select

from conveyor.domain.ids import new_id
from conveyor.domain.run_filters import PayloadMatch, RunFilters
from conveyor.domain.status import RunStatus
from conveyor.engine.worker import Worker
from conveyor.services.runs import run_summaries, run_summary
from conveyor.settings import Settings
from conveyor.store import run_queries
from conveyor.store import runs as run_store
from conveyor.store.db import Database
from conveyor.store.messaging_tables import contacts
from conveyor.store.tables import runs
from conveyor.testing.factories import make_automation, make_tenant, request_dry_run, trigger
from tests.api.run_data import BASE, make_data, set_run, steps


@pytest.fixture
def tenant(db: Database) -> str:
    """A tenant with 11 runs of ``a`` (tag ``t``); every third is failed; times tie in threes."""
    tenant_id = make_tenant(db, "acme")
    make_automation(db, tenant_id, {"name": "a", "tags": ["t"], "steps": steps(1)})
    for i in range(11):
        run_id = trigger(db, tenant_id, "a", now=BASE + timedelta(seconds=i // 3))
        if i % 3 == 0:
            set_run(db, run_id, status="failed")
    return tenant_id


def _all(db: Database, tenant: str, filters: RunFilters) -> list[str]:
    with db.read() as conn:
        rows, _, _ = run_queries.list_runs(conn, tenant, filters, limit=1000, offset=0, cursor=None)
    return [r.id for r in rows]


@pytest.mark.parametrize(
    "filters",
    [
        RunFilters(),
        RunFilters(status=(RunStatus.FAILED,)),
        RunFilters(status=(RunStatus.FAILED, RunStatus.PENDING)),
        RunFilters(tag="t", status=(RunStatus.PENDING, RunStatus.FAILED)),
    ],
    ids=["all", "one-status", "two-statuses", "tag-two-statuses"],
)
def test_iter_run_ids_walks_every_match_newest_first(
    db: Database, tenant: str, filters: RunFilters
) -> None:
    expected = _all(db, tenant, filters)
    assert expected
    walked: list[str] = []
    after = None
    with db.read() as conn:
        while True:
            batch = run_queries.iter_run_ids(conn, tenant, filters, after=after, limit=4)
            if not batch:
                break
            walked += [run_id for run_id, _ in batch]
            after = (batch[-1][1], batch[-1][0])
    assert walked == expected


@pytest.mark.parametrize(
    "filters",
    [
        RunFilters(),
        RunFilters(dry_run=True),
        RunFilters(status=(RunStatus.FAILED, RunStatus.COMPLETED, RunStatus.TIMED_OUT)),
        RunFilters(tag="green"),
        RunFilters(tag="green", status=(RunStatus.COMPLETED, RunStatus.EXHAUSTED)),
    ],
    ids=["all", "dry-runs", "three-statuses", "tag", "tag-two-statuses"],
)
def test_a_page_makes_the_summaries_whole_runs_make(db: Database, filters: RunFilters) -> None:
    """The list reads fewer columns, in its own way (naive UTC times, ids as text):
    its summaries are still exactly those of the whole rows, field for field."""
    tenant_id = make_tenant(db, "acme")
    data = make_data(db, tenant_id)
    set_run(
        db,
        data.runs[2].id,
        started_at=BASE + timedelta(seconds=1, microseconds=250),
        completed_at=BASE + timedelta(seconds=3),
        error={"step_key": "s0", "code": "boom", "message": "it broke", "details": [1.5, None]},
        root_run_id=data.runs[0].id,
        parent_run_id=data.runs[1].id,
        idempotency_key="once",
    )
    set_run(db, data.runs[3].id, identity={"type": "email", "value": "ada@x.org"})
    set_run(db, data.runs[6].id, started_at=BASE + timedelta(microseconds=1))
    with db.read() as conn:
        rows, _, _ = run_queries.list_runs(
            conn, tenant_id, filters, limit=1000, offset=0, cursor=None
        )
        assert rows
        whole = [run_store.get_run(conn, row.id, tenant_id) for row in rows]
    assert all(row._fields == run_queries.SUMMARY_COLUMNS for row in rows)
    summaries = run_summaries(rows)
    assert summaries == [run_summary(run) for run in whole if run is not None]
    # as served: the same keys in the same order, the same types
    assert to_json(summaries) == to_json([run_summary(run) for run in whole if run is not None])


def test_the_count_stops_at_the_cap(db: Database, tenant: str) -> None:
    with db.read() as conn:
        _, total, _ = run_queries.list_runs(
            conn, tenant, RunFilters(), limit=2, offset=0, cursor=None, count_cap=5
        )
        assert total == 6  # "more than 5"
        _, total, _ = run_queries.list_runs(
            conn,
            tenant,
            RunFilters(status=("failed", "pending")),
            limit=2,
            offset=0,
            cursor=None,
            count_cap=5,
        )
        assert total == 6
        _, total, _ = run_queries.list_runs(
            conn,
            tenant,
            RunFilters(status=("failed",)),
            limit=2,
            offset=0,
            cursor=None,
            count_cap=5,
        )
        assert total == 4


def test_ids_that_are_not_ids_match_nothing(db: Database, tenant: str) -> None:
    for field in ("automation_id", "contact_id", "retry_of"):
        assert _all(db, tenant, RunFilters(**{field: "not-an-id"})) == []
    with db.read() as conn:
        assert (
            run_queries.iter_run_ids(conn, tenant, RunFilters(), after=(BASE, "not-an-id"), limit=5)
            == []
        )


def test_the_position_is_the_last_row_of_a_page(db: Database, tenant: str) -> None:
    with db.read() as conn:
        rows, _, position = run_queries.list_runs(
            conn, tenant, RunFilters(), limit=4, offset=0, cursor=None
        )
        assert position == (rows[-1].created_at.replace(tzinfo=UTC), rows[-1].id)
        rows, _, position = run_queries.list_runs(
            conn, tenant, RunFilters(), limit=4, offset=8, cursor=None
        )
        assert (len(rows), position) == (3, None)


@pytest.mark.parametrize(
    "filters",
    [
        RunFilters(),
        RunFilters(status=(RunStatus.FAILED, RunStatus.PENDING)),
        RunFilters(tag="t"),
        RunFilters(tag="t", status=(RunStatus.PENDING, RunStatus.FAILED)),
    ],
    ids=["all", "two-statuses", "tag", "tag-two-statuses"],
)
def test_deep_offsets_give_the_same_pages(
    db: Database, tenant: str, filters: RunFilters, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = _all(db, tenant, filters)

    def pages() -> list[str]:
        ids: list[str] = []
        with db.read() as conn:
            for offset in range(0, len(expected), 3):
                rows, _, _ = run_queries.list_runs(
                    conn, tenant, filters, limit=3, offset=offset, cursor=None
                )
                ids += [r.id for r in rows]
        return ids

    assert pages() == expected
    monkeypatch.setattr(run_queries, "_DEFER_OFFSET", 2)  # ids first from offset 2 on
    assert pages() == expected


def _total(db: Database, tenant: str, filters: RunFilters) -> int:
    with db.read() as conn:
        _, total, _ = run_queries.list_runs(conn, tenant, filters, limit=2, offset=0, cursor=None)
    return total


def _dry_run_of_a(db: Database, tenant: str) -> None:
    """A two-day dry run of ``a`` for one contact, run to the end."""
    now = datetime.now(UTC)
    contact = new_id()
    with db.transaction() as conn:
        conn.execute(
            insert(contacts).values(
                id=contact,
                tenant_id=tenant,
                email="dry@example.com",
                push_targets=[],
                attributes={},
                created_at=now,
                updated_at=now,
            )
        )
    request_dry_run(db, tenant, "a", BASE.date(), BASE.date() + timedelta(days=1), [contact])
    url = db.url.render_as_string(hide_password=False)
    asyncio.run(Worker(db, Settings(database_url=url)).run_until_idle())


def test_a_tag_alone_is_counted_from_the_tags_and_agrees_with_the_list(
    db: Database, tenant: str
) -> None:
    # Another tenant's runs with the same tag, and a simulated run of the tagged
    # automation: neither is counted (simulated runs get no tags).
    other = make_tenant(db, "other")
    make_automation(db, other, {"name": "a", "tags": ["t"], "steps": steps(1)})
    trigger(db, other, "a")
    _dry_run_of_a(db, tenant)
    with db.read() as conn:
        simulated = conn.execute(select(func.count()).where(runs.c.dry_run.is_(True))).scalar()
    assert simulated == 2
    later = BASE + timedelta(seconds=2)
    cases = [
        RunFilters(tag="t"),
        RunFilters(tag="t", created_after=later),
        RunFilters(tag="t", created_before=later),
        RunFilters(tag="t", status=(RunStatus.FAILED,)),
        RunFilters(tag="t", automation_name="a"),
        RunFilters(tag="nope"),
    ]
    for filters in cases:
        assert _total(db, tenant, filters) == len(_all(db, tenant, filters)), filters
    assert _total(db, tenant, RunFilters(tag="t")) == 11


def test_every_run_filter_is_known_to_the_tag_count_shortcut() -> None:
    # A new filter on runs columns must stop a tag from being counted alone.
    handled = {"status", "tag", "created_after", "created_before", "dry_run"}
    assert set(RunFilters.model_fields) == handled | set(run_queries._RUN_FILTERS)
    values: dict[str, object] = {"payload": PayloadMatch(path="order.id", value="x")}
    for name in run_queries._RUN_FILTERS:
        assert run_queries._filters_runs(RunFilters(tag="t", **{name: values.get(name, "x")}))
    assert not run_queries._filters_runs(RunFilters(tag="t", created_after=BASE))
    assert run_queries._filters_runs(RunFilters(tag="t", dry_run=True))
