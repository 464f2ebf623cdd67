"""``http_request`` under the egress policy, through a real worker on both databases.

The local test server counts the connections it accepts, so "refused" means
nothing was connected to, not merely that the answer was thrown away.
"""

from __future__ import annotations

from typing import Any

from conveyor.clock import FakeClock
from conveyor.settings import Settings
from conveyor.store.db import Database
from tests.engine.conftest import Harness
from tests.support.http_server import LOCAL, HitServer
from tests.support.smtp_server import free_port


def _harness(db: Database, clock: FakeClock, **settings: Any) -> Harness:
    return Harness(
        db,
        clock,
        Settings(database_url=db.url.render_as_string(hide_password=False), **settings),
    )


def _forms(server: HitServer) -> dict[str, str]:
    """The loopback address written every way an attacker would, plus a name for it."""
    port = server.server_address[1]
    return {
        "dotted": f"http://127.0.0.1:{port}/ok/dotted",
        "name": f"http://localhost:{port}/ok/name",
        "decimal": f"http://2130706433:{port}/ok/decimal",
        "hex": f"http://0x7f.1:{port}/ok/hex",
        "octal": f"http://017700000001:{port}/ok/octal",
        "short": f"http://127.1:{port}/ok/short",
        "mapped": f"http://[::ffff:127.0.0.1]:{port}/ok/mapped",
    }


def _calls(server: HitServer) -> dict[str, Any]:
    """One independent step per form, and one whose URL comes from the payload."""
    steps = [
        {
            "key": key,
            "type": "http_request",
            "url": url,
            "depends_on": [],
            "continue_on_error": True,
        }
        for key, url in _forms(server).items()
    ]
    steps.append(
        {
            "key": "payload",
            "type": "http_request",
            "url": "{{ trigger.payload.url }}",
            "depends_on": [],
            "continue_on_error": True,
            "retry": {"max_attempts": 3},
        }
    )
    return {"name": "ssrf", "steps": steps}


def test_every_form_of_loopback_is_refused_before_connecting(
    db: Database, clock: FakeClock, http_server: HitServer
) -> None:
    h = _harness(db, clock)  # the default policy: nothing private
    run_id = h.trigger(h.automation(_calls(http_server)), {"url": f"{http_server.url}/ok/p"})
    h.work()
    steps = {s["key"]: s for s in h.detail(run_id)["steps"]}
    assert set(steps) == {*_forms(http_server), "payload"}
    for key, step in steps.items():
        assert step["status"] == "failed", key
        assert step["error"]["code"] == "egress_denied", (key, step["error"])
        assert step["attempt_count"] == 1, key  # not retried, though the step allows 3
    assert http_server.connections == 0
    assert sum(http_server.hits.values()) == 0


def test_a_closed_port_and_an_open_one_fail_with_the_same_words(
    db: Database, clock: FakeClock, http_server: HitServer
) -> None:
    h = _harness(db, clock)
    urls = {"open": f"{http_server.url}/ok/x", "closed": f"http://127.0.0.1:{free_port()}/ok/x"}
    steps = [
        {"key": k, "type": "http_request", "url": u, "depends_on": [], "continue_on_error": True}
        for k, u in urls.items()
    ]
    run_id = h.trigger(h.automation({"name": "ports", "steps": steps}))
    h.work()
    errors = {s["key"]: s["error"] for s in h.detail(run_id)["steps"]}
    texts = {k: errors[k]["message"].replace(urls[k], "<url>") for k in urls}
    assert texts["open"] == texts["closed"]
    assert errors["open"]["code"] == errors["closed"]["code"] == "egress_denied"
    assert http_server.connections == 0


def test_allowing_the_servers_address_lets_the_same_calls_through(
    db: Database, clock: FakeClock, http_server: HitServer
) -> None:
    h = _harness(db, clock, egress_allow=LOCAL)
    run_id = h.trigger(h.automation(_calls(http_server)), {"url": f"{http_server.url}/ok/p"})
    h.work()
    detail = h.detail(run_id)
    assert detail["status"] == "completed", [s["error"] for s in detail["steps"]]
    assert {s["result"]["json"]["path"] for s in detail["steps"]} == {
        *(f"/ok/{k}" for k in _forms(http_server)),
        "/ok/p",
    }
    assert http_server.connections >= len(detail["steps"]) - 1  # a kept-alive one may be reused


def test_deny_wins_over_allow(db: Database, clock: FakeClock, http_server: HitServer) -> None:
    h = _harness(db, clock, egress_allow=LOCAL, egress_deny="localhost")
    port = http_server.server_address[1]
    urls = {"ip": f"http://127.0.0.1:{port}/ok/ip", "name": f"http://localhost:{port}/ok/name"}
    steps = [
        {"key": k, "type": "http_request", "url": u, "depends_on": [], "continue_on_error": True}
        for k, u in urls.items()
    ]
    run_id = h.trigger(h.automation({"name": "deny", "steps": steps}))
    h.work()
    steps_by_key = {s["key"]: s for s in h.detail(run_id)["steps"]}
    assert steps_by_key["ip"]["status"] == "completed"
    assert steps_by_key["name"]["error"]["code"] == "egress_denied"
    assert http_server.hits == {"/ok/ip": 1}


def test_a_gzip_bomb_fails_the_step_over_the_cap_and_is_not_retried(
    db: Database, clock: FakeClock, http_server: HitServer
) -> None:
    h = _harness(db, clock, egress_allow=LOCAL)
    step = {
        "key": "bomb",
        "type": "http_request",
        "url": f"{http_server.url}/bomb/64/x",
        "retry": {"max_attempts": 3},
    }
    run_id = h.trigger(h.automation({"name": "bomb", "steps": [step]}))
    h.work()
    (result,) = h.detail(run_id)["steps"]
    assert result["status"] == "failed"
    assert result["error"]["code"] == "response_too_large"
    assert result["attempt_count"] == 1


def test_a_trickling_server_is_cut_at_the_steps_deadline_not_per_read(
    db: Database, clock: FakeClock, http_server: HitServer
) -> None:
    # A byte a second never lets a per-read timeout fire; the step's own
    # timeout is a deadline over the whole call.
    h = _harness(db, clock, egress_allow=LOCAL, http_timeout=60)
    step = {
        "key": "slow",
        "type": "http_request",
        "url": f"{http_server.url}/trickle/0.5/x",
        "timeout": "PT1.5S",
    }
    run_id = h.trigger(h.automation({"name": "trickle", "steps": [step]}))
    h.work()
    detail = h.detail(run_id)
    assert detail["status"] == "timed-out"
    assert detail["last_error"]["code"] == "step_timeout"


def test_the_longest_deadline_bounds_a_steps_own_timeout(
    db: Database, clock: FakeClock, http_server: HitServer
) -> None:
    # The step asks for a minute; CONVEYOR_HTTP_MAX_TIMEOUT allows one second,
    # over the whole call (each read alone comes within half a second).
    h = _harness(db, clock, egress_allow=LOCAL, http_max_timeout=1)
    step = {
        "key": "slow",
        "type": "http_request",
        "url": f"{http_server.url}/trickle/0.5/x",
        "timeout": "PT60S",
    }
    run_id = h.trigger(h.automation({"name": "capped", "steps": [step]}))
    h.work()
    detail = h.detail(run_id)
    assert detail["status"] == "failed"
    assert detail["last_error"]["code"] == "http_timeout"
