"""The migrations build exactly the schema that ``conveyor.store.tables`` describes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from conveyor.store.db import Database
from conveyor.store.migrate import alembic_config, upgrade
from conveyor.store.tables import in_dialect, metadata
from conveyor.testing.factories import make_automation, make_tenant, trigger
from tests.conftest import PG_ADMIN_URL, _pg_dbname, pg_url


def _diff(db: Database) -> list[Any]:
    with db.engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "target_metadata": metadata,
                "compare_type": True,
                "compare_server_default": True,
                "include_object": in_dialect(conn.dialect.name),
            },
        )
        return list(compare_metadata(context, metadata))


def _current_revision(db: Database) -> str | None:
    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def _head(db: Database) -> str:
    heads = ScriptDirectory.from_config(alembic_config(db)).get_heads()
    assert len(heads) == 1, f"migrations have several heads: {heads}"
    return heads[0]


def test_migrated_schema_matches_the_tables(db: Database) -> None:
    assert _diff(db) == []


def test_the_database_is_at_the_single_head(db: Database) -> None:
    assert _current_revision(db) == _head(db)


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A database with no schema at all, private to this test."""
    if request.param == "sqlite":
        db = Database(f"sqlite:///{tmp_path / 'empty.db'}")
        yield db
        db.dispose()
        return
    name = f"{_pg_dbname()}_migrations"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    db = Database(pg_url(name))
    yield db
    db.dispose()
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _downgrade(db: Database, revision: str) -> None:
    cfg = alembic_config(db)
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def test_upgrade_downgrade_upgrade_round_trip(empty_db: Database) -> None:
    upgrade(empty_db)
    assert _diff(empty_db) == []
    _downgrade(empty_db, "base")
    assert _current_revision(empty_db) is None
    with empty_db.engine.connect() as conn:
        left = set(conn.dialect.get_table_names(conn)) - {"alembic_version"}
    assert left == set()
    upgrade(empty_db)
    assert _diff(empty_db) == []
    # upgrading a database that is already at head changes nothing
    upgrade(empty_db)
    assert _current_revision(empty_db) == _head(empty_db)


def test_a_rebuilt_list_index_keeps_statistics_where_the_database_has_them(
    empty_db: Database,
) -> None:
    """SQLite with ANALYZE'd statistics: migration 0014's rebuilt index gets its own.

    With statistics for every index but the rebuilt one, SQLite took it for the
    unfiltered run list and sorted the tenant's runs. Without any statistics
    (SQLite's default) the migration adds none.
    """
    upgrade(empty_db)
    if not empty_db.is_sqlite:
        return  # PostgreSQL keeps statistics per table: nothing to restore
    index = "ix_runs_tenant_status_created"

    def stats() -> list[Any]:
        with empty_db.engine.connect() as conn:
            if (
                conn.exec_driver_sql(
                    "SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'"
                ).first()
                is None
            ):
                return []
            return list(
                conn.exec_driver_sql("SELECT idx FROM sqlite_stat1 WHERE idx = ?", (index,))
            )

    _downgrade(empty_db, "0013")
    upgrade(empty_db)
    assert stats() == []  # no statistics before: none made
    tenant = make_tenant(empty_db)  # ANALYZE keeps no row for the index of an empty table
    step = {"key": "s", "type": "set", "vars": {}}
    make_automation(empty_db, tenant, {"name": "a", "steps": [step]})
    trigger(empty_db, tenant, "a", {})
    with empty_db.engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    _downgrade(empty_db, "0013")
    upgrade(empty_db)
    assert [row[0] for row in stats()] == [index]
