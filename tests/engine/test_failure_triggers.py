"""Failure triggers over a batch of failed runs, on both databases.

The runs a round's batch ends as failed start their watchers' runs together
(``fire_failure_triggers``: one ``create_runs`` per tenant), so the work does
not grow in statements with the number of failures.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, event, select

from conveyor.engine.failures import fire_failure_triggers
from conveyor.store.db import Database
from conveyor.store.tables import runs
from conveyor.testing.factories import make_automation, make_tenant, trigger
from tests.engine.conftest import Harness

BOOM = [{"key": "boom", "type": "set", "vars": {"x": "{{ trigger.payload.nope.x }}"}}]
NOTE = [{"key": "note", "type": "set", "vars": {"failed": "{{ trigger.payload.run_id }}"}}]


def _watcher(name: str, *watched: str) -> dict[str, Any]:
    return {
        "name": name,
        "trigger": {"type": "automation_failure", "automations": list(watched)},
        "steps": NOTE,
    }


def _setup(db: Database, tenant: str) -> None:
    for definition in (
        {"name": "alpha", "steps": BOOM},
        {"name": "beta", "steps": BOOM},
        _watcher("watch-alpha", "alpha"),
        _watcher("watch-both", "alpha", "beta"),
        _watcher("watch-other", "gamma"),
    ):
        make_automation(db, tenant, definition)


def _failure_runs(conn: Connection, tenant: str) -> list[tuple[str, str, str]]:
    """(watcher, failed run, the run id its step saw) of the tenant's failure-triggered runs."""
    rows = conn.execute(
        select(runs.c.automation_name, runs.c.trigger_source_id, runs.c.trigger_event).where(
            runs.c.tenant_id == tenant, runs.c.trigger_type == "automation_failure"
        )
    )
    return sorted((r[0], str(r[1]), str(r[2]["payload"]["run_id"])) for r in rows)


def test_a_batch_of_failures_starts_each_watchers_run(harness: Harness) -> None:
    h = harness
    _setup(h.db, h.tenant)
    alphas = [h.trigger("alpha", {"n": i}) for i in range(3)]
    betas = [h.trigger("beta", {"n": i}) for i in range(2)]
    h.work()
    expected = sorted(
        [("watch-alpha", r, r) for r in alphas] + [("watch-both", r, r) for r in alphas + betas]
    )
    with h.db.read() as conn:
        assert _failure_runs(conn, h.tenant) == expected
        done = conn.execute(
            select(runs.c.status).where(runs.c.trigger_type == "automation_failure")
        ).scalars()
        assert set(done) == {"completed"}  # they ran, and did not fire more triggers
    for _, failed, _ in expected:
        assert h.detail(failed)["status"] == "failed"


def _statements(db: Database, fn: Callable[[Connection], None]) -> int:
    """Statements ``fn`` sends in a transaction that is then rolled back."""
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        seen.append(statement)

    with db.engine.connect() as conn:
        tx = conn.begin()
        event.listen(db.engine, "before_cursor_execute", count)
        try:
            fn(conn)
        finally:
            event.remove(db.engine, "before_cursor_execute", count)
            tx.rollback()
    return len(seen)


def test_the_statements_do_not_grow_with_the_failures(harness: Harness) -> None:
    h = harness
    other = make_tenant(h.db, "other", now=h.clock.now())
    for tenant in (h.tenant, other):
        _setup(h.db, tenant)
        for name in ("alpha", "beta"):
            for i in range(12):
                trigger(h.db, tenant, name, {"n": i}, now=h.clock.now())
    h.work()
    with h.db.read() as conn:
        failed = [
            dict(r)
            for r in conn.execute(
                select(runs)
                .where(runs.c.status == "failed")
                .order_by(runs.c.tenant_id, runs.c.automation_name, runs.c.id)
            ).mappings()
        ]
    assert len(failed) == 48
    ours = [r for r in failed if r["tenant_id"] == h.tenant]
    theirs = [r for r in failed if r["tenant_id"] == other]

    def fire(batch: list[dict[str, Any]]) -> Callable[[Connection], None]:
        return lambda conn: fire_failure_triggers(conn, batch, h.clock.now())

    few = [ours[0], ours[-1], theirs[0], theirs[-1]]  # an alpha and a beta of each tenant
    _statements(h.db, fire(few))  # the process parses the watchers' definitions once
    small = _statements(h.db, fire(few))
    large = _statements(h.db, fire(failed))
    # Fewer on PostgreSQL: from 16 rows on, inserts go through COPY, unseen here.
    assert large <= small, (small, large)

    # And what the batch wrote: each tenant's watchers, for that tenant's runs only.
    def written(conn: Connection) -> None:
        before = {t: len(_failure_runs(conn, t)) for t in (h.tenant, other)}
        fire_failure_triggers(conn, failed, h.clock.now())
        for tenant, mine in ((h.tenant, ours), (other, theirs)):
            now = _failure_runs(conn, tenant)
            assert len(now) - before[tenant] == 12 * 2 + 12  # alpha: two watchers, beta: one
            sources = {source for _, source, _ in now}
            assert sources == {str(r["id"]) for r in mine}

    _statements(h.db, written)
