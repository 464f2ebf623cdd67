"""``/api/v1/messages``: what send steps delivered, with filters; the outbox."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from conveyor.engine.worker import Worker
from conveyor.settings import Settings
from conveyor.store.db import Database
from tests.api.helpers import TestClient, assert_problem


def _work(db: Database) -> None:
    settings = Settings(database_url=db.url.render_as_string(hide_password=False))
    asyncio.run(Worker(db, settings).run_until_idle())


def _send(client: TestClient, auth: dict[str, str], name: str, steps: list[dict[str, Any]]) -> str:
    created = client.post("/api/v1/automations", json={"name": name, "steps": steps}, headers=auth)
    assert created.status_code == 201, created.text
    run = client.post(
        f"/api/v1/automations/{name}/trigger", json={"payload": {"n": 1}}, headers=auth
    )
    assert run.status_code == 202, run.text
    return str(run.json()["id"])


@pytest.fixture
def sent(db: Database, client: TestClient, auth: dict[str, str]) -> dict[str, Any]:
    """Two runs: an email and two pushes (all in the outbox), and their run ids."""
    client.put(
        "/api/v1/templates/receipt",
        json={
            "channel": "email",
            "subject": "Receipt {{ trigger.payload.n }}",
            "html": "<b>{{ vars.x }}</b>",
        },
        headers=auth,
    )
    client.put(
        "/api/v1/templates/ping", json={"channel": "push", "title": "T", "body": "b"}, headers=auth
    )
    email_run = _send(
        client,
        auth,
        "mail",
        [
            {
                "key": "mail",
                "type": "send_email_template",
                "template": "receipt",
                "to": "a@x.io",
                "vars": {"x": "<i>"},
            }
        ],
    )
    push_run = _send(
        client,
        auth,
        "push",
        [{"key": "push", "type": "send_push_template", "template": "ping", "to": ["t1", "t2"]}],
    )
    _work(db)
    return {"email_run": email_run, "push_run": push_run}


def test_list_and_filters(client: TestClient, auth: dict[str, str], sent: dict[str, Any]) -> None:
    everything = client.get("/api/v1/messages", headers=auth).json()
    assert everything["total"] == 3
    assert {m["channel"] for m in everything["items"]} == {"email", "push"}
    assert all("content" not in m for m in everything["items"])

    def names(**params: Any) -> list[str]:
        page = client.get("/api/v1/messages", params=params, headers=auth)
        assert page.status_code == 200, page.text
        return sorted(m["recipient"] for m in page.json()["items"])

    assert names(channel="email") == ["a@x.io"]
    assert names(**{"filter[channel]": "push"}) == ["t1", "t2"]
    assert names(run_id=sent["push_run"]) == ["t1", "t2"]
    assert names(template="receipt") == ["a@x.io"]
    assert names(status="sent") == ["a@x.io", "t1", "t2"]
    assert names(status="failed") == []
    assert names(created_after="2000-01-01T00:00:00Z", created_before="2999-01-01T00:00:00Z") == [
        "a@x.io",
        "t1",
        "t2",
    ]
    assert names(created_after="2999-01-01T00:00:00Z") == []


def test_created_at_takes_a_day_a_time_or_a_range(
    client: TestClient, auth: dict[str, str], sent: dict[str, Any]
) -> None:
    items = client.get("/api/v1/messages", headers=auth).json()["items"]

    def listed(**params: Any) -> list[dict[str, Any]]:
        page = client.get("/api/v1/messages", params=params, headers=auth)
        assert page.status_code == 200, page.text
        return list(page.json()["items"])

    for item in items:
        # An item's own time finds it, and only what was made in the same span.
        found = listed(created_at=item["created_at"])
        assert item["id"] in [m["id"] for m in found]
        assert {m["created_at"] for m in found} == {item["created_at"]}
        day = item["created_at"][:10]
        assert item["id"] in [m["id"] for m in listed(**{"filter[created_at]": day})]
        assert listed(created_at=f"{day}..") != []
    assert listed(created_at="2999-01-01..") == []
    assert listed(created_at="..2000-01-01") == []
    assert len(listed(created_at="2000-01-01T00:00:00Z..2999-01-01")) == 3
    # With created_after or created_before, all must hold.
    assert listed(created_at="2000-01-01..", created_after="2999-01-01T00:00:00Z") == []
    assert len(listed(created_at="..2999-01-01", created_after="2000-01-01T00:00:00Z")) == 3


def test_pages_with_a_cursor(
    client: TestClient, auth: dict[str, str], sent: dict[str, Any]
) -> None:
    first = client.get("/api/v1/messages", params={"limit": 2}, headers=auth).json()
    assert len(first["items"]) == 2
    rest = client.get(
        "/api/v1/messages", params={"limit": 2, "cursor": first["next_cursor"]}, headers=auth
    ).json()
    assert len(rest["items"]) == 1
    assert rest["next_cursor"] is None
    seen = [m["id"] for m in first["items"] + rest["items"]]
    assert len(set(seen)) == 3


def test_detail_has_the_rendered_content(
    client: TestClient, auth: dict[str, str], sent: dict[str, Any]
) -> None:
    (item,) = client.get("/api/v1/messages", params={"channel": "email"}, headers=auth).json()[
        "items"
    ]
    detail = client.get(f"/api/v1/messages/{item['id']}", headers=auth)
    assert detail.status_code == 200, detail.text
    body = detail.json()
    assert body["provider"] == "outbox"
    assert body["status"] == "sent"
    assert body["subject"] == "Receipt 1"
    assert body["template_name"] == "receipt"
    assert body["template_version"] == 1
    assert body["run_id"] == sent["email_run"]
    assert body["content"]["html"] == "<b>&lt;i&gt;</b>"
    assert body["content"]["to"] == "a@x.io"


@pytest.mark.parametrize(
    "params",
    [
        {"channel": "sms"},
        {"status": "lost"},
        {"run_id": "nope"},
        {"created_after": "2026-01-01"},
        {"created_at": "2026-01-01T00:00:00"},
        {"filter[created_at]": "2026-01-02..2026-01-01"},
        {"filter[nope]": "1"},
    ],
    ids=[
        "channel",
        "status",
        "run-id",
        "naive-date",
        "naive-created-at",
        "backwards-range",
        "unknown-filter",
    ],
)
def test_bad_filters_are_422(
    client: TestClient, auth: dict[str, str], params: dict[str, str]
) -> None:
    assert_problem(
        client.get("/api/v1/messages", params=params, headers=auth), 422, "validation_error"
    )


def test_another_tenants_message_is_404(
    client: TestClient, auth: dict[str, str], sent: dict[str, Any], new_tenant: Any, new_key: Any
) -> None:
    message = client.get("/api/v1/messages", headers=auth).json()["items"][0]
    other = {"Authorization": f"Bearer {new_key(new_tenant('intruder')['id'])}"}
    assert_problem(
        client.get(f"/api/v1/messages/{message['id']}", headers=other), 404, "message_not_found"
    )
    assert client.get("/api/v1/messages", headers=other).json()["total"] == 0
    assert_problem(client.get("/api/v1/messages/not-an-id", headers=auth), 404, "message_not_found")


def test_the_trigger_identity_is_the_default_recipient(
    db: Database, client: TestClient, auth: dict[str, str]
) -> None:
    client.put(
        "/api/v1/templates/receipt",
        json={"channel": "email", "subject": "Hi {{ contact.email }}", "text": "t"},
        headers=auth,
    )
    steps = [{"key": "send_receipt", "type": "send_email_template", "template": "receipt"}]
    client.post("/api/v1/automations", json={"name": "r", "steps": steps}, headers=auth)
    identity = {"type": "email", "value": "olivia@example.com"}
    run = client.post("/api/v1/automations/r/trigger", json={"identity": identity}, headers=auth)
    assert run.status_code == 202, run.text
    _work(db)
    detail = client.get(f"/api/v1/runs/{run.json()['id']}", headers=auth).json()
    assert detail["status"] == "completed", detail
    (email,) = detail["sent_emails"]
    assert email["recipient"] == "olivia@example.com"
    assert email["subject"] == "Hi olivia@example.com"
    assert email["contact_id"] == detail["contact_id"] is not None
    listed = client.get(
        "/api/v1/messages", params={"contact_id": detail["contact_id"]}, headers=auth
    )
    assert [m["id"] for m in listed.json()["items"]] == [email["id"]]
