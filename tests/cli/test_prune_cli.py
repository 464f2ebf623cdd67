"""``conveyor prune``: prints the counts per kind; ``--dry-run`` removes nothing."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from typer.testing import CliRunner

from conveyor.cli.main import app
from conveyor.clock import FakeClock
from conveyor.engine.worker import Worker
from conveyor.services import retention
from conveyor.settings import Settings
from conveyor.store.db import Database
from conveyor.store.tables import runs
from conveyor.testing.factories import make_automation, make_tenant, trigger

MANUAL = {"name": "manual", "steps": [{"key": "one", "type": "set", "vars": {"n": 1}}]}


def _runs(db: Database) -> int:
    with db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(runs)).scalar_one())


def prune(db: Database, *args: str) -> str:
    url = db.url.render_as_string(hide_password=False)
    result = CliRunner().invoke(app, ["prune", *args, "--database-url", url])
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result.stdout


def status(db: Database, *args: str) -> str:
    url = db.url.render_as_string(hide_password=False)
    result = CliRunner().invoke(app, ["status", *args, "--database-url", url])
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result.stdout


def test_prune_prints_counts_and_dry_run_removes_nothing(db: Database) -> None:
    long_ago = datetime.now(UTC) - timedelta(days=40)
    clock = FakeClock(long_ago)
    tenant = make_tenant(db, now=long_ago)
    make_automation(db, tenant, MANUAL, now=long_ago)
    for _ in range(2):
        trigger(db, tenant, "manual", now=long_ago)
    settings = Settings(database_url=db.url.render_as_string(hide_password=False))
    asyncio.run(Worker(db, settings, clock=clock).run_until_idle())
    trigger(db, tenant, "manual")  # recent and pending: kept

    assert status(db).splitlines()[-1] == "last prune: never"
    would = json.loads(prune(db, "--dry-run", "-o", "json"))
    assert would["dry_run"] is True
    assert (would["runs"], would["steps"], would["events"]) == (2, 2, 0)
    assert _runs(db) == 3
    with db.read() as conn:
        assert retention.last_prune(conn) is None  # a dry run is not a prune

    table = prune(db)
    assert "removed" in table
    assert "runs" in table
    assert [line.split() for line in table.splitlines() if line.startswith("runs ")] == [
        ["runs", "2"]
    ]
    assert _runs(db) == 1
    with db.read() as conn:
        last = retention.last_prune(conn)
    assert last is not None
    assert last["source"] == "cli"
    assert {k: last["counts"][k] for k in ("runs", "steps")} == {"runs": 2, "steps": 2}
    # `conveyor status` shows the last prune: its source and what it removed.
    assert status(db).splitlines()[-1].startswith(f"last prune: {last['finished_at']} (cli), ")
    assert "runs 2, steps 2" in status(db).splitlines()[-1]
    assert json.loads(status(db, "-o", "json"))["last_prune"] == last
    assert json.loads(prune(db, "-o", "json"))["runs"] == 0
