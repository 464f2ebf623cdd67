"""``conveyor repair``: bad JSON planted by an older version is found, reported and fixed."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from conveyor.cli.main import app
from conveyor.domain import jsonsafe
from conveyor.engine.worker import Worker
from conveyor.services import repair as service
from conveyor.settings import Settings
from conveyor.store.db import Database
from conveyor.store.messaging_tables import events
from conveyor.store.tables import run_events, runs, step_runs
from conveyor.testing.factories import make_automation, make_tenant, trigger
from tests.api.helpers import make_client
from tests.support.bad_json import DEPTH, nest, plant, raw

# Every column tests/support/bad_json.py plants, each in one row.
PLANTED = {
    ("contacts", "attributes"),
    ("dry_run_results", "arguments"),
    ("dry_run_results", "result"),
    ("events", "payload"),
    ("messages", "content"),
    ("messages", "error"),
    ("run_events", "data"),
    ("runs", "error"),
    ("step_runs", "output"),
    ("template_versions", "content"),
}
RUN_COLUMNS = [
    "messages.content",
    "messages.error",
    "run_events.data",
    "runs.error",
    "step_runs.output",
]


def repair(db: Database, *args: str) -> Any:
    url = db.url.render_as_string(hide_password=False)
    result = CliRunner().invoke(app, ["repair", *args, "--database-url", url])
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result


def stored_json(db: Database) -> dict[tuple[str, str, Any], str]:
    """Every JSON value of every table, as the database holds it (text)."""
    values = {}
    with db.read() as conn:
        for target in service.json_tables():
            after = None
            while True:
                rows = service.store.page(conn, target, after, 100)
                for key, _, texts in rows:
                    for column, text in texts.items():
                        values[(target.name, column, key)] = text
                if len(rows) < 100:
                    break
                after = rows[-1][0]
    return values


def history(db: Database, run_id: str) -> list[tuple[str, Any]]:
    with db.read() as conn:
        rows = conn.execute(
            select(run_events.c.type, run_events.c.data)
            .where(run_events.c.run_id == run_id)
            .order_by(run_events.c.seq)
        )
        return [(r.type, r.data) for r in rows]


def version(db: Database, run_id: str) -> int:
    with db.read() as conn:
        return int(conn.execute(select(runs.c.version).where(runs.c.id == run_id)).scalar_one())


def test_repair_reports_then_fixes_what_older_versions_stored(
    sqlite_db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    planted = plant(sqlite_db)
    before = stored_json(sqlite_db)
    run_version = version(sqlite_db, planted.run_id)

    # --dry-run reports every planted value and changes nothing.
    dry = repair(sqlite_db, "--dry-run", "-o", "json")
    found = {(r["table"], r["column"]): r for r in json.loads(dry.stdout)}
    assert set(found) == PLANTED
    for row in found.values():
        # per value: "\ud800" and a key's "\udc00", NaN and -Infinity, one sub-tree too deep
        assert (row["rows"], row["lone_surrogates"], row["non_finite"], row["too_deep"]) == (
            1,
            2,
            2,
            1,
        )
    table = repair(sqlite_db, "--dry-run").stdout
    assert "would repair 10 values in 10 columns, 1 run with them" in table
    assert "nothing was changed" in table
    assert stored_json(sqlite_db) == before
    assert version(sqlite_db, planted.run_id) == run_version
    assert "run.repaired" not in [t for t, _ in history(sqlite_db, planted.run_id)]

    # repair fixes them, counts them and says so in the run's history.
    fixed = repair(sqlite_db).stdout
    assert "repaired 10 values in 10 columns; 1 run got a run.repaired line" in fixed
    for column in ("contacts", "step_runs", "template_versions"):
        assert column in fixed
    after = stored_json(sqlite_db)
    [added] = after.keys() - before.keys()  # the run.repaired line
    assert added[:2] == ("run_events", "data")
    assert added[2][0] == planted.run_id
    changed = {(t, c) for (t, c, k), text in before.items() if text != after[(t, c, k)]}
    assert changed == PLANTED
    for text in after.values():
        assert jsonsafe.loads_sanitized(text)[1] == []
    lines = history(sqlite_db, planted.run_id)
    repaired = [data for kind, data in lines if kind == "run.repaired"]
    assert repaired == [{"columns": RUN_COLUMNS, "by": "conveyor repair"}]
    assert version(sqlite_db, planted.run_id) == run_version + 1

    # The views no longer need their fallback.
    client = make_client(sqlite_db)
    with caplog.at_level(logging.WARNING, logger="conveyor.api.safe_json"):
        output = client.get(
            f"/api/v1/runs/{planted.run_id}/steps/compute/output", headers=planted.auth
        )
        listed = client.get("/api/v1/events", headers=planted.auth)
    assert output.status_code == listed.status_code == 200
    assert output.json()["result"]["text"] == "ok \ufffd here"
    assert output.json()["result"]["nan"] is None
    assert caplog.records == []

    # A second repair finds nothing.
    assert repair(sqlite_db).stdout.strip() == "nothing to repair: every stored JSON value is clean"
    assert json.loads(repair(sqlite_db, "--dry-run", "-o", "json").stdout) == []
    assert stored_json(sqlite_db) == after


def test_repair_cuts_what_nests_too_deep_on_postgresql(pg_db: Database) -> None:
    # jsonb holds neither surrogates nor NaN, but it holds any depth.
    tenant = make_tenant(pg_db, "acme")
    make_automation(
        pg_db, tenant, {"name": "a", "steps": [{"key": "s", "type": "set", "vars": {"x": 1}}]}
    )
    run_id = trigger(pg_db, tenant, "a")
    settings = Settings(database_url=pg_db.url.render_as_string(hide_password=False))
    asyncio.run(Worker(pg_db, settings).run_until_idle())
    deep = {"deep": nest(DEPTH), "fine": [1, "é"]}
    with pg_db.transaction() as conn:
        conn.execute(
            update(step_runs).where(step_runs.c.run_id == run_id).values(output=raw(conn, deep))
        )
        conn.execute(
            events.insert().values(
                tenant_id=tenant,
                id="e1",
                name="n",
                payload=raw(conn, deep),
                occurred_at=conn.execute(select(runs.c.created_at)).scalar_one(),
                received_at=conn.execute(select(runs.c.created_at)).scalar_one(),
            )
        )

    found = json.loads(repair(pg_db, "--dry-run", "-o", "json").stdout)
    assert {(r["table"], r["column"], r["too_deep"]) for r in found} == {
        ("events", "payload", 1),
        ("step_runs", "output", 1),
    }
    assert "repaired 2 values in 2 columns; 1 run got a run.repaired line" in repair(pg_db).stdout
    with pg_db.read() as conn:
        output = conn.execute(select(step_runs.c.output)).scalar_one()
    assert output["fine"] == [1, "é"]
    assert jsonsafe.TOO_DEEP in json.dumps(output)
    assert jsonsafe.find_flaw(output) is None
    assert [d for t, d in history(pg_db, run_id) if t == "run.repaired"] == [
        {"columns": ["step_runs.output"], "by": "conveyor repair"}
    ]
    assert "nothing to repair" in repair(pg_db).stdout
