"""The parts that make large dry runs fast, each checked against the plain way.

- ``EventHistory`` answers a wait's question from events read in bulk; it must
  give exactly what one query per contact gives.
- ``copy_rows`` (COPY on PostgreSQL) must store what an INSERT stores.
- A worker holds at most ``worker_dry_run_days`` days at once and hands the
  rest back untouched, and an idle worker does not wake for tasks another
  worker holds (it used to spin on them).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from conveyor.clock import FakeClock
from conveyor.domain.ids import new_id
from conveyor.dryrun import days as days_module
from conveyor.dryrun import history as history_module
from conveyor.dryrun.history import EventHistory
from conveyor.engine import own_loops as worker_module
from conveyor.engine.worker import Worker
from conveyor.settings import Settings
from conveyor.store import dry_runs as dry_run_store
from conveyor.store import tasks as task_store
from conveyor.store.batch import copy_rows
from conveyor.store.db import Database
from conveyor.store.dryrun_tables import dry_run_results, dry_runs
from conveyor.store.messaging_tables import contacts, events
from conveyor.store.tables import runs, tasks
from conveyor.testing.factories import make_automation, make_tenant, request_dry_run

DAY0 = datetime(2026, 6, 1, tzinfo=UTC)


def _contacts(db: Database, tenant: str, n: int) -> list[str]:
    now = datetime.now(UTC)
    ids = [new_id() for _ in range(n)]
    rows = [
        {
            "id": cid,
            "tenant_id": tenant,
            "email": f"c{i}@example.com",
            "external_id": None,
            "push_targets": [],
            "attributes": {},
            "created_at": now,
            "updated_at": now,
        }
        for i, cid in enumerate(ids)
    ]
    with db.transaction() as conn:
        conn.execute(insert(contacts), rows)
    return ids


def _welcome(db: Database, tenant: str) -> None:
    """A manual automation of one ``set`` step, named ``welcome``."""
    make_automation(
        db,
        tenant,
        {
            "name": "welcome",
            "trigger": {"type": "manual"},
            "steps": [{"key": "greet", "type": "set", "vars": {"hi": "{{ contact.email }}"}}],
        },
    )


def _events(db: Database, tenant: str, people: list[str], rng: random.Random) -> None:
    """Events of two names over four days, some exactly on UTC midnight."""
    now = datetime.now(UTC)
    rows = []
    for i in range(400):
        at = DAY0 + timedelta(minutes=rng.randrange(4 * 24 * 60))
        if i % 25 == 0:
            at = DAY0 + timedelta(days=rng.randrange(1, 4))  # midnight: a chunk's first instant
        if i % 31 == 0:
            at = DAY0 + timedelta(days=rng.randrange(1, 4)) - timedelta(microseconds=1)
        rows.append(
            {
                "tenant_id": tenant,
                "id": f"e{i}",
                "name": "mail.open" if i % 3 else "order.placed",
                "contact_id": people[i % len(people)] if i % 17 else None,
                "identity": None,
                "payload": {"n": i},
                "occurred_at": at,
                "received_at": now,
            }
        )
    with db.transaction() as conn:
        conn.execute(insert(events), rows)


@pytest.mark.parametrize("named_max", [500, 1])  # contacts listed, or the tenant read whole
def test_history_gives_what_a_query_per_contact_gives(
    db: Database, monkeypatch: pytest.MonkeyPatch, named_max: int
) -> None:
    monkeypatch.setattr(history_module, "NAMED_CONTACTS_MAX", named_max)
    rng = random.Random(11)
    tenant, other = make_tenant(db, "acme"), make_tenant(db, "other")
    people = _contacts(db, tenant, 6)
    _events(db, tenant, people, rng)
    _events(db, other, _contacts(db, other, 6), rng)  # never seen from `tenant`
    outsider = people[-1]  # not one of the day's contacts: asked for alone
    with db.read() as conn:
        stamps = list(conn.execute(select(events.c.occurred_at)).scalars())
        history = EventHistory(tenant, people[:-1], conn)
        for _ in range(300):
            name = rng.choice(["mail.open", "order.placed"])
            contact = rng.choice(people)
            since = DAY0 + timedelta(minutes=rng.randrange(-600, 5 * 24 * 60))
            if rng.random() < 0.2:  # windows starting or ending on midnight exactly
                since = DAY0 + timedelta(days=rng.randrange(0, 4))
            until = since + timedelta(minutes=rng.choice([0, 1, 60, 24 * 60, 36 * 60, 3 * 1440]))
            if rng.random() < 0.3:  # windows ending or starting on an event exactly
                at = rng.choice(stamps)
                since, until = (
                    (at, until) if rng.random() < 0.5 else (since - timedelta(days=1), at)
                )
            expected = dry_run_store.events_between(
                conn, tenant, name, since, until, contact_id=contact
            )
            got = history.events(name, contact, since, until)
            assert [e["id"] for e in got] == [e["id"] for e in expected], (name, since, until)
        # Each (name, UTC day) was read once, and runs of days together: far fewer
        # reads than questions (two names over at most nine days).
        assert history.queries <= 18
        assert outsider not in history.contact_ids


def test_history_reads_a_day_once_for_all_contacts(db: Database) -> None:
    tenant = make_tenant(db)
    people = _contacts(db, tenant, 30)
    _events(db, tenant, people, random.Random(3))
    with db.read() as conn:
        history = EventHistory(tenant, people, conn)
        start = DAY0 + timedelta(hours=9)
        for person in people:
            history.events("mail.open", person, start, start + timedelta(days=1))
    assert history.queries == 1  # one read of two UTC days, whoever asked
    # Days missing on both sides of held ones are read in one go; the held day
    # read again must not give its events twice.
    with db.read() as conn:
        history = EventHistory(tenant, people, conn)
        history.events("mail.open", people[1], DAY0 + timedelta(days=1), DAY0 + timedelta(days=2))
        wide = (DAY0, DAY0 + timedelta(days=3))
        got = [e["id"] for e in history.events("mail.open", people[1], *wide)]
        expected = dry_run_store.events_between(
            conn, tenant, "mail.open", *wide, contact_id=people[1]
        )
    assert got == [e["id"] for e in expected]
    assert len(got) > 2  # the case has events to repeat
    assert history.queries == 2
    # A window of weeks (a wait with no timeout) is asked for the one contact:
    # right answer, nothing read in bulk.
    with db.read() as conn:
        history = EventHistory(tenant, people, conn)
        long = (DAY0 - timedelta(days=10), DAY0 + timedelta(days=20))
        got = [e["id"] for e in history.events("mail.open", people[1], *long)]
        expected = dry_run_store.events_between(
            conn, tenant, "mail.open", *long, contact_id=people[1]
        )
    assert got == [e["id"] for e in expected]
    assert got
    assert history.queries == 0


def test_copy_rows_stores_what_an_insert_stores(db: Database) -> None:
    tenant = make_tenant(db)
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = [
        {
            "tenant_id": tenant,
            "id": f"copy-{i}",
            "name": "x",
            "contact_id": None,
            "identity": None if i % 2 else {"type": "email", "value": f"a{i}@b.c"},
            "payload": {"text": 'tab\tnew\nline \\ quote" ünï', "list": [1, None, {"k": i}]},
            "occurred_at": now + timedelta(microseconds=i),
            "received_at": now,
        }
        for i in range(5)
    ]
    with db.transaction() as conn:
        copy_rows(conn, events, rows)
        copy_rows(conn, events, [])  # nothing to write is fine
    with db.read() as conn:
        stored = conn.execute(select(events).order_by(events.c.id)).mappings().all()
    assert [dict(r) for r in stored] == rows


def test_claim_skips_kinds_and_unclaim_undoes_a_claim(db: Database) -> None:
    tenant = make_tenant(db)
    now = datetime.now(UTC)
    dry_run_id = new_id()
    with db.transaction() as conn:
        days = [DAY0.date() + timedelta(days=i) for i in range(3)]
        dry_run_store.enqueue_days(
            conn, tenant_id=tenant, dry_run_id=dry_run_id, days=days, now=now
        )
    token = new_id()
    with db.transaction() as conn:
        kwargs: dict[str, Any] = {"owner": "w", "token": token, "now": now + timedelta(seconds=1)}
        skipped = task_store.claim(
            conn, **kwargs, lease_until=now + timedelta(minutes=1), limit=10, skip_kinds=["dry_run"]
        )
        assert skipped == []
        claimed = task_store.claim(conn, **kwargs, lease_until=now + timedelta(minutes=1), limit=10)
        assert len(claimed) == 3
        task_store.unclaim(conn, [str(r["id"]) for r in claimed[1:]], token)
        # Only the task it kept counts as held: the idle worker's next wake-up
        # is for the two handed back, not for the one it holds.
        assert task_store.next_due(conn, now + timedelta(seconds=1)) == now
    with db.read() as conn:
        rows = conn.execute(select(tasks.c.claims, tasks.c.lease_owner)).all()
    assert Counter(rows) == Counter({(1, "w"): 1, (0, None): 2})


def test_next_due_ignores_tasks_held_by_a_live_lease(db: Database) -> None:
    tenant = make_tenant(db)
    now = datetime.now(UTC)
    with db.transaction() as conn:
        dry_run_store.enqueue_days(
            conn, tenant_id=tenant, dry_run_id=new_id(), days=[DAY0.date()], now=now
        )
        task_store.claim(
            conn,
            owner="w",
            token=new_id(),
            now=now,
            lease_until=now + timedelta(seconds=30),
            limit=5,
        )
    with db.read() as conn:
        assert task_store.next_due(conn, now + timedelta(seconds=1)) is None  # held
        # Once the lease has run out the task is claimable again: due.
        assert task_store.next_due(conn, now + timedelta(seconds=31)) == now
        assert task_store.next_due(conn, now + timedelta(seconds=31), ["dry_run"]) is None


def test_two_workers_share_days_one_at_a_time_each(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = make_tenant(db)
    people = _contacts(db, tenant, 3)
    _welcome(db, tenant)
    dry_run_id = request_dry_run(
        db, tenant, "welcome", DAY0.date(), DAY0.date() + timedelta(days=5), people
    )
    held: Counter[str] = Counter()
    most: Counter[str] = Counter()
    lock = threading.Lock()
    real = worker_module.process_day

    def counting(database: Database, task: Any, token: str, *args: Any) -> None:
        with database.read() as conn:
            owner = conn.execute(
                select(tasks.c.lease_owner).where(tasks.c.id == task["id"])
            ).scalar_one()
        with lock:
            held[owner] += 1
            most[owner] = max(most[owner], held[owner])
        try:
            time.sleep(0.02)  # long enough for the other worker to claim meanwhile
            real(database, task, token, *args)
        finally:
            with lock:
                held[owner] -= 1

    monkeypatch.setattr(worker_module, "process_day", counting)
    url = db.url.render_as_string(hide_password=False)

    async def both() -> None:
        workers = [
            Worker(db, Settings(database_url=url, worker_id=f"w{i}", worker_batch_size=64))
            for i in range(2)
        ]
        await asyncio.gather(*(w.run_until_idle() for w in workers))

    asyncio.run(both())
    with db.read() as conn:
        results = conn.execute(
            select(dry_run_results.c.run_at, dry_run_results.c.profile_id).where(
                dry_run_results.c.dry_run_id == dry_run_id
            )
        ).all()
    assert len(results) == 6 * 3
    assert len(set(results)) == 6 * 3
    assert most
    assert max(most.values()) == 1


def test_a_day_is_written_a_slice_at_a_time_and_adds_up(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(days_module, "WRITE_SLICE", 2)  # 5 contacts: slices of 2, 2 and 1
    tenant = make_tenant(db)
    people = _contacts(db, tenant, 5)
    _welcome(db, tenant)
    dry_run_id = request_dry_run(
        db, tenant, "welcome", DAY0.date(), DAY0.date() + timedelta(days=1), people
    )
    url = db.url.render_as_string(hide_password=False)
    asyncio.run(Worker(db, Settings(database_url=url)).run_until_idle())
    with db.read() as conn:
        results = conn.execute(
            select(dry_run_results.c.run_at, dry_run_results.c.profile_id).where(
                dry_run_results.c.dry_run_id == dry_run_id
            )
        ).all()
        query = select(dry_runs).where(dry_runs.c.id == dry_run_id)
        progress = conn.execute(query).mappings().one()
    assert sorted(results) == sorted((d, p) for d in ("2026-06-01", "2026-06-02") for p in people)
    assert progress["status"] == "completed"
    assert progress["contacts_done"] == 10
    assert progress["counts"] == {"success": 10, "failed": 0, "skipped": 0}


def test_a_day_that_dies_after_some_slices_is_redone_without_repeats(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(days_module, "WRITE_SLICE", 2)
    tenant = make_tenant(db)
    people = _contacts(db, tenant, 5)
    _welcome(db, tenant)
    dry_run_id = request_dry_run(db, tenant, "welcome", DAY0.date(), DAY0.date(), people)
    real = days_module.simulate_run
    calls = {"n": 0}

    def dies_in_the_second_slice(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 4:  # the first slice (two contacts) is committed by now
            raise RuntimeError("worker died")
        return real(*args, **kwargs)

    def stored() -> tuple[list[Any], int]:
        with db.read() as conn:
            results = conn.execute(
                select(dry_run_results.c.profile_id).where(
                    dry_run_results.c.dry_run_id == dry_run_id
                )
            ).all()
            simulated = conn.execute(
                select(func.count()).select_from(runs).where(runs.c.dry_run.is_(True))
            ).scalar_one()
        return results, int(simulated)

    monkeypatch.setattr(days_module, "simulate_run", dies_in_the_second_slice)
    clock = FakeClock(datetime.now(UTC))
    url = db.url.render_as_string(hide_password=False)
    asyncio.run(Worker(db, Settings(database_url=url), clock=clock).run_until_idle())
    results, simulated = stored()
    assert (len(results), simulated) == (2, 2)  # the first slice stands for now

    monkeypatch.setattr(days_module, "simulate_run", real)
    clock.advance(600)  # the task's lease (or its retry delay) has run out
    asyncio.run(Worker(db, Settings(database_url=url), clock=clock).run_until_idle())
    results, simulated = stored()
    assert sorted(str(r.profile_id) for r in results) == sorted(people)  # once each
    assert simulated == 5  # the first attempt's simulated runs went with its results
    with db.read() as conn:
        query = select(dry_runs).where(dry_runs.c.id == dry_run_id)
        progress = conn.execute(query).mappings().one()
    assert progress["status"] == "completed"
    assert progress["contacts_done"] == 5
