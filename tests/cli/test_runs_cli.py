"""``conveyor runs ...`` against a real server (uvicorn on a free port) over HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from conveyor.api.app import create_app
from conveyor.cli.main import app
from conveyor.clock import SystemClock
from conveyor.engine.worker import Worker
from conveyor.services import keys as key_service
from conveyor.settings import Settings
from conveyor.store.db import Database
from conveyor.testing.factories import make_automation, make_tenant, trigger
from tests.api.live import live_server

OK = {"name": "ok", "tags": ["nightly"], "steps": [{"key": "a", "type": "set", "vars": {"x": 1}}]}
# Rendering an unknown name fails the step: a failed run without a network.
BROKEN = {
    "name": "broken",
    "steps": [
        {"key": "a", "type": "set", "vars": {"x": 1}},
        {"key": "b", "type": "set", "vars": {"y": "{{ nothing.here }}"}},
    ],
}


class Server:
    """A tenant on a live server, and a worker to run what is triggered."""

    def __init__(self, db: Database, url: str) -> None:
        self.db = db
        self.url = url
        self.tenant = make_tenant(db, "acme")
        with db.transaction() as conn:
            _, self.key = key_service.create_key(
                conn,
                tenant_id=self.tenant,
                scopes=["runs:read", "runs:write"],
                label="cli",
                now=SystemClock().now(),
            )
        make_automation(db, self.tenant, OK)
        make_automation(db, self.tenant, BROKEN)
        self.settings = Settings(database_url=db.url.render_as_string(hide_password=False))

    @property
    def env(self) -> dict[str, str]:
        return {"CONVEYOR_URL": self.url, "CONVEYOR_API_KEY": self.key}

    def api_post(self, path: str, body: dict[str, Any], scopes: list[str]) -> Any:
        """POST as a key with these scopes; the JSON answer."""
        with self.db.transaction() as conn:
            _, key = key_service.create_key(
                conn, tenant_id=self.tenant, scopes=scopes, now=SystemClock().now()
            )
        headers = {"Authorization": f"Bearer {key}"}
        response = httpx.post(f"{self.url}/api/v1{path}", json=body, headers=headers, timeout=60.0)
        assert response.is_success, response.text
        return response.json()

    def trigger(self, name: str) -> str:
        return trigger(self.db, self.tenant, name)

    def work(self) -> None:
        asyncio.run(Worker(self.db, self.settings).run_until_idle())


@pytest.fixture
def server(sqlite_db: Database) -> Iterator[Server]:
    """The API on a SQLite database, served on 127.0.0.1."""
    settings = Settings(database_url=sqlite_db.url.render_as_string(hide_password=False))
    with live_server(create_app(settings, db=sqlite_db)) as url:
        yield Server(sqlite_db, url)


def api_get(server: Server, path: str, **params: str) -> Any:
    """What the API answers, to compare with what the CLI printed."""
    headers = {"Authorization": f"Bearer {server.key}"}
    response = httpx.get(f"{server.url}/api/v1{path}", params=params, headers=headers, timeout=60.0)
    assert response.status_code == 200, response.text
    return response.json()


def cli(server: Server, *args: str, env: dict[str, str] | None = None) -> Any:
    """Run ``conveyor runs ARGS`` against the server."""
    return CliRunner().invoke(app, ["runs", *args], env={**server.env, **(env or {})})


def ok(result: Any) -> str:
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return str(result.stdout)


def failed(result: Any) -> str:
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert result.stdout == ""
    return str(result.stderr)


def test_list_with_filters_and_formats(server: Server) -> None:
    good = [server.trigger("ok") for _ in range(3)]
    bad = server.trigger("broken")
    server.work()

    table = ok(cli(server, "list"))
    header, *rows = table.splitlines()
    assert header.split() == ["ID", "STATUS", "AUTOMATION", "CREATED"]  # what fits 80 columns
    assert max(len(line) for line in table.splitlines()) <= 80
    assert [r.split()[0] for r in rows] == [bad, *reversed(good)]
    assert rows[0].split()[1:3] == ["failed", "broken"]

    as_json = json.loads(ok(cli(server, "list", "--status", "failed", "-o", "json")))
    assert [r["id"] for r in as_json["items"]] == [bad]
    assert as_json == api_get(server, "/runs", status="failed")  # exactly the API's page
    lines = ok(cli(server, "list", "--automation", "ok", "--output", "jsonl")).splitlines()
    assert [json.loads(line)["id"] for line in lines] == list(reversed(good))
    tagged = ok(cli(server, "list", "--tag", "nightly", "-o", "jsonl")).splitlines()
    assert len(tagged) == 3
    assert ok(cli(server, "list", "--dry-run", "-o", "jsonl")) == ""


def test_list_walks_every_page(server: Server) -> None:
    ids = [server.trigger("ok") for _ in range(5)]
    first = cli(server, "list", "--limit", "2")
    assert len(ok(first).splitlines()) == 3  # header and two runs
    assert "2 of 5 runs; next page: --cursor " in first.stderr
    every = ok(cli(server, "list", "--limit", "2", "--all", "-o", "jsonl")).splitlines()
    assert [json.loads(line)["id"] for line in every] == list(reversed(ids))
    cursor = first.stderr.rsplit("--cursor ", 1)[1].strip()
    rest = ok(cli(server, "list", "--limit", "2", "--cursor", cursor, "-o", "json"))
    assert [r["id"] for r in json.loads(rest)["items"]] == list(reversed(ids))[2:4]


def test_failures_exit_non_zero_with_the_problem(server: Server, tmp_path: Path) -> None:
    bad_status = failed(cli(server, "list", "--status", "done"))
    assert "invalid input" in bad_status
    assert "query.status.0" in bad_status
    assert "invalid_cursor" in failed(cli(server, "list", "--cursor", "nonsense"))
    assert "automation nope not found" in failed(cli(server, "list", "--automation", "nope"))
    missing = "01934a5e-0000-7000-8000-000000000000"
    assert f"run {missing} not found (404, run_not_found)" in failed(cli(server, "show", missing))
    no_key = cli(server, "list", env={"CONVEYOR_API_KEY": ""})
    assert "an API key is required" in failed(no_key)
    wrong_key = failed(cli(server, "list", env={"CONVEYOR_API_KEY": "cvk_nope"}))
    assert "401" in wrong_key
    down = failed(cli(server, "list", "--url", "http://127.0.0.1:9"))
    assert "cannot reach http://127.0.0.1:9" in down


def test_show(server: Server) -> None:
    run_id = server.trigger("broken")
    server.work()
    table = ok(cli(server, "show", run_id))
    assert table.splitlines()[0].split() == ["id", run_id]
    assert "failed" in table
    assert "KEY" in table
    step_lines = [line.split() for line in table.splitlines() if line.startswith(("a ", "b "))]
    assert [(s[0], s[2]) for s in step_lines] == [("a", "completed"), ("b", "failed")]
    detail = json.loads(ok(cli(server, "show", run_id, "-o", "json")))
    assert detail["id"] == run_id
    assert [s["status"] for s in detail["steps"]] == ["completed", "failed"]


def test_steps_and_output(server: Server) -> None:
    run_id = server.trigger("broken")
    server.work()
    overview = json.loads(ok(cli(server, "steps", run_id, "-o", "json")))
    assert overview == api_get(server, f"/runs/{run_id}/steps")  # exactly the API's answer
    lines = ok(cli(server, "steps", run_id, "-o", "jsonl")).splitlines()
    assert [json.loads(line) for line in lines] == overview["steps"]
    table = cli(server, "steps", run_id)
    rows = [line.split() for line in ok(table).splitlines()]
    assert rows[0][:3] == ["KEY", "TYPE", "STATUS"]
    assert [(r[0], r[2]) for r in rows[1:]] == [("a", "completed"), ("b", "failed")]
    assert max(len(line) for line in table.stdout.splitlines()) <= 80
    assert table.stderr == f"run {run_id} failed: 1 completed, 1 failed\n"

    whole = json.loads(ok(cli(server, "output", run_id, "a", "-o", "json")))
    assert whole == api_get(server, f"/runs/{run_id}/steps/a/output")
    assert (whole["step_key"], whole["result"]) == ("a", {"x": 1})
    shown = ok(cli(server, "output", run_id, "a"))
    assert shown.splitlines()[0].split() == ["run_id", run_id]
    assert shown.endswith('\n{\n  "x": 1\n}\n')
    assert "output_not_available" in failed(cli(server, "output", run_id, "b"))
    assert "step_not_found" in failed(cli(server, "output", run_id, "nope"))
    missing = "01934a5e-0000-7000-8000-000000000000"
    assert "run_not_found" in failed(cli(server, "steps", missing))


def test_events(server: Server) -> None:
    run_id = server.trigger("ok")
    server.work()
    history = json.loads(ok(cli(server, "events", run_id, "-o", "json")))
    assert history == api_get(server, f"/runs/{run_id}/events")  # one page holds it all
    items = history["items"]
    types = [e["type"] for e in items]
    assert types[0] == "run.created"
    assert types[-1] == "run.completed"
    table = ok(cli(server, "events", run_id)).splitlines()
    assert len(table) == len(items)
    assert "run.created" in table[0]
    # a finished run's stream gives its whole history, then ends
    followed = ok(cli(server, "events", run_id, "--follow", "-o", "jsonl")).splitlines()
    assert [json.loads(line) for line in followed] == items


def test_events_follow_prints_events_as_they_happen(server: Server) -> None:
    run_id = server.trigger("ok")
    env = {**os.environ, **server.env, "COLUMNS": "200"}
    conveyor = str(Path(sys.executable).with_name("conveyor"))
    command = [conveyor, "runs", "events", run_id, "--follow"]
    with subprocess.Popen(
        [*command, "-o", "jsonl"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        assert first["type"] == "run.created"
        # the follower is connected and waiting; now the run happens
        server.work()
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    later = [json.loads(line) for line in out.decode().splitlines()]
    assert later[-1]["type"] == "run.completed"
    assert [e["seq"] for e in [first, *later]] == list(range(1, len(later) + 2))


def test_cancel(server: Server) -> None:
    run_id = server.trigger("ok")
    cancelled = json.loads(ok(cli(server, "cancel", run_id, "--reason", "test", "-o", "json")))
    assert (cancelled["id"], cancelled["status"]) == (run_id, "cancelled")
    again = failed(cli(server, "cancel", run_id))
    assert "run_not_cancellable" in again


def test_retry_and_replay(server: Server) -> None:
    run_id = server.trigger("broken")
    server.work()
    retried = json.loads(
        ok(cli(server, "retry", run_id, "--mode", "from_step", "--step", "a", "-o", "json"))
    )
    assert retried["retry_of"] == run_id
    assert retried["id"] != run_id
    replayed = json.loads(ok(cli(server, "replay", run_id, "--reason", "again", "-o", "json")))
    assert replayed["retry_of"] == run_id
    # A new payload starts the automation anew: runs:write alone is not enough.
    refused = failed(cli(server, "retry", run_id, "--mode", "full", "--payload", '{"n": 1}'))
    assert "automations:trigger" in refused
    with server.db.transaction() as conn:
        _, trigger_key = key_service.create_key(
            conn,
            tenant_id=server.tenant,
            scopes=["runs:write", "automations:trigger"],
            now=SystemClock().now(),
        )
    full = ok(
        cli(
            server,
            "retry",
            run_id,
            "--mode",
            "full",
            "--payload",
            '{"n": 1}',
            env={"CONVEYOR_API_KEY": trigger_key},
        )
    )
    assert "broken" in full
    assert "mode" in failed(cli(server, "retry", run_id, "--mode", "sideways"))
    assert "not valid JSON" in failed(cli(server, "retry", run_id, "--payload", "{nope"))


def test_dry_runs_cancel(server: Server) -> None:
    # No worker here: the dry run waits, queued, until it is cancelled.
    contact = server.api_post("/contacts", {"email": "dry@example.com"}, ["contacts:write"])
    with server.db.transaction() as conn:
        _, key = key_service.create_key(
            conn,
            tenant_id=server.tenant,
            scopes=["automations:trigger", "dry-runs:read"],
            now=SystemClock().now(),
        )
    env = {"CONVEYOR_API_KEY": key}
    args = [
        "create",
        "ok",
        "--profile-id",
        contact["id"],
        "--start-date",
        "2026-06-01",
        "--end-date",
        "2026-06-02",
        "-o",
        "json",
    ]
    created = CliRunner().invoke(app, ["dry-runs", *args], env={**server.env, **env})
    queued = json.loads(ok(created))
    assert queued["status"] == "queued"
    cancel = ["dry-runs", "cancel", queued["id"], "-o", "json"]
    cancelled = json.loads(ok(CliRunner().invoke(app, cancel, env={**server.env, **env})))
    assert (cancelled["id"], cancelled["status"]) == (queued["id"], "cancelled")
    again = CliRunner().invoke(app, cancel, env={**server.env, **env})
    assert (again.exit_code, json.loads(again.stdout)["status"]) == (0, "cancelled")  # a no-op


def test_every_runs_option_shows_its_environment_variable(server: Server) -> None:
    commands = ("list", "show", "steps", "output", "events", "cancel", "retry", "replay")
    for command in (*commands, "bulk-cancel", "bulk-replay", "bulk-show"):
        result = cli(server, command, "--help", env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
        help_text = ok(result)
        options = [w for w in help_text.split() if w.startswith("--") and w != "--help"]
        assert help_text.count("env var: CONVEYOR_") == len(set(options)), (command, help_text)
