"""Every way the store writes JSON cleans it: a plain INSERT, ``insert_new``, ``copy_rows``,
``insert_many`` (its unnest path on PostgreSQL).

On both databases: what JSON cannot hold (NaN, Infinity, lone surrogates,
nesting past 64) is stored replaced, never refused by jsonb nor left to break
a later read on SQLite.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Connection, Table, select

from conveyor.domain.jsonsafe import TOO_DEEP
from conveyor.store.batch import copy_rows, insert_many, insert_new, insert_unnested
from conveyor.store.db import Database
from conveyor.store.messaging_tables import events
from conveyor.testing.factories import make_tenant
from tests.support.bad_json import bad_value, depth


def _insert(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    conn.execute(table.insert(), rows)


def _insert_new(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    insert_new(conn, table, rows, table.c.id)


def _insert_many(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    # The unnest path serves 2-15 rows on PostgreSQL; called directly, it takes one too.
    if conn.dialect.name == "postgresql":
        insert_unnested(conn, table, rows)
    else:
        insert_many(conn, table, rows)


WRITERS: dict[str, Callable[[Connection, Table, list[dict[str, Any]]], None]] = {
    "insert": _insert,
    "insert_new": _insert_new,
    "copy_rows": copy_rows,
    "insert_many": _insert_many,
}


@pytest.mark.parametrize("write", WRITERS.values(), ids=WRITERS.keys())
def test_bad_json_is_stored_replaced(
    db: Database,
    write: Callable[[Connection, Table, list[dict[str, Any]]], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    tenant = make_tenant(db)
    now = datetime.now(UTC)
    clean = {"a": [1, 2.5, "é", "😀"], "b": None}
    rows = [
        {
            "tenant_id": tenant,
            "id": f"e{i}",
            "name": "n",
            "contact_id": None,
            "identity": None,
            "payload": payload,
            "occurred_at": now,
            "received_at": now,
        }
        for i, payload in enumerate([bad_value(), clean])
    ]
    with caplog.at_level(logging.WARNING, logger="conveyor.store.json"), db.transaction() as conn:
        write(conn, events, rows)
    with db.read() as conn:
        bad, fine = conn.execute(select(events.c.payload).order_by(events.c.id)).scalars()
    assert fine == clean
    deep = bad.pop("deep")
    assert bad == {
        "text": "ok \ufffd here",
        "key \ufffd": 1,
        "nan": None,
        "inf": None,
        "fine": {"a": [1, 2.5, "é"]},
    }
    assert depth(deep) == 63  # the payload is depth 1
    assert TOO_DEEP in str(deep)
    [record] = caplog.records
    assert "replaced 5 flaw(s)" in record.getMessage()
    assert "here" not in record.getMessage()  # places, not content


@pytest.mark.parametrize("write", WRITERS.values(), ids=WRITERS.keys())
def test_nul_is_stored_replaced(
    db: Database, write: Callable[[Connection, Table, list[dict[str, Any]]], None]
) -> None:
    # jsonb refuses the escape \u0000 ("unsupported Unicode escape sequence"):
    # an engine value holding NUL (an HTTP answer, say) failed its whole write.
    tenant = make_tenant(db)
    now = datetime.now(UTC)
    row = {
        "tenant_id": tenant,
        "id": "e1",
        "name": "n",
        "contact_id": None,
        "identity": None,
        "payload": {"text": "a\x00b", "k\x00": ["\x00"]},
        "occurred_at": now,
        "received_at": now,
    }
    with db.transaction() as conn:
        write(conn, events, [row])
    with db.read() as conn:
        stored = conn.execute(select(events.c.payload)).scalar_one()
    assert stored == {"text": "a\ufffdb", "k\ufffd": ["\ufffd"]}
