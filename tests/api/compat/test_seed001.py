"""Seed 001 (Sendrealm): its runs API, driven as its document does, on both databases.

The document's example run detail is the golden data: every key path of it
exists in the answer for the same run, with the same JSON type.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from conveyor.engine.worker import Worker
from conveyor.settings import Settings
from conveyor.store.db import Database
from tests.api.conftest import NewKey
from tests.api.helpers import TestClient

# The document's "Example run detail", as it gives it.
EXAMPLE_RUN: dict[str, Any] = {
    "data": {
        "id": "run_123",
        "automation_id": "aut_123",
        "trigger_event_name": "order.completed",
        "resolved_identity_type": "email",
        "resolved_identity_value": "olivia@example.com",
        "status": "completed",
        "trigger_event": {
            "id": "evt_123",
            "event_name": "order.completed",
            "payload": {"order_id": "ord_123"},
            "occurred_at": "2026-06-08T14:15:00.000Z",
        },
        "steps": [
            {
                "id": "step_1",
                "step_key": "send_receipt",
                "step_type": "send_email_template",
                "status": "completed",
                "linked_emails": [
                    {
                        "id": "email_123",
                        "subject": "Your receipt",
                        "status": "sent",
                        "last_event": "send",
                        "template_version_id": "tmplver_email_123",
                        "contact_id": "contact_123",
                        "created_at": "2026-06-08T14:15:01.000Z",
                    }
                ],
            },
            {
                "id": "step_2",
                "step_key": "wait_for_open",
                "step_type": "wait_for_event",
                "status": "completed",
                "branch_taken": "received",
                "waits": [
                    {
                        "id": "wait_123",
                        "step_id": "step_2",
                        "step_key": "wait_for_open",
                        "step_type": "wait_for_event",
                        "waiting_for_event_name": "sendrealm.mail.open",
                        "status": "received",
                        "resolved_identity_value": "olivia@example.com",
                        "timeout_at": "2026-06-08T14:45:00.000Z",
                        "resumed_at": "2026-06-08T14:16:30.000Z",
                        "timed_out_at": None,
                        "outcome_branch": "received",
                        "resumed_by_event": {
                            "id": "evt_124",
                            "event_name": "sendrealm.mail.open",
                            "occurred_at": "2026-06-08T14:16:30.000Z",
                        },
                    }
                ],
            },
            {
                "id": "step_3",
                "step_key": "send_push_follow_up",
                "step_type": "send_push_template",
                "status": "completed",
                "linked_push_notifications": [
                    {
                        "id": "push_123",
                        "title": "Need anything else?",
                        "status": "sent",
                        "last_event": "send",
                        "template_version_id": "tmplver_push_123",
                        "contact_id": "contact_123",
                        "created_at": "2026-06-08T14:16:31.000Z",
                    }
                ],
            },
        ],
        "waits": [
            {
                "id": "wait_123",
                "step_id": "step_2",
                "step_key": "wait_for_open",
                "step_type": "wait_for_event",
                "waiting_for_event_name": "sendrealm.mail.open",
                "status": "received",
                "resolved_identity_value": "olivia@example.com",
                "timeout_at": "2026-06-08T14:45:00.000Z",
                "resumed_at": "2026-06-08T14:16:30.000Z",
                "timed_out_at": None,
                "outcome_branch": "received",
                "resumed_by_event": {
                    "id": "evt_124",
                    "event_name": "sendrealm.mail.open",
                    "occurred_at": "2026-06-08T14:16:30.000Z",
                },
            }
        ],
        "sent_emails": [
            {
                "id": "email_123",
                "subject": "Your receipt",
                "status": "sent",
                "last_event": "send",
                "automation_step_key": "send_receipt",
                "template_version_id": "tmplver_email_123",
                "created_at": "2026-06-08T14:15:01.000Z",
            }
        ],
        "sent_push_notifications": [
            {
                "id": "push_123",
                "title": "Need anything else?",
                "status": "sent",
                "last_event": "send",
                "automation_step_key": "send_push_follow_up",
                "template_version_id": "tmplver_push_123",
                "created_at": "2026-06-08T14:16:31.000Z",
            }
        ],
    }
}

OLIVIA = {"type": "email", "value": "olivia@example.com"}

# The example's automation: a receipt, a wait for its open, a push follow-up.
AUTOMATION: dict[str, Any] = {
    "name": "order-follow-up",
    "trigger": {"type": "event", "event": "order.completed"},
    "steps": [
        {
            "key": "send_receipt",
            "type": "send_email_template",
            "template": "receipt",
            "to": "olivia@example.com",
        },
        {
            "key": "wait_for_open",
            "type": "wait_for_event",
            "event": "sendrealm.mail.open",
            "timeout": "PT30M",
            "depends_on": ["send_receipt"],
        },
        {
            "key": "send_push_follow_up",
            "type": "send_push_template",
            "template": "follow-up",
            "to": ["device-1"],
            "depends_on": ["wait_for_open.received"],
        },
    ],
}


def _json_type(value: Any) -> str:
    for kind, name in ((bool, "boolean"), (int, "number"), (float, "number"), (str, "string")):
        if isinstance(value, kind):
            return name
    return {dict: "object", list: "array", type(None): "null"}[type(value)]


def key_paths(value: Any, path: str = "") -> dict[str, str]:
    """Every key path of a JSON value (list items by position), with its JSON type."""
    found: dict[str, str] = {}
    items: list[tuple[str, Any]] = []
    if isinstance(value, dict):
        items = [(f"{path}.{k}", v) for k, v in value.items()]
    elif isinstance(value, list):
        items = [(f"{path}[{i}]", v) for i, v in enumerate(value)]
    for sub, item in items:
        found[sub] = _json_type(item)
        found.update(key_paths(item, sub))
    return found


def assert_has_shape(answer: Any, golden: Any) -> None:
    """Every key path of ``golden`` is in ``answer``, with the same JSON type."""
    have = key_paths(answer)
    wrong = {
        p: (t, have.get(p, "absent")) for p, t in key_paths(golden).items() if have.get(p) != t
    }
    assert not wrong, wrong


def _work(db: Database) -> None:
    settings = Settings(database_url=db.url.render_as_string(hide_password=False))
    asyncio.run(Worker(db, settings).run_until_idle())


def _send_event(client: TestClient, auth: dict[str, str], **event: Any) -> None:
    sent = client.post("/api/v1/events", json={"identity": OLIVIA, **event}, headers=auth)
    assert sent.status_code in (200, 202), sent.text


@pytest.fixture
def example_run(db: Database, client: TestClient, auth: dict[str, str]) -> dict[str, Any]:
    """The example's run: order.completed, receipt sent, opened, follow-up pushed."""
    for name, template in (
        ("receipt", {"channel": "email", "subject": "Your receipt", "html": "<p>Thanks</p>"}),
        ("follow-up", {"channel": "push", "title": "Need anything else?", "body": "Ask us"}),
    ):
        put = client.put(f"/api/v1/templates/{name}", json=template, headers=auth)
        assert put.status_code in (200, 201), put.text
    created = client.post("/api/v1/automations", json=AUTOMATION, headers=auth)
    assert created.status_code == 201, created.text
    _send_event(client, auth, id="evt_123", name="order.completed", payload={"order_id": "ord_123"})
    _work(db)
    _send_event(client, auth, id="evt_124", name="sendrealm.mail.open")
    _work(db)
    runs = client.get(f"/api/v1/automations/{created.json()['id']}/runs", headers=auth).json()
    (run,) = runs["items"]
    return {"automation_id": created.json()["id"], "run_id": run["id"]}


