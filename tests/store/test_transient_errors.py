"""Transactions PostgreSQL aborts (deadlocks) are run again (``Database.retrying``).

The deadlock is real: another connection locks two rows in the opposite order.
It waits ten seconds before checking for deadlocks and our transaction one
(PostgreSQL's default), so ours is always the one aborted.
"""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import Connection, text, update
from sqlalchemy.exc import DBAPIError

from conveyor.store.db import Database, is_transient
from conveyor.store.tables import tenants
from conveyor.testing.factories import make_tenant


def _touch(conn: Connection, tenant_id: str, name: str) -> None:
    conn.execute(update(tenants).where(tenants.c.id == tenant_id).values(name=name))


def test_a_deadlocked_transaction_is_run_again(pg_db: Database) -> None:
    first, second = make_tenant(pg_db, "first"), make_tenant(pg_db, "second")
    both_hold_one = threading.Barrier(2, timeout=20)
    other_done = threading.Event()

    def other() -> None:
        with pg_db.transaction() as conn:
            conn.execute(text("SET LOCAL deadlock_timeout = '10s'"))
            _touch(conn, first, "other-1")
            both_hold_one.wait()
            _touch(conn, second, "other-2")  # waits for ours, which waits for this
        other_done.set()

    attempts: list[int] = []

    def ours(conn: Connection) -> str:
        attempts.append(1)
        if len(attempts) > 1:
            # Let the other finish first: were the retry to take `second` before
            # it, the two would simply deadlock again (and be retried again).
            assert other_done.wait(20)
        _touch(conn, second, "ours-2")
        if len(attempts) == 1:
            both_hold_one.wait()
        _touch(conn, first, "ours-1")  # the first time: a deadlock, and we are aborted
        return "done"

    thread = threading.Thread(target=other)
    thread.start()
    try:
        assert pg_db.retrying(ours) == "done"
    finally:
        thread.join(30)
    assert other_done.is_set()
    assert len(attempts) == 2
    with pg_db.read() as conn:
        names = dict(conn.execute(text("SELECT id, name FROM tenants")).all())
    assert {str(k): v for k, v in names.items()} == {first: "ours-1", second: "ours-2"}


def test_other_errors_are_not_retried(pg_db: Database) -> None:
    attempts: list[int] = []

    def broken(conn: Connection) -> None:
        attempts.append(1)
        conn.execute(text("SELECT 1/0"))

    with pytest.raises(DBAPIError) as raised:
        pg_db.retrying(broken)
    assert not is_transient(raised.value)
    assert len(attempts) == 1
