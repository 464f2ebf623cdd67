"""``insert_many`` and ``Together`` store exactly what plain statements store, whatever the path.

On PostgreSQL one row is a plain INSERT, 2 to 15 are one statement over
``unnest`` of binary array parameters, and 16 or more go through ``COPY``.
``Together`` (PostgreSQL: a worker batch's writes as clauses of one statement)
inserts and updates from ``unnest`` at any size. SQLite keeps plain
statements. Each path must store the same values (NULLs, JSON, times, text)
and refuse what a plain statement refuses.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy.exc
from sqlalchemy import Connection, bindparam, event, func, select, update

from conveyor.domain.ids import new_id
from conveyor.store.batch import MANY, insert_many
from conveyor.store.db import Database
from conveyor.store.messaging_tables import contacts, events
from conveyor.store.together import Together
from conveyor.testing.factories import make_tenant

SIZES = [1, 2, 7, MANY - 1, MANY, MANY + 5]


def _events(tenant: str, n: int, tag: str) -> list[dict[str, Any]]:
    base = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    payloads: list[Any] = [
        {"a": [1, 2.5, "é", "😀"], "quote": 'x"{}\\,'},
        [],
        {"nested": {"deep": [None, True, False]}},
        "text",
        12,
    ]
    return [
        {
            "tenant_id": tenant,
            "id": f"{tag}-{i:03}",
            "name": f"name {i} \t,{{}}\"'",
            "contact_id": None,
            "identity": None if i % 2 else {"email": f"u{i}@example.com"},
            "payload": payloads[i % len(payloads)],
            "occurred_at": base + timedelta(microseconds=i),
            "received_at": base,
        }
        for i in range(n)
    ]


def _contact(tenant: str, name: str) -> dict[str, Any]:
    now = datetime(2026, 1, 2, tzinfo=UTC)
    return {
        "id": new_id(),
        "tenant_id": tenant,
        "external_id": name,
        "email": f"{name}@example.com",
        "push_targets": [],
        "attributes": {"name": name},
        "created_at": now,
        "updated_at": now,
    }


def _stored(conn: Connection, tag: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(events).where(events.c.id.like(f"{tag}-%")).order_by(events.c.id)
    ).mappings()
    return [{k: v for k, v in r.items() if k != "tenant_id"} for r in rows]


@pytest.mark.parametrize("n", SIZES)
def test_insert_many_stores_what_plain_inserts_store(db: Database, n: int) -> None:
    tenant = make_tenant(db)
    with db.transaction() as conn:
        insert_many(conn, events, _events(tenant, n, "many"))
        conn.execute(events.insert(), _events(tenant, n, "plain"))
    with db.read() as conn:
        many, plain = _stored(conn, "many"), _stored(conn, "plain")
    assert len(many) == n
    for a, b in zip(many, plain, strict=True):
        assert a["id"].replace("many", "plain") == b["id"]
        assert {k: v for k, v in a.items() if k != "id"} == {
            k: v for k, v in b.items() if k != "id"
        }


@pytest.mark.parametrize("n", [2, MANY - 1])
def test_insert_many_refuses_text_too_long_as_a_plain_insert_does(db: Database, n: int) -> None:
    """An explicit cast to varchar(n) would cut the text short; the column must refuse it."""
    tenant = make_tenant(db)

    def rows() -> list[dict[str, Any]]:
        batch = _events(tenant, n, new_id())
        batch[-1]["name"] = "n" * 250  # the column is String(200)
        return batch

    outcomes = _outcomes(
        db,
        lambda c: insert_many(c, events, rows()),
        lambda c: c.execute(events.insert(), rows()),
    )
    # PostgreSQL enforces the length, SQLite does not: the same answer either way.
    assert outcomes == (["refused"] * 2 if not db.is_sqlite else ["stored"] * 2)


_PLAIN_UPDATE = (
    update(events)
    .where(events.c.tenant_id == bindparam("t"), events.c.id == bindparam("i"))
    .values(name=bindparam("n"), payload=bindparam("p"), contact_id=bindparam("c"))
)


def _plain_update(conn: Connection, changes: list[dict[str, Any]]) -> None:
    conn.execute(
        _PLAIN_UPDATE,
        [
            {"t": c["tenant_id"], "i": c["id"], "n": c["name"], "p": c["payload"], "c": None}
            for c in changes
        ],
    )


def _together_update(conn: Connection, changes: list[dict[str, Any]]) -> None:
    together = Together(conn)
    together.update(events, ("tenant_id", "id"), changes)
    together.send()


def _changes(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "tenant_id": r["tenant_id"],
            "id": r["id"],
            "name": f"{r['name']} changed",
            "payload": {"was": r["payload"], "nul": "a\x00b"},
            "contact_id": None,
        }
        for r in rows
    ]


@pytest.mark.parametrize("n", [1, 2, 70, 300])
def test_together_updates_what_plain_updates_update(pg_db: Database, n: int) -> None:
    tenant = make_tenant(pg_db)
    with pg_db.transaction() as conn:
        conn.execute(events.insert(), _events(tenant, n, "many") + _events(tenant, n, "plain"))
        many, plain = _stored(conn, "many"), _stored(conn, "plain")
    with pg_db.transaction() as conn:
        _together_update(conn, _changes([{**r, "tenant_id": tenant} for r in many]))
        _plain_update(conn, _changes([{**r, "tenant_id": tenant} for r in plain]))
    with pg_db.read() as conn:
        many, plain = _stored(conn, "many"), _stored(conn, "plain")
    assert len(many) == n
    assert many[0]["payload"]["nul"] == "a\ufffdb"  # jsonb cannot hold NUL: replaced, not refused
    for a, b in zip(many, plain, strict=True):
        assert {k: v for k, v in a.items() if k != "id"} == {
            k: v for k, v in b.items() if k != "id"
        }


@pytest.mark.parametrize("n", [1, 2, 300])
def test_together_refuses_text_too_long_as_a_plain_update_does(pg_db: Database, n: int) -> None:
    tenant = make_tenant(pg_db)
    rows = _events(tenant, n, "upd")
    with pg_db.transaction() as conn:
        conn.execute(events.insert(), rows)
    changes = _changes(rows)
    changes[-1]["name"] = "n" * 250  # the column is String(200)
    outcomes = _outcomes(
        pg_db,
        lambda c: _together_update(c, changes),
        lambda c: _plain_update(c, changes),
    )
    assert outcomes == ["refused"] * 2
    with pg_db.read() as conn:  # the refused statement changed nothing
        assert [r["name"] for r in _stored(conn, "upd")] == [r["name"] for r in rows]


def test_together_writes_clauses_in_one_statement_and_a_table_once(pg_db: Database) -> None:
    tenant = make_tenant(pg_db)
    old = _events(tenant, 3, "old")
    with pg_db.transaction() as conn:
        conn.execute(events.insert(), old)
    statements: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(pg_db.engine, "before_cursor_execute", note)
    try:
        with pg_db.transaction() as conn:
            together = Together(conn)
            together.insert(events, _events(tenant, 4, "new"))
            with pytest.raises(ValueError, match="events is written twice"):
                together.delete(events, {"id": [old[0]["id"]]})
            together.insert(contacts, [_contact(tenant, "c1"), _contact(tenant, "c2")])
            together.send()
    finally:
        event.remove(pg_db.engine, "before_cursor_execute", note)
    assert len(statements) == 1
    assert statements[0].startswith("WITH w0 AS (INSERT")
    with pg_db.read() as conn:
        assert len(_stored(conn, "new")) == 4
        assert len(_stored(conn, "old")) == 3  # the refused delete was never sent
        assert conn.execute(select(func.count()).select_from(contacts)).scalar_one() == 2


def test_together_deletes_by_any_of_several_columns(pg_db: Database) -> None:
    tenant = make_tenant(pg_db)
    rows = _events(tenant, 6, "del")
    with pg_db.transaction() as conn:
        conn.execute(events.insert(), rows)
        together = Together(conn)
        together.delete(events, {"id": [rows[0]["id"], rows[1]["id"]], "name": [rows[5]["name"]]})
        together.delete(contacts, {"id": []})  # nothing to delete: no clause
        together.send()
    with pg_db.read() as conn:
        assert [r["id"] for r in _stored(conn, "del")] == [r["id"] for r in rows[2:5]]


def _outcomes(db: Database, *writes: Callable[[Connection], Any]) -> list[str]:
    """Each write in a transaction of its own: ``stored``, or ``refused`` (a DataError)."""
    outcomes = []
    for write in writes:
        try:
            with db.transaction() as conn:
                write(conn)
            outcomes.append("stored")
        except sqlalchemy.exc.DataError:
            outcomes.append("refused")
    return outcomes