def test_run_detail_has_every_key_path_of_the_example(
    client: TestClient, auth: dict[str, str], example_run: dict[str, Any]
) -> None:
    answer = client.get(f"/automation-runs/{example_run['run_id']}", headers=auth)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    body = answer.json()
    assert_has_shape(body, EXAMPLE_RUN)
    run = body["data"]
    assert run["id"] == example_run["run_id"]
    assert run["automation_id"] == example_run["automation_id"]
    assert run["status"] == "completed"
    assert run["trigger_event_name"] == "order.completed"
    assert (run["resolved_identity_type"], run["resolved_identity_value"]) == (
        "email",
        "olivia@example.com",
    )
    assert run["trigger_event"]["id"] == "evt_123"
    assert run["trigger_event"]["event_name"] == "order.completed"
    assert run["trigger_event"]["payload"] == {"order_id": "ord_123"}
    steps = run["steps"]
    assert [(s["step_key"], s["step_type"]) for s in steps] == [
        ("send_receipt", "send_email_template"),
        ("wait_for_open", "wait_for_event"),
        ("send_push_follow_up", "send_push_template"),
    ]
    assert all("key" not in s and "type" not in s for s in steps)
    (wait,) = run["waits"]
    assert wait == steps[1]["waits"][0]
    assert (wait["status"], wait["outcome_branch"]) == ("received", "received")
    assert wait["step_id"] == steps[1]["id"]
    assert wait["resumed_by_event"]["id"] == "evt_124"
    assert wait["resumed_by_event"]["event_name"] == "sendrealm.mail.open"
    assert steps[1]["branch_taken"] == "received"
    (email,) = run["sent_emails"]
    assert email["subject"] == "Your receipt"
    assert email["automation_step_key"] == "send_receipt"
    assert steps[0]["linked_emails"][0]["id"] == email["id"]
    (push,) = run["sent_push_notifications"]
    assert push["title"] == "Need anything else?"
    assert steps[2]["linked_push_notifications"][0]["id"] == push["id"]
    # The same run as /api/v1 shows it: renamed, not recomputed.
    v1 = client.get(f"/api/v1/runs/{example_run['run_id']}", headers=auth).json()
    assert run["waits"] == v1["waits"]
    # (/api/v1's schema adds `title: null` to an email, `subject: null` to a push.)
    assert [{k: v1_email[k] for k in email} for v1_email in v1["sent_emails"]] == [email]
    assert run["last_error"] == v1["last_error"] is None
    assert [s["id"] for s in steps] == [s["id"] for s in v1["steps"]]


