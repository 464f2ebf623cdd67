"""Apply Alembic migrations programmatically (``conveyor migrate``)."""

from __future__ import annotations

import functools
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from conveyor.store.db import Database

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(db: Database) -> Config:
    """An Alembic config pointing at our migrations and ``db``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", db.url.render_as_string(hide_password=False))
    return cfg


def upgrade(db: Database, revision: str = "head") -> None:
    """Bring the schema of ``db`` up to ``revision``."""
    cfg = alembic_config(db)
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


@functools.cache
def code_heads() -> frozenset[str]:
    """The revisions this code's migrations end at (read once per process)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return frozenset(ScriptDirectory.from_config(cfg).get_heads())


def database_heads(conn: Connection) -> frozenset[str]:
    """The revisions the database's schema is at (none: never migrated)."""
    return frozenset(MigrationContext.configure(conn).get_current_heads())


def schema_is_current(conn: Connection) -> bool:
    """Whether the database's schema is at this code's head (what ``/readyz`` checks)."""
    return database_heads(conn) == code_heads()
