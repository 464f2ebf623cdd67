"""The run list SQL: keyset walks for bulk operations, capped counts, odd filter values."""

from __future__ import annotations

from datetime import timedelta

import pytest

from conveyor.domain.run_filters import RunFilters
from conveyor.domain.status import RunStatus
from conveyor.store import run_queries
from conveyor.store.db import Database
from conveyor.testing.factories import make_automation, make_tenant, trigger
from tests.api.run_data import BASE, set_run, steps


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
    return [str(r["id"]) for r in rows]


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
        assert position == (rows[-1]["created_at"], str(rows[-1]["id"]))
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
                ids += [str(r["id"]) for r in rows]
        return ids

    assert pages() == expected
    monkeypatch.setattr(run_queries, "_DEFER_OFFSET", 2)  # ids first from offset 2 on
    assert pages() == expected
