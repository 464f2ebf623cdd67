"""A dry run leaks nothing: no email, no push, no HTTP request, no production run or message.

The tenant's channels point at real local servers (an aiosmtpd SMTP server and
an HTTP server that counts hits, also the push webhook), so anything a dry run
sent would arrive there. At the end the same automation runs for real once,
which reaches both servers: the check is able to see a leak.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from conveyor.store.db import Database
from conveyor.store.dryrun_tables import dry_run_results
from conveyor.store.messaging_tables import messages
from conveyor.store.tables import runs
from tests.api.helpers import TestClient, make_client
from tests.support.http_server import LOCAL, HitServer
from tests.support.smtp_server import SmtpServer, running_smtp

DAYS = ("2026-06-01", "2026-06-03")  # three days


@pytest.fixture
def client(db: Database) -> TestClient:
    """The app, allowing the tenant's channels and steps to name the local servers."""
    return make_client(db, egress_allow=LOCAL)


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    """A real SMTP server that keeps whatever it receives."""
    with running_smtp() as server:
        yield server


def _count(db: Database, table: Any, *where: Any) -> int:
    with db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())


def _ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def _setup(
    client: TestClient, auth: dict[str, str], smtp: SmtpServer, http: HitServer
) -> list[str]:
    """Channels at the local servers, templates, two contacts, the automation; the contact ids."""
    _ok(
        client.put(
            "/api/v1/settings/channels",
            json={
                "email": {
                    "provider": "smtp",
                    "from": "Shop <shop@example.com>",
                    "smtp_host": "127.0.0.1",
                    "smtp_port": smtp.port,
                    "smtp_starttls": False,
                },
                "push": {"provider": "webhook", "webhook_url": f"{http.url}/ok/push"},
            },
            headers=auth,
        )
    )
    templates = {
        "receipt": {"channel": "email", "subject": "Hi {{ contact.email }}", "text": "Thanks"},
        "ping": {"channel": "push", "title": "Order", "body": "On its way"},
    }
    for name, body in templates.items():
        assert client.put(f"/api/v1/templates/{name}", json=body, headers=auth).status_code == 201
    contacts = [
        _ok(client.post("/api/v1/contacts", json={"email": e}, headers=auth), 201)["id"]
        for e in ("ada@example.com", "bob@example.com")
    ]
    definition = {
        "name": "follow-up",
        "trigger": {"type": "manual"},
        "steps": [
            {
                "key": "mail",
                "type": "send_email_template",
                "template": "receipt",
                "to": "{{ contact.email }}",
            },
            {"key": "call", "type": "http_request", "url": f"{http.url}/ok/call"},
            {"key": "push", "type": "send_push_template", "template": "ping", "to": ["t1"]},
        ],
    }
    _ok(client.post("/api/v1/automations", json=definition, headers=auth), 201)
    return contacts


def test_a_dry_run_sends_calls_and_starts_nothing(
    db: Database,
    client: TestClient,
    auth: dict[str, str],
    smtp: SmtpServer,
    http_server: HitServer,
    work: Callable[[], int],
) -> None:
    contacts = _setup(client, auth, smtp, http_server)
    real_runs = _count(db, runs, runs.c.dry_run.is_(False))
    message_rows = _count(db, messages)

    start, end = DAYS
    body = {"dry_run": True, "start_date": start, "end_date": end, "profile_ids": contacts}
    dry_run = _ok(
        client.post("/api/v1/automations/follow-up/trigger", json=body, headers=auth), 202
    )
    work()

    progress = _ok(client.get(f"/api/v1/dry-runs/{dry_run['id']}", headers=auth))
    assert progress["status"] == "completed", progress
    results = _ok(client.get("/api/v1/dry-run-results", params={"limit": 1000}, headers=auth))
    assert results["total"] == 3 * len(contacts) == _count(db, dry_run_results)
    assert {r["status"] for r in results["items"]} == {"success"}, results["items"]

    # Nothing reached the servers, and no production record was written.
    assert smtp.inbox.received == []
    assert sum(http_server.hits.values()) == 0, http_server.hits
    assert _count(db, runs, runs.c.dry_run.is_(False)) == real_runs
    assert _count(db, messages) == message_rows

    # The same automation run for real reaches both servers: the check above could fail.
    run = {"payload": {}, "identity": {"type": "contact_id", "value": contacts[0]}}
    _ok(client.post("/api/v1/automations/follow-up/trigger", json=run, headers=auth), 202)
    work()
    assert len(smtp.inbox.received) == 1
    assert http_server.hits["/ok/call"] == 1
    assert http_server.hits["/ok/push"] == 1
