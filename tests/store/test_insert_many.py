"""``insert_many`` and ``update_many`` store exactly what plain statements store, whatever the path.

On PostgreSQL one row is a plain INSERT, 2 to 15 are one statement over
``unnest`` of array parameters, and 16 or more go through ``COPY``; an update
of 2 to 15 rows is one ``UPDATE ... FROM unnest``, of 16 or more one
``UPDATE ... FROM`` rows copied in. SQLite keeps plain statements. Each path
must store the same values (NULLs, JSON, times, text) and refuse what a plain
statement refuses.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy.exc
from sqlalchemy import Connection, bindparam, select, update

from conveyor.domain.ids import new_id
from conveyor.store.batch import MANY, insert_many, update_many
from conveyor.store.db import Database
from conveyor.store.messaging_tables import events
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


@pytest.mark.parametrize("n", [2, MANY - 1, MANY])
def test_update_many_refuses_text_too_long_as_a_plain_update_does(db: Database, n: int) -> None:
    tenant = make_tenant(db)
    rows = _events(tenant, n, "upd")
    with db.transaction() as conn:
        conn.execute(events.insert(), rows)
    changes = [{"tenant_id": tenant, "id": r["id"], "name": "n" * 250} for r in rows]
    plain = (
        update(events)
        .where(events.c.tenant_id == bindparam("t"), events.c.id == bindparam("i"))
        .values(name=bindparam("n"))
    )

    def many(conn: Connection) -> None:
        if not update_many(conn, events, ("tenant_id", "id"), changes):
            conn.execute(
                plain, [{"t": c["tenant_id"], "i": c["id"], "n": c["name"]} for c in changes]
            )

    outcomes = _outcomes(
        db,
        many,
        lambda c: c.execute(
            plain, [{"t": c_["tenant_id"], "i": c_["id"], "n": c_["name"]} for c_ in changes]
        ),
    )
    assert outcomes == (["refused"] * 2 if not db.is_sqlite else ["stored"] * 2)


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
