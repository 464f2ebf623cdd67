"""``conveyor events send`` against a real server (uvicorn on a free port) over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from conveyor.api.app import create_app
from conveyor.cli.main import app
from conveyor.clock import SystemClock
from conveyor.services import keys as key_service
from conveyor.settings import Settings
from conveyor.store.db import Database
from conveyor.store.messaging_tables import events
from conveyor.testing.factories import make_tenant
from tests.api.live import live_server


@pytest.fixture
def env(sqlite_db: Database) -> Iterator[dict[str, str]]:
    """``CONVEYOR_URL`` and ``CONVEYOR_API_KEY`` of a live server on SQLite."""
    tenant = make_tenant(sqlite_db, "acme")
    with sqlite_db.transaction() as conn:
        _, key = key_service.create_key(
            conn, tenant_id=tenant, scopes=["events:write"], label="cli", now=SystemClock().now()
        )
    settings = Settings(database_url=sqlite_db.url.render_as_string(hide_password=False))
    with live_server(create_app(settings, db=sqlite_db)) as url:
        yield {"CONVEYOR_URL": url, "CONVEYOR_API_KEY": key}


def send(env: dict[str, str], *args: str, stdin: str | None = None) -> Any:
    return CliRunner().invoke(app, ["events", "send", *args], env=env, input=stdin)


def stored(db: Database) -> dict[str, Any]:
    with db.read() as conn:
        return {r["id"]: r for r in conn.execute(select(events)).mappings()}


def test_send_one_event_from_options(sqlite_db: Database, env: dict[str, str]) -> None:
    args = [
        "--name",
        "order.completed",
        "--id",
        "order-1",
        "--identity-email",
        "ada@example.com",
        "--payload",
        '{"total": 120}',
        "--occurred-at",
        "2026-03-01T12:00:00Z",
        "-o",
        "json",
    ]
    result = send(env, *args)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    answer = json.loads(result.stdout)  # the API's answer, as it came
    assert (answer["accepted"], answer["duplicates"], answer["rejected"]) == (1, 0, 0)
    (item,) = answer["results"]
    assert (item["id"], item["status"]) == ("order-1", "accepted")
    event = stored(sqlite_db)["order-1"]
    assert event["payload"] == {"total": 120}
    assert event["identity"] == {"type": "email", "value": "ada@example.com"}

    again = send(env, *args[:-2])  # a table this time
    assert again.exit_code == 0
    header, row = again.stdout.splitlines()
    assert header.split()[:3] == ["INDEX", "ID", "STATUS"]
    assert row.split()[:3] == ["0", "order-1", "duplicate"]


def test_send_a_file_in_batches(sqlite_db: Database, env: dict[str, str], tmp_path: Path) -> None:
    lines = [json.dumps({"id": f"e{i}", "name": "ping"}) for i in range(1203)]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8")
    result = send(env, "-f", str(path), "-o", "jsonl")
    assert result.exit_code == 0, result.stderr
    results = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["index"] for r in results] == list(range(1203))
    assert {r["status"] for r in results} == {"accepted"}
    assert len(stored(sqlite_db)) == 1203


def test_rejected_events_exit_non_zero(sqlite_db: Database, env: dict[str, str]) -> None:
    body = json.dumps({"events": [{"id": "ok", "name": "ping"}, {"id": "bad"}]})
    result = send(env, "-f", "-", "-o", "jsonl", stdin=body)
    assert result.exit_code == 1
    good, bad = (json.loads(line) for line in result.stdout.splitlines())
    assert (good["status"], bad["status"], bad["code"]) == (
        "accepted",
        "rejected",
        "validation_error",
    )
    assert "1 of 2 events rejected" in result.stderr
    assert set(stored(sqlite_db)) == {"ok"}

    assert "give --name" in send(env).stderr
    both = send(env, "--name", "x", "--identity-email", "a@b.c", "--identity-external-id", "y")
    assert both.exit_code == 1
    assert "at most one of" in both.stderr
    assert "401" in send({**env, "CONVEYOR_API_KEY": "cvk_nope"}, "--name", "x").stderr
