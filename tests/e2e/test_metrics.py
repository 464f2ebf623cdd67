"""Prometheus metrics, scraped from real ``conveyor serve`` and ``conveyor worker`` processes.

Runs go through the HTTP API of a real server and are executed by a real
worker with ``--metrics-port``; the scrapes must move by exactly what
happened: a completed and a failed run, their step attempts, the trigger
requests by route template. Then the access rules (a token, else loopback)
and multiprocess mode (two servers writing to one directory, one scrape
showing both).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from conveyor.clock import SystemClock
from conveyor.services import keys as key_service
from conveyor.store.db import Database
from conveyor.store.tables import runs
from conveyor.testing.factories import make_automation, make_tenant

BIN = Path(sys.executable).parent
OK = {"name": "ok", "steps": [{"key": "a", "type": "set", "vars": {"x": 1}}]}
# Rendering an unknown name fails the step: a failed run without a network.
BROKEN = {"name": "broken", "steps": [{"key": "b", "type": "set", "vars": {"y": "{{ nope.x }}"}}]}
TOKEN = "metrics-token-0123456789"
START_TIMEOUT = 60.0  # only catches a process that never starts (the host is shared)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(db_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVEYOR_", "PROMETHEUS_"))}
    env.update({"CONVEYOR_DATABASE_URL": db_url, "CONVEYOR_LOG_LEVEL": "WARNING", **extra})
    return env


@dataclass
class Spec:
    """A ``conveyor`` process to start, and a URL that answers once it is up."""

    args: list[str]
    env: dict[str, str]
    log: Path
    ready: str


@contextmanager
def _processes(*specs: Spec) -> Iterator[list[subprocess.Popen[bytes]]]:
    """The processes, all started at once, until each one's ``ready`` URL answers; stopped after."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for spec in specs:
            with spec.log.open("wb") as out:
                cmd = [str(BIN / "conveyor"), *spec.args]
                procs.append(subprocess.Popen(cmd, env=spec.env, stdout=out, stderr=out))
        deadline = time.monotonic() + START_TIMEOUT
        for spec, proc in zip(specs, procs, strict=True):
            while True:
                assert proc.poll() is None, f"{spec.args} exited early:\n{spec.log.read_text()}"
                try:
                    httpx.get(spec.ready, timeout=5.0)
                    break
                except httpx.TransportError:
                    late = time.monotonic() > deadline
                    assert not late, f"{spec.args} did not start:\n{spec.log.read_text()}"
                    time.sleep(0.1)
        yield procs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def scrape(url: str, **headers: str) -> Samples:
    """Every sample of a scrape, by name and labels."""
    response = httpx.get(url, headers=headers, timeout=60.0)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value (0 when it does not exist yet: a counter not yet incremented)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.1)


def _setup(db: Database) -> tuple[str, dict[str, str]]:
    tenant = make_tenant(db, "acme")
    with db.transaction() as conn:
        _, key = key_service.create_key(
            conn, tenant_id=tenant, scopes=["automations:trigger"], now=SystemClock().now()
        )
    make_automation(db, tenant, OK)
    make_automation(db, tenant, BROKEN)
    return tenant, {"Authorization": f"Bearer {key}"}


def _ended(db: Database) -> list[str]:
    with db.read() as conn:
        return sorted(r for (r,) in conn.execute(select(runs.c.status)))


