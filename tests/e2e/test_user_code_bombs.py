"""A hostile tenant's expressions against a real ``conveyor serve`` and ``conveyor worker``.

Every bomb the issue reported (an endless loop in a step, a gigabyte string,
a 27-second ``format``, a quadratic ``wordwrap`` in an event filter, a
constant the compiler would fold at save) ends with its code, in bounded
time and memory, while another tenant's run, triggered at the same moment,
completes before the bomb's run ends. On both databases.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.domain.scopes import ALL_SCOPES
from conveyor.services import keys as key_service
from conveyor.store.db import Database
from conveyor.testing.factories import make_tenant
from tests.support.smtp_server import free_port

# A step attempt may spend this much CPU: long enough that the other tenant's
# run is certainly done before the time bomb is, whatever the machine's load.
TIMEOUT = 3
# Documented in docs/operating.md: a worker or server running these bombs stays under this
# (each measured at about 100 MB here).
RSS_BOUND_MB = 250
CONVEYOR = Path(sys.executable).with_name("conveyor")

BOMBS: dict[str, tuple[str, str]] = {  # name -> (the `set` step's template, expected code)
    "loop": (
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "expression_timeout",
    ),
    "repeat": ("{{ 'a' * 10**9 }}", "expression_too_large"),
    "format": ("{{ '%0999999999d'|format(1) }}", "expression_too_large"),
    "graph": (
        "{% set ns = namespace(x=[1]) %}{% for i in range(60) %}{% set ns.x = [ns.x, ns.x] %}"
        "{% endfor %}{{ ns.x|string }}",
        "expression_too_large",
    ),
    "wordwrap": ("{{ ('ab c' * 400000)|wordwrap(1) }}", "expression_too_large"),
}


def _peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def _wait_for(what: str, predicate: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


class Deployment:
    """``conveyor serve`` and one ``conveyor worker`` on the test database, and two tenants."""

    def __init__(self, db: Database, log_dir: Path) -> None:
        self.db = db
        port = free_port()
        env = {
            **os.environ,
            "CONVEYOR_DATABASE_URL": db.url.render_as_string(hide_password=False),
            "CONVEYOR_PORT": str(port),
            "CONVEYOR_EXPRESSION_TIMEOUT": str(TIMEOUT),
            "CONVEYOR_POLL_INTERVAL": "0.05",
            "CONVEYOR_LOG_LEVEL": "WARNING",
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        for name in ("serve", "worker"):
            with (log_dir / f"{name}.log").open("wb") as log:
                self.procs[name] = subprocess.Popen(
                    [str(CONVEYOR), name], env=env, stdout=log, stderr=log
                )
        self.url = f"http://127.0.0.1:{port}/api/v1"
        self.keys = {name: self._key(make_tenant(db, name)) for name in ("evil", "good")}
        _wait_for("the server to answer", self._up)

    def _key(self, tenant: str) -> str:
        with self.db.transaction() as conn:
            _, token = key_service.create_key(
                conn, tenant_id=tenant, scopes=ALL_SCOPES, label="t", now=datetime.now(UTC)
            )
        return token

    def _up(self) -> bool:
        for name, proc in self.procs.items():
            assert proc.poll() is None, f"conveyor {name} exited"
        try:
            return httpx.get(self.url.rsplit("/api", 1)[0] + "/healthz", timeout=1).is_success
        except httpx.HTTPError:
            return False

    def call(self, tenant: str, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.keys[tenant]}"}
        return httpx.request(method, self.url + path, headers=headers, timeout=60, **kw)

    def run(self, tenant: str, run_id: str) -> dict[str, Any]:
        response = self.call(tenant, "GET", f"/runs/{run_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            proc.wait(30)


@pytest.fixture
def deployment(db: Database, tmp_path: Path) -> Iterator[Deployment]:
    d = Deployment(db, tmp_path)
    try:
        yield d
    finally:
        d.stop()


def _automation(d: Deployment, tenant: str, definition: dict[str, Any]) -> None:
    response = d.call(tenant, "POST", "/automations", json=definition)
    assert response.status_code == 201, response.text


def _one_step(name: str, value: Any, **extra: Any) -> dict[str, Any]:
    """An automation of one ``set`` step."""
    return {"name": name, "steps": [{"key": "s", "type": "set", "vars": {"x": value}}], **extra}


def _trigger(d: Deployment, tenant: str, name: str) -> str:
    response = d.call(tenant, "POST", f"/automations/{name}/trigger", json={"payload": {}})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


@pytest.mark.slow
def test_bombs_fail_with_their_codes_and_harm_no_other_tenant(deployment: Deployment) -> None:
    d = deployment
    for name, (template, _) in BOMBS.items():
        _automation(
            d,
            "evil",
            {"name": name, "steps": [{"key": "s", "type": "set", "vars": {"x": template}}]},
        )
    _automation(
        d, "good", {"name": "hello", "steps": [{"key": "s", "type": "set", "vars": {"x": 1}}]}
    )

    bombs = {name: _trigger(d, "evil", name) for name in BOMBS}
    good = _trigger(d, "good", "hello")
    _wait_for("the good tenant's run", lambda: d.run("good", good)["status"] == "completed")
    assert d.run("evil", bombs["loop"])["status"] in ("pending", "running")  # still going

    def ended(run_id: str) -> bool:
        return d.run("evil", run_id)["status"] not in ("pending", "running", "waiting")

    for name, run_id in bombs.items():
        _wait_for(f"the {name} bomb's run to end", lambda run_id=run_id: ended(run_id))
        run = d.run("evil", run_id)
        assert run["status"] == "failed", (name, run)
        assert run["last_error"]["code"] == BOMBS[name][1], (name, run["last_error"])
    assert _peak_mb(d.procs["worker"].pid) < RSS_BOUND_MB


@pytest.mark.slow
def test_saving_and_ingesting_bombs_answers_in_bounded_time_and_memory(
    deployment: Deployment,
) -> None:
    d = deployment
    huge = "{{ " + " ~ ".join(["'x'"] * 5000) + " }}"
    response = d.call(
        "evil",
        "POST",
        "/automations",
        json={"name": "huge", "steps": [{"key": "s", "type": "set", "vars": {"x": huge}}]},
    )
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "invalid_definition"
    assert [(e["loc"], e["type"]) for e in body["errors"]] == [
        (["steps", 0, "vars"], "expression_too_large")
    ]
    for i in range(30):  # each would fold to a 100 MB constant if compiling evaluated it
        _automation(
            d,
            "evil",
            {
                "name": f"fold-{i}",
                "steps": [{"key": "s", "type": "set", "vars": {"x": f"{{{{ 'p' * 10**8 }}}}{i}"}}],
            },
        )
    filters = {
        "filtered": "(event.payload.s * 1600000)|wordwrap(1)|length > 0",
        "looping": "range(100000)|select('in', range(100000)|list)|list|length > 0",
    }
    for name, source in filters.items():
        trigger = {"type": "event", "event": "bomb", "filter": source}
        _automation(d, "evil", _one_step(name, 1, trigger=trigger))
    _automation(
        d,
        "good",
        {
            "name": "hello",
            "trigger": {"type": "event", "event": "hi"},
            "steps": [{"key": "s", "type": "set", "vars": {"x": 1}}],
        },
    )
    event = {"id": "e1", "name": "bomb", "payload": {"s": "ab c"}}
    response = d.call("evil", "POST", "/events", json=event)
    assert response.status_code == 200, response.text
    (item,) = response.json()["results"]
    assert item["status"] == "accepted"  # the event is stored; its triggers failed
    codes = {e["automation_name"]: e["code"] for e in item["trigger_errors"]}
    assert codes == {"filtered": "expression_too_large", "looping": "expression_timeout"}
    assert item["runs_started"] == []
    response = d.call("good", "POST", "/events", json={"id": "e1", "name": "hi"})
    assert response.status_code == 200, response.text
    assert len(response.json()["results"][0]["runs_started"]) == 1
    assert _peak_mb(d.procs["serve"].pid) < RSS_BOUND_MB
