"""Shared fixtures: real SQLite and real PostgreSQL, isolated per test.

The schema is built once per session by running the migrations (SQLite: into a
template file copied per test; PostgreSQL: into a database of this test
process's own, truncated after each test). A missing PostgreSQL fails loudly.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from conveyor.store.db import Database
from conveyor.store.migrate import upgrade
from conveyor.store.tables import metadata

PG_ADMIN_URL = os.environ.get("CONVEYOR_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")

# The suite sends far more requests per key than production's rate limits allow;
# it says so explicitly (the processes tests start inherit it). Tests of the
# limits themselves set their own.
os.environ.setdefault("CONVEYOR_RATE_LIMIT", "1000000/second")
os.environ.setdefault("CONVEYOR_RATE_LIMIT_BURST", "1000000")
os.environ.setdefault("CONVEYOR_AUTH_FAILURE_LIMIT", "1000000/second")
# Dry runs in the suite simulate fixed dates, which age past the event retention
# (a dry run starting before it is refused): the suite keeps events forever unless
# a test says otherwise (tests/engine/test_retention.py).
os.environ.setdefault("CONVEYOR_RETENTION_EVENTS_DAYS", "0")
# Workers the suite starts (`serve`, `conveyor worker`) do not queue the periodic
# prune task, which would outlive the tests' own tasks; tests of it queue it.
os.environ.setdefault("CONVEYOR_RETENTION_PRUNE_INTERVAL", "0")
# Servers store secrets only with a key (conveyor.crypto); tests of a server
# without one pass `secret_key=None`.
os.environ.setdefault("CONVEYOR_SECRET_KEY", "test-secret-key-0123456789-abcdefghij")


def _pg_dbname() -> str:
    # The pid keeps concurrent pytest sessions (and xdist workers) apart.
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    return f"conveyor_test_{worker}_{os.getpid()}"


def pg_url(dbname: str | None = None) -> str:
    """SQLAlchemy URL of this test process's PostgreSQL database."""
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    return f"{base}/{dbname or _pg_dbname()}"


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """Create and migrate a PostgreSQL database for this test process."""
    name = _pg_dbname()
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {PG_ADMIN_URL} ({exc}). "
            "Start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main "
            "start` or run `make test`, which starts it.",
            pytrace=False,
        )
    with admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
        # A test database need not survive a power cut: commits do not wait for
        # the WAL to reach the disk (this database only; the server is untouched).
        admin.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    db = Database(pg_url(name))
    upgrade(db)
    db.dispose()
    yield pg_url(name)
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file that each test copies."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    db = Database(f"sqlite:///{path}")
    upgrade(db)
    db.dispose()  # closing the last connection checkpoints the WAL into the file
    return path


def _empty(db: Database) -> None:
    # DELETE, children first, rather than TRUNCATE: a test leaves a few rows, and
    # TRUNCATE of every table (new files for each, then their removal at commit)
    # cost ~150-350 ms per test here against ~15 ms for the deletes: minutes of
    # the suite over its PostgreSQL tests.
    with db.transaction() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(table.delete())


@pytest.fixture
def sqlite_db(sqlite_template: Path, tmp_path: Path) -> Iterator[Database]:
    """A fresh, migrated SQLite database."""
    path = tmp_path / "conveyor.db"
    shutil.copy(sqlite_template, path)
    db = Database(f"sqlite:///{path}")
    yield db
    db.dispose()


@pytest.fixture
def pg_db(pg_database: str) -> Iterator[Database]:
    """The migrated PostgreSQL database, emptied after the test."""
    db = Database(pg_database)
    yield db
    _empty(db)
    db.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest) -> Database:
    """Each test that takes ``db`` runs once on SQLite and once on PostgreSQL."""
    name = "sqlite_db" if request.param == "sqlite" else "pg_db"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]
