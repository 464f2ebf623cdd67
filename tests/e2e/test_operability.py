"""Logs, readiness and `conveyor status` for real: `conveyor serve` and `conveyor worker` processes.

- JSON log lines (the default of serve and worker when stderr is not a
  terminal) parse, uvicorn's included; the access line carries the request id
  and the tenant; `X-Request-ID` is echoed, a hostile one replaced; a failed
  run leaves its line with its error code, tenant and run id.
- `/readyz` is 503 on an empty database and on one a migration behind, 200 at
  head (SQLite and PostgreSQL).
- `conveyor status` shows the queue, two live workers, then one alive and one
  dead after a `kill -9` (past CONVEYOR_WORKER_DEAD_SECONDS), and a cleanly
  stopped worker gone.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from conveyor.domain.scopes import ALL_SCOPES
from conveyor.services import keys as key_service
from conveyor.services.runs import get_run_detail
from conveyor.services.status import engine_status
from conveyor.store.db import Database
from conveyor.store.migrate import upgrade
from conveyor.testing.factories import make_automation, make_tenant, trigger
from tests.conftest import PG_ADMIN_URL, pg_url
from tests.support.http_server import HitServer
from tests.support.smtp_server import free_port

CONVEYOR = Path(sys.executable).with_name("conveyor")
GENERATED_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _wait_for(what: str, predicate: Callable[[], bool], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def _start(command: str, url: str, log: Path, **env: str) -> subprocess.Popen[bytes]:
    """``conveyor <command>`` on ``url``, stdout and stderr into ``log`` (not a terminal)."""
    environ = {k: v for k, v in os.environ.items() if k != "CONVEYOR_LOG_FORMAT"}
    environ.update(
        {
            "CONVEYOR_DATABASE_URL": url,
            "CONVEYOR_POLL_INTERVAL": "0.2",
            "CONVEYOR_EGRESS_ALLOW": "127.0.0.1/32",
            "CONVEYOR_LOG_LEVEL": "INFO",
            **env,
        }
    )
    with log.open("wb") as out:  # the child keeps its own descriptor
        return subprocess.Popen([str(CONVEYOR), command], env=environ, stdout=out, stderr=out)


def _stop(*procs: subprocess.Popen[bytes]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        p.wait(30)


def _up(api: str) -> bool:
    try:
        return httpx.get(f"{api}/healthz", timeout=2).is_success
    except httpx.HTTPError:
        return False


def _json_lines(log: Path) -> list[dict[str, Any]]:
    """Every line of ``log``, each of which must be one JSON object."""
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON log line in {log.name}: {line!r}")
    return parsed


def _url(db: Database) -> str:
    return db.url.render_as_string(hide_password=False)


def test_json_logs_carry_the_ids_and_a_failed_run_leaves_its_line(
    sqlite_db: Database, http_server: HitServer, tmp_path: Path
) -> None:
    tenant = make_tenant(sqlite_db, "logs")
    with sqlite_db.transaction() as conn:
        _, key = key_service.create_key(
            conn, tenant_id=tenant, scopes=ALL_SCOPES, label="t", now=datetime.now(UTC)
        )
    step = {"key": "call", "type": "http_request", "url": f"{http_server.url}/status/500/x"}
    make_automation(sqlite_db, tenant, {"name": "fails", "steps": [step]})
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    serve = _start("serve", _url(sqlite_db), tmp_path / "serve.log", CONVEYOR_PORT=str(port))
    worker = _start("worker", _url(sqlite_db), tmp_path / "worker.log", CONVEYOR_WORKER_ID="w")
    hostile = 'evil id" injected=1'
    try:
        _wait_for("the server", lambda: _up(api))
        headers = {"Authorization": f"Bearer {key}", "X-Request-ID": "trace-abc.123"}
        answer = httpx.post(f"{api}/api/v1/automations/fails/trigger", json={}, headers=headers)
        assert answer.status_code == 202, answer.text
        assert answer.headers["x-request-id"] == "trace-abc.123"
        run_id = answer.json()["id"]
        replaced = {
            sent: httpx.get(f"{api}/healthz", headers={"X-Request-ID": sent}).headers[
                "x-request-id"
            ]
            for sent in (hostile, "x" * 129)
        }
        own = httpx.get(f"{api}/healthz").headers["x-request-id"]

        def ended() -> bool:
            with sqlite_db.read() as conn:
                return get_run_detail(conn, tenant, run_id)["status"] == "failed"

        _wait_for("the run to fail", ended)
    finally:
        _stop(serve, worker)
    for sent, got in replaced.items():
        assert got != sent
        assert GENERATED_ID.fullmatch(got), got
    assert GENERATED_ID.fullmatch(own)

    served = _json_lines(tmp_path / "serve.log")
    assert all({"ts", "level", "logger", "msg"} <= line.keys() for line in served)
    assert any(line["logger"].startswith("uvicorn") for line in served), "uvicorn's own lines"
    access = [line for line in served if line["logger"] == "conveyor.access"]
    trigger_line = next(line for line in access if line["request_id"] == "trace-abc.123")
    assert trigger_line["tenant_id"] == tenant
    assert trigger_line["method"] == "POST"
    assert trigger_line["path"] == "/api/v1/automations/fails/trigger"
    assert trigger_line["status"] == 202
    assert trigger_line["duration_ms"] >= 0
    health_ids = {line["request_id"] for line in access if line["path"] == "/healthz"}
    assert set(replaced.values()) | {own} <= health_ids
    assert "tenant_id" not in next(line for line in access if line["request_id"] == own)
    text = (tmp_path / "serve.log").read_text()
    assert "evil id" not in text
    assert key not in text

    lines = _json_lines(tmp_path / "worker.log")
    ended_line = next(line for line in lines if line["logger"] == "conveyor.runs")
    assert ended_line["run_id"] == run_id
    assert ended_line["tenant_id"] == tenant
    assert ended_line["status"] == "failed"
    assert ended_line["error_code"] == "unexpected_status"
    assert ended_line["step_key"] == "call"
    assert ended_line["level"] == "WARNING"


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a database with no schema at all."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    name = f"conveyor_ready_{os.getpid()}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    yield pg_url(name)
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_readyz_is_503_until_the_schema_is_at_head(empty_database: str, tmp_path: Path) -> None:
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    serve = _start("serve", empty_database, tmp_path / "serve.log", CONVEYOR_PORT=str(port))
    db = Database(empty_database)
    try:
        _wait_for("the server", lambda: _up(api))
        empty = httpx.get(f"{api}/readyz")
        assert empty.status_code == 503
        assert empty.headers["content-type"] == "application/problem+json"
        assert empty.json()["code"] == "not_ready"
        upgrade(db, "0008")  # a schema, but older than this version's head
        behind = httpx.get(f"{api}/readyz")
        assert behind.status_code == 503
        assert "conveyor migrate" in behind.json()["detail"]
        upgrade(db)
        ready = httpx.get(f"{api}/readyz")
        assert ready.status_code == 200, ready.text
        assert httpx.get(f"{api}/healthz").status_code == 200
    finally:
        _stop(serve)
        db.dispose()


def _status(db: Database) -> dict[str, Any]:
    with db.read() as conn:
        return engine_status(conn, datetime.now(UTC), timedelta(seconds=DEAD_SECONDS))


def _states(db: Database) -> dict[str, str]:
    return {w["name"]: w["state"] for w in _status(db)["workers"]}


def _cli_status(db: Database, *args: str) -> str:
    env = {**os.environ, "CONVEYOR_DATABASE_URL": _url(db)}
    env["CONVEYOR_WORKER_DEAD_SECONDS"] = str(DEAD_SECONDS)
    done = subprocess.run(
        [str(CONVEYOR), "status", *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


DEAD_SECONDS = 3.0


def test_status_shows_the_queue_and_two_workers_then_one_after_a_kill(
    pg_db: Database, tmp_path: Path
) -> None:
    tenant = make_tenant(pg_db, "ops")
    steps = [{"key": "later", "type": "delay", "duration": "PT1H"}]
    make_automation(pg_db, tenant, {"name": "sleeper", "steps": steps})
    for _ in range(3):
        trigger(pg_db, tenant, "sleeper")
    before = json.loads(_cli_status(pg_db, "-o", "json"))
    assert before["workers"] == []
    (runs,) = [q for q in before["queue"] if q["kind"] == "run"]
    assert runs["due"] == 3
    assert runs["oldest_due_age_seconds"] >= 0

    env = {"CONVEYOR_WORKER_DEAD_SECONDS": str(DEAD_SECONDS), "CONVEYOR_LEASE_SECONDS": "3"}
    workers = {
        name: _start(
            "worker", _url(pg_db), tmp_path / f"{name}.log", CONVEYOR_WORKER_ID=name, **env
        )
        for name in ("w1", "w2")
    }
    try:
        _wait_for("two live workers", lambda: _states(pg_db) == {"w1": "alive", "w2": "alive"})

        def parked() -> bool:
            queue = {q["kind"]: q for q in _status(pg_db)["queue"]}
            return queue["run"]["due"] == 0 and queue["run"]["later"] == 3

        _wait_for("the runs to park until their delay", parked)
        shown = _status(pg_db)
        assert shown["workers_alive"] == 2
        assert {w["slots_total"] for w in shown["workers"]} == {64}

        workers["w2"].kill()  # SIGKILL: no clean stop, its row stays
        workers["w2"].wait(10)
        _wait_for("w2 to be dead", lambda: _states(pg_db) == {"w1": "alive", "w2": "dead"})
        table = _cli_status(pg_db)
        assert "workers: 1 alive, 1 dead" in table
        assert "w2" in table
        assert "dead" in table

        _stop(workers["w1"])  # a clean stop removes its row
        assert workers["w1"].returncode == 0, (tmp_path / "w1.log").read_text()
        assert _states(pg_db) == {"w2": "dead"}
    finally:
        _stop(*workers.values())
