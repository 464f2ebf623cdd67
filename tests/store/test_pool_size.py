"""A process's PostgreSQL connections are bounded by CONVEYOR_DB_POOL_SIZE and _MAX_OVERFLOW.

The bound is what docs/operating.md sizes against ``max_connections``: a
process opens at most pool + overflow sessions; one more waits until a
connection is returned, and then gets it. The pool's connections are kept
once opened: a steady load at the pool's size opens no new sessions.
"""

from __future__ import annotations

import threading
from contextlib import ExitStack

import pytest
from sqlalchemy import text

from conveyor.settings import Settings
from conveyor.store.db import Database

WAIT = 30.0  # only catches a hang


@pytest.mark.parametrize(
    ("pool", "overflow", "most"),
    [(2, 1, 3), (3, None, 3), (3, 0, 3)],
    ids=["pool-and-overflow", "no-overflow-by-default", "no-overflow"],
)
def test_a_process_opens_at_most_pool_plus_overflow_sessions(
    pg_db: Database, pool: int, overflow: int | None, most: int
) -> None:
    url = pg_db.url.render_as_string(hide_password=False)
    limits = {"db_pool_size": pool} | ({} if overflow is None else {"db_max_overflow": overflow})
    db = Settings(database_url=url, **limits).service_database()
    try:
        with ExitStack() as held:
            sessions = [held.enter_context(db.engine.connect()) for _ in range(most)]
            backends = {c.execute(text("SELECT pg_backend_pid()")).scalar() for c in sessions}
            assert len(backends) == most  # each a session of its own

            got_one = threading.Event()

            def one_more() -> None:
                with db.engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
                    got_one.set()

            waiter = threading.Thread(target=one_more)
            waiter.start()
            # While all are held no further session opens (it waits in the pool) ...
            assert not got_one.wait(0.5)
            held.close()
        # ... and one returned is handed to it.
        assert got_one.wait(WAIT)
        waiter.join(WAIT)
    finally:
        db.dispose()


def test_the_pool_keeps_the_sessions_it_opened(pg_db: Database) -> None:
    """With the default settings, burst after burst of 12 sessions reuses the same ones.

    (Up to the default pool of 30; before, a pool of 10 closed the 11th and
    12th each time and opened them again for the next burst.)
    """
    url = pg_db.url.render_as_string(hide_password=False)
    db = Settings(database_url=url).service_database()

    def burst() -> set[int]:
        with ExitStack() as held:
            sessions = [held.enter_context(db.engine.connect()) for _ in range(12)]
            return {c.execute(text("SELECT pg_backend_pid()")).scalar() for c in sessions}

    try:
        first = burst()
        assert len(first) == 12
        assert burst() == first
        assert burst() == first
    finally:
        db.dispose()


def test_sqlite_ignores_the_pool_settings(sqlite_db: Database) -> None:
    url = sqlite_db.url.render_as_string(hide_password=False)
    db = Settings(database_url=url, db_pool_size=1, db_max_overflow=0).service_database()
    try:
        with db.read() as first, db.read() as second:  # readers do not queue
            assert first.execute(text("SELECT 1")).scalar() == 1
            assert second.execute(text("SELECT 1")).scalar() == 1
    finally:
        db.dispose()