def test_metrics_move_as_runs_flow(db: Database, tmp_path: Path) -> None:
    _, auth = _setup(db)
    url = db.url.render_as_string(hide_password=False)
    api, metrics_port = _free_port(), _free_port()
    base, worker_metrics = f"http://127.0.0.1:{api}", f"http://127.0.0.1:{metrics_port}/metrics"
    serve_env = _env(url, CONVEYOR_PORT=str(api))
    worker_env = _env(url, CONVEYOR_POLL_INTERVAL="0.1")
    with _processes(
        Spec(["serve"], serve_env, tmp_path / "serve.log", f"{base}/healthz"),
        Spec(
            ["worker", "--metrics-port", str(metrics_port)],
            worker_env,
            tmp_path / "w.log",
            worker_metrics,
        ),
    ):
        # CONVEYOR_WORKER_CONCURRENCY, once the worker has started (its /metrics comes first).
        _wait_for(
            lambda: value(scrape(worker_metrics), "conveyor_worker_slots") == 64,
            START_TIMEOUT,
            "the worker to start",
        )
        before = scrape(worker_metrics)
        for name in ("ok", "broken"):
            response = httpx.post(
                f"{base}/api/v1/automations/{name}/trigger", json={}, headers=auth, timeout=60.0
            )
            assert response.status_code == 202, response.text
        _wait_for(lambda: _ended(db) == ["completed", "failed"], 60, "both runs to end")
        _wait_for(
            lambda: (
                value(
                    scrape(worker_metrics),
                    "conveyor_runs_finished_total",
                    status="failed",
                    automation="",
                )
                == 1
            ),
            10,
            "the worker to count the failed run",
        )
        after = scrape(worker_metrics)
        served = scrape(f"{base}/metrics")

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("conveyor_runs_started_total", automation="") == 2
    assert moved("conveyor_runs_finished_total", status="completed", automation="") == 1
    assert moved("conveyor_runs_finished_total", status="failed", automation="") == 1
    assert moved("conveyor_runs_finished_total", status="cancelled", automation="") == 0
    assert moved("conveyor_step_attempts_total", step_type="set", outcome="succeeded") == 1
    assert moved("conveyor_step_attempts_total", step_type="set", outcome="failed") == 1
    assert moved("conveyor_step_attempt_duration_seconds_count", step_type="set") == 2
    assert moved("conveyor_trigger_to_start_seconds_count", automation="") == 2
    assert moved("conveyor_run_duration_seconds_count", status="failed", automation="") == 1
    assert value(after, "conveyor_worker_slots_busy") == 0
    assert value(after, "conveyor_lease_losses_total") == 0
    # The server counted the two triggers under the route's template, never the raw path.
    trigger_route = "/api/v1/automations/{automation_id}/trigger"
    labels = {"method": "POST", "route": trigger_route, "status": "202"}
    assert value(served, "conveyor_http_requests_total", **labels) == 2
    assert (
        value(
            served,
            "conveyor_http_request_duration_seconds_count",
            method="POST",
            route=trigger_route,
        )
        == 2
    )
    assert not any("/automations/ok" in dict(k[1]).get("route", "") for k in served)
    # Read from the database at the scrape: nothing is left due.
    assert value(served, "conveyor_queue_depth", kind="run") == 0
    assert value(served, "conveyor_queue_oldest_due_age_seconds", kind="run") == 0


def test_a_token_is_required_when_set(sqlite_db: Database, tmp_path: Path) -> None:
    url = sqlite_db.url.render_as_string(hide_password=False)
    api, port = _free_port(), _free_port()
    served, worker = f"http://127.0.0.1:{api}/metrics", f"http://127.0.0.1:{port}/metrics"
    env = _env(url, CONVEYOR_METRICS_TOKEN=TOKEN)
    with _processes(
        Spec(["serve"], {**env, "CONVEYOR_PORT": str(api)}, tmp_path / "s.log", served),
        Spec(
            ["worker"],
            {**env, "CONVEYOR_WORKER_METRICS_PORT": str(port)},
            tmp_path / "w.log",
            worker,
        ),
    ) as (_, worker_proc):
        for endpoint in (served, worker):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
                refused = httpx.get(endpoint, headers=headers, timeout=60.0)
                assert refused.status_code == 401, (endpoint, headers)
                assert refused.headers["content-type"] == "application/problem+json"
                assert refused.json()["code"] == "metrics_unauthorized"
                assert "conveyor_" not in refused.text
            samples = scrape(endpoint, Authorization=f"Bearer {TOKEN}")
            assert any(name.startswith("conveyor_") for name, _ in samples)
        # The worker listens on loopback only (no --metrics-host) and serves nothing else.
        listening = [
            c.laddr
            for c in psutil.Process(worker_proc.pid).net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN
        ]
        assert [(a.ip, a.port) for a in listening] == [("127.0.0.1", port)]
        other = httpx.get(worker.replace("/metrics", "/other"), timeout=60.0)
        assert other.status_code == 404


def test_two_servers_aggregate_in_one_directory(sqlite_db: Database, tmp_path: Path) -> None:
    url = sqlite_db.url.render_as_string(hide_password=False)
    shared = tmp_path / "prom"
    shared.mkdir()
    ports = [_free_port(), _free_port()]
    envs = [_env(url, CONVEYOR_PORT=str(p), PROMETHEUS_MULTIPROC_DIR=str(shared)) for p in ports]
    first, second = (f"http://127.0.0.1:{p}" for p in ports)
    with _processes(
        Spec(["serve"], envs[0], tmp_path / "a.log", f"{first}/healthz"),
        Spec(["serve"], envs[1], tmp_path / "b.log", f"{second}/healthz"),
    ):
        for _ in range(3):
            assert httpx.get(f"{first}/readyz", timeout=60.0).status_code == 200
        for _ in range(2):
            assert httpx.get(f"{second}/readyz", timeout=60.0).status_code == 200
        labels: dict[str, Any] = {"method": "GET", "route": "/readyz", "status": "200"}
        from_first = value(scrape(f"{first}/metrics"), "conveyor_http_requests_total", **labels)
        from_second = value(scrape(f"{second}/metrics"), "conveyor_http_requests_total", **labels)
    # Either process answers for both: 3 + 2, whichever is scraped.
    assert from_first == from_second == 5
    assert len(list(shared.glob("counter_*.db"))) == 2  # one file per process
