"""Record an example of every API operation from a real server: `make openapi-examples`.

Drives the real app (on a scratch SQLite file, with a real worker running the
runs) through a tour that touches every operation once, and writes what was
sent and answered to ``conveyor/api/openapi_examples.json``; the OpenAPI
document attaches them to its operations. Ids and times differ on every
recording; the shapes are what matter, and ``tests/api/test_openapi.py``
checks every example against its operation's schema.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from conveyor.api.app import create_app
from conveyor.api.operations import OPERATIONS
from conveyor.clock import SystemClock
from conveyor.domain.scopes import ALL_SCOPES
from conveyor.engine.worker import Worker
from conveyor.services import keys as key_service
from conveyor.services import tenants as tenant_service
from conveyor.settings import Settings
from conveyor.store.migrate import upgrade

OUT = Path(__file__).resolve().parent.parent / "conveyor" / "api" / "openapi_examples.json"
WELCOME = {
    "name": "welcome",
    "description": "Greets a new contact, then checks back two days later",
    "trigger": {"type": "event", "event": "contact.created"},
    "steps": [
        {"key": "greet", "type": "set", "vars": {"greeting": "Hello {{ trigger.payload.name }}"}},
        {
            "key": "is_vip",
            "type": "condition",
            "expression": "trigger.payload.plan == 'vip'",
            "depends_on": ["greet"],
        },
        {"key": "wait", "type": "delay", "duration": "P2D", "depends_on": ["is_vip.false"]},
    ],
}
ORDER = {
    "name": "order-follow-up",
    "steps": [
        {"key": "total", "type": "set", "vars": {"total": "{{ trigger.payload.total }}"}},
        {"key": "check", "type": "filter", "expression": "vars.total|int > 0"},
    ],
}
FAILING = {
    "name": "failing",
    "steps": [{"key": "boom", "type": "set", "vars": {"x": "{{ 1 // 0 }}"}}],
}


class Recorder:
    """Calls the app and keeps the first answer of each operation."""

    def __init__(self, client: TestClient, headers: dict[str, str], worker: Worker) -> None:
        self.client = client
        self.headers = headers
        self.worker = worker
        self.examples: dict[str, dict[str, Any]] = {}

    def call(
        self,
        method: str,
        template: str,
        path: dict[str, str] | None = None,
        query: dict[str, Any] | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """Send one request; record it under its operation; return the JSON answer."""
        url = template.format(**(path or {}))
        response = self.client.request(
            method,
            url,
            params=query,
            json=body,
            headers={**self.headers, **(headers or {})},
        )
        if response.status_code >= 400:
            raise SystemExit(f"{method} {url}: {response.status_code} {response.text}")
        operation = OPERATIONS[(method, template)].operation_id
        example: dict[str, Any] = {"status": response.status_code}
        if body is not None:
            example["request"] = body
        if response.content and "json" in response.headers.get("content-type", ""):
            example["response"] = response.json()
        parameters = {**(path or {}), **(query or {})}
        if parameters:
            example["parameters"] = parameters
        self.examples.setdefault(operation, example)
        return example.get("response")

    def drain(self) -> None:
        """Let the worker run everything that is due."""
        asyncio.run(self.worker.run_until_idle())


def tour(r: Recorder) -> None:
    """Touch every operation once, in an order where each has something to show."""
    v1 = "/api/v1"
    r.call("GET", "/healthz")
    r.call("GET", "/readyz")
    session = r.call(
        "POST",
        f"{v1}/session",
        body={"api_key": r.headers["Authorization"][7:]},
        headers={"Origin": "http://testserver"},
    )
    r.call(
        "DELETE",
        f"{v1}/session",
        headers={"X-CSRF-Token": session["csrf_token"], "Origin": "http://testserver"},
    )
    r.call("POST", f"{v1}/automations", body=WELCOME)
    r.call("POST", f"{v1}/automations", body=ORDER)
    r.call("POST", f"{v1}/automations", body=FAILING)
    auto = {"automation_id": "order-follow-up"}
    r.call("GET", f"{v1}/automations", query={"limit": 10})
    r.call("GET", f"{v1}/automations/{{automation_id}}", path=auto)
    r.call("PUT", f"{v1}/automations/{{automation_id}}", path=auto, body=ORDER)
    r.call("GET", f"{v1}/automations/{{automation_id}}/versions", path=auto)
    contact = r.call(
        "POST",
        f"{v1}/contacts",
        body={"external_id": "ada", "email": "ada@example.com", "attributes": {"plan": "vip"}},
    )
    cid = {"contact_id": contact["id"]}
    r.call("GET", f"{v1}/contacts", query={"limit": 10})
    r.call("GET", f"{v1}/contacts/{{contact_id}}", path=cid)
    r.call("PATCH", f"{v1}/contacts/{{contact_id}}", path=cid, body={"attributes": {"plan": "pro"}})
    r.call(
        "PUT",
        f"{v1}/contacts/{{contact_id}}",
        path=cid,
        body={"external_id": "ada", "email": "ada@example.com", "attributes": {"plan": "vip"}},
    )
    event = {
        "id": "evt-1001",
        "name": "contact.created",
        "identity": {"type": "external_id", "value": "ada"},
        "payload": {"name": "Ada", "plan": "free"},
    }
    r.call("POST", f"{v1}/events", body={"events": [event]})
    r.call("GET", f"{v1}/events", query={"limit": 10})
    r.call("GET", f"{v1}/events/{{event_id}}", path={"event_id": "evt-1001"})
    started = r.call(
        "POST",
        f"{v1}/automations/{{automation_id}}/trigger",
        path=auto,
        body={"payload": {"total": 42}, "idempotency_key": "order-1001"},
    )
    failed = r.call(
        "POST", f"{v1}/automations/{{automation_id}}/trigger", path={"automation_id": "failing"}
    )
    r.call(
        "POST",
        f"{v1}/automations/{{automation_id}}/trigger/batch",
        path=auto,
        body={
            "runs": [
                {"payload": {"total": 7}, "idempotency_key": "order-1002"},
                {
                    "payload": {"total": 8},
                    "identity": {"type": "external_id", "value": "ada"},
                    "idempotency_key": "order-1003",
                },
                {"payload": {"total": 42}, "idempotency_key": "order-1001"},
                {"payload": {"total": 9}, "identity": {"type": "email", "value": "not an email"}},
            ]
        },
    )
    r.drain()
    run = {"run_id": started["id"]}
    r.call("GET", f"{v1}/runs", query={"status": "completed", "limit": 10})
    r.call("GET", f"{v1}/automations/{{automation_id}}/runs", path=auto, query={"limit": 10})
    r.call("GET", f"{v1}/runs/{{run_id}}", path=run)
    r.call("GET", f"{v1}/runs/{{run_id}}/steps", path=run)
    r.call(
        "GET", f"{v1}/runs/{{run_id}}/steps/{{step_key}}/output", path={**run, "step_key": "total"}
    )
    r.call("GET", f"{v1}/runs/{{run_id}}/events", path=run)
    r.call(
        "POST",
        f"{v1}/runs/{{run_id}}/retry",
        path={"run_id": failed["id"]},
        body={"reason": "fixed the data"},
    )
    r.call(
        "POST",
        f"{v1}/runs/{{run_id}}/replay",
        path={"run_id": failed["id"]},
        body={"reason": "resend after fix"},
    )
    # The event above started `welcome`, now waiting out its two-day delay.
    page = r.client.get(f"{v1}/runs", headers=r.headers, params={"status": "waiting"}).json()
    r.call(
        "POST",
        f"{v1}/runs/{{run_id}}/cancel",
        path={"run_id": page["items"][0]["id"]},
        body={"reason": "contact unsubscribed"},
    )
    bulk = r.call(
        "POST",
        f"{v1}/runs/bulk/cancel",
        body={
            "filters": {"automation_name": "welcome", "status": ["waiting"]},
            "reason": "campaign over",
        },
    )
    r.call(
        "POST",
        f"{v1}/runs/bulk/replay",
        body={"filters": {"automation_name": "failing"}, "reason": "after the fix"},
    )
    r.call("GET", f"{v1}/bulk-operations/{{operation_id}}", path={"operation_id": bulk["id"]})
    r.call(
        "PUT",
        f"{v1}/templates/{{name}}",
        path={"name": "receipt"},
        body={
            "channel": "email",
            "subject": "Your receipt",
            "text": "Hi {{ contact.email }}, thanks for your order.",
        },
    )
    r.call("GET", f"{v1}/templates", query={"limit": 10})
    r.call("GET", f"{v1}/templates/{{name}}", path={"name": "receipt"})
    r.call("GET", f"{v1}/templates/{{name}}/versions", path={"name": "receipt"})
    r.call(
        "PUT",
        f"{v1}/settings/channels",
        body={"email": {"provider": "outbox"}, "push": {"provider": "outbox"}},
    )
    r.call("GET", f"{v1}/settings/channels")
    mailer = {
        "name": "mailer",
        "steps": [{"key": "mail", "type": "send_email_template", "template": "receipt"}],
    }
    r.call("POST", f"{v1}/automations", body=mailer)
    r.call(
        "POST",
        f"{v1}/automations/{{automation_id}}/trigger",
        path={"automation_id": "mailer"},
        body={"identity": {"type": "external_id", "value": "ada"}},
    )
    r.drain()
    message = r.call("GET", f"{v1}/messages", query={"limit": 10})
    r.call("GET", f"{v1}/messages/{{message_id}}", path={"message_id": message["items"][0]["id"]})
    dry = r.call(
        "POST",
        f"{v1}/automations/{{automation_id}}/trigger",
        path=auto,
        body={
            "dry_run": True,
            "start_date": "2026-12-01",
            "end_date": "2026-12-02",
            "profile_ids": [contact["id"]],
        },
    )
    r.drain()
    r.call("GET", f"{v1}/dry-runs/{{dry_run_id}}", path={"dry_run_id": dry["id"]})
    results = r.call("GET", f"{v1}/dry-run-results", query={"limit": 10})
    rid = {"result_id": results["items"][0]["id"]}
    r.call("GET", f"{v1}/dry-run-results/{{result_id}}", path=rid)
    r.call("DELETE", f"{v1}/dry-run-results/{{result_id}}", path=rid)
    dry2 = r.call(
        "POST",
        f"{v1}/automations/{{automation_id}}/trigger",
        path=auto,
        body={
            "dry_run": True,
            "start_date": "2026-12-01",
            "end_date": "2026-12-31",
            "profile_ids": [contact["id"]],
        },
    )
    r.call("POST", f"{v1}/dry-runs/{{dry_run_id}}/cancel", path={"dry_run_id": dry2["id"]})
    key = r.call("POST", f"{v1}/keys", body={"label": "ci", "scopes": ["runs:read"]})
    r.call("GET", f"{v1}/keys", query={"limit": 10})
    r.call("DELETE", f"{v1}/keys/{{key_id}}", path={"key_id": key["id"]})
    r.call("GET", f"{v1}/audit", query={"limit": 10})
    r.call("DELETE", f"{v1}/templates/{{name}}", path={"name": "receipt"})
    r.call("DELETE", f"{v1}/contacts/{{contact_id}}", path=cid, query={"erase": "true"})
    r.call("DELETE", f"{v1}/automations/{{automation_id}}", path={"automation_id": "mailer"})


def main() -> None:
    """Record the tour on a scratch database and write the examples file."""
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/examples.db"
        settings = Settings(database_url=url)
        db = settings.service_database()
        upgrade(db)
        with db.transaction() as conn:
            tenant = tenant_service.create_tenant(conn, "acme", now=SystemClock().now())
            _, token = key_service.create_key(
                conn, tenant_id=tenant["id"], scopes=ALL_SCOPES, label="docs", now=datetime.now(UTC)
            )
        client = TestClient(create_app(settings, db=db))
        recorder = Recorder(client, {"Authorization": f"Bearer {token}"}, Worker(db, settings))
        tour(recorder)
        # The run stream never ends: its example is made from a run summary.
        summary = recorder.examples["listRuns"]["response"]["items"][0]
        recorder.examples["streamRuns"] = {
            "status": 200,
            "response": {  # one event, as the stream's schema describes each
                "event": "run",
                "id": f"{summary['updated_at']}|{summary['id']}",
                "data": json.dumps(summary),
            },
        }
        missing = {o.operation_id for o in OPERATIONS.values()} - recorder.examples.keys()
        db.dispose()
    OUT.write_text(json.dumps(recorder.examples, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {len(recorder.examples)} examples to {OUT}")  # noqa: T201 - a tool's report
    if missing:
        sys.exit(f"no example recorded for: {', '.join(sorted(missing))}")


if __name__ == "__main__":
    main()
