"""Single triggers in flight together are written in one transaction, each answered as if alone.

``conveyor.api.trigger_groups`` collects the triggers waiting while a write is
under way; ``conveyor.services.grouped_triggers`` writes them. These tests
hold the outcomes of a mixed group to what ``start_run`` answers for each
trigger on its own, count the writes, and break the database under a group.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError

from conveyor.api.app import create_app
from conveyor.api.trigger_groups import TriggerGroups
from conveyor.clock import SystemClock
from conveyor.domain.contacts import InvalidIdentity, UnknownContact
from conveyor.domain.errors import AutomationDisabled, AutomationNotFound, NotFound
from conveyor.services.grouped_triggers import Trigger
from conveyor.services.runs import start_run
from conveyor.settings import Settings
from conveyor.store import definitions
from conveyor.store.db import Database
from conveyor.store.messaging_tables import contacts
from conveyor.store.tables import runs, tasks
from conveyor.testing.factories import make_automation, make_tenant
from tests.api.conftest import NewKey
from tests.api.helpers import DEFINITION, count
from tests.api.live import live_server

WAIT = 30.0  # only catches a hang


def _trigger(tenant_id: str, ref: str = "order-follow-up", **fields: Any) -> Trigger:
    return Trigger(
        tenant_id=tenant_id,
        automation_ref=ref,
        payload=fields.get("payload", {}),
        identity=fields.get("identity"),
        idempotency_key=fields.get("key"),
        source_type="api_key",
        source_id="key-1",
    )


def _together(db: Database, triggers: Sequence[Trigger]) -> list[Any]:
    """Start every trigger at once on one event loop; each one's answer or error, in order."""
    groups = TriggerGroups(db, SystemClock())

    async def main() -> list[Any]:
        return await asyncio.gather(*(groups.start(t) for t in triggers), return_exceptions=True)

    return asyncio.run(asyncio.wait_for(main(), WAIT))


@contextmanager
def _inserts_into_runs(db: Database) -> Iterator[list[str]]:
    """The ``INSERT INTO runs`` statements executed while inside."""
    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO RUNS "):
            seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", note)


def _tenant_with_automations(db: Database, name: str = "acme") -> str:
    tenant = make_tenant(db, name)
    make_automation(db, tenant, DEFINITION)
    make_automation(db, tenant, {**DEFINITION, "name": "paused", "enabled": False})
    make_automation(
        db,
        tenant,
        {**DEFINITION, "name": "keyed", "concurrency": {"key": "trigger.payload.c", "limit": 1}},
    )
    return tenant


def test_a_mixed_group_is_one_write_and_each_trigger_gets_its_own_answer(db: Database) -> None:
    acme = _tenant_with_automations(db)
    other = _tenant_with_automations(db, "globex")
    (earlier, _) = start_run(db, **vars(_trigger(acme, key="already")), now=SystemClock().now())
    ghost = str(uuid.uuid4())
    group = [
        _trigger(acme, payload={"n": 0}),
        _trigger(acme, "missing"),
        _trigger(acme, key="already"),  # a run of the automation holds the key
        _trigger(acme, "paused"),
        _trigger(acme, key="twice", payload={"n": 4}),
        _trigger(acme, identity={"type": "email", "value": "Ada@Example.com"}),
        _trigger(acme, identity={"type": "email", "value": ""}),
        _trigger(acme, identity={"type": "contact_id", "value": ghost}),
        _trigger(acme, key="twice", payload={"n": 8}),  # the key of item 4, taken in this group
        _trigger(other, payload={"n": 9}),  # another tenant's automation of the same name
        _trigger(acme, "keyed", payload={"c": "x"}),  # concurrency key: started on its own
    ]
    with _inserts_into_runs(db) as inserts:
        answers = _together(db, group)

    assert isinstance(answers[1], AutomationNotFound)
    assert isinstance(answers[3], AutomationDisabled)
    assert isinstance(answers[6], InvalidIdentity)
    assert isinstance(answers[7], UnknownContact)
    created = {i: a[0] for i, a in enumerate(answers) if isinstance(a, tuple) and a[1]}
    assert sorted(created) == [0, 4, 5, 9, 10]
    assert answers[2] == (earlier, False)
    assert answers[8][1] is False
    assert answers[8][0]["id"] == created[4]["id"]
    assert _event(db, created[4]["id"])["payload"] == {"n": 4}
    assert created[5]["identity"] == {"type": "email", "value": "ada@example.com"}
    assert created[5]["contact_id"] is not None
    assert created[9]["tenant_id"] == other
    assert created[0]["tenant_id"] == acme
    # One insert per tenant for the group (acme's four runs, globex's one), one for the run
    # with a concurrency key on its own.
    assert len(inserts) == 3
    with db.read() as conn:
        stored = conn.execute(select(runs.c.id, runs.c.status)).all()
        queued = {str(r) for r in conn.execute(select(tasks.c.run_id)).scalars()}
    assert {str(r.id) for r in stored} == {earlier["id"]} | {r["id"] for r in created.values()}
    assert {str(r.id) for r in stored} <= queued | {earlier["id"]}
    assert count(db, contacts) == 1  # only the valid email made a contact


