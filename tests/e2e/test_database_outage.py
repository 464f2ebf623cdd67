"""A database outage for real: PostgreSQL cut off for 10 s under load, nothing restarted.

``conveyor serve`` and two ``conveyor worker`` processes reach PostgreSQL
through a TCP proxy that the test cuts (every connection closed, new ones
refused) for 10 s, shorter than the lease, while a client keeps triggering
runs whose steps call a local HTTP server. Afterwards every run the API
acknowledged completes without anything being restarted, the API answered
503 (never 500) meanwhile, and no HTTP call was made twice: a call that
completed while the database was away was recorded once it came back.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from conveyor.domain.scopes import ALL_SCOPES
from conveyor.services import keys as key_service
from conveyor.store.db import Database
from conveyor.store.tables import runs
from conveyor.testing.factories import make_automation, make_tenant
from tests.support.http_server import HitServer
from tests.support.smtp_server import free_port
from tests.support.tcp_proxy import running_proxy

CONVEYOR = Path(sys.executable).with_name("conveyor")
OUTAGE_SECONDS = 10


def _wait_for(what: str, predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def _completed(db: Database, ids: list[str]) -> int:
    with db.read() as conn:
        query = select(func.count()).where(runs.c.id.in_(ids), runs.c.status == "completed")
        return int(conn.execute(query.select_from(runs)).scalar_one())


class Load:
    """Triggers a run every few tens of milliseconds; keeps every answer."""

    def __init__(self, url: str, key: str) -> None:
        self.url, self.key = url, key
        self.answers: Counter[int] = Counter()
        self.during_cut: Counter[int] = Counter()
        self.acknowledged: list[str] = []
        self.cut = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=30) as client:
            while not self._stop.is_set():
                response = client.post("/api/v1/automations/calls/trigger", json={})
                self.answers[response.status_code] += 1
                if self.cut:
                    self.during_cut[response.status_code] += 1
                if response.status_code == 202:
                    self.acknowledged.append(response.json()["id"])
                time.sleep(0.03)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)


@pytest.mark.slow
def test_an_outage_is_waited_out_and_nothing_is_lost_or_repeated(
    pg_db: Database, http_server: HitServer, tmp_path: Path
) -> None:
    tenant = make_tenant(pg_db, "outage")
    with pg_db.transaction() as conn:
        _, key = key_service.create_key(
            conn, tenant_id=tenant, scopes=ALL_SCOPES, label="t", now=datetime.now(UTC)
        )
    # The second call takes a second: calls are in flight when the cut comes,
    # and complete while the database is away.
    paths = {"a": "/ok/{{ run.id }}/a", "b": "/sleep/1/{{ run.id }}/b"}
    steps = [
        {"key": f"call_{s}", "type": "http_request", "url": http_server.url + path}
        for s, path in paths.items()
    ]
    make_automation(pg_db, tenant, {"name": "calls", "steps": steps})
    port = free_port()
    with running_proxy(("127.0.0.1", pg_db.url.port or 5432)) as proxy:
        url = pg_db.url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        env = {
            **os.environ,
            "CONVEYOR_DATABASE_URL": url,
            "CONVEYOR_PORT": str(port),
            "CONVEYOR_POLL_INTERVAL": "0.2",
            "CONVEYOR_EGRESS_ALLOW": "127.0.0.1/32",
            "CONVEYOR_LOG_LEVEL": "WARNING",
        }
        procs: dict[str, subprocess.Popen[bytes]] = {}
        for name, command in (("serve", "serve"), ("w1", "worker"), ("w2", "worker")):
            with (tmp_path / f"{name}.log").open("wb") as log:
                procs[name] = subprocess.Popen(
                    [str(CONVEYOR), command],
                    env={**env, "CONVEYOR_WORKER_ID": name},
                    stdout=log,
                    stderr=log,
                )
        api = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx.get(f"{api}/healthz", timeout=1).is_success
            except httpx.HTTPError:
                return False

        try:
            _wait_for("the server", up, 30)
            load = Load(api, key)
            _wait_for("runs before the cut", lambda: len(load.acknowledged) >= 40, 60)
            load.cut = True
            proxy.cut()
            in_flight = sum(http_server.inflight.values())
            time.sleep(OUTAGE_SECONDS)
            proxy.restore()
            load.cut = False
            acked = len(load.acknowledged)
            _wait_for("runs after the cut", lambda: len(load.acknowledged) >= acked + 40, 60)
            load.stop()
            ids = list(load.acknowledged)
            _wait_for("every acknowledged run", lambda: _completed(pg_db, ids) == len(ids), 120)
            alive = {name: p.poll() is None for name, p in procs.items()}
        finally:
            for p in procs.values():
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in procs.values():
                p.wait(60)
    logs = {name: (tmp_path / f"{name}.log").read_text() for name in procs}
    assert alive == {"serve": True, "w1": True, "w2": True}, logs
    assert set(load.answers) <= {202, 503}, (load.answers, logs["serve"])
    assert load.during_cut[503] > 0  # the API said so while the database was away
    assert proxy.refused > 0  # and the cut was real
    assert in_flight > 0  # calls were under way when the database went away
    calls = [p.replace("{{ run.id }}", run_id) for run_id in ids for p in paths.values()]
    repeated = {path: n for path in calls if (n := http_server.hits[path]) != 1}
    assert not repeated, f"calls made {repeated} times"
    assert "database cannot be reached" in logs["w1"] + logs["w2"]
    assert "Traceback" not in logs["serve"]  # one line per refused request, not a traceback
