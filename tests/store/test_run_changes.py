"""The change feed behind ``/runs/stream`` and the history poll behind ``/runs/{id}/events``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from conveyor.domain.run_filters import PayloadMatch, RunFilters
from conveyor.domain.status import RunStatus
from conveyor.services.run_history import ChangeFeed, Position, poll_history
from conveyor.store.db import Database
from conveyor.store.runs import append_events
from conveyor.store.tables import runs
from conveyor.testing.factories import make_automation, make_tenant, trigger

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
STEPS: list[dict[str, Any]] = [{"key": "s", "type": "set", "vars": {"x": 1}}]


@pytest.fixture
def tenant(db: Database) -> str:
    """A tenant with automations ``a`` and ``b``."""
    tenant_id = make_tenant(db, "acme", now=T0)
    for name in ("a", "b"):
        make_automation(db, tenant_id, {"name": name, "steps": STEPS}, now=T0)
    return tenant_id


def _touch(db: Database, run_id: str, at: datetime, status: RunStatus | None = None) -> None:
    values: dict[str, Any] = {"updated_at": at}
    if status is not None:
        values["status"] = status
    with db.transaction() as conn:
        conn.execute(update(runs).where(runs.c.id == run_id).values(**values))


def _poll(db: Database, feed: ChangeFeed) -> list[tuple[str, str]]:
    with db.read() as conn:
        return [(s["id"], s["status"]) for _, s in feed.poll(conn)]


def test_a_new_feed_sends_only_later_changes(db: Database, tenant: str) -> None:
    old = trigger(db, tenant, "a", now=T0)
    feed = ChangeFeed(tenant, RunFilters())
    assert _poll(db, feed) == []
    new = trigger(db, tenant, "a", now=T0 + timedelta(seconds=1))
    _touch(db, old, T0 + timedelta(seconds=2), RunStatus.RUNNING)
    assert _poll(db, feed) == [(new, "pending"), (old, "running")]
    assert _poll(db, feed) == [], "nothing twice"
    _touch(db, new, T0 + timedelta(seconds=3), RunStatus.COMPLETED)
    assert _poll(db, feed) == [(new, "completed")]


def test_a_change_stamped_earlier_but_committed_later_is_not_lost(
    db: Database, tenant: str
) -> None:
    first = trigger(db, tenant, "a", now=T0)
    feed = ChangeFeed(tenant, RunFilters(), lag=timedelta(seconds=2))
    _poll(db, feed)
    late = trigger(db, tenant, "a", now=T0 - timedelta(seconds=5))
    _touch(db, first, T0 + timedelta(seconds=10), RunStatus.RUNNING)
    assert _poll(db, feed) == [(first, "running")]
    # A writer stamped this change a second before the one already sent, and
    # committed after it: the re-read window catches it.
    _touch(db, late, T0 + timedelta(seconds=9), RunStatus.RUNNING)
    assert _poll(db, feed) == [(late, "running")]
    assert _poll(db, feed) == []


def test_event_ids_only_move_forward(db: Database, tenant: str) -> None:
    a, b = trigger(db, tenant, "a", now=T0), trigger(db, tenant, "a", now=T0)
    feed = ChangeFeed(tenant, RunFilters())
    _poll(db, feed)
    _touch(db, a, T0 + timedelta(seconds=10))
    with db.read() as conn:
        (first_id, _), *_ = feed.poll(conn)
    _touch(db, b, T0 + timedelta(seconds=9))
    with db.read() as conn:
        (second_id, summary), *_ = feed.poll(conn)
    assert summary["id"] == b
    assert Position.decode(second_id) >= Position.decode(first_id)


def test_resume_sends_the_changes_after_the_position(db: Database, tenant: str) -> None:
    a, b = trigger(db, tenant, "a", now=T0), trigger(db, tenant, "a", now=T0)
    _touch(db, a, T0 + timedelta(seconds=1), RunStatus.RUNNING)
    _touch(db, b, T0 + timedelta(seconds=2), RunStatus.RUNNING)
    at_a = Position(T0 + timedelta(seconds=1), a)
    feed = ChangeFeed(tenant, RunFilters(), resume=Position.decode(at_a.encode()))
    assert _poll(db, feed) == [(b, "running")]
    assert _poll(db, feed) == []
    _touch(db, a, T0 + timedelta(seconds=3), RunStatus.COMPLETED)
    assert _poll(db, feed) == [(a, "completed")]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (RunFilters(automation_name="a"), ["a"]),
        (RunFilters(status=(RunStatus.FAILED,)), ["b"]),
        (RunFilters(automation_id="not-an-id"), []),
        (RunFilters(), ["a", "b"]),
        (RunFilters(payload=PayloadMatch(path="order.who", value="b")), ["b"]),
        (RunFilters(payload=PayloadMatch(path="order.who", value="c")), []),
    ],
)
def test_filters_choose_the_runs(
    db: Database, tenant: str, filters: RunFilters, expected: list[str]
) -> None:
    feed = ChangeFeed(tenant, filters)
    _poll(db, feed)
    ran = {name: trigger(db, tenant, name, {"order": {"who": name}}, now=T0) for name in "ab"}
    _touch(db, ran["a"], T0 + timedelta(seconds=1), RunStatus.RUNNING)
    _touch(db, ran["b"], T0 + timedelta(seconds=2), RunStatus.FAILED)
    got = {run_id for run_id, _ in _poll(db, feed)}
    assert got == {ran[name] for name in expected}


def test_other_tenants_runs_are_not_seen(db: Database, tenant: str) -> None:
    other = make_tenant(db, "globex", now=T0)
    make_automation(db, other, {"name": "a", "steps": STEPS}, now=T0)
    feed = ChangeFeed(tenant, RunFilters())
    _poll(db, feed)
    trigger(db, other, "a", now=T0 + timedelta(seconds=1))
    assert _poll(db, feed) == []


def test_many_changes_at_once_are_paged(db: Database, tenant: str) -> None:
    feed = ChangeFeed(tenant, RunFilters(), batch=3)
    _poll(db, feed)
    made = [trigger(db, tenant, "a", now=T0 + timedelta(seconds=i)) for i in range(8)]
    assert [run_id for run_id, _ in _poll(db, feed)] == made


@pytest.mark.parametrize("text", ["", "2026-03-01T12:00:00Z", "2026-03-01T12:00:00|x", "x|y"])
def test_bad_positions_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r".+"):
        Position.decode(text)


def test_history_poll_sends_every_line_and_finishes_once_the_run_ended(
    db: Database, tenant: str
) -> None:
    run_id = trigger(db, tenant, "a", now=T0)
    with db.read() as conn:
        first = poll_history(conn, run_id, 0, 100)
        idle = poll_history(conn, run_id, 1, 100)
    assert [e["type"] for e in first.events] == ["run.created"]
    assert not first.finished
    assert idle.events == []
    assert not idle.finished
    with db.transaction() as conn:
        append_events(
            conn,
            run_id=run_id,
            tenant_id=tenant,
            events=[
                {"type": "run.cancelled", "created_at": T0},
                {"type": "wait.late_event_ignored", "created_at": T0},
            ],
            run_values={"status": RunStatus.CANCELLED},
        )
    with db.read() as conn:
        last = poll_history(conn, run_id, 1, 100)
        late = poll_history(conn, run_id, 2, 100)
        after_end = poll_history(conn, run_id, 3, 100)
        small = poll_history(conn, run_id, 0, 1)
        tail = poll_history(conn, run_id, 1, 1)
    # The line after the terminal one is part of the history, so of the poll.
    assert [e["type"] for e in last.events] == ["run.cancelled", "wait.late_event_ignored"]
    assert (last.finished, last.ended) == (True, True)
    assert [e["type"] for e in late.events] == ["wait.late_event_ignored"]
    assert late.finished
    assert after_end.finished
    assert after_end.events == []
    assert small.more
    assert not small.finished
    # Ended, but a line is still to be read: not finished yet.
    assert [e["type"] for e in tail.events] == ["run.cancelled"]
    assert (tail.finished, tail.ended) == (False, True)
