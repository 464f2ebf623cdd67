"""The run page: steps, waterfall, errors, waits, messages, history, actions; hostile data."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from conveyor.domain.scopes import ALL_SCOPES, Scope
from conveyor.engine.worker import Worker
from conveyor.settings import Settings
from conveyor.store.db import Database
from tests.api.helpers import TestClient
from tests.support.http_server import LOCAL, HitServer, running_server
from tests.web.conftest import NewKey, SignedIn
from tests.web.test_pages import audit

SCRIPT = "<script>alert('payload')</script>"
ONERROR = "<img src=x onerror=alert('payload')>"
MAIL_HTML = "<p>Hi</p><script>alert('mail')</script><img src=x onerror=alert('mail')>"


@pytest.fixture
def http_server() -> Iterator[HitServer]:
    """A real HTTP server; ``/fail/1/…`` fails once, then answers 200."""
    with running_server() as server:
        yield server


class Scenario:
    """A tenant's failed run (its HTTP step failed once) with hostile data in it."""

    def __init__(self, db: Database, client: TestClient, token: str, server: HitServer) -> None:
        self.db, self.client, self.server = db, client, server
        self.auth = {"Authorization": f"Bearer {token}"}
        self.settings = Settings(
            database_url=db.url.render_as_string(hide_password=False),
            worker_id="web-test-worker",
            egress_allow=LOCAL,
        )

    def api(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        response = self.client.request(method, f"/api/v1{path}", json=body, headers=self.auth)
        assert response.status_code == status, response.text
        return response.json() if response.content else None

    def work(self) -> None:
        asyncio.run(Worker(self.db, self.settings).run_until_idle())

    def failed_run(self) -> str:
        self.api(
            "PUT",
            "/templates/hello",
            {"channel": "email", "subject": f"Hi {SCRIPT}", "text": "plain", "html": MAIL_HTML},
            201,
        )
        definition = {
            "name": "checkout-sync",
            "trigger": {"type": "manual"},
            "steps": [
                {"key": "prep", "type": "set", "vars": {"note": "{{ trigger.payload.note }}"}},
                {
                    "key": "mail",
                    "type": "send_email_template",
                    "template": "hello",
                    "to": "ada@example.com",
                },
                {"key": "call", "type": "http_request", "url": f"{self.server.url}/fail/1/sync"},
            ],
        }
        self.api("POST", "/automations", definition, 201)
        payload = {"note": f"{SCRIPT}{ONERROR}"}
        run = self.api("POST", "/automations/checkout-sync/trigger", {"payload": payload}, 202)
        self.work()
        assert self.api("GET", f"/runs/{run['id']}")["status"] == "failed"
        return str(run["id"])


@pytest.fixture
def scenario(db: Database, tenant: str, new_key: NewKey, http_server: HitServer) -> Scenario:
    from tests.api.helpers import make_client

    client = make_client(db, egress_allow=LOCAL)
    return Scenario(db, client, new_key(tenant), http_server)


def test_a_failed_run_shows_its_failed_step_and_why(
    scenario: Scenario, signed_in: SignedIn
) -> None:
    run_id = scenario.failed_run()
    response = signed_in().get(f"/ui/runs/{run_id}")
    assert response.status_code == 200
    page = audit(response)
    html = response.text
    assert 'id="run-status">failed<' in html
    for key in ("prep", "mail", "call"):
        assert f'id="step-{key}"' in html  # an anchor per step
        assert f'href="#step-{key}"' in html
    call = html[html.index('id="step-call"') :]
    assert "badge s-failed" in call[:400]
    assert "500" in call  # the HTTP error is shown
    # The waterfall: a bar per attempt, drawn with attributes, not styles.
    assert len(re.findall(r'<rect class="k-(?:run|failed)"', html)) == 3
    # History, trigger event, and the message with its HTML body sandboxed.
    assert "run.created" in html
    assert 'sandbox=""' in html
    assert "srcdoc=" in html
    assert f"http://testserver/ui/runs/{run_id}" in html
    assert any(link.endswith(f"#step-{k}") for link in page.links for k in ("call",))


def test_hostile_data_is_shown_as_text(scenario: Scenario, signed_in: SignedIn) -> None:
    run_id = scenario.failed_run()
    html = signed_in().get(f"/ui/runs/{run_id}").text
    for raw in (SCRIPT, ONERROR, MAIL_HTML, "<img src=x"):
        assert raw not in html
    assert "&lt;script&gt;alert(" in html  # shown, escaped
    # The email's HTML lives only inside the sandboxed frame's srcdoc (escaped there too).
    srcdoc = re.search(r'<iframe class="mail" sandbox="" srcdoc="([^"]*)"', html)
    assert srcdoc is not None
    assert "&lt;script&gt;alert(&#39;mail&#39;)" in srcdoc.group(1)


@pytest.mark.parametrize(
    ("scopes", "cancel", "retry", "edited"),
    [
        (ALL_SCOPES, False, True, True),
        ([Scope.RUNS_READ.value, Scope.RUNS_WRITE.value], False, True, False),
        ([Scope.RUNS_READ.value], False, False, False),
    ],
    ids=["all", "no-trigger", "read-only"],
)
def test_actions_follow_the_keys_scopes(
    scenario: Scenario,
    signed_in: SignedIn,
    scopes: list[str],
    cancel: bool,
    retry: bool,
    edited: bool,
) -> None:
    run_id = scenario.failed_run()
    html = signed_in(scopes=scopes).get(f"/ui/runs/{run_id}").text
    assert (f"/api/v1/runs/{run_id}/cancel" in html) is cancel  # a finished run
    assert ('id="retry-from-failed"' in html) is retry
    assert ("Retry from this step" in html) is retry
    assert (f"/api/v1/runs/{run_id}/replay" in html) is retry
    assert ('name="payload"' in html) is edited
    assert ('name="version"' in html) is edited


def test_a_running_run_offers_cancel(db: Database, tenant: str, signed_in: SignedIn) -> None:
    from tests.api.run_data import make_data

    data = make_data(db, tenant)
    running = data.runs[1].id  # "running"
    html = signed_in().get(f"/ui/runs/{running}").text
    assert f"/api/v1/runs/{running}/cancel" in html
    assert 'id="retry-from-failed"' not in html


def test_page_actions_are_api_writes_that_need_the_csrf_token(
    scenario: Scenario, signed_in: SignedIn
) -> None:
    run_id = scenario.failed_run()
    client = signed_in()
    # What another site's <form method=post> makes the browser send, cookie included.
    form = {"Content-Type": "application/x-www-form-urlencoded", "Origin": "https://evil.example"}
    forged = client.post(f"/api/v1/runs/{run_id}/retry", content=b"", headers=form)
    assert forged.status_code == 403
    assert forged.json()["code"] == "csrf_failed"
    # With fields (a guessed token too) it is not even JSON: refused before anything.
    guessed = client.post(f"/api/v1/runs/{run_id}/retry", content=b"csrf_token=x", headers=form)
    assert guessed.status_code == 415
    assert scenario.api("GET", f"/runs/{run_id}")["retried_by"] == []
    csrf = client.cookies["conveyor_csrf"]
    done = client.post(
        f"/api/v1/runs/{run_id}/retry",
        json={"mode": "from_step", "step_key": "call", "reason": "the CRM was down"},
        headers={"Origin": "http://testserver", "X-CSRF-Token": csrf},
    )
    assert done.status_code == 202, done.text
    scenario.work()
    new = done.json()["id"]
    html = client.get(f"/ui/runs/{new}").text
    assert 'id="run-status">completed<' in html
    assert f'href="/ui/runs/{run_id}"' in html  # lineage: retry of
    assert "reused from" in html
    assert f'href="/ui/runs/{new}"' in client.get(f"/ui/runs/{run_id}").text  # retried by
    assert "the CRM was down" in html  # the reason, in the history


def test_unknown_or_malformed_run_is_404(sqlite_db: Database, signed_in: SignedIn) -> None:
    client = signed_in()
    for run_id in ("0193aaaa-0000-7000-8000-000000000000", "not-an-id"):
        response = client.get(f"/ui/runs/{run_id}")
        assert response.status_code == 404
        audit(response)


def test_a_run_links_its_child_runs_and_its_failure_trigger_runs(
    scenario: Scenario, signed_in: SignedIn
) -> None:
    child = {"name": "child", "steps": [{"key": "echo", "type": "set", "vars": {"n": 1}}]}
    parent = {
        "name": "parent",
        "steps": [
            {"key": "start", "type": "trigger_automation", "automation": "child", "payload": {}},
            {"key": "boom", "type": "set", "vars": {"x": "{{ trigger.payload.nope.x }}"}},
        ],
    }
    watcher = {
        "name": "on-failure",
        "trigger": {"type": "automation_failure", "automations": ["parent"]},
        "steps": [{"key": "note", "type": "set", "vars": {"ok": True}}],
    }
    for definition in (child, parent, watcher):
        scenario.api("POST", "/automations", definition, 201)
    run_id = scenario.api("POST", "/automations/parent/trigger", {"payload": {}}, 202)["id"]
    scenario.work()
    assert scenario.api("GET", f"/runs/{run_id}")["status"] == "failed"
    (child_run,) = scenario.api("GET", "/runs?automation_name=child")["items"]
    (failure_run,) = scenario.api("GET", "/runs?trigger_type=automation_failure")["items"]
    client = signed_in()
    response = client.get(f"/ui/runs/{run_id}")
    audit(response)
    html = response.text
    children = html[html.index('id="lineage-children"') :]
    assert f'href="/ui/runs/{child_run["id"]}"' in children[: children.index("</dd>")]
    failures = html[html.index('id="lineage-failure-runs"') :]
    assert f'href="/ui/runs/{failure_run["id"]}"' in failures[: failures.index("</dd>")]
    assert "Failure-trigger runs" in html
    # The child names its parent; the failure run names nothing it started.
    assert f'href="/ui/runs/{run_id}"' in client.get(f"/ui/runs/{child_run['id']}").text
    assert 'id="lineage-' not in client.get(f"/ui/runs/{failure_run['id']}").text


def test_a_wait_shows_the_events_that_came_too_late(
    scenario: Scenario, signed_in: SignedIn
) -> None:
    s = scenario
    definition = {
        "name": "late-wait",
        "trigger": {"type": "manual"},
        "steps": [
            {
                "key": "paid",
                "type": "wait_for_event",
                "event": "payment.received",
                "timeout": "PT1S",
            }
        ],
    }
    s.api("POST", "/automations", definition, 201)
    ada = {"type": "email", "value": "ada@example.com"}
    run = s.api("POST", "/automations/late-wait/trigger", {"payload": {}, "identity": ada}, 202)
    s.work()
    deadline = time.monotonic() + 60
    while s.api("GET", f"/runs/{run['id']}")["status"] != "completed":
        assert time.monotonic() < deadline, "the wait never timed out"
        time.sleep(0.2)
        s.work()
    late = {"id": f"evt-{SCRIPT}", "name": "payment.received", "identity": ada, "payload": {}}
    s.api("POST", "/events", {"events": [late]}, 200)
    response = signed_in().get(f"/ui/runs/{run['id']}")
    audit(response)
    step = response.text[response.text.index('id="step-paid"') :]
    wait = step[step.index('class="wait"') :]
    assert "timed out" in wait[:2000]
    late_line = wait[wait.index('class="late"') :][:600]
    assert "payment.received" in late_line
    assert "evt-&lt;script&gt;" in late_line  # the tenant's event id, escaped