def test_run_list_in_the_data_envelope(
    client: TestClient, auth: dict[str, str], example_run: dict[str, Any]
) -> None:
    automation_id = example_run["automation_id"]
    answer = client.get(f"/automations/{automation_id}/runs", headers=auth)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    (item,) = body["data"]
    assert item["id"] == example_run["run_id"]
    assert item["automation_id"] == automation_id
    assert item["status"] == "completed"
    assert (item["resolved_identity_type"], item["resolved_identity_value"]) == (
        "email",
        "olivia@example.com",
    )
    assert body["meta"] == {
        "total": 1,
        "total_exact": True,
        "limit": 100,
        "offset": 0,
        "next_cursor": None,
    }
    # /api/v1's filters and paging, as they are there.
    assert (
        client.get(f"/automations/{automation_id}/runs?status=failed", headers=auth).json()["data"]
        == []
    )
    paged = client.get(f"/automations/{automation_id}/runs?limit=1&offset=1", headers=auth)
    assert paged.json()["data"] == []
    assert paged.json()["meta"]["total"] == 1
    # By name too, as /api/v1 takes it.
    by_name = client.get("/automations/order-follow-up/runs", headers=auth).json()
    assert [r["id"] for r in by_name["data"]] == [example_run["run_id"]]


def _assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    """Seed 001's error object: ``{status, error: {code, message, details}}``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert set(body) == {"status", "error"}
    assert body["status"] == status
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    return body


def test_errors_in_the_documents_shape(
    client: TestClient, auth: dict[str, str], tenant: dict[str, Any], new_key: NewKey
) -> None:
    unknown = "00000000-0000-4000-8000-000000000000"
    _assert_error(client.get(f"/automation-runs/{unknown}", headers=auth), 404, "run_not_found")
    _assert_error(client.get("/automation-runs/run_123", headers=auth), 404, "run_not_found")
    missing = client.get(f"/automations/{unknown}/runs", headers=auth)
    assert _assert_error(missing, 404, "automation_not_found")["error"]["details"] is None

    anonymous = client.get(f"/automation-runs/{unknown}")
    _assert_error(anonymous, 401, "unauthenticated")
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    _assert_error(
        client.get(f"/automations/{unknown}/runs", headers={"Authorization": "Bearer nope"}),
        401,
        "unauthenticated",
    )
    writer = {"Authorization": f"Bearer {new_key(tenant['id'], ['runs:write'])}"}
    _assert_error(client.get(f"/automation-runs/{unknown}", headers=writer), 403, "forbidden")

    bad = _assert_error(
        client.get(f"/automations/{unknown}/runs?limit=0", headers=auth), 422, "validation_error"
    )
    assert [d["loc"] for d in bad["error"]["details"]] == [["query", "limit"]]
    extra = _assert_error(
        client.get(f"/automation-runs/{unknown}?expand=steps", headers=auth),
        422,
        "validation_error",
    )
    (detail,) = extra["error"]["details"]
    assert detail["type"] == "unknown_parameter"
    assert detail["loc"] == ["query", "expand"]
    unknown_filter = _assert_error(
        client.get(f"/automations/{unknown}/runs?filter[colour]=red", headers=auth),
        422,
        "validation_error",
    )
    assert unknown_filter["error"]["details"][0]["type"] == "unknown_filter"


def test_its_own_schema_only(client: TestClient) -> None:
    schema = client.get("/seeds/001/openapi.json").json()
    assert set(schema["paths"]) == {"/automations/{id}/runs", "/automation-runs/{runId}"}
    detail = schema["paths"]["/automation-runs/{runId}"]["get"]
    assert {p["name"] for p in detail["parameters"]} == {"runId"}
    assert "404" in detail["responses"]
    main = client.get("/openapi.json").json()
    assert "/automation-runs/{runId}" not in main["paths"]
    assert "/automations/{id}/runs" not in main["paths"]


def test_a_manual_run_without_identity(client: TestClient, auth: dict[str, str]) -> None:
    manual = {"name": "manual", "steps": [{"key": "greet", "type": "set", "vars": {"a": 1}}]}
    assert client.post("/api/v1/automations", json=manual, headers=auth).status_code == 201
    started = client.post("/api/v1/automations/manual/trigger", json={}, headers=auth)
    assert started.status_code == 202, started.text
    run = client.get(f"/automation-runs/{started.json()['id']}", headers=auth).json()["data"]
    assert run["trigger_event_name"] is None
    assert (run["resolved_identity_type"], run["resolved_identity_value"]) == (None, None)
    assert (run["trigger_event"]["id"], run["trigger_event"]["event_name"]) == (None, None)
    assert [s["step_key"] for s in run["steps"]] == ["greet"]
    assert (run["waits"], run["sent_emails"], run["sent_push_notifications"]) == ([], [], [])