def test_a_group_costs_the_same_statements_whatever_its_size(db: Database) -> None:
    tenant = _tenant_with_automations(db)
    _together(db, [_trigger(tenant)])  # warm the definition cache

    def statements(triggers: Sequence[Trigger]) -> int:
        seen: list[str] = []

        def note(*args: Any) -> None:
            seen.append(args[2])

        event.listen(db.engine, "before_cursor_execute", note)
        try:
            answers = _together(db, triggers)
        finally:
            event.remove(db.engine, "before_cursor_execute", note)
        assert all(isinstance(a, tuple) and a[1] for a in answers), answers
        return len(seen)

    def keyed(n: int, tag: str) -> list[Trigger]:
        return [
            _trigger(tenant, key=f"{tag}-{i}", identity={"type": "external_id", "value": f"u{i}"})
            for i in range(n)
        ]

    # From 16 rows on PostgreSQL takes them by COPY, which SQLAlchemy's statement
    # events do not see (conveyor.store.batch): both sizes are past it.
    assert statements([_trigger(tenant) for _ in range(20)]) == statements(
        [_trigger(tenant) for _ in range(200)]
    )
    assert statements(keyed(20, "a")) == statements(keyed(200, "b"))


def test_when_the_database_fails_a_group_every_trigger_fails_and_nothing_is_kept(
    db: Database,
) -> None:
    tenant = _tenant_with_automations(db)
    failures: list[int] = []

    def fail_once(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        # The tasks' INSERT, the last of the write (its table name quoted or not).
        start = statement.lstrip().upper().replace('"', "")
        if start.startswith("INSERT INTO TASKS") and not failures:
            failures.append(1)
            raise OperationalError(statement, {}, ConnectionError("the database went away"))

    event.listen(db.engine, "before_cursor_execute", fail_once)
    try:
        answers = _together(db, [_trigger(tenant, payload={"n": i}) for i in range(5)])
    finally:
        event.remove(db.engine, "before_cursor_execute", fail_once)
    assert all(isinstance(a, OperationalError) for a in answers), answers
    assert len({id(a) for a in answers}) == 5  # each request raises its own copy
    assert count(db, runs) == 0
    assert count(db, tasks) == 0
    (again,) = _together(db, [_trigger(tenant)])
    assert again[1] is True
    assert count(db, runs) == 1


def test_a_cancelled_request_leaves_the_rest_of_its_group_answered(db: Database) -> None:
    tenant = _tenant_with_automations(db)
    groups = TriggerGroups(db, SystemClock())

    async def main() -> list[Any]:
        tasks_ = [
            asyncio.create_task(groups.start(_trigger(tenant, key=f"k{i}"))) for i in range(4)
        ]
        await asyncio.sleep(0)  # every request is waiting; the write has begun
        tasks_[1].cancel()
        return await asyncio.gather(*tasks_, return_exceptions=True)

    answers = asyncio.run(asyncio.wait_for(main(), WAIT))
    assert isinstance(answers[1], asyncio.CancelledError)
    assert [a[1] for i, a in enumerate(answers) if i != 1] == [True, True, True]
    # Its run was written with the group (as a request cancelled mid-transaction would be):
    # the client, retrying with its key, gets that run back.
    (again,) = _together(db, [_trigger(tenant, key="k1")])
    assert again[1] is False
    assert count(db, runs) == 4


def test_concurrent_requests_over_http_share_writes_and_replay_their_keys(
    db: Database, new_key: NewKey
) -> None:
    tenant = make_tenant(db)
    make_automation(db, tenant, DEFINITION)
    token = new_key(tenant)
    settings = Settings(database_url=db.url.render_as_string(hide_password=False))
    app = create_app(settings, db=db, clock=SystemClock())
    url = "/api/v1/automations/order-follow-up/trigger"
    headers = {"Authorization": f"Bearer {token}"}

    with live_server(app) as base, httpx.Client(base_url=base, timeout=WAIT) as client:
        client.post(url, json={}, headers=headers).raise_for_status()  # warm the key cache

        def send(i: int) -> httpx.Response:
            return client.post(url, json={"idempotency_key": f"k{i % 10}"}, headers=headers)

        with _inserts_into_runs(db) as inserts, ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(send, range(40)))

    assert [a.status_code for a in answers] == [202] * 40
    by_key: dict[str, set[str]] = {}
    for i, a in enumerate(answers):
        by_key.setdefault(f"k{i % 10}", set()).add(a.json()["id"])
    assert all(len(ids) == 1 for ids in by_key.values())  # one run per key
    replayed = [a for a in answers if a.headers.get("Idempotent-Replayed") == "true"]
    assert len(replayed) == 30
    assert count(db, runs) == 11
    assert 1 <= len(inserts) < 10  # requests in flight together shared the inserts of their runs


def test_triggers_are_started_the_same_alone_or_grouped(db: Database) -> None:
    """Each field of a run started in a group is what ``start_run`` gives one alone."""
    tenant = _tenant_with_automations(db)
    base = {"payload": {"a": [1, {"b": None}]}, "identity": {"type": "external_id", "value": "u1"}}
    alone, _ = start_run(db, **vars(_trigger(tenant, key="alone", **base)), now=SystemClock().now())
    ((grouped, created),) = _together(db, [_trigger(tenant, key="grouped", **base)])
    assert created is True
    differ = {"id", "idempotency_key", "created_at", "updated_at"}
    assert {k: v for k, v in grouped.items() if k not in differ} == {
        k: v for k, v in alone.items() if k not in differ
    }
    events = _event(db, grouped["id"]), _event(db, alone["id"])
    assert [{k: v for k, v in e.items() if k != "occurred_at"} for e in events] == [
        {k: v for k, v in events[1].items() if k != "occurred_at"}
    ] * 2


def _event(db: Database, run_id: str) -> dict[str, Any]:
    with db.read() as conn:
        event_ = conn.execute(select(runs.c.trigger_event).where(runs.c.id == run_id)).scalar_one()
    assert isinstance(event_, dict)
    return event_


def test_an_automation_that_cannot_be_loaded_fails_only_its_own_triggers(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broken automation (here its version cannot be read) is its triggers' error alone."""
    tenant = _tenant_with_automations(db)
    make_automation(db, tenant, {**DEFINITION, "name": "broken"})
    real_load = definitions.load

    def load(conn: Any, version_id: str) -> Any:
        loaded = real_load(conn, version_id)
        if loaded.definition.name == "broken":
            raise NotFound(f"automation version {version_id} not found")
        return loaded

    monkeypatch.setattr(definitions, "load", load)
    answers = _together(
        db, [_trigger(tenant, "broken"), _trigger(tenant), _trigger(tenant, "broken")]
    )
    assert isinstance(answers[0], NotFound)
    assert isinstance(answers[2], NotFound)
    assert answers[0] is not answers[2]  # each request raises its own
    assert answers[1][1] is True
    assert count(db, runs) == 1
